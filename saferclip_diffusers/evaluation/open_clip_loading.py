"""open_clip models as :class:`~.clip_models.ClipEncoder`: spec recognition, checkpoint checks and loading.

Specs: ``hf-hub:ORG/NAME``, ``local-dir:/path`` (or a directory holding only ``open_clip_config.json`` + weights)
and ``open_clip:ARCH/PRETRAINED`` (see :mod:`.clip_loading`). Pickle checkpoints are refused unless
``allow_pickle=True``; open_clip's loader then runs with ``weights_only=True``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..encoders import PICKLE_SUFFIXES, PickleCheckpointError
from .clip_models import ClipEncoder, ImageTower, TextTower, Tokenize

OPEN_CLIP_PREFIX = "open_clip:"
OPEN_CLIP_SCHEMAS = ("hf-hub:", "local-dir:", OPEN_CLIP_PREFIX)


def is_open_clip_spec(spec: str | os.PathLike) -> bool:
    """``hf-hub:``, ``local-dir:``, ``open_clip:`` specs, or a directory with only an open_clip config."""
    spec = str(spec)
    if spec.startswith(OPEN_CLIP_SCHEMAS):
        return True
    path = Path(spec).expanduser()
    return (
        path.is_dir() and (path / "open_clip_config.json").is_file() and not (path / "config.json").is_file()
    )


def refuse_pickle(path: str | os.PathLike, what: str, allow_pickle: bool) -> None:
    if str(path).endswith(PICKLE_SUFFIXES) and not allow_pickle:
        raise PickleCheckpointError(
            f"{what} resolves to the pickle checkpoint {path}; loading pickle can run arbitrary code. Use a "
            "safetensors checkpoint, or pass allow_pickle=True (--allow-pickle) if you trust its source."
        )


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
            refuse_pickle(folder / weights[0], spec, allow_pickle)
        return f"local-dir:{folder}", None
    if spec.startswith("hf-hub:"):
        from open_clip.pretrained import download_pretrained_from_hf

        path = download_pretrained_from_hf(
            spec.removeprefix("hf-hub:"), cache_dir=cache_dir
        )  # prefers safetensors
        refuse_pickle(path, spec, allow_pickle)
        return spec, None
    name, _, pretrained = spec.removeprefix(OPEN_CLIP_PREFIX).partition("/")
    if not pretrained:
        raise ValueError(
            f"{spec!r} names no pretrained weights (it would be a random model); use open_clip:{name}/TAG with a tag "
            f"from open_clip.list_pretrained_tags_by_model({name!r}), or open_clip:{name}//path/to/weights.safetensors"
        )
    if Path(pretrained).expanduser().is_file():
        refuse_pickle(pretrained, spec, allow_pickle)
        return name, str(Path(pretrained).expanduser())
    cfg = open_clip.get_pretrained_cfg(name, pretrained)
    if not cfg:
        raise ValueError(
            f"open_clip has no pretrained tag {pretrained!r} for {name!r} (and it is not a file); "
            f"tags: {open_clip.list_pretrained_tags_by_model(name)}"
        )
    refuse_pickle(open_clip.download_pretrained(cfg, cache_dir=cache_dir), spec, allow_pickle)
    return name, pretrained


def load_open_clip(
    spec: str, device: torch.device, dtype: torch.dtype, allow_pickle: bool, cache_dir: str | None = None
) -> ClipEncoder:
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


def original_projection(original: ClipEncoder) -> tuple[torch.nn.Linear, Tokenize, int]:
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
