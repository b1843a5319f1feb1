"""SaferFluxPipeline on tiny FLUX models (CLIP-L pooled 32, T5 sequence 96, 2x2-packed 16-channel latents)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline, FluxTransformer2DModel
from safetensors.torch import save_file
from transformers import CLIPTextModel, T5EncoderModel

from saferclip_diffusers import SaferFluxPipeline
from saferclip_diffusers.encoders import IncompatibleEncoderError
from saferclip_diffusers.tiny import tiny_model_dir

STEPS = 2
SEQ = 16


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def run(pipe, prompt="a photo of a cat", seed=0, **kwargs):
    kwargs.setdefault("num_inference_steps", STEPS)
    kwargs.setdefault("max_sequence_length", SEQ)
    return pipe(prompt, generator=gen(seed), output_type="np", height=32, width=32, **kwargs)


class Spy:
    def __init__(self, transformer):
        self.calls = []
        self.handle = transformer.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        self.calls.append(
            {
                "hidden": kwargs["encoder_hidden_states"].clone(),
                "pooled": kwargs["pooled_projections"].clone(),
                "latents": kwargs["hidden_states"].clone(),
            }
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


@pytest.fixture(scope="module")
def flux_dir():
    return tiny_model_dir("flux")


@pytest.fixture(scope="module")
def safe_dir():
    return tiny_model_dir("safe-flux")


@pytest.fixture(scope="module")
def plain(flux_dir):
    return FluxPipeline.from_pretrained(flux_dir)


@pytest.fixture(scope="module")
def safer(flux_dir, safe_dir):
    return SaferFluxPipeline.from_pretrained(flux_dir, safe_text_encoder=safe_dir, keep_original=True)


def test_safe_clip_and_t5_condition_the_transformer(safer):
    """encoder_hidden_states = safe T5 last_hidden_state; pooled_projections = safe CLIP-L pooler_output."""
    assert safer.safe_slots == ["text_encoder", "text_encoder_2"]
    with Spy(safer.transformer) as spy:
        run(safer, num_inference_steps=1)
    text = "a photo of a cat"
    with torch.no_grad():
        ids = safer.tokenizer(
            [text], padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        ).input_ids
        pooled = safer.text_encoder(ids).pooler_output
        ids = safer.tokenizer_2(
            [text], padding="max_length", max_length=SEQ, truncation=True, return_tensors="pt"
        ).input_ids
        t5 = safer.text_encoder_2(ids).last_hidden_state
    torch.testing.assert_close(spy.calls[0]["hidden"], t5)
    torch.testing.assert_close(spy.calls[0]["pooled"], pooled)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"prompt_2": "a dog"},
        {"num_images_per_prompt": 2},
        {"negative_prompt": "blurry", "true_cfg_scale": 2.0},
    ],
)
def test_safety_scale_zero_equals_plain_diffusers(safer, plain, kwargs):
    np.testing.assert_array_equal(run(safer, safety_scale=0.0, **kwargs).images, run(plain, **kwargs).images)


def test_safe_encoders_act_without_cfg(safer):
    """FLUX has no classifier-free guidance by default (negative prompts do nothing); the safe encoders still act."""
    plain_default = run(safer, safety_scale=0.0).images
    with_negative = run(safer, safety_scale=0.0, negative_prompt="a cat").images  # true_cfg_scale=1: ignored
    np.testing.assert_array_equal(with_negative, plain_default)
    assert np.abs(run(safer).images - plain_default).max() > 1e-3


@pytest.mark.parametrize("one_batch", [True, False])
def test_compare_mode_shares_transformer_and_originals_equal_a_plain_run(safer, plain, one_batch):
    with Spy(safer.transformer) as spy:
        out = run(safer, prompt=["a cat", "a dog"], return_original=True, compare_in_one_batch=one_batch)
    first = spy.calls[0]["latents"]
    assert first.shape[0] == (4 if one_batch else 2)
    if one_batch:
        torch.testing.assert_close(first[:2], first[2:])  # identical packed noise for both branches
    np.testing.assert_allclose(out.original_images, run(plain, prompt=["a cat", "a dog"]).images, atol=1e-5)
    assert np.abs(out.images - out.original_images).max() > 1e-3
    assert len(out.redirection_scores) == 2


def test_clip_only_swap_warns_and_leaves_the_t5_sequence_untouched(flux_dir, plain):
    with pytest.warns(UserWarning, match="every token the transformer attends to comes from the original T5"):
        pipe = SaferFluxPipeline.from_pretrained(flux_dir, safe_text_encoder=tiny_model_dir("safe-sd"))
    assert pipe.safe_slots == ["text_encoder"]
    with Spy(pipe.transformer) as spy:
        run(pipe, num_inference_steps=1)
    with Spy(plain.transformer) as ref:
        run(plain, num_inference_steps=1)
    torch.testing.assert_close(spy.calls[0]["hidden"], ref.calls[0]["hidden"])
    assert not torch.equal(spy.calls[0]["pooled"], ref.calls[0]["pooled"])


def test_safe_t5_from_a_file_or_from_an_sd3_export(flux_dir, safe_dir, safer, tmp_path):
    t5 = T5EncoderModel.from_pretrained(safe_dir, subfolder="text_encoder_2")
    save_file(
        {
            "shared.weight": t5.shared.weight.contiguous(),
            **{k: v for k, v in t5.state_dict().items() if not k.endswith("embed_tokens.weight")},
        },
        str(tmp_path / "t5.safetensors"),
    )
    from_file = SaferFluxPipeline.from_pretrained(
        flux_dir, safe_text_encoder=safe_dir, safe_text_encoder_2=tmp_path / "t5.safetensors"
    )
    np.testing.assert_array_equal(run(from_file).images, run(safer).images)
    # the SD3 export holds its T5 in text_encoder_3/ (its text_encoder_2/ is CLIP-G): found as the one T5 subfolder
    from_sd3 = SaferFluxPipeline.from_pretrained(
        flux_dir, safe_text_encoder=safe_dir, safe_text_encoder_2=tiny_model_dir("safe-sd3")
    )
    np.testing.assert_array_equal(run(from_sd3).images, run(safer).images)


def test_default_slot_2_ignores_a_clip_g_in_an_sdxl_export(flux_dir):
    with pytest.warns(UserWarning, match="Only FLUX's CLIP-L is safe"):
        pipe = SaferFluxPipeline.from_pretrained(flux_dir, safe_text_encoder=tiny_model_dir("safe-sdxl"))
    assert pipe.safe_slots == ["text_encoder"]


def test_save_and_reload_round_trip(safer, tmp_path):
    safer.save_pretrained(tmp_path)
    reloaded = SaferFluxPipeline.from_pretrained(tmp_path)
    assert reloaded.safe_slots == safer.safe_slots
    np.testing.assert_array_equal(run(reloaded).images, run(safer).images)
    with_original = SaferFluxPipeline.from_pretrained(tmp_path, keep_original=True)
    np.testing.assert_array_equal(
        run(with_original, safety_scale=0.5).images, run(safer, safety_scale=0.5).images
    )


def test_wrong_width_is_refused_before_the_transformer_loads(flux_dir, monkeypatch):
    def heavy(*args, **kwargs):
        raise AssertionError("the transformer was loaded before the safe encoders were validated")

    monkeypatch.setattr(FluxTransformer2DModel, "from_pretrained", heavy)
    wide = CLIPTextModel.from_pretrained(tiny_model_dir("clip-g"))  # bigG-like width 48 in the CLIP-L slot
    with pytest.raises(
        IncompatibleEncoderError, match="'text_encoder' has hidden_size 48, but the slot's encoder has 32"
    ):
        SaferFluxPipeline.from_pretrained(flux_dir, safe_text_encoder=wide)


def test_call_signature_is_the_parents_plus_ours():
    ours = list(inspect.signature(SaferFluxPipeline.__call__).parameters.values())
    parent = list(inspect.signature(FluxPipeline.__call__).parameters.values())
    assert [(p.name, p.kind, p.default) for p in ours[: len(parent)]] == [
        (p.name, p.kind, p.default) for p in parent
    ]
    assert [p.name for p in ours[len(parent) :]] == [
        "safety_scale",
        "return_original",
        "compare_in_one_batch",
        "negative_prompt_encoder",
    ]


def test_unavailable_models_are_named_with_the_offline_alternative(flux_dir):
    from saferclip_diffusers.hub import ModelUnavailableError

    with pytest.raises(
        ModelUnavailableError, match=r"base pipeline 'black-forest-labs/FLUX.1-dev'.*tiny-flux"
    ):
        SaferFluxPipeline.from_pretrained("black-forest-labs/FLUX.1-dev", safe_text_encoder=None)
    with pytest.raises(
        FileNotFoundError, match="safe text encoder file does not exist: '/nope/t5.safetensors'"
    ):
        SaferFluxPipeline.from_pretrained(
            flux_dir, safe_text_encoder=None, safe_text_encoder_2="/nope/t5.safetensors"
        )


def test_concurrent_calls_on_one_pipeline_give_the_sequential_results(safer):
    """Branches swap encoders in the slots: calls from several threads must not mix them."""
    from concurrent.futures import ThreadPoolExecutor

    jobs = [{"safety_scale": 1.0}, {"safety_scale": 0.0}, {"return_original": True}, {"safety_scale": 0.5}]
    expected = [run(safer, num_inference_steps=1, **job).images for job in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda job: run(safer, num_inference_steps=1, **job).images, jobs))
    for want, got in zip(expected, results, strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_user_subclass_loads_like_its_parent(flux_dir, safe_dir, safer, tmp_path):
    class MyFlux(SaferFluxPipeline):
        pass

    pipe = MyFlux.from_pretrained(
        flux_dir, safe_text_encoder=safe_dir
    )  # must not re-enter with the hub default
    assert type(pipe) is MyFlux and pipe.safe_slots == ["text_encoder", "text_encoder_2"]
    np.testing.assert_array_equal(run(pipe).images, run(safer).images)
    wrapped = MyFlux.from_pipe(safer)
    assert type(wrapped) is MyFlux and wrapped.transformer is safer.transformer


def test_redirection_score_by_its_definition(safer):
    """min over swapped slots of cos(original, safe): CLIP pooled vectors, and T5 sequences (as the pipeline computes
    them, padded to max_sequence_length) averaged over each prompt's own tokens, padding positions excluded."""
    prompts = ["a cat", "a photo of the man"]
    scores = safer.redirection_scores(prompts, max_sequence_length=SEQ)
    cos = torch.nn.functional.cosine_similarity
    with torch.no_grad():
        clip_ids = safer.tokenizer(
            prompts, padding="max_length", max_length=77, return_tensors="pt"
        ).input_ids
        cos_clip = cos(
            safer.original_text_encoder(clip_ids).pooler_output, safer.text_encoder(clip_ids).pooler_output
        )
        t5_ids = safer.tokenizer_2(
            prompts, padding="max_length", max_length=SEQ, return_tensors="pt"
        ).input_ids
        original, safe = safer.original_text_encoder_2(t5_ids)[0], safer.text_encoder_2(t5_ids)[0]
        cos_t5 = []
        for i, text in enumerate(prompts):
            n = len(safer.tokenizer_2(text).input_ids)  # the prompt's tokens, </s> included
            cos_t5.append(cos(original[i, :n].mean(dim=0), safe[i, :n].mean(dim=0), dim=0))
    torch.testing.assert_close(torch.tensor(scores), torch.minimum(cos_clip, torch.stack(cos_t5)))
    call = run(safer, prompt=prompts, num_inference_steps=1)
    assert call.redirection_scores == scores
