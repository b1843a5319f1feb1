"""What the SD3 and FLUX Safer pipelines share: encoding with the original or the safe encoders through the
parent's own ``encode_prompt``, ``safety_scale``, compare mode and the redirection score.

Conventions (as in :mod:`.conditioning` for SD and SDXL)
    A *slot* is one text-encoder attribute of the diffusers pipeline. In a Safer pipeline the slot holds the
    **safe** encoder; the original encoder of a swapped slot lives in ``original_<slot>`` when kept. A slot that
    was not swapped is its own original; a slot set to ``None`` (SD3's ``text_encoder_3=None``) is empty in both
    branches, exactly as in diffusers.

    Each branch is encoded by the parent pipeline's own ``encode_prompt`` with that branch's encoders in the slots,
    so every diffusers detail (CLIP-L/G concatenation, zero padding to T5's width, T5 zeros when the slot is empty,
    pooled vectors, text-encoder LoRA scale) is diffusers' code, and ``safety_scale=0`` is bit-exact with diffusers.

    The redirection score of a prompt is the lowest, over swapped slots, of ``cos(original, safe)`` between the
    slot's pooled vector (CLIP) or its sequence averaged over the prompt's own tokens (T5).
"""

from __future__ import annotations

import json
import math
import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..io import atomic_write_json
from .conditioning import SaferPipelineOutput, blend, cosine_scores

NEGATIVE_ENCODERS = ("original", "safe")
NEGATIVE_ARGS = ("negative_prompt", "negative_prompt_2", "negative_prompt_3")


class SaferMMDiTMixin:
    """``__call__`` orchestration for diffusers' transformer (MMDiT) text-to-image pipelines.

    Subclasses declare ``_slots`` as ``(slot, tokenizer attribute, kind)`` with kind ``clip`` or ``t5`` and define
    ``_encode_branch(prompts, args, cfg) -> dict`` (embedding keyword arguments for the parent, computed with the
    encoders currently in the slots), ``_uses_cfg(args) -> bool``, ``_slot_features(embeds, prompts, args) -> {slot: (B, D)}``
    and ``_initial_latents(batch, args, dtype) -> tensor`` (the parent's own noise for that batch).
    """

    _slots: tuple[tuple[str, str, str], ...] = ()

    # ------------------------------------------------------------------ slots

    @property
    def safe_slots(self) -> list[str]:
        return list(self.config.get("safe_text_encoder_slots") or [])

    def original_encoder(self, slot: str) -> torch.nn.Module | None:
        """The original encoder of ``slot``: ``original_<slot>`` if swapped, else the slot's own encoder."""
        if slot in self.safe_slots:
            return getattr(self, f"original_{slot}", None)
        return getattr(self, slot)

    @property
    def has_original(self) -> bool:
        return all(self.original_encoder(slot) is not None for slot in self.safe_slots)

    @property
    def components(self) -> dict[str, Any]:
        """The parent's components; ``original_<slot>`` only when loaded, so ``Other(**pipe.components)`` works."""
        return {k: v for k, v in super().components.items() if not (k.startswith("original_") and v is None)}

    @contextmanager
    def _branch(self, which: str) -> Iterator[None]:
        """Put the original encoders into the slots for the block (no config change), then restore the safe ones."""
        if which == "safe" or not self.safe_slots:
            yield
            return
        saved = {slot: self.__dict__[slot] for slot in self.safe_slots}
        try:
            for slot in self.safe_slots:
                self.__dict__[slot] = self.original_encoder(slot)
            yield
        finally:
            self.__dict__.update(saved)

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """diffusers' ``save_pretrained``; ``model_index.json`` names the diffusers parent class.

        So plain diffusers (``DiffusionPipeline.from_pretrained``, ``AutoPipelineForText2Image``,
        ``StableDiffusion3Pipeline`` / ``FluxPipeline``) loads the folder as the parent pipeline with the safe encoders
        in its slots (the ``original_*`` folders are ignored). ``_safer_class_name`` keeps ours; a Safer
        ``from_pretrained`` recognises the folder by ``safe_text_encoder_slots``.
        """
        super().save_pretrained(save_directory, *args, **kwargs)
        path = Path(save_directory) / "model_index.json"
        index = json.loads(path.read_text())
        parent = next(c for c in type(self).__mro__ if c.__module__.startswith("diffusers."))
        index["_class_name"], index["_safer_class_name"] = parent.__name__, type(self).__name__
        atomic_write_json(path, index, indent=2)

    # ------------------------------------------------------------------ __call__

    def _run_parent(self, args: dict, embeds: dict, **overrides: Any):
        call = {**args, **embeds, **overrides, "prompt": None, "return_dict": True}
        for key in ("prompt_2", "prompt_3", "negative_prompt", "negative_prompt_2", "negative_prompt_3"):
            call.pop(key, None)  # already encoded
        call["num_images_per_prompt"] = 1  # embeddings are already repeated per image
        return super().__call__(**call)

    def _check_call(self, safety_scale: float, negative_prompt_encoder: str) -> None:
        if not (
            isinstance(safety_scale, (int, float)) and math.isfinite(safety_scale) and 0 <= safety_scale <= 1
        ):
            raise ValueError(
                f"safety_scale must be a number in [0, 1] (0 = original encoders, 1 = safe encoders), got {safety_scale!r}"
            )
        if negative_prompt_encoder not in NEGATIVE_ENCODERS:
            raise ValueError(
                f"negative_prompt_encoder must be 'safe' or 'original', got {negative_prompt_encoder!r}"
            )

    def _safer_call(self, args: dict, **ours: Any):
        """One call at a time per pipeline: a branch swaps encoders in the slots and diffusers keeps scheduler state
        on the pipeline, so concurrent calls from several threads are serialised rather than silently mixed."""
        lock = self.__dict__.setdefault("_safer_call_lock", threading.RLock())
        with lock:
            return self._locked_call(args, **ours)

    def _locked_call(
        self,
        args: dict,
        *,
        safety_scale: float,
        return_original: bool,
        compare_in_one_batch: bool,
        negative_prompt_encoder: str,
    ):
        self._check_call(safety_scale, negative_prompt_encoder)
        return_dict = args.pop("return_dict", True)
        cfg = self._uses_cfg(args)
        written = cfg and any(args.get(name) for name in NEGATIVE_ARGS)  # a negative prompt the user wrote
        original_negative = negative_prompt_encoder == "original" and written and bool(self.safe_slots)
        if original_negative and not self.has_original:
            warnings.warn(
                "negative_prompt_encoder='original' needs the original text encoder(s), which this pipeline did not "
                "keep (keep_original=True): the safe encoders read the negative prompt, which can weaken it.",
                UserWarning,
                stacklevel=4,
            )
            original_negative = False
        need_original = safety_scale != 1 or return_original
        if need_original and self.safe_slots and not self.has_original:
            raise ValueError(
                f"safety_scale={safety_scale} / return_original={return_original} need the original text encoder(s), "
                "which this pipeline did not keep: load it with keep_original=True (or build it with from_pipe)."
            )
        if args.get("prompt_embeds") is not None:  # user-made embeddings: nothing to blend or compare
            if need_original and self.safe_slots:
                raise ValueError(
                    "safety_scale < 1 and return_original need the prompt text, not prompt_embeds"
                )
            out = super().__call__(**args, return_dict=True)
            return self._finish(out, None, None, return_dict)
        prompt = args.get("prompt")
        if prompt is None:
            raise ValueError("give a prompt (a string or a list of strings) or prompt_embeds")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        per_prompt = args.get("num_images_per_prompt") or 1

        with torch.no_grad():
            safe = self._encode_branch(prompts, args, cfg)
            original = (
                safe if not self.safe_slots else None
            )  # nothing swapped: the safe branch is the original
            if self.safe_slots and self.has_original:
                with self._branch("original"):
                    original = self._encode_branch(prompts, args, cfg)
        embeds = {}
        for key, value in safe.items():
            if key.startswith("negative") and original_negative:
                embeds[key] = original[key]
            else:
                embeds[key] = blend(original[key] if original else None, value, safety_scale)
        scores = (
            self._redirection(original, safe, prompts, args)
            if original is not None and self.safe_slots
            else None
        )

        if not return_original:
            return self._finish(self._run_parent(args, embeds), None, scores, return_dict)
        original_embeds = dict(original)
        batch = len(prompts) * per_prompt
        latents = args.pop("latents", None)
        if latents is None:
            latents = self._initial_latents(batch, args, embeds["prompt_embeds"].dtype)
        if compare_in_one_batch:  # one transformer batch: [safe | original], the same noise twice
            both = {k: torch.cat([embeds[k], original_embeds[k]]) for k in embeds}
            generator = args.pop("generator", None)
            if isinstance(generator, list):
                generator = generator + generator
            out = self._run_parent(args, both, latents=torch.cat([latents, latents]), generator=generator)
            out_safe = SaferPipelineOutput(images=out.images[:batch])
            out_orig = SaferPipelineOutput(images=out.images[batch:])
        else:  # two passes, lower peak memory
            out_safe = self._run_parent(args, embeds, latents=latents.clone())
            out_orig = self._run_parent(args, original_embeds, latents=latents.clone())
        return self._finish(out_safe, out_orig, scores, return_dict)

    def _redirection(self, original: dict, safe: dict, prompts: list[str], args: dict) -> list[float]:
        per_prompt = args.get("num_images_per_prompt") or 1
        orig_f, safe_f = (
            self._slot_features(original, prompts, args),
            self._slot_features(safe, prompts, args),
        )
        scores = torch.stack([cosine_scores(orig_f[s], safe_f[s]) for s in self.safe_slots]).amin(dim=0)
        return [float(x) for x in scores[::per_prompt]]

    def _finish(self, out, out_orig, scores, return_dict: bool):
        result = SaferPipelineOutput(
            images=out.images,
            original_images=out_orig.images if out_orig is not None else None,
            redirection_scores=scores,
        )
        if return_dict:
            return result
        return (result.images,) if out_orig is None else (result.images, result.original_images)

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
        with self._branch("original"):
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
