"""UWM: the fast score against a naive float64 transcription of the official scorer, the mass/count selection on
hand-built scores, the sign flip, and the end-to-end `method: uwm` export loaded by a Safer pipeline."""

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from saferclip_diffusers.training.methods.uwm import (
    UwmScorer,
    apply_masks,
    batch_score,
    channel_stats,
    hooked_linears,
    select,
)


def naive_uwm_score(W, x_safe, m_safe, x_unsafe, m_unsafe):
    """Direct float64 transcription of Moreno98/UWM text_scorers.UWM (per-sentence loop, B x d_out x d_in)."""
    W = W.double()
    ratios = []
    for b in range(x_safe.shape[0]):
        per = []
        for x, m in ((x_safe[b], m_safe[b]), (x_unsafe[b], m_unsafe[b])):
            tokens = x[m.bool()].double()  # valid tokens only
            n = tokens.norm(dim=0)
            sigma = tokens.std(dim=0)  # unbiased
            A = n[None, :] * W.abs()
            S = A.mean(dim=1)[:, None] * A.mean(dim=0)[None, :]  # Eq. 8
            per.append(S / sigma[None, :])  # Eq. 9
        ratios.append(per[1] / per[0])  # Eq. 10: unsafe / safe
    return torch.stack(ratios).mean(0) * W.abs()


def _batch(B, T, d, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, d, generator=g)
    lengths = torch.randint(2, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    x = x + 100.0 * (1 - mask)[..., None]  # padding values must not leak into the statistics
    return x, mask


def test_fast_score_equals_naive_float64_reference():
    torch.manual_seed(0)
    W = torch.randn(5, 7)
    xs, ms = _batch(6, 9, 7, 1)
    xu, mu = _batch(6, 9, 7, 2)
    n_s, s_s = channel_stats(xs, ms)
    n_u, s_u = channel_stats(xu, mu)
    fast = batch_score(W, n_s, s_s, n_u, s_u)
    ref = naive_uwm_score(W, xs, ms, xu, mu)
    torch.testing.assert_close(fast.double(), ref, rtol=1e-4, atol=1e-6)


def test_scorer_hooks_split_safe_first_and_average_batches():
    torch.manual_seed(0)
    lin = nn.Linear(4, 3)
    model = nn.Sequential()
    model.add_module("out_proj", lin)
    scorer = UwmScorer(model, ["out_proj"])
    batches = [(_batch(3, 5, 4, 10 + i), _batch(3, 5, 4, 20 + i)) for i in range(2)]
    with scorer.hooks():
        for (xs, ms), (xu, mu) in batches:
            scorer.set_mask(torch.cat([ms, mu]))
            model(torch.cat([xs, xu]))
            scorer.batches += 1
    got = scorer.scores()["out_proj"]
    want = sum(naive_uwm_score(lin.weight.detach(), xs, ms, xu, mu) for (xs, ms), (xu, mu) in batches) / 2
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-6)


def test_mass_threshold_selects_hand_computed_set():
    # mass: 0.40 0.30 0.15 0.10 0.05 -> ascending cumsum 0.05 0.15 0.30 0.60 1.00
    score = torch.tensor([[0.10, 0.40], [0.05, 0.30], [0.15, 0.0]])
    # tau=0.5: entries whose cumulative mass (ascending) > 0.5 -> 0.30 (0.60) and 0.40 (1.00)
    assert select(score, 0.5, "mass").tolist() == [[False, True], [False, True], [False, False]]
    # tau=0.2 -> also 0.15 (cumsum 0.30)
    assert select(score, 0.2, "mass").tolist() == [[False, True], [False, True], [True, False]]
    # count rule: k = floor(0.5 * 6) = 3 -> 3rd smallest is 0.10; strictly greater -> 0.40, 0.30, 0.15
    assert select(score, 0.5, "count").tolist() == [[False, True], [False, True], [True, False]]
    with pytest.raises(ValueError, match="mass' or 'count"):
        select(score, 0.5, "top")


def test_alpha_one_changes_nothing_and_minus_one_flips_exactly_the_selection():
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("out_proj", nn.Linear(4, 3))
    modules = hooked_linears(model, ["out_proj"])
    before_w = model.out_proj.weight.detach().clone()
    before_b = model.out_proj.bias.detach().clone()
    mask = torch.tensor(
        [[True, False, False, True], [False, False, False, False], [False, True, False, False]]
    )
    assert apply_masks(modules, {"out_proj": mask}, 1.0) == 0
    assert torch.equal(model.out_proj.weight, before_w)
    assert apply_masks(modules, {"out_proj": mask}, -1.0) == 3
    expected = torch.where(mask, -before_w, before_w)
    assert torch.equal(model.out_proj.weight, expected)
    assert torch.equal(model.out_proj.bias, before_b)  # biases untouched


def test_hooked_linears_refuses_unknown_layer_names():
    with pytest.raises(ValueError, match="no nn.Linear named"):
        hooked_linears(nn.Sequential(nn.Linear(2, 2)), ["out_proj"])


def test_uwm_run_exports_a_loadable_safe_encoder(tmp_path, small_config):
    from transformers import CLIPTextModel

    from saferclip_diffusers.io import EXPORT_MARKER, export_state
    from saferclip_diffusers.tiny import tiny_model_dir
    from saferclip_diffusers.training.methods import get_method

    cfg = small_config("method=uwm", "uwm.tau=0.9", "uwm.batch_size=8")
    out = get_method("uwm").run(cfg, tmp_path / "uwm")
    assert export_state(out) == "complete"
    summary = json.loads((out / EXPORT_MARKER).read_text())
    edited = CLIPTextModel.from_pretrained(out / "text_encoder").state_dict()
    base = CLIPTextModel.from_pretrained(tiny_model_dir("clip")).state_dict()
    side = load_file(str(out / "uwm_scores-text_encoder.safetensors"))
    flipped = 0
    for key, w in base.items():
        if key.endswith("self_attn.out_proj.weight"):
            mask = side[f"mask.text_model.{key[: -len('.weight')]}"].bool()
            assert torch.equal(edited[key], torch.where(mask, -w, w))
            flipped += int(mask.sum())
        else:
            assert torch.equal(edited[key], w), key  # everything else (biases included) unchanged
    assert flipped == summary["layers"]["text_encoder"]["changed"] > 0
    prompts = json.loads((out / "training_prompts.json").read_text())
    assert len(prompts["unsafe"]) == summary["pairs"] == 20  # 24 unsafe - 4 validation items


def test_uwm_sdxl_edits_both_encoders_and_loads_into_the_sdxl_pipeline(tmp_path, small_config):
    from transformers import CLIPTextModelWithProjection

    from saferclip_diffusers import SaferStableDiffusionXLPipeline
    from saferclip_diffusers.tiny import tiny_model_dir
    from saferclip_diffusers.training.methods import get_method

    out = get_method("uwm").run(
        small_config("method=uwm", "uwm.tau=0.9", base="tiny-sdxl"), tmp_path / "uwm-xl"
    )
    summary = json.loads((out / "export_complete.json").read_text())["layers"]
    assert summary["text_encoder"]["changed"] > 0 and summary["text_encoder_2"]["changed"] > 0
    te2 = CLIPTextModelWithProjection.from_pretrained(out, subfolder="text_encoder_2")
    base2 = CLIPTextModelWithProjection.from_pretrained(tiny_model_dir("sdxl"), subfolder="text_encoder_2")
    key = "text_model.encoder.layers.0.self_attn.out_proj.weight"
    assert not torch.equal(te2.state_dict()[key], base2.state_dict()[key])
    assert torch.equal(te2.text_projection.weight, base2.text_projection.weight)
    pipe = SaferStableDiffusionXLPipeline.from_pretrained(tiny_model_dir("sdxl"), safe_text_encoder=out)
    assert pipe.safe_slots == ["text_encoder", "text_encoder_2"]
    assert torch.equal(pipe.text_encoder_2.state_dict()[key], te2.state_dict()[key])


def test_train_cli_runs_uwm(tmp_path, small_overrides):
    import runpy
    from pathlib import Path

    main = runpy.run_path(str(Path(__file__).resolve().parents[2] / "train" / "train.py"), run_name="cli")[
        "main"
    ]
    assert main(["--config", "tiny", "--output", str(tmp_path / "run"), "method=uwm", *small_overrides]) == 0
    assert (tmp_path / "run" / "text_encoder" / "model.safetensors").is_file()


def test_uwm_sd2_config_edits_a_projectionless_text_encoder_and_loads_into_sd(tmp_path, small_overrides):
    """SD 2.x layout: a pipeline folder whose text_encoder/ is a CLIPTextModel without text_projection."""
    from safetensors.torch import load_file as load
    from transformers import CLIPTextModel

    from saferclip_diffusers import SaferStableDiffusionPipeline
    from saferclip_diffusers.cli.train import main
    from saferclip_diffusers.tiny import tiny_model_dir

    base = tiny_model_dir("sd")
    assert "text_projection.weight" not in load(str(base / "text_encoder" / "model.safetensors"))
    out = tmp_path / "uwm-sd2"
    args = ["--config", "uwm-sd2", "--output", str(out), *small_overrides, "data.unsafe_holdout=0.0"]
    args += [f"encoders.0.model={base}", "encoders.0.random_weights=true", "uwm.tau=0.9", "uwm.batch_size=8"]
    assert main([*args, "run.cpu=true", f"export.base_pipeline={base}", "export.dtype=float32"]) == 0
    edited = CLIPTextModel.from_pretrained(out / "text_encoder").state_dict()
    original = CLIPTextModel.from_pretrained(base, subfolder="text_encoder").state_dict()
    side = load_file(str(out / "uwm_scores-text_encoder.safetensors"))
    changed = json.loads((out / "export_complete.json").read_text())["layers"]["text_encoder"]["changed"]
    flipped = 0
    for key, w in original.items():
        if key.endswith("self_attn.out_proj.weight"):
            mask = side[f"mask.{key[: -len('.weight')]}"].bool()
            assert torch.equal(edited[key], torch.where(mask, -w, w)), key
            flipped += int(mask.sum())
        else:
            assert torch.equal(edited[key], w), key
    assert flipped == changed > 0
    pipe = SaferStableDiffusionPipeline.from_pretrained(base, safe_text_encoder=out)
    swapped = pipe.text_encoder.state_dict()
    assert all(torch.equal(swapped[k], v) for k, v in edited.items())  # the edited encoder, not the original
