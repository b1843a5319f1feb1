"""Every model an evaluation run needs, loaded (and validated) before anything is written: the base pipeline, the
systems made from it (UNet and VAE shared), NudeNet and Q16. Used by the I2P runner and the attack runner."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # annotations only; the attack runner passes its own config and options of the same shape
    from .protocol import RunConfig
    from .runner import RunOptions


@dataclass
class LoadedModels:
    generators: dict[str, Any]
    nudenet: Any
    q16: Any
    height: int
    width: int
    shape: tuple[int, int, int]
    tokenizer: Any
    base: Any = None  # the plain pipeline every system is made from (UNet and VAE shared)


def load_models(
    config: RunConfig,
    options: RunOptions,
    device: torch.device,
    num_processes: int,
    nudenet_scorer=None,
    q16_scorer=None,
) -> LoadedModels:
    """Every model of the run (validation before anything is written); unavailable models raise a clear error."""
    from ..devices import parse_dtype
    from ..hub import explain_unavailable, is_local
    from ..scoring.nudenet import NudeNetScorer
    from .generators import build_generators, load_base_pipeline

    protocol = config.protocol
    sdxl = config.sdxl
    local_only = config.random_weights or is_local(config.base)
    try:
        base = load_base_pipeline(
            config.base,
            sdxl=sdxl,
            torch_dtype=parse_dtype(config.torch_dtype),
            device=device,
            local_files_only=local_only,
            allow_pickle=options.allow_pickle,
        )
    except OSError as err:
        if is_local(config.base):
            raise
        raise explain_unavailable(
            config.base, "base pipeline", err, offline_alternative="--preset tiny"
        ) from err
    try:
        generators = build_generators(
            base,
            config.systems,
            sdxl=sdxl,
            allow_pickle=options.allow_pickle,
            local_files_only=config.random_weights,
        )
    except OSError as err:
        names = ", ".join(s.safe_text_encoder for s in config.systems if s.kind == "safe")
        raise explain_unavailable(
            names,
            "safe text encoder",
            err,
            offline_alternative="a local training export (--safe-encoder DIR) or --preset tiny",
        ) from err
    height = protocol.height or base.unet.config.sample_size * base.vae_scale_factor
    width = protocol.width or base.unet.config.sample_size * base.vae_scale_factor
    shape = (base.unet.config.in_channels, height // base.vae_scale_factor, width // base.vae_scale_factor)
    nudenet = nudenet_scorer
    if nudenet is None:
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", num_processes))
        nudenet = NudeNetScorer(
            batch_size=options.nudenet_batch_size, num_threads=max(1, (os.cpu_count() or 1) // per_node)
        )
    q16 = q16_scorer
    if q16 is None and config.scoring.q16_clip:
        q16 = load_q16(config.scoring.q16_clip, config.scoring.q16_prompts, device)
    return LoadedModels(generators, nudenet, q16, height, width, shape, base.tokenizer, base)


def load_q16(clip: str, prompts: str | None, device: torch.device):
    """Q16 on ``clip``; when it cannot be loaded, say how to get it or how to opt out."""
    from ..hub import explain_unavailable, is_local
    from ..scoring.q16 import Q16Classifier

    try:
        return Q16Classifier(
            clip, prompts=prompts, device=device, **({"local_files_only": True} if is_local(clip) else {})
        )
    except OSError as err:
        raise explain_unavailable(
            clip,
            "Q16's CLIP ViT-L/14 image tower",
            err,
            offline_alternative="--no-q16 (every result is then labelled NudeNet only); to run Q16, download the "
            "model once with `hf download openai/clip-vit-large-patch14` (or pass --q16-clip DIR) and rerun",
        ) from err
