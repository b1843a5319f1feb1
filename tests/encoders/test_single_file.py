"""Single-file exports (ComfyUI / A1111 / Forge / stable-diffusion.cpp) read back with the documented mapping.

The read-back below is an independent transcription of the spec (modern-pipelines-uwm-des.md sections 4.1 and
4.7), not the library's own key functions: the file is loaded into a fresh transformers model and its outputs
are compared with the source encoder's.
"""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from saferclip_diffusers.cli.export import main as export_main
from saferclip_diffusers.encoders import export_single_files
from saferclip_diffusers.tiny import tiny_model_dir

from .conftest import tiny_text_config


@pytest.fixture(scope="module")
def export_dir():
    return tiny_model_dir(
        "safe-sdxl"
    )  # a training export: text_encoder/ (CLIP-L-like) + text_encoder_2/ (bigG-like)


def _hf_file_into(model, tensors):
    """Spec 4.1: nested ``text_model.*`` names + ``text_projection.weight`` in Linear layout [out, in]."""
    flat = not hasattr(model, "text_model")  # transformers >= 5.6 CLIPTextModel has no text_model wrapper
    sd = {(k.removeprefix("text_model.") if flat else k): v.float() for k, v in tensors.items()}
    result = model.load_state_dict(sd, strict=False)
    assert not result.unexpected_keys and all("position_ids" in k for k in result.missing_keys)
    return model.eval()


def _openclip_into(model, tensors, prefix):
    """Spec 4.7 read backwards: split in_proj into q, k, v; rename; transpose the projection."""
    rename = {
        "ln_1": "layer_norm1",
        "ln_2": "layer_norm2",
        "mlp.c_fc": "mlp.fc1",
        "mlp.c_proj": "mlp.fc2",
        "attn.out_proj": "self_attn.out_proj",
    }
    sd = {}
    for key, value in tensors.items():
        if not key.startswith(prefix):
            continue
        key, value = key[len(prefix) :], value.float()
        if key == "token_embedding.weight":
            sd["text_model.embeddings.token_embedding.weight"] = value
        elif key == "positional_embedding":
            sd["text_model.embeddings.position_embedding.weight"] = value
        elif key.startswith("ln_final."):
            sd["text_model.final_layer_norm." + key.split(".")[-1]] = value
        elif key == "text_projection":
            sd["text_projection.weight"] = value.T
        else:
            _, _, i, rest = key.split(".", 3)
            if rest.startswith("attn.in_proj_"):
                q, k, v = value.chunk(3)
                kind = rest.removeprefix("attn.in_proj_")
                for name, part in (("q_proj", q), ("k_proj", k), ("v_proj", v)):
                    sd[f"text_model.encoder.layers.{i}.self_attn.{name}.{kind}"] = part
            else:
                module, param = rest.rsplit(".", 1)
                sd[f"text_model.encoder.layers.{i}.{rename[module]}.{param}"] = value
    result = model.load_state_dict(sd, strict=False)
    assert not result.unexpected_keys and all("position_ids" in k for k in result.missing_keys)
    return model.eval()


def test_standalone_files_reproduce_the_export(export_dir, tmp_path, ids):
    written = export_single_files(export_dir, tmp_path, dtype=torch.float32)
    assert set(written) == {"clip_l", "clip_g"}
    assert written["clip_l"].name == "clip_l.safetensors" and written["clip_g"].name == "clip_g.safetensors"
    l_src = CLIPTextModel.from_pretrained(export_dir / "text_encoder").eval()
    g_src = CLIPTextModelWithProjection.from_pretrained(export_dir / "text_encoder_2").eval()
    l_file, g_file = load_file(written["clip_l"]), load_file(written["clip_g"])
    for tensors in (l_file, g_file):
        assert all(k.startswith("text_model.") or k == "text_projection.weight" for k in tensors)
        assert not any("position_ids" in k or k == "text_projection" for k in tensors)
    assert "text_projection.weight" not in l_file  # the source CLIP-L had no projection
    assert torch.equal(
        g_file["text_projection.weight"], g_src.text_projection.weight
    )  # Linear layout, no transpose
    with safe_open(written["clip_g"], "pt") as f:
        assert f.metadata()["format"] == "pt"
    l_back = _hf_file_into(CLIPTextModel(l_src.config), l_file)
    g_back = _hf_file_into(CLIPTextModelWithProjection(g_src.config), g_file)
    with torch.no_grad():
        assert torch.equal(l_back(ids).last_hidden_state, l_src(ids).last_hidden_state)
        assert torch.equal(g_back(ids).text_embeds, g_src(ids).text_embeds)


def test_fp16_by_default_and_close_to_source(export_dir, tmp_path, ids):
    written = export_single_files(export_dir, tmp_path, formats=("comfyui",))
    g_file = load_file(written["clip_g"])
    assert {v.dtype for v in g_file.values()} == {torch.float16}
    g_src = CLIPTextModelWithProjection.from_pretrained(export_dir / "text_encoder_2").eval()
    g_back = _hf_file_into(CLIPTextModelWithProjection(g_src.config), g_file)
    with torch.no_grad():
        torch.testing.assert_close(g_back(ids).text_embeds, g_src(ids).text_embeds, atol=2e-2, rtol=2e-2)


def test_sgm_layout_with_openclip_bigg(tmp_path, ids):
    torch.manual_seed(7)
    clip_l = CLIPTextModel(tiny_text_config()).eval()
    big_g = CLIPTextModelWithProjection(tiny_text_config(width=48, projection=40, act="gelu")).eval()
    written = export_single_files({"clip_l": clip_l, "clip_g": big_g}, tmp_path, formats=("sgm",), dtype=None)
    assert set(written) == {"sgm"}
    tensors = load_file(written["sgm"])
    assert tensors["conditioner.embedders.1.model.text_projection"].shape == (48, 40)  # P = W^T, x @ P
    ids_key = "conditioner.embedders.0.transformer.text_model.embeddings.position_ids"
    assert tensors[ids_key].dtype == torch.int64 and tensors[ids_key].shape == (1, 77)
    g_back = _openclip_into(
        CLIPTextModelWithProjection(big_g.config), tensors, "conditioner.embedders.1.model."
    )
    l_back = _hf_file_into(
        CLIPTextModel(clip_l.config),
        {
            k.removeprefix("conditioner.embedders.0.transformer."): v
            for k, v in tensors.items()
            if k.startswith("conditioner.embedders.0.") and "position_ids" not in k
        },
    )
    with torch.no_grad():
        assert torch.equal(g_back(ids).text_embeds, big_g(ids).text_embeds)
        assert torch.equal(l_back(ids).last_hidden_state, clip_l(ids).last_hidden_state)
        # an OpenCLIP-style forward: pooled = ln_final(x)[eos] @ P equals HF text_embeds
        hidden = big_g(ids).last_hidden_state
        pooled = hidden[torch.arange(len(ids)), ids.argmax(-1)]
        P = tensors["conditioner.embedders.1.model.text_projection"]
        torch.testing.assert_close(pooled @ P, big_g(ids).text_embeds, rtol=0, atol=1e-6)


def test_clip_g_without_projection_is_refused(tmp_path):
    with pytest.raises(ValueError, match="needs text_projection.weight"):
        export_single_files({"clip_g": CLIPTextModel(tiny_text_config(width=48))}, tmp_path)
    with pytest.raises(ValueError, match="unknown single-file format"):
        export_single_files({"clip_l": CLIPTextModel(tiny_text_config())}, tmp_path, formats=("invokeai",))


def test_cli_single_file_and_convert_refusal(export_dir, tmp_path, capsys):
    out = tmp_path / "files"
    assert export_main(["single-file", str(export_dir), "--out", str(out), "--format", "sdcpp"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["clip_g.safetensors", "clip_l.safetensors"]
    assert "--clip_g" in capsys.readouterr().out
    pt = tmp_path / "des.pt"
    torch.save({"model_state_dict": {}}, pt)
    assert export_main(["convert", str(pt), "--out", str(tmp_path / "conv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(pt) in err and "allow_pickle" in err
    assert not (tmp_path / "conv").exists()


def test_single_files_load_back_as_safe_encoders(export_dir, tmp_path, ids):
    """A clip_g.safetensors someone downloaded for ComfyUI is a valid safe_text_encoder_2 here too."""
    from saferclip_diffusers.encoders import load_safe_text_encoder

    written = export_single_files(export_dir, tmp_path, dtype=torch.float32)
    g_src = CLIPTextModelWithProjection.from_pretrained(export_dir / "text_encoder_2").eval()
    base = CLIPTextModelWithProjection.from_pretrained(export_dir / "text_encoder_2")
    with torch.no_grad():
        base.text_projection.weight.mul_(2)  # the file's own projection must win: base gives the config only
    loaded = load_safe_text_encoder(written["clip_g"], "text_encoder_2", base=base)
    with torch.no_grad():
        assert torch.equal(loaded(ids).text_embeds, g_src(ids).text_embeds)
