"""The encoders being trained: loading (transformers / open_clip / tiny), LoRA, and the frozen reference.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    CLIPImageProcessor,
    CLIPModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionModelWithProjection,
    PretrainedConfig,
)

from saferclip_diffusers.hub import explain_unavailable, is_local, require_local_dir

from .config import EncoderSettings, LoraSettings, TrainConfig


@dataclass
class Towers:
    text: CLIPTextModelWithProjection
    vision: CLIPVisionModelWithProjection | None
    tokenizer: CLIPTokenizer
    image_processor: CLIPImageProcessor | None
    source: dict[str, Any] = field(default_factory=dict)


def resolve_model_path(spec: str, what: str = "model") -> str:
    """``tiny:KIND`` -> the cached tiny model directory; a local path -> itself (it must exist); a hub id unchanged."""
    if spec.startswith("tiny:"):
        from saferclip_diffusers.tiny import tiny_model_dir

        return str(tiny_model_dir(spec.split(":", 1)[1]))
    if spec.startswith("package:"):  # methods hook: a model shipped inside a Python package
        from .backbones import package_model_dir

        return package_model_dir(spec.split(":", 1)[1])
    if is_local(spec):
        return str(require_local_dir(spec, what))
    return spec


def _weights_hint(path: str, subfolder: str | None, err: BaseException) -> str:
    folder = Path(path) / (subfolder or "")
    pickles = [p.name for p in folder.glob("*.bin")] if folder.is_dir() else []
    if pickles or "safetensors" in str(err):
        return (
            " It has no safetensors weights"
            + (f" (only {', '.join(sorted(pickles))})" if pickles else "")
            + ": set allow_pickle=true to load pickle weights (they can run code; the export is safetensors)."
        )
    return ""


def from_pretrained(cls, spec: str, path: str, allow_pickle: bool, what: str, **kwargs):
    """``cls.from_pretrained`` with errors that say which model, why, and what to do (never a bare traceback)."""
    try:
        return cls.from_pretrained(path, use_safetensors=not allow_pickle, **kwargs)
    except OSError as err:
        hint = _weights_hint(path, kwargs.get("subfolder"), err)
        if hint:
            raise ValueError(f"cannot load the {what} {spec!r}.{hint}") from err
        if is_local(path):
            raise ValueError(f"cannot load the {what} from {path!r}: {err}") from err
        raise explain_unavailable(
            spec, what, err, offline_alternative="--config tiny (random weights)"
        ) from err


def _split_clip(clip: CLIPModel) -> tuple[CLIPTextModelWithProjection, CLIPVisionModelWithProjection]:
    """The two towers of a ``CLIPModel`` as stand-alone models sharing its weights (no copy)."""
    text_cfg = clip.config.text_config
    text_cfg.projection_dim = clip.config.projection_dim
    vision_cfg = clip.config.vision_config
    vision_cfg.projection_dim = clip.config.projection_dim
    with torch.device("meta"):
        text = CLIPTextModelWithProjection(text_cfg)
        vision = CLIPVisionModelWithProjection(vision_cfg)
    text.text_model, text.text_projection = clip.text_model, clip.text_projection
    vision.vision_model, vision.visual_projection = clip.vision_model, clip.visual_projection
    return text.eval(), vision.eval()


def _model_type(path: str, subfolder: str | None, revision: str | None, spec: str | None = None) -> str:
    try:
        config, _ = PretrainedConfig.get_config_dict(path, subfolder=subfolder or "", revision=revision)
    except OSError as err:
        if is_local(path):
            where = Path(path) / (subfolder or "")
            raise FileNotFoundError(
                f"model folder {str(where)!r} has no config.json: not a transformers model "
                "(give the folder of a CLIP model, or its subfolder)"
            ) from err
        raise explain_unavailable(
            spec or path, "encoder model", err, offline_alternative="--config tiny (random weights)"
        ) from err
    return config.get("model_type", "")


def _load_vision(
    spec: str, revision: str | None, allow_pickle: bool
) -> tuple[CLIPVisionModelWithProjection, CLIPImageProcessor]:
    path = resolve_model_path(spec, "image model")
    clip = from_pretrained(CLIPModel, spec, path, allow_pickle, "image model", revision=revision)
    return _split_clip(clip)[1], CLIPImageProcessor.from_pretrained(path, revision=revision)


def load_towers(s: EncoderSettings, need_vision: bool, allow_pickle: bool = False) -> Towers:
    """Load the original (pre-training) towers of one configured encoder."""
    source = {"model": s.model, "backbone": s.backbone, "subfolder": s.subfolder, "revision": s.revision}
    if s.backbone == "open_clip":
        from .open_clip_convert import load_open_clip

        clip, tokenizer, processor = load_open_clip(s.model, s.pretrained)
        source["pretrained"] = s.pretrained
        text, vision = _split_clip(clip)
        return Towers(
            text, vision if need_vision else None, tokenizer, processor if need_vision else None, source
        )

    if s.backbone == "transformers-mean":  # methods hook: generic encoder with mean pooling (no image tower)
        from .backbones import load_mean_pooled

        if need_vision:
            raise ValueError(
                f"encoder {s.slot}: backbone transformers-mean is text-only; the data must have no images"
            )
        text, tokenizer = load_mean_pooled(
            resolve_model_path(s.model),
            s.subfolder,
            s.revision,
            s.tokenizer and resolve_model_path(s.tokenizer),
            s.tokenizer_subfolder,
            allow_pickle,
        )
        return Towers(text, None, tokenizer, None, source)
    path = resolve_model_path(s.model, "encoder model")
    model_type = _model_type(path, s.subfolder, s.revision, s.model)
    vision = processor = None
    if model_type == "clip":
        clip = from_pretrained(
            CLIPModel,
            s.model,
            path,
            allow_pickle,
            "encoder model",
            subfolder=s.subfolder or "",
            revision=s.revision,
        )
        text, vision = _split_clip(clip)
        if need_vision:
            processor = CLIPImageProcessor.from_pretrained(
                s.image_model and resolve_model_path(s.image_model) or path, revision=s.revision
            )
        else:
            vision = None
    elif model_type == "clip_text_model":
        text, info = from_pretrained(
            CLIPTextModelWithProjection,
            s.model,
            path,
            allow_pickle,
            "encoder model",
            subfolder=s.subfolder or "",
            revision=s.revision,
            output_loading_info=True,
        )
        if "text_projection.weight" in info["missing_keys"]:
            raise ValueError(
                f"{s.model} ({s.subfolder or 'root'}) has no text_projection (a CLIPTextModel checkpoint): the losses need "
                "the projected embedding. Point `model` at the full CLIP model instead (for SD 1.x: "
                "openai/clip-vit-large-patch14)."
            )
        text = text.eval()
    else:
        raise ValueError(
            f"{s.model}: expected a CLIP model or CLIP text model, found model_type {model_type!r}"
        )
    if need_vision and vision is None:
        if not s.image_model:
            raise ValueError(
                f"encoder {s.slot}: the data has images but {s.model} has no image tower; set image_model "
                "(e.g. laion/CLIP-ViT-bigG-14-laion2B-39B-b160k for SDXL's text_encoder_2)"
            )
        vision, processor = _load_vision(s.image_model, None, allow_pickle)
        source["image_model"] = s.image_model
    tok_path = resolve_model_path(s.tokenizer) if s.tokenizer else path
    tok_sub = s.tokenizer_subfolder
    if tok_sub is None and not s.tokenizer and s.subfolder in ("text_encoder", "text_encoder_2"):
        tok_sub = s.subfolder.replace("text_encoder", "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(tok_path, subfolder=tok_sub or "", revision=s.revision)
    if vision is not None and vision.config.projection_dim != text.config.projection_dim:
        raise ValueError(
            f"encoder {s.slot}: image tower projects to {vision.config.projection_dim}, text to "
            f"{text.config.projection_dim}; they must come from the same CLIP model"
        )
    return Towers(text, vision, tokenizer, processor, source)


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
