"""Textual inversion and text-encoder LoRA on a Safer pipeline: what the user loads reaches both encoders.

"Plain diffusers with this LoRA / this embedding" means the original encoder *with* the user's LoRA or new token
rows. So after diffusers loads them into the slot's (safe) encoder, the same adapter or rows are mirrored onto
``original_<slot>``: ``safety_scale=0`` and compare-mode originals then equal plain diffusers with the same LoRA
or embedding, and ``set_adapters`` / ``cross_attention_kwargs={"scale": ...}`` act on both text encoders.
"""

from __future__ import annotations

from typing import Any

import torch


def mirror_token_rows(source: torch.nn.Module, target: torch.nn.Module) -> bool:
    """Give ``target`` the token-embedding rows ``source`` has beyond ``target``'s vocabulary (textual inversion)."""
    src = source.get_input_embeddings().weight
    n_old = target.get_input_embeddings().weight.shape[0]
    if src.shape[0] <= n_old:
        return False
    target.resize_token_embeddings(src.shape[0], mean_resizing=False)  # rows overwritten below
    with torch.no_grad():
        dst = target.get_input_embeddings().weight
        dst[n_old:] = src[n_old:].to(device=dst.device, dtype=dst.dtype)
    return True


def mirror_lora_adapter(source: torch.nn.Module, target: torch.nn.Module, adapter_name: str) -> None:
    """Inject ``source``'s PEFT adapter ``adapter_name`` (config and weights) into ``target``."""
    from peft import get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict

    config = source.peft_config[adapter_name]
    inject_adapter_in_model(config, target, adapter_name=adapter_name)
    state = get_peft_model_state_dict(source, adapter_name=adapter_name)
    result = set_peft_model_state_dict(target, state, adapter_name=adapter_name)
    missing = [k for k in getattr(result, "unexpected_keys", []) if "lora" in k]
    if missing:
        raise RuntimeError(
            f"could not mirror LoRA adapter {adapter_name!r} onto the original encoder: {missing[:3]}"
        )
    if not hasattr(target, "peft_config"):
        target.peft_config = {}
    target.peft_config[adapter_name] = config
    target._hf_peft_config_loaded = True


class SaferAdaptersMixin:
    """Overrides of diffusers' loader-mixin methods that keep ``original_<slot>`` in step with the slot."""

    def load_textual_inversion(self, *args: Any, **kwargs: Any) -> None:
        """As diffusers' ``load_textual_inversion``; the original encoders get the same new token rows."""
        super().load_textual_inversion(*args, **kwargs)
        for slot in self.safe_slots:
            original = self.original_encoder(slot)
            if original is not None:
                mirror_token_rows(getattr(self, slot), original)

    def load_lora_weights(self, *args: Any, **kwargs: Any) -> None:
        """As diffusers' ``load_lora_weights``; a text-encoder LoRA is put on the original encoders too."""
        super().load_lora_weights(*args, **kwargs)
        for slot in self.safe_slots:
            safe, original = getattr(self, slot), self.original_encoder(slot)
            if original is None:
                continue
            for name in set(getattr(safe, "peft_config", {})) - set(getattr(original, "peft_config", {})):
                mirror_lora_adapter(safe, original, name)

    @property
    def _lora_loadable_modules(self) -> list[str]:
        """The parent's, plus each loaded ``original_<slot>``, so ``set_adapters``, ``fuse_lora``, ``unload`` reach it."""
        parent = list(super()._lora_loadable_modules)
        return parent + [
            f"original_{slot}"
            for slot in self.safe_slots
            if getattr(self, f"original_{slot}", None) is not None
        ]

    def fuse_lora(self, components: list[str] | None = None, **kwargs: Any) -> None:
        """As diffusers' ``fuse_lora``; fusing a slot fuses its loaded original too."""
        super().fuse_lora(components=self._with_originals(components, "fuse_lora"), **kwargs)

    def unfuse_lora(self, components: list[str] | None = None, **kwargs: Any) -> None:
        """As diffusers' ``unfuse_lora``; unfusing a slot unfuses its loaded original too."""
        super().unfuse_lora(components=self._with_originals(components, "unfuse_lora"), **kwargs)

    def _with_originals(self, components: list[str] | None, method: str) -> list[str]:
        import inspect

        if components is None:
            components = inspect.signature(getattr(super(), method)).parameters["components"].default
        kept = [slot for slot in self.safe_slots if getattr(self, f"original_{slot}", None) is not None]
        return list(components) + [
            f"original_{slot}" for slot in kept if slot in components and f"original_{slot}" not in components
        ]

    def set_adapters(self, adapter_names, adapter_weights=None) -> None:
        """As diffusers' ``set_adapters``; per-component weights given for a slot apply to its original too."""
        kept = [slot for slot in self.safe_slots if getattr(self, f"original_{slot}", None) is not None]
        super().set_adapters(adapter_names, _mirror_weights(adapter_weights, kept))


def _mirror_weights(weights: Any, slots: list[str]) -> Any:
    if isinstance(weights, list):
        return [_mirror_weights(w, slots) for w in weights]
    if isinstance(weights, dict):
        weights = dict(weights)
        for slot in slots:
            if slot in weights:
                weights.setdefault(f"original_{slot}", weights[slot])
    return weights
