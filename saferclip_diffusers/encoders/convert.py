"""Convert a pickle checkpoint into a safetensors encoder folder, once, knowingly.

The result is an ordinary transformers folder (``config.json`` + ``model.safetensors``) that every loader
here (and ``from_pretrained``) reads without unpickling anything, plus ``converted_from.json``: the source
file(s), their sha256 and what the checkpoint said about itself (DES/SAGE fields). The folder is built
atomically; converting the same file into the same folder again is a no-op.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..io import atomic_dir, sha256_file
from .loading import base_module, load_safe_text_encoder, slot_class
from .peers import PICKLE_SUFFIXES, build_encoder, read_weights_file

SOURCE_NOTE = "converted_from.json"


def _source_files(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    files = sorted(
        p for p in source.iterdir() if p.name.endswith(PICKLE_SUFFIXES) or p.name.endswith(".safetensors")
    )
    if not files:
        raise FileNotFoundError(f"no weights files in {source}")
    return files


def convert_checkpoint(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    allow_pickle: bool = False,
    slot: str = "text_encoder",
    model_class: type | None = None,
    base: torch.nn.Module | str | os.PathLike | None = None,
    keep_base_projection: bool = False,
    num_hidden_layers: int | None = None,
    prefix: str | None = None,
) -> Path:
    """Write ``source`` (a DES/SAGE ``.pt``, a ``pytorch_model.bin`` folder, a single weights file) as a
    safetensors encoder folder at ``out_dir`` and return it.

    Loading goes through :func:`load_safe_text_encoder` (so the pickle is opened with
    ``torch.load(weights_only=True)`` and every weight is verified); the other arguments are its own.
    """
    src = Path(source).expanduser()
    if not src.exists():
        raise FileNotFoundError(f"checkpoint to convert does not exist: {str(source)!r}")
    out = Path(out_dir).expanduser()
    files = _source_files(src)
    hashes = {str(f.resolve()): sha256_file(f) for f in files}
    note = out / SOURCE_NOTE
    if note.is_file():
        previous = json.loads(note.read_text()).get("sha256", {})
        if sorted(previous.values()) == sorted(hashes.values()):
            return out
        raise FileExistsError(
            f"{out} already holds a conversion of another checkpoint; choose another output folder"
        )
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"output folder {out} exists and is not empty; choose another output folder")
    options = {
        "base": base,
        "keep_base_projection": keep_base_projection,
        "num_hidden_layers": num_hidden_layers,
        "prefix": prefix,
    }
    info: dict[str, Any] = {}
    if src.is_file():  # read once: DES files can be large
        ckpt = read_weights_file(src, allow_pickle=allow_pickle)
        info = ckpt.info
        cls = model_class or slot_class(slot)
        options["base"] = base_module(base, cls, {}, slot)
        encoder = build_encoder(ckpt.tensors, cls, source=str(src), **options)
    else:
        encoder = load_safe_text_encoder(
            src, slot, model_class=model_class, allow_pickle=allow_pickle, **options
        )
    record = {
        "source": str(src.resolve()),
        "sha256": hashes,
        "model_class": type(encoder).__name__,
        "checkpoint_info": info,
        "note": "converted by saferclip_diffusers.encoders.convert_checkpoint; the pickle was read with "
        "torch.load(weights_only=True) and every weight of the model was verified present",
    }

    def build(tmp: Path) -> None:
        encoder.save_pretrained(tmp, safe_serialization=True)
        (tmp / SOURCE_NOTE).write_text(json.dumps(record, indent=1, default=str) + "\n")

    if out.exists():
        out.rmdir()  # empty (checked above); atomic_dir renames the finished folder into place
    return atomic_dir(out, build)
