import pytest
import torch

from saferclip_diffusers import devices, hub


def test_parse_dtype_names():
    assert devices.parse_dtype("auto") is None
    assert devices.parse_dtype("bf16") is torch.bfloat16
    assert devices.parse_dtype("torch.float16") is torch.float16
    with pytest.raises(ValueError, match="float32, float16, bfloat16"):
        devices.parse_dtype("int8")


def test_resolve_dtype_auto_follows_device():
    assert devices.resolve_dtype("auto", "cpu") is torch.float32
    assert devices.resolve_dtype("auto", "cuda") is torch.float16
    assert devices.resolve_dtype("bfloat16", "cuda") is torch.bfloat16


def test_resolve_device_refuses_missing_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.resolve_device("auto").type in ("cpu", "mps")
    with pytest.raises(ValueError, match="no CUDA device"):
        devices.resolve_device("cuda:0")
    with pytest.raises(ValueError, match="unknown device"):
        devices.resolve_device("gpu0")


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("openai/clip-vit-large-patch14", False),
        ("Adeely93/SafeR_CLIP", False),
        ("gpt2", False),
        ("./model", True),
        ("/abs/model", True),
        ("~/m", True),
        ("runs/sd15/export", True),
        ("model/", True),
        ("C:\\models\\x", True),
    ],
)
def test_looks_like_path(spec, expected):
    assert hub.looks_like_path(spec) is expected


def test_require_local_dir_never_mentions_hub(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        hub.require_local_dir(tmp_path / "missing", "base pipeline")
    assert "base pipeline directory does not exist" in str(info.value)
    assert "hub" not in str(info.value).lower() and "huggingface" not in str(info.value).lower()


def test_explain_unavailable_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    err = hub.explain_unavailable(
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
        "base pipeline",
        OSError("does not appear to have a file named model_index.json"),
        "--preset tiny",
    )
    text = str(err)
    assert (
        "stable-diffusion-v1-5/stable-diffusion-v1-5" in text
        and "offline" in text
        and "--preset tiny" in text
    )


def test_explain_unavailable_gated(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    class GatedRepoError(OSError):
        pass

    assert "gated" in str(hub.explain_unavailable("org/m", "model", GatedRepoError("403")))
