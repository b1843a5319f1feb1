"""SaferStableDiffusion3Pipeline on tiny SD3 models (CLIP-L 32 + CLIP-G 48 padded to T5's 96; pooled 32 + 48)."""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
import torch
from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline
from safetensors.torch import save_file
from transformers import CLIPTextModelWithProjection, T5EncoderModel

from saferclip_diffusers import SaferStableDiffusion3Pipeline
from saferclip_diffusers.encoders import IncompatibleEncoderError, PickleCheckpointError
from saferclip_diffusers.tiny import tiny_model_dir

STEPS = 2
SEQ = 16  # T5 tokens (diffusers' default 256 is slow on CPU and changes nothing here)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def run(pipe, prompt="a photo of a cat", seed=0, **kwargs):
    kwargs.setdefault("num_inference_steps", STEPS)
    kwargs.setdefault("max_sequence_length", SEQ)
    return pipe(prompt, generator=gen(seed), output_type="np", **kwargs)


class Spy:
    """Records what the transformer is conditioned on, call by call."""

    def __init__(self, transformer):
        self.calls = []
        self.handle = transformer.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        self.calls.append(
            {
                "hidden": kwargs["encoder_hidden_states"].clone(),
                "pooled": kwargs["pooled_projections"].clone(),
            }
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


@pytest.fixture(scope="module")
def sd3_dir():
    return tiny_model_dir("sd3")


@pytest.fixture(scope="module")
def safe_dir():
    return tiny_model_dir("safe-sd3")


@pytest.fixture(scope="module")
def plain(sd3_dir):
    return StableDiffusion3Pipeline.from_pretrained(sd3_dir)


@pytest.fixture(scope="module")
def safer(sd3_dir, safe_dir):
    # a diffusers-layout export with text_encoder/, text_encoder_2/ and text_encoder_3/ fills all three slots
    return SaferStableDiffusion3Pipeline.from_pretrained(
        sd3_dir, safe_text_encoder=safe_dir, keep_original=True
    )


def _clip(pipe, slot, tok, text):
    texts = [text] if isinstance(text, str) else text
    ids = getattr(pipe, tok)(
        texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids
    out = getattr(pipe, slot)(ids, output_hidden_states=True)
    return out.hidden_states[-2], out.text_embeds


def test_safe_encoders_condition_the_transformer(safer):
    """The conditioning equals SD3's definition computed by hand from the safe encoders."""
    assert safer.safe_slots == ["text_encoder", "text_encoder_2", "text_encoder_3"]
    with Spy(safer.transformer) as spy:
        run(safer, guidance_scale=1.0)  # no CFG: the batch is the prompt alone
    text = "a photo of a cat"
    with torch.no_grad():
        h_l, p_l = _clip(safer, "text_encoder", "tokenizer", text)
        h_g, p_g = _clip(safer, "text_encoder_2", "tokenizer_2", text)
        ids = safer.tokenizer_3(
            [text], padding="max_length", max_length=SEQ, truncation=True, return_tensors="pt"
        ).input_ids
        t5 = safer.text_encoder_3(ids).last_hidden_state
    clip = torch.cat([h_l, h_g], dim=-1)
    clip = torch.cat([clip, torch.zeros(*clip.shape[:2], t5.shape[-1] - clip.shape[-1])], dim=-1)
    torch.testing.assert_close(spy.calls[0]["hidden"], torch.cat([clip, t5], dim=1))
    torch.testing.assert_close(spy.calls[0]["pooled"], torch.cat([p_l, p_g], dim=-1))


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"negative_prompt": "blurry", "negative_prompt_3": "dark"},
        {"prompt_3": "a dog"},
        {"clip_skip": 1},
        {"num_images_per_prompt": 2},
    ],
)
def test_safety_scale_zero_equals_plain_diffusers(safer, plain, kwargs):
    np.testing.assert_array_equal(run(safer, safety_scale=0.0, **kwargs).images, run(plain, **kwargs).images)


def test_safety_scale_interpolates_sequence_and_pooled(safer):
    with Spy(safer.transformer) as spy:
        for scale in (0.0, 0.25, 1.0):
            run(safer, safety_scale=scale, num_inference_steps=1)
    c0, cq, c1 = spy.calls
    for key in ("hidden", "pooled"):
        torch.testing.assert_close(cq[key], c0[key] + 0.25 * (c1[key] - c0[key]))
    assert not torch.equal(c0["hidden"], c1["hidden"])


@pytest.mark.parametrize("one_batch", [True, False])
def test_compare_mode_shares_transformer_and_originals_equal_a_plain_run(safer, plain, one_batch):
    with Spy(safer.transformer) as spy:
        out = run(safer, prompt=["a cat", "a dog"], return_original=True, compare_in_one_batch=one_batch)
    assert spy.calls[0]["hidden"].shape[0] == (
        2 * 2 * 2 if one_batch else 2 * 2
    )  # [safe|original] x CFG x prompts
    reference = run(plain, prompt=["a cat", "a dog"]).images  # the same generator: the same initial noise
    np.testing.assert_allclose(out.original_images, reference, atol=1e-5)
    assert np.abs(out.images - out.original_images).max() > 1e-3
    assert out.redirection_scores == safer.redirection_scores(["a cat", "a dog"], max_sequence_length=SEQ)


def test_redirection_score_by_its_definition(safer):
    """min over the three swapped slots of cos(original, safe): CLIP-L and CLIP-G ``text_embeds`` (SD3's pooled
    halves), and the T5 sequence averaged over each prompt's own tokens (padding excluded)."""
    prompts = ["a cat", "a photo of the man"]
    scores = safer.redirection_scores(prompts, max_sequence_length=SEQ)
    cos = torch.nn.functional.cosine_similarity
    with torch.no_grad():
        per_slot = [
            cos(_clip(safer, f"original_{slot}", tok, prompts)[1], _clip(safer, slot, tok, prompts)[1])
            for slot, tok in (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2"))
        ]
        t5_ids = safer.tokenizer_3(
            prompts, padding="max_length", max_length=SEQ, return_tensors="pt"
        ).input_ids
        original, safe = safer.original_text_encoder_3(t5_ids)[0], safer.text_encoder_3(t5_ids)[0]
        t5 = []
        for i, text in enumerate(prompts):
            n = len(safer.tokenizer_3(text).input_ids)  # the prompt's tokens, </s> included
            t5.append(cos(original[i, :n].mean(dim=0), safe[i, :n].mean(dim=0), dim=0))
        per_slot.append(torch.stack(t5))
    torch.testing.assert_close(torch.tensor(scores), torch.stack(per_slot).amin(dim=0))


def test_negative_prompt_encoder_choice(sd3_dir, safe_dir, safer):
    with Spy(safer.transformer) as spy:
        run(safer, negative_prompt="nudity", num_inference_steps=1)  # default: "original"
        run(safer, negative_prompt="nudity", negative_prompt_encoder="safe", num_inference_steps=1)
        run(safer, negative_prompt="nudity", safety_scale=0.0, num_inference_steps=1)
        run(
            safer, num_inference_steps=1
        )  # no negative written: the unconditional side follows the prompt's encoders
        run(safer, negative_prompt_encoder="safe", num_inference_steps=1)
    orig_neg, safe_neg, plain_neg, uncond, uncond_safe = (
        c["hidden"][:1] for c in spy.calls
    )  # CFG: [neg | pos]
    torch.testing.assert_close(orig_neg, plain_neg)  # the negative keeps the plain model's meaning
    assert not torch.equal(safe_neg, orig_neg)
    torch.testing.assert_close(
        spy.calls[0]["hidden"][1:], spy.calls[1]["hidden"][1:]
    )  # the prompt stays safe
    torch.testing.assert_close(uncond, uncond_safe)
    with pytest.raises(ValueError, match="negative_prompt_encoder must be 'safe' or 'original'"):
        run(safer, negative_prompt_encoder="both")
    no_original = SaferStableDiffusion3Pipeline.from_pretrained(sd3_dir, safe_text_encoder=safe_dir)
    with pytest.warns(UserWarning, match="the safe encoders read the negative prompt"):
        fallback = run(no_original, negative_prompt="nudity").images
    np.testing.assert_array_equal(
        fallback, run(safer, negative_prompt="nudity", negative_prompt_encoder="safe").images
    )


def test_plain_diffusers_loads_a_saved_safer_pipeline(safer, tmp_path):
    from diffusers import AutoPipelineForText2Image, DiffusionPipeline

    safer.save_pretrained(tmp_path)
    for loader in (DiffusionPipeline, AutoPipelineForText2Image):
        pipe = loader.from_pretrained(tmp_path)
        assert type(pipe) is StableDiffusion3Pipeline
        np.testing.assert_array_equal(
            run(pipe, negative_prompt="blurry").images,
            run(safer, negative_prompt="blurry", negative_prompt_encoder="safe").images,
        )


def test_save_and_reload_round_trip(safer, tmp_path):
    safer.save_pretrained(tmp_path)
    reloaded = SaferStableDiffusion3Pipeline.from_pretrained(tmp_path)
    assert reloaded.safe_slots == safer.safe_slots and reloaded.original_text_encoder_3 is None
    np.testing.assert_array_equal(run(reloaded).images, run(safer).images)
    with_original = SaferStableDiffusion3Pipeline.from_pretrained(tmp_path, keep_original=True)
    np.testing.assert_array_equal(
        run(with_original, safety_scale=0.5).images, run(safer, safety_scale=0.5).images
    )


def test_t5_kept_warns_and_keeps_the_original_sequence(sd3_dir, plain):
    safe_l = tiny_model_dir("safe-sdxl")  # an SDXL export: its bigG fits SD3's CLIP-G slot
    with pytest.warns(UserWarning, match="T5 .text_encoder_3. is not swapped"):
        pipe = SaferStableDiffusion3Pipeline.from_pretrained(
            sd3_dir, safe_text_encoder=safe_l, keep_original=True
        )
    assert pipe.safe_slots == ["text_encoder", "text_encoder_2"]
    assert pipe.text_encoder_3 is not None and pipe.original_text_encoder_3 is None
    g_sdxl = CLIPTextModelWithProjection.from_pretrained(safe_l, subfolder="text_encoder_2")
    torch.testing.assert_close(pipe.text_encoder_2.text_projection.weight, g_sdxl.text_projection.weight)
    with Spy(pipe.transformer) as spy:
        run(pipe, num_inference_steps=1)
    with Spy(plain.transformer) as ref:
        run(plain, num_inference_steps=1)
    torch.testing.assert_close(
        spy.calls[0]["hidden"][:, 77:], ref.calls[0]["hidden"][:, 77:]
    )  # T5 tokens untouched
    assert not torch.equal(spy.calls[0]["hidden"][:, :77], ref.calls[0]["hidden"][:, :77])


def test_clip_l_keeps_sd3s_own_projection(sd3_dir, safer):
    base = CLIPTextModelWithProjection.from_pretrained(sd3_dir, subfolder="text_encoder")
    exported = CLIPTextModelWithProjection.from_pretrained(
        tiny_model_dir("safe-sd3"), subfolder="text_encoder"
    )
    assert not torch.equal(exported.text_projection.weight, base.text_projection.weight)
    torch.testing.assert_close(safer.text_encoder.text_projection.weight, base.text_projection.weight)
    torch.testing.assert_close(
        safer.text_encoder.text_model.final_layer_norm.weight, exported.text_model.final_layer_norm.weight
    )


def test_t5_dropped_gives_zero_t5_tokens_like_diffusers(sd3_dir, safe_dir):
    pipe = SaferStableDiffusion3Pipeline.from_pretrained(
        sd3_dir, safe_text_encoder=safe_dir, text_encoder_3=None, tokenizer_3=None, keep_original=True
    )
    assert pipe.safe_slots == ["text_encoder", "text_encoder_2"] and pipe.text_encoder_3 is None
    plain_no_t5 = StableDiffusion3Pipeline.from_pretrained(sd3_dir, text_encoder_3=None, tokenizer_3=None)
    with Spy(pipe.transformer) as spy:
        out = run(pipe, safety_scale=0.0)
    assert spy.calls[0]["hidden"].shape[1] == 77 + SEQ and not spy.calls[0]["hidden"][:, 77:].any()
    np.testing.assert_array_equal(out.images, run(plain_no_t5).images)
    with pytest.raises(ValueError, match="text_encoder_3=None drops the slot"):
        SaferStableDiffusion3Pipeline.from_pretrained(
            sd3_dir, safe_text_encoder_3=safe_dir, text_encoder_3=None
        )


def test_safe_t5_from_a_safetensors_file_equals_the_folder(sd3_dir, safe_dir, safer, tmp_path):
    t5 = T5EncoderModel.from_pretrained(safe_dir, subfolder="text_encoder_3")
    state = {k: v for k, v in t5.state_dict().items() if k != "encoder.embed_tokens.weight"}  # tied to shared
    save_file(state, str(tmp_path / "safe_t5.safetensors"))
    pipe = SaferStableDiffusion3Pipeline.from_pretrained(
        sd3_dir, safe_text_encoder=safe_dir, safe_text_encoder_3=tmp_path / "safe_t5.safetensors"
    )
    np.testing.assert_array_equal(run(pipe).images, run(safer).images)

    del state["encoder.final_layer_norm.weight"]
    save_file(state, str(tmp_path / "partial.safetensors"))
    with pytest.raises(
        IncompatibleEncoderError,
        match="1 weights of the model are missing from it: encoder.final_layer_norm.weight",
    ):
        SaferStableDiffusion3Pipeline.from_pretrained(
            sd3_dir, safe_text_encoder=None, safe_text_encoder_3=tmp_path / "partial.safetensors"
        )
    full = {k: v for k, v in t5.state_dict().items() if k != "encoder.embed_tokens.weight"}
    torch.save({"model_state_dict": full, "epoch": 1, "is_t5": True}, tmp_path / "des_t5.pt")  # DES's layout
    with pytest.raises(
        PickleCheckpointError, match=r"refusing to load the pickle file .*des_t5.pt.*allow_pickle=True"
    ):
        SaferStableDiffusion3Pipeline.from_pretrained(
            sd3_dir, safe_text_encoder=None, safe_text_encoder_3=tmp_path / "des_t5.pt"
        )
    des = SaferStableDiffusion3Pipeline.from_pretrained(
        sd3_dir, safe_text_encoder=safe_dir, allow_pickle=True, safe_text_encoder_3=tmp_path / "des_t5.pt"
    )
    np.testing.assert_array_equal(run(des).images, run(safer).images)


def test_wrong_family_is_refused_before_the_transformer_loads(sd3_dir, monkeypatch):
    def heavy(*args, **kwargs):
        raise AssertionError("the transformer was loaded before the safe encoders were validated")

    monkeypatch.setattr(SD3Transformer2DModel, "from_pretrained", heavy)
    with pytest.raises(
        IncompatibleEncoderError, match="'text_encoder_2' has hidden_size 32, but the slot's encoder has 48"
    ):
        SaferStableDiffusion3Pipeline.from_pretrained(
            sd3_dir, safe_text_encoder=None, safe_text_encoder_2=tiny_model_dir("clip")
        )
    with pytest.raises(FileNotFoundError, match="no T5 encoder in .*text_encoder_2"):
        SaferStableDiffusion3Pipeline.from_pretrained(
            sd3_dir,
            safe_text_encoder=None,
            safe_text_encoder_3=tiny_model_dir("safe-sdxl") / "text_encoder_2",
        )
    clip_g = CLIPTextModelWithProjection.from_pretrained(tiny_model_dir("clip-g"))
    with pytest.raises(
        TypeError, match="'text_encoder_3' must be a T5EncoderModel, got CLIPTextModelWithProjection"
    ):
        SaferStableDiffusion3Pipeline.from_pretrained(
            sd3_dir, safe_text_encoder=None, safe_text_encoder_3=clip_g
        )


def test_call_signature_is_the_parents_plus_ours(safer, plain):
    ours = inspect.signature(type(safer).__call__).parameters
    parent = inspect.signature(StableDiffusion3Pipeline.__call__).parameters
    assert [(p.name, p.kind, p.default) for p in list(ours.values())[: len(parent)]] == [
        (p.name, p.kind, p.default) for p in parent.values()
    ]
    assert list(ours)[len(parent) :] == [
        "safety_scale",
        "return_original",
        "compare_in_one_batch",
        "negative_prompt_encoder",
    ]
    # positional use, as with diffusers: prompt, prompt_2, prompt_3, height, width, num_inference_steps
    a = safer(
        "a cat",
        None,
        None,
        32,
        32,
        STEPS,
        generator=gen(),
        output_type="np",
        max_sequence_length=SEQ,
        safety_scale=0.0,
    ).images
    b = plain(
        "a cat", None, None, 32, 32, STEPS, generator=gen(), output_type="np", max_sequence_length=SEQ
    ).images
    np.testing.assert_array_equal(a, b)


def test_from_pipe_shares_components(plain, safe_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # all three slots safe: no coverage warning
        pipe = SaferStableDiffusion3Pipeline.from_pipe(plain, safe_text_encoder=safe_dir)
    for name in ("transformer", "vae", "scheduler", "tokenizer", "tokenizer_2", "tokenizer_3"):
        assert getattr(pipe, name) is getattr(plain, name), name
    assert pipe.original_text_encoder_3 is plain.text_encoder_3
    np.testing.assert_array_equal(run(pipe, safety_scale=0.0).images, run(plain).images)
    assert {"original_text_encoder", "original_text_encoder_3"} <= set(pipe.model_cpu_offload_seq.split("->"))


def test_bad_calls_are_refused(sd3_dir, safe_dir, safer):
    no_original = SaferStableDiffusion3Pipeline.from_pretrained(sd3_dir, safe_text_encoder=safe_dir)
    with pytest.raises(ValueError, match="keep_original=True"):
        run(no_original, safety_scale=0.5)
    for bad in (1.5, float("nan"), -0.1):
        with pytest.raises(ValueError, match=r"safety_scale must be a number in \[0, 1\]"):
            run(safer, safety_scale=bad)


def test_components_build_the_plain_pipeline(sd3_dir, safe_dir):
    pipe = SaferStableDiffusion3Pipeline.from_pretrained(sd3_dir, safe_text_encoder=safe_dir)
    assert not [k for k in pipe.components if k.startswith("original_")]
    plain = StableDiffusion3Pipeline(**pipe.components)
    assert plain.text_encoder_3 is pipe.text_encoder_3


def test_dtype_by_name_as_on_the_command_line(sd3_dir, safe_dir):
    # the SD/SDXL loaders always took "bf16"; the SD3/FLUX loaders passed the string on to diffusers, which failed
    pipe = SaferStableDiffusion3Pipeline.from_pretrained(
        sd3_dir, safe_text_encoder=safe_dir, keep_original=True, dtype="bf16"
    )
    dtypes = {pipe.transformer.dtype, pipe.text_encoder_3.dtype, pipe.original_text_encoder_3.dtype}
    assert dtypes == {torch.bfloat16}
