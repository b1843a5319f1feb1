"""The encoders being trained: LoRA, the trainable module, the text encoding, and the frozen reference (loading: towers.py).

Each configured encoder becomes an :class:`EncoderBundle`: a trainable text tower
(``CLIPTextModelWithProjection``, LoRA-wrapped by peft or fully trainable), optionally a trainable image tower
(two-tower mode), the tokenizer and image processor. The frozen reference ``T0``/``V0`` is never the live
model: with LoRA it is the same network with its adapters disabled (peft ``disable_adapter()``), with full
fine-tuning a separately loaded copy (:func:`reference_towers`). Safe-CLIP's released trainer used the live,
adapter-carrying model as its reference, so its "frozen" targets drifted; this module exists to not do that.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from .config import EncoderSettings, LoraSettings, TrainConfig
from .towers import Towers, load_towers, resolve_model_path  # noqa: F401 - re-exported (loading lives in towers.py)


def add_lora(model: nn.Module, lora: LoraSettings, targets: list[str]) -> nn.Module:
    """Wrap ``model`` with peft LoRA adapters on ``targets``; only the adapter weights stay trainable."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(targets), bias="none"
    )
    return get_peft_model(model, config)


def is_lora(model: nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


# ------------------------------------------------------------------------------------------- encoding


def eos_positions(input_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """Index of the first end-of-text token per row (where CLIP pools)."""
    return (input_ids == eos_token_id).int().argmax(dim=-1)


def pool_hidden(states: torch.Tensor, input_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """Mean of the token states from the first token after BOS up to and including the end-of-text token."""
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    eos = eos_positions(input_ids, eos_token_id).unsqueeze(1)
    mask = ((positions >= 1) & (positions <= eos)).to(states.dtype).unsqueeze(-1)
    return (states * mask).sum(1) / mask.sum(1).clamp_min(1)


def encode_text(
    model: nn.Module, input_ids: torch.Tensor, eos_token_id: int, hidden_layer: int | str | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Projected pooled embedding (``text_embeds``) and, if asked, the pooled token states of ``hidden_layer``."""
    want_states = hidden_layer is not None and hidden_layer != "last"
    out = model(input_ids=input_ids, output_hidden_states=want_states)
    if hidden_layer is None:
        return out.text_embeds, None
    states = out.last_hidden_state if hidden_layer == "last" else out.hidden_states[int(hidden_layer)]
    return out.text_embeds, pool_hidden(states, input_ids, eos_token_id)


class TrainableEncoders(nn.Module):
    """All trainable towers in one module, so accelerate/DDP wrap and synchronise them together.

    ``forward(text={slot: input_ids}, images={slot: pixel_values})`` returns, per slot, ``text`` embeddings,
    ``hidden`` pooled token states (or None) and ``image`` embeddings (or None).
    """

    def __init__(
        self,
        texts: dict[str, nn.Module],
        visions: dict[str, nn.Module],
        eos: dict[str, int],
        hidden_layers: dict[str, int | str | None],
    ):
        super().__init__()
        self.text = nn.ModuleDict(texts)
        self.vision = nn.ModuleDict(visions)
        self.eos = dict(eos)
        self.hidden_layers = dict(hidden_layers)

    def forward(
        self, text: dict[str, torch.Tensor], images: dict[str, torch.Tensor] | None = None
    ) -> dict[str, dict]:
        out = {}
        for slot, ids in text.items():
            embeds, hidden = encode_text(self.text[slot], ids, self.eos[slot], self.hidden_layers[slot])
            image = None
            if images and slot in images and slot in self.vision:
                image = self.vision[slot](pixel_values=images[slot]).image_embeds
            out[slot] = {"text": embeds, "hidden": hidden, "image": image}
        return out


@dataclass
class EncoderBundle:
    settings: EncoderSettings
    towers: Towers
    text: nn.Module
    vision: nn.Module | None
    frozen_vision: nn.Module | None

    @property
    def slot(self) -> str:
        return self.settings.slot

    @property
    def eos_token_id(self) -> int:
        return int(self.towers.tokenizer.eos_token_id)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Token ids padded to the longest caption of the batch (truncated at the model's 77 tokens).

        CLIP's text transformer is causal and pools at the end-of-text token, so the pooled embedding and the
        token states up to end-of-text equal those of the pipelines' pad-to-77 inputs, at a fraction of the cost.
        """
        tok = self.towers.tokenizer
        return tok(
            list(texts),
            padding="longest",
            truncation=True,
            max_length=tok.model_max_length,
            return_tensors="pt",
        ).input_ids

    def pixel_values(self, paths: list[str]) -> torch.Tensor:
        from PIL import Image

        if self.towers.image_processor is None:
            raise RuntimeError(f"encoder {self.slot} was loaded without an image processor")
        images = []
        for p in paths:
            with Image.open(p) as im:
                images.append(im.convert("RGB"))
        return self.towers.image_processor(images=images, return_tensors="pt").pixel_values


def build_encoder(s: EncoderSettings, cfg: TrainConfig, has_images: bool) -> EncoderBundle:
    """Load one encoder and make it trainable (LoRA or full) as the config says."""
    towers = load_towers(s, need_vision=has_images, allow_pickle=cfg.allow_pickle)
    # loading may consume the global random generator (building a tiny model on first use does): re-seed so the
    # LoRA initialisation depends on the config alone, not on what the loaders did
    torch.manual_seed(cfg.seed)
    text, vision = towers.text, None
    for module in (towers.text, towers.vision):
        if module is not None:
            module.requires_grad_(False)
    if cfg.finetune == "lora":
        text = add_lora(towers.text, cfg.lora, cfg.lora.text_targets)
        if cfg.train_vision and towers.vision is not None:
            vision = add_lora(towers.vision, cfg.lora, cfg.lora.vision_targets)
    else:
        text.requires_grad_(True)
        if cfg.train_vision and towers.vision is not None:
            vision = towers.vision.requires_grad_(True)
    frozen_vision = towers.vision if (towers.vision is not None and vision is None) else None
    return EncoderBundle(s, towers, text, vision, frozen_vision)


@contextlib.contextmanager
def reference_towers(bundle: EncoderBundle, cfg: TrainConfig) -> Iterator[tuple[nn.Module, nn.Module | None]]:
    """The frozen originals ``(T0, V0)`` of ``bundle`` in eval mode, never the live trained weights.

    LoRA: the live networks with their adapters disabled. Full fine-tuning: freshly loaded copies.
    """
    if cfg.finetune == "lora":
        with contextlib.ExitStack() as stack:
            modes = []
            for m in (bundle.text, bundle.vision):
                if m is not None:
                    modes.append((m, m.training))
                    m.eval()
                    stack.enter_context(m.disable_adapter())
            try:
                vision = bundle.vision if bundle.vision is not None else bundle.frozen_vision
                with torch.no_grad():
                    yield bundle.text, vision
            finally:
                for m, mode in modes:
                    m.train(mode)
    else:
        fresh = load_towers(
            bundle.settings, need_vision=bundle.towers.vision is not None, allow_pickle=cfg.allow_pickle
        )
        vision = fresh.vision if fresh.vision is not None else bundle.frozen_vision
        with torch.no_grad():
            yield fresh.text.requires_grad_(False), vision
        del fresh
