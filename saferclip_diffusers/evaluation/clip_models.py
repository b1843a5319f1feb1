"""Load any CLIP, original or safe, behind one interface: L2-normalised projected text and image embeddings.

A CLIP is named by a spec string:

- a transformers ``CLIPModel`` hub id or directory, e.g. ``openai/clip-vit-large-patch14``;
- an open_clip model: ``hf-hub:ORG/NAME``, ``local-dir:/path`` (or a directory holding only
  ``open_clip_config.json`` + weights), or ``open_clip:ARCH/PRETRAINED`` (a built-in architecture and a pretrained
  tag or checkpoint file, e.g. ``open_clip:ViT-B-32/laion2b_s34b_b79k``).

The *safe* variant of a CLIP is

- the same CLIP with its text tower replaced by a safe text encoder (a hub id, a training export, a diffusers
  layout or a bare ``CLIPTextModel``, resolved by :func:`saferclip_diffusers.encoders.load_safe_text_encoder`).
  Its pooled output goes through the original CLIP's text projection (a ``CLIPTextModelWithProjection``, e.g. an
  SDXL ``text_encoder_2``, keeps its own), and it reads the original CLIP's tokens; or
- a full safe CLIP (Safe-CLIP and SafeR-CLIP release both towers as a ``CLIPModel``): ``towers="both"`` uses both
  of its towers, ``towers="text"`` only its text tower beside the original image tower.

Weights load from safetensors only unless ``allow_pickle=True`` (open_clip's own loader is used with
``weights_only=True`` when pickle is allowed).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from .. import _compat

_compat.patch_cpu_torchvision()

from transformers import (  # noqa: E402
    AutoImageProcessor,
    AutoTokenizer,
    CLIPModel,
    CLIPTextModel,
    CLIPTextModelWithProjection,
)

from ..encoders import PICKLE_SUFFIXES, PickleCheckpointError, load_safe_text_encoder  # noqa: E402

OPEN_CLIP_PREFIX = "open_clip:"
OPEN_CLIP_SCHEMAS = ("hf-hub:", "local-dir:", OPEN_CLIP_PREFIX)
TOWERS = ("auto", "text", "both")
HUB_KEYS = ("cache_dir", "token", "revision", "local_files_only")

Tokenize = Callable[[list[str]], dict[str, torch.Tensor]]
ImageLike = Image.Image | str | os.PathLike


# ----------------------------------------------------------------------------------------------- devices


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``auto`` is float16 on CUDA and float32 elsewhere."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose auto, {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


# ----------------------------------------------------------------------------------------------- towers


@dataclass
class TextTower:
    """Texts -> projected (not normalised) embeddings. ``source`` names where the weights came from."""

    source: str
    tokenize: Tokenize
    forward: Callable[[dict[str, torch.Tensor]], torch.Tensor]
    modules: list[torch.nn.Module]
    dim: int


@dataclass
class ImageTower:
    """Pixel tensors -> projected (not normalised) embeddings; ``preprocess`` maps one RGB PIL image to pixels."""

    source: str
    preprocess: Callable[[Image.Image], torch.Tensor]
    forward: Callable[[torch.Tensor], torch.Tensor]
    modules: list[torch.nn.Module]
    dim: int


def hf_tokenize(tokenizer: Any, max_positions: int) -> Tokenize:
    max_length = min(int(tokenizer.model_max_length), max_positions)

    def tokenize(texts: list[str]) -> dict[str, torch.Tensor]:
        return dict(tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"))

    return tokenize


def hf_text_tower(source: str, encoder: torch.nn.Module, tokenize: Tokenize, projection: torch.nn.Linear | None) -> TextTower:
    """A transformers CLIP text tower: ``CLIPTextModel`` + a projection, or ``CLIPTextModelWithProjection``."""
    if isinstance(encoder, CLIPTextModelWithProjection):
        body, projection = encoder.text_model, encoder.text_projection
    elif isinstance(encoder, CLIPTextModel):
        body = encoder
    else:
        raise TypeError(f"expected a CLIPTextModel or CLIPTextModelWithProjection, got {type(encoder).__name__}")
    if projection is None:
        raise ValueError(f"{source}: a CLIPTextModel has no text projection and none was given")
    if body.config.hidden_size != projection.in_features:
        raise ValueError(
            f"{source}: the text encoder is {body.config.hidden_size} wide but the text projection expects "
            f"{projection.in_features}; the safe text encoder must come from the same CLIP architecture"
        )

    def forward(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return projection(body(**inputs).pooler_output)

    return TextTower(source, tokenize, forward, [body, projection], projection.out_features)


def _hf_image_tower(source: str, model: CLIPModel, processor: Any) -> ImageTower:
    def preprocess(image: Image.Image) -> torch.Tensor:
        return processor(images=image, return_tensors="pt")["pixel_values"][0]

    def forward(pixels: torch.Tensor) -> torch.Tensor:
        return model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)

    return ImageTower(source, preprocess, forward, [model.vision_model, model.visual_projection], model.config.projection_dim)


# ----------------------------------------------------------------------------------------------- encoder


class _ImageItems(torch.utils.data.Dataset):
    def __init__(self, items: Sequence[ImageLike], preprocess: Callable[[Image.Image], torch.Tensor]):
        self.items, self.preprocess = items, preprocess

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> torch.Tensor:
        item = self.items[i]
        if isinstance(item, Image.Image):
            return self.preprocess(item.convert("RGB"))
        try:
            with Image.open(item) as im:
                image = im.convert("RGB")
        except (OSError, ValueError) as err:
            raise ValueError(f"could not read image {item}: {err}") from err
        return self.preprocess(image)


@dataclass
class ClipEncoder:
    """A CLIP (text tower + image tower) returning L2-normalised float32 CPU embeddings."""

    name: str
    text: TextTower
    image: ImageTower
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    open_clip_model: Any = field(default=None, repr=False)  # kept for text-tower replacement (projection, vocab)
    open_clip_tokenizer: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.text.dim != self.image.dim:
            raise ValueError(
                f"{self.name}: text embeddings have {self.text.dim} dims but image embeddings {self.image.dim}; "
                "the text and image towers come from different CLIP architectures"
            )
        for module in self.text.modules + self.image.modules:
            module.to(self.device, self.dtype).eval().requires_grad_(False)

    @property
    def dim(self) -> int:
        return self.text.dim

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "text_tower": self.text.source, "image_tower": self.image.source}

    def shares_image_tower(self, other: ClipEncoder) -> bool:
        """Whether ``other`` embeds images with the very same modules (image embeddings can be reused)."""
        return self.image is other.image or [id(m) for m in self.image.modules] == [id(m) for m in other.image.modules]

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str], batch_size: int = 256, desc: str | None = None) -> torch.Tensor:
        texts = [str(t) for t in texts]
        out = []
        for start in tqdm(range(0, len(texts), batch_size), desc=desc or f"{self.name}: text", unit="batch",
                          disable=len(texts) <= batch_size):
            inputs = {k: v.to(self.device) for k, v in self.text.tokenize(texts[start : start + batch_size]).items()}
            out.append(F.normalize(self.text.forward(inputs).float(), dim=-1).cpu())
        return torch.cat(out) if out else torch.empty(0, self.dim)

    @torch.inference_mode()
    def encode_image(
        self, images: Sequence[ImageLike], batch_size: int = 64, num_workers: int = 0, desc: str | None = None
    ) -> torch.Tensor:
        loader = torch.utils.data.DataLoader(
            _ImageItems(list(images), self.image.preprocess), batch_size=batch_size, num_workers=num_workers
        )
        out = []
        for pixels in tqdm(loader, desc=desc or f"{self.name}: images", unit="batch", disable=len(loader) <= 1):
            out.append(F.normalize(self.image.forward(pixels.to(self.device, self.dtype)).float(), dim=-1).cpu())
        return torch.cat(out) if out else torch.empty(0, self.dim)


def cached_embeddings(path: str | os.PathLike | None, fingerprint: Any, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``compute()``, saved to (and on a rerun read back from) ``path`` when its fingerprint matches.

    The fingerprint is any JSON-able description of what was embedded and by which model; a changed model or
    item list recomputes. Files are safetensors written atomically, so an interrupted run resumes cleanly.
    """
    if path is None:
        return compute()
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = Path(path)
    key = hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()
    if path.is_file():
        with safe_open(str(path), "pt") as f:
            stored = (f.metadata() or {}).get("fingerprint")
        if stored == key:
            return load_file(str(path))["embeddings"]
    embeddings = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        save_file({"embeddings": embeddings.contiguous()}, tmp, metadata={"fingerprint": key})
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return embeddings


# ----------------------------------------------------------------------------------------------- loading


def _hub(kwargs: dict[str, Any]) -> dict[str, Any]:
    unknown = set(kwargs) - set(HUB_KEYS)
    if unknown:
        raise TypeError(f"unexpected keyword arguments {sorted(unknown)}; hub options are {HUB_KEYS}")
    return {k: v for k, v in kwargs.items() if v is not None}


def is_open_clip_spec(spec: str | os.PathLike) -> bool:
    """``hf-hub:``, ``local-dir:``, ``open_clip:`` specs, or a directory with only an open_clip config."""
    spec = str(spec)
    if spec.startswith(OPEN_CLIP_SCHEMAS):
        return True
    path = Path(spec).expanduser()
    return path.is_dir() and (path / "open_clip_config.json").is_file() and not (path / "config.json").is_file()


def hf_model_type(spec: str | os.PathLike, **hub: Any) -> str | None:
    """``model_type`` of the ``config.json`` at the top of a hub id or directory (None when there is none)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        config = path / "config.json"
    elif path.exists() or str(spec).startswith((".", "/", "~")):
        return None
    else:
        from huggingface_hub import hf_hub_download

        try:
            config = Path(hf_hub_download(str(spec), "config.json", **_hub(hub)))
        except Exception:  # noqa: BLE001 - no top-level config: a diffusers layout or a bad id (reported later)
            return None
    if not config.is_file():
        return None
    return json.loads(config.read_text()).get("model_type")


def _refuse_pickle(path: str | os.PathLike, what: str, allow_pickle: bool) -> None:
    if str(path).endswith(PICKLE_SUFFIXES) and not allow_pickle:
        raise PickleCheckpointError(
            f"{what} resolves to the pickle checkpoint {path}; loading pickle can run arbitrary code. Use a "
            "safetensors checkpoint, or pass allow_pickle=True (--allow-pickle) if you trust its source."
        )


def _load_hf_clip(spec: str, device: torch.device, dtype: torch.dtype, allow_pickle: bool,
                  fallback: ClipEncoder | None = None, **hub: Any) -> ClipEncoder:
    try:
        model = CLIPModel.from_pretrained(spec, use_safetensors=not allow_pickle or None, **hub)
    except OSError as err:
        if not allow_pickle and "safetensors" in str(err):
            raise PickleCheckpointError(
                f"{spec!r} has no safetensors weights; pickle weights are refused. Pass allow_pickle=True "
                "(--allow-pickle) if you trust its source."
            ) from err
        raise
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec, **hub)
        processor = AutoImageProcessor.from_pretrained(spec, **hub)
    except (OSError, ValueError):
        if fallback is None:
            raise
        text = hf_text_tower(spec, model.text_model, fallback.text.tokenize, model.text_projection)
        image = ImageTower(spec, fallback.image.preprocess, _hf_image_tower(spec, model, None).forward,
                           [model.vision_model, model.visual_projection], model.config.projection_dim)
        return ClipEncoder(spec, text, image, device, dtype)
    tokenize = hf_tokenize(tokenizer, model.config.text_config.max_position_embeddings)
    text = hf_text_tower(spec, model.text_model, tokenize, model.text_projection)
    return ClipEncoder(spec, text, _hf_image_tower(spec, model, processor), device, dtype)


def _open_clip_checkpoint(spec: str, allow_pickle: bool, cache_dir: str | None) -> tuple[str, str | None]:
    """(model name for open_clip, pretrained tag or file), after checking the checkpoint format."""
    import open_clip

    if spec.startswith("local-dir:") or not spec.startswith(OPEN_CLIP_SCHEMAS):
        folder = Path(spec.removeprefix("local-dir:")).expanduser()
        if not (folder / "open_clip_config.json").is_file():
            raise FileNotFoundError(f"no open_clip_config.json in {folder}")
        weights = sorted(p.name for p in folder.iterdir() if p.suffix in (".safetensors",) + PICKLE_SUFFIXES)
        if not weights:
            raise FileNotFoundError(f"no weights in {folder}: expected open_clip_model.safetensors")
        if not any(w.endswith(".safetensors") for w in weights):
            _refuse_pickle(folder / weights[0], spec, allow_pickle)
        return f"local-dir:{folder}", None
    if spec.startswith("hf-hub:"):
        from open_clip.pretrained import download_pretrained_from_hf

        path = download_pretrained_from_hf(spec.removeprefix("hf-hub:"), cache_dir=cache_dir)  # prefers safetensors
        _refuse_pickle(path, spec, allow_pickle)
        return spec, None
    name, _, pretrained = spec.removeprefix(OPEN_CLIP_PREFIX).partition("/")
    if not pretrained:
        raise ValueError(
            f"{spec!r} names no pretrained weights (it would be a random model); use open_clip:{name}/TAG with a tag "
            f"from open_clip.list_pretrained_tags_by_model({name!r}), or open_clip:{name}//path/to/weights.safetensors"
        )
    if Path(pretrained).expanduser().is_file():
        _refuse_pickle(pretrained, spec, allow_pickle)
        return name, str(Path(pretrained).expanduser())
    cfg = open_clip.get_pretrained_cfg(name, pretrained)
    if not cfg:
        raise ValueError(
            f"open_clip has no pretrained tag {pretrained!r} for {name!r} (and it is not a file); "
            f"tags: {open_clip.list_pretrained_tags_by_model(name)}"
        )
    _refuse_pickle(open_clip.download_pretrained(cfg, cache_dir=cache_dir), spec, allow_pickle)
    return name, pretrained


def _load_open_clip(spec: str, device: torch.device, dtype: torch.dtype, allow_pickle: bool,
                    cache_dir: str | None = None) -> ClipEncoder:
    import open_clip

    name, pretrained = _open_clip_checkpoint(spec, allow_pickle, cache_dir)
    model, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=pretrained, cache_dir=cache_dir, weights_only=True
    )
    tokenizer = open_clip.get_tokenizer(name, cache_dir=cache_dir)

    def tokenize(texts: list[str]) -> dict[str, torch.Tensor]:
        return {"text": tokenizer(list(texts))}

    dim = int(model.visual.output_dim)
    text = TextTower(spec, tokenize, lambda inputs: model.encode_text(inputs["text"]), [model], dim)
    image = ImageTower(spec, preprocess, model.encode_image, [model], dim)
    return ClipEncoder(spec, text, image, device, dtype, open_clip_model=model, open_clip_tokenizer=tokenizer)


def load_clip(
    spec: str | os.PathLike,
    *,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    allow_pickle: bool = False,
    **hub: Any,
) -> ClipEncoder:
    """Load a full CLIP (transformers ``CLIPModel`` or open_clip) from a spec (see the module docstring)."""
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    hub = _hub(hub)
    spec = str(spec)
    if is_open_clip_spec(spec):
        return _load_open_clip(spec, device, dtype, allow_pickle, hub.get("cache_dir"))
    if spec.startswith(("/", ".", "~")) and not Path(spec).expanduser().exists():
        raise FileNotFoundError(f"CLIP directory does not exist: {spec}")
    model_type = hf_model_type(spec, **hub)
    if Path(spec).expanduser().is_dir() and model_type != "clip":
        raise ValueError(
            f"{spec} is not a full CLIP: expected a config.json with model_type 'clip' (CLIPModel) or an "
            f"open_clip_config.json; found model_type {model_type!r}"
        )
    return _load_hf_clip(spec, device, dtype, allow_pickle, **hub)


def _original_projection(original: ClipEncoder) -> tuple[torch.nn.Linear, Tokenize, int]:
    """The original CLIP's text projection as a Linear layer, its tokenizer and its vocabulary size."""
    model = original.open_clip_model
    if model is None:  # transformers: [body, projection]
        body, projection = original.text.modules
        return projection, original.text.tokenize, body.config.vocab_size
    proj = getattr(model, "text_projection", None)
    if proj is None or getattr(model, "text_pool_type", "argmax") not in ("argmax", "eos"):
        raise ValueError(
            f"{original.name}: this open_clip model has no CLIP text transformer (pooled at end-of-text with a "
            "projection) that a transformers CLIP text encoder could replace"
        )
    if isinstance(proj, torch.nn.Linear):
        linear = proj
    else:
        linear = torch.nn.Linear(proj.shape[0], proj.shape[1], bias=False)
        linear.weight.data.copy_(proj.detach().T.float())
    tokenizer = original.open_clip_tokenizer

    def tokenize(texts: list[str]) -> dict[str, torch.Tensor]:
        return {"input_ids": tokenizer(list(texts))}

    return linear, tokenize, int(model.vocab_size)


def load_safe_clip(
    original: ClipEncoder,
    safe: str | os.PathLike | torch.nn.Module | ClipEncoder,
    *,
    towers: str = "auto",
    slot: str = "text_encoder",
    allow_pickle: bool = False,
    **hub: Any,
) -> ClipEncoder:
    """The safe variant of ``original``: its text tower replaced by ``safe``, or the full safe CLIP ``safe``.

    ``towers``: ``auto`` (both towers of a full safe CLIP, else the text tower), ``text`` or ``both``.
    ``slot``: which text encoder of a diffusers-layout export to use (``text_encoder_2`` = SDXL's bigG, which
    keeps its own projection).
    """
    if towers not in TOWERS:
        raise ValueError(f"towers must be one of {TOWERS}, got {towers!r}")
    hub = _hub(hub)
    full: ClipEncoder | None = None
    if isinstance(safe, ClipEncoder):
        full = safe
    elif isinstance(safe, (str, os.PathLike)) and (is_open_clip_spec(safe) or hf_model_type(safe, **hub) == "clip"):
        full = (_load_open_clip(str(safe), original.device, original.dtype, allow_pickle, hub.get("cache_dir"))
                if is_open_clip_spec(safe)
                else _load_hf_clip(str(safe), original.device, original.dtype, allow_pickle, original, **hub))
    if full is not None and towers in ("auto", "both"):
        return ClipEncoder(full.name, full.text, full.image, original.device, original.dtype)
    if full is not None:  # text tower only
        return ClipEncoder(f"{full.name} (text) + {original.name} (image)", full.text, original.image,
                           original.device, original.dtype)
    if towers == "both":
        raise ValueError(f"{safe!r} holds a text encoder only; towers='both' needs a full CLIP (text and image)")
    encoder = load_safe_text_encoder(safe, slot=slot, allow_pickle=allow_pickle, **hub)
    projection, tokenize, vocab_size = _original_projection(original)
    if encoder.config.vocab_size < vocab_size:
        raise ValueError(
            f"safe text encoder {safe!r} has {encoder.config.vocab_size} tokens but {original.name}'s tokenizer "
            f"produces ids up to {vocab_size - 1}: it was trained for another CLIP"
        )
    name = safe if isinstance(safe, (str, os.PathLike)) else type(safe).__name__
    text = hf_text_tower(f"{name}", encoder, tokenize, projection)
    return ClipEncoder(f"{original.name} + safe text {name}", text, original.image, original.device, original.dtype)


def load_clip_pair(
    model: str | os.PathLike,
    safe: str | os.PathLike | torch.nn.Module,
    *,
    towers: str = "auto",
    slot: str = "text_encoder",
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    allow_pickle: bool = False,
    **hub: Any,
) -> tuple[ClipEncoder, ClipEncoder]:
    """(original, safe) for a CLIP spec and a safe encoder or safe CLIP spec."""
    original = load_clip(model, device=device, dtype=dtype, allow_pickle=allow_pickle, **hub)
    return original, load_safe_clip(original, safe, towers=towers, slot=slot, allow_pickle=allow_pickle, **hub)


DEFAULT_CLIP = "openai/clip-vit-large-patch14"
