"""``__call__`` of the SD3 and FLUX Safer pipelines: each branch encoded by the parent's own ``encode_prompt``,
blended by ``safety_scale``, compare mode and the redirection score.

Conventions (slots: :mod:`.slots`)
    Each branch is encoded by the parent pipeline's own ``encode_prompt`` with that branch's encoders in the slots,
    so every diffusers detail (CLIP-L/G concatenation, zero padding to T5's width, T5 zeros when the slot is empty,
    pooled vectors, text-encoder LoRA scale) is diffusers' code, and ``safety_scale=0`` is bit-exact with diffusers.
    The embeddings are then handed to the parent's ``__call__`` as ``prompt_embeds`` and friends.

    The redirection score of a prompt is the lowest, over swapped slots, of ``cos(original, safe)`` between the
    slot's pooled vector (CLIP) or its sequence averaged over the prompt's own tokens (T5).
"""

from __future__ import annotations

from typing import Any

import torch

from .call_options import NEGATIVE_ARGS, PROMPT_ARGS, SaferCallLock, check_call
from .encoding import blend, cosine_scores, given
from .output import pipeline_output, split_output
from .slots import SaferSlotsMixin


class SaferMMDiTMixin(SaferCallLock, SaferSlotsMixin):
    """``__call__`` orchestration for diffusers' transformer (MMDiT) text-to-image pipelines.

    Subclasses declare ``_slots`` as ``(slot, tokenizer attribute, kind)`` with kind ``clip`` or ``t5`` and define
    ``_encode_branch(prompts, args, cfg) -> dict`` (embedding keyword arguments for the parent, computed with the
    encoders currently in the slots), ``_uses_cfg(args) -> bool``, ``_slot_features(embeds, prompts, args) -> {slot: (B, D)}``
    and ``_initial_latents(batch, args, dtype) -> tensor`` (the parent's own noise for that batch).
    """

    _slots: tuple[tuple[str, str, str], ...] = ()

    def _run_parent(self, args: dict, embeds: dict, **overrides: Any):
        call = {**args, **embeds, **overrides, "prompt": None, "return_dict": True}
        for key in PROMPT_ARGS[1:] + NEGATIVE_ARGS:
            call.pop(key, None)  # already encoded
        call["num_images_per_prompt"] = 1  # embeddings are already repeated per image
        return super().__call__(**call)

    def _default_size(self, args: dict) -> tuple[int, int]:
        default = self.default_sample_size * self.vae_scale_factor
        return args.get("height") or default, args.get("width") or default

    def _locked_call(
        self,
        args: dict,
        *,
        safety_scale: float,
        return_original: bool,
        compare_in_one_batch: bool,
        negative_prompt_encoder: str,
    ):
        cfg = self._uses_cfg(args)
        written = cfg and any(given(args.get(n)) for n in NEGATIVE_ARGS)  # a negative prompt the user wrote
        safety_scale, negative_prompt_encoder = check_call(
            self,
            args,
            safety_scale=safety_scale,
            return_original=return_original,
            negative_prompt_encoder=negative_prompt_encoder,
            negatives_written=written,
        )
        return_dict = args.pop("return_dict", True)
        if args.get("prompt_embeds") is not None:  # user-made embeddings: nothing to blend or compare
            return pipeline_output(super().__call__(**args, return_dict=True), None, None, return_dict)
        prompt = args.get("prompt")
        if prompt is None:
            raise ValueError("give a prompt (a string or a list of strings) or prompt_embeds")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)

        safe = self._encode_branch(prompts, args, cfg)
        original = safe if not self.safe_slots else None  # nothing swapped: the safe branch is the original
        if self.safe_slots and self.has_original:
            with self.originals_in_slots():
                original = self._encode_branch(prompts, args, cfg)
        negatives_original = written and negative_prompt_encoder == "original" and bool(self.safe_slots)
        embeds = {
            key: original[key]
            if key.startswith("negative") and negatives_original
            else blend(original[key] if original else None, value, safety_scale)
            for key, value in safe.items()
        }
        scores = (
            self._redirection(original, safe, prompts, args)
            if original is not None and self.safe_slots
            else None
        )

        if not return_original:
            return pipeline_output(self._run_parent(args, embeds), None, scores, return_dict)
        batch = len(prompts) * (args.get("num_images_per_prompt") or 1)
        latents = args.pop("latents", None)
        if latents is None:
            latents = self._initial_latents(batch, args, embeds["prompt_embeds"].dtype)
        if compare_in_one_batch:  # one transformer batch: [safe | original], the same noise twice
            both = {k: torch.cat([embeds[k], original[k]]) for k in embeds}
            generator = args.pop("generator", None)
            if isinstance(generator, list):
                generator = generator + generator
            out = self._run_parent(args, both, latents=torch.cat([latents, latents]), generator=generator)
            out_safe, out_orig = split_output(out, batch)
        else:  # two passes, lower peak memory
            out_safe = self._run_parent(args, embeds, latents=latents.clone())
            out_orig = self._run_parent(args, original, latents=latents.clone())
        return pipeline_output(out_safe, out_orig, scores, return_dict)

    def _redirection(self, original: dict, safe: dict, prompts: list[str], args: dict) -> list[float]:
        per_prompt = args.get("num_images_per_prompt") or 1
        orig_f = self._slot_features(original, prompts, args)
        safe_f = self._slot_features(safe, prompts, args)
        scores = torch.stack([cosine_scores(orig_f[s], safe_f[s]) for s in self.safe_slots]).amin(dim=0)
        return [float(x) for x in scores[::per_prompt]]

    @torch.no_grad()
    def redirection_scores(self, prompt: str | list[str], **call_kwargs: Any) -> list[float]:
        """Per prompt, the lowest ``cos(original, safe)`` over swapped slots, without generating."""
        if not self.safe_slots or not self.has_original:
            raise ValueError(
                "redirection scores need a swapped slot and its original encoder: load with keep_original=True"
            )
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        args = {"num_images_per_prompt": 1, **call_kwargs}
        safe = self._encode_branch(prompts, args, False)
        with self.originals_in_slots():
            original = self._encode_branch(prompts, args, False)
        return self._redirection(original, safe, prompts, args)


def token_mean(
    sequence: torch.Tensor, tokenizer, texts: str | list[str] | None, prompts: list[str], per_prompt: int
) -> torch.Tensor:
    """A T5 slot's feature for the redirection score: its (B, L, D) sequence averaged over each prompt's own tokens
    (``</s>`` included, padding positions excluded)."""
    texts = prompts if not texts else [texts] * len(prompts) if isinstance(texts, str) else list(texts)
    lengths = torch.tensor([len(ids) for ids in tokenizer(texts).input_ids]).clamp(1, sequence.shape[1])
    lengths = lengths.repeat_interleave(per_prompt).to(sequence.device)
    mask = torch.arange(sequence.shape[1], device=sequence.device)[None, :] < lengths[:, None]
    return (sequence.float() * mask[..., None]).sum(dim=1) / lengths[:, None]
