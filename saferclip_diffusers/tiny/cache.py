"""The tiny-model cache: each kind is built once per seed, atomically, under ``$SAFERCLIP_TINY_CACHE``."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from ..io import atomic_dir, atomic_write_json, sha256_file
from .clip import PROJECTION_DIM_G, TEXT_WIDTH_G, build_tiny_clip
from .flux import build_tiny_flux, build_tiny_safe_flux
from .sd import build_tiny_safe_encoder, build_tiny_sd, build_tiny_sdxl
from .sd3 import build_tiny_safe_sd3, build_tiny_sd3
from .t5 import build_tiny_t5

TINY_VERSION = (
    2  # bump when the builders' outputs change, so cached directories are rebuilt (2: manifest.json)
)
MARKER = ".complete"

_BUILDERS: dict[str, Callable[[Path, int], Path]] = {  # dependencies come from the cache (source=)
    "clip": lambda d, seed: build_tiny_clip(d, seed),
    "clip-g": lambda d, seed: build_tiny_clip(
        d, seed + 1000, text_width=TEXT_WIDTH_G, projection_dim=PROJECTION_DIM_G
    ),
    "t5": lambda d, seed: build_tiny_t5(d, seed + 2000),
    "sd": lambda d, seed: build_tiny_sd(d, seed, _source(seed)),
    "sdxl": lambda d, seed: build_tiny_sdxl(d, seed, _source(seed)),
    "sd3": lambda d, seed: build_tiny_sd3(d, seed, _source(seed)),
    "flux": lambda d, seed: build_tiny_flux(d, seed, _source(seed)),
    "safe-sd": lambda d, seed: build_tiny_safe_encoder(d, seed, _source(seed)),
    "safe-sdxl": lambda d, seed: build_tiny_safe_encoder(d, seed, _source(seed), sdxl=True),
    "safe-sd3": lambda d, seed: build_tiny_safe_sd3(d, seed, _source(seed)),
    "safe-flux": lambda d, seed: build_tiny_safe_flux(d, seed, _source(seed)),
}
TINY_KINDS = tuple(_BUILDERS)


def _source(seed: int) -> Callable[[str], Path]:
    """The cached folder of each kind a builder reads (a tiny SD reads the tiny CLIP of the same seed)."""
    return lambda kind: tiny_model_dir(kind, seed)


def tiny_cache_root() -> Path:
    root = os.environ.get("SAFERCLIP_TINY_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "saferclip_diffusers" / "tiny"


MANIFEST = "manifest.json"
_VERIFIED: set[Path] = set()  # folders checked against their manifest in this process


def _write_manifest(folder: Path) -> None:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    digests = {p.relative_to(folder).as_posix(): sha256_file(p) for p in files}
    atomic_write_json(folder / MANIFEST, digests)


def _damage(folder: Path) -> str | None:
    """What is wrong with a completed cache folder (None: every file matches its manifest checksum)."""
    try:
        digests = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as err:
        return f"{MANIFEST} unreadable ({type(err).__name__})"
    for name, digest in digests.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if sha256_file(path) != digest:
            return f"{name} does not match its checksum"
    return None


def tiny_model_dir(kind: str, seed: int = 0) -> Path:
    """The cached directory of a tiny model, built on first use (atomically, safe across processes).

    ``kind`` is one of :data:`TINY_KINDS`. Building neither reads nor advances the caller's torch generator, so a
    seeded run gives the same results whether the cache was empty or full. A cached folder is checked once per
    process against the checksums it was built with; a damaged one is rebuilt (it is a cache), with a warning.
    """
    if kind not in _BUILDERS:
        raise ValueError(f"unknown tiny model kind {kind!r}; choose one of {', '.join(TINY_KINDS)}")
    target = tiny_cache_root() / f"v{TINY_VERSION}" / f"{kind}-seed{seed}"
    if target in _VERIFIED and (target / MARKER).is_file():
        return target
    if (target / MARKER).is_file():
        damage = _damage(target)
        if damage is None:
            _VERIFIED.add(target)
            return target
        warnings.warn(
            f"tiny model cache {target} is damaged ({damage}); rebuilding it", UserWarning, stacklevel=2
        )
        trash = target.with_name(f".{target.name}.damaged-{os.getpid()}")
        os.replace(target, trash)
        shutil.rmtree(trash, ignore_errors=True)
    build = _BUILDERS[kind]

    def build_and_record(folder: Path) -> None:
        build(folder, seed)
        _write_manifest(folder)

    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # building loads CLIPModel folders as text towers: "unexpected" vision keys
    try:
        with torch.random.fork_rng(devices=[]):
            atomic_dir(target, build_and_record, marker=MARKER)
    finally:
        hf_logging.set_verbosity(verbosity)
    _VERIFIED.add(target)
    return target
