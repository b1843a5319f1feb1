"""Tiny random-weight SD 1.x, SDXL and CLIP models, built offline and deterministically from a seed.

Everything is written as ordinary diffusers / transformers directories, so tests and the ``tiny`` preset of
every command go through the real ``from_pretrained`` paths. Nothing here is downloaded and no model file is
committed: the tokenizer is CLIP's real BPE, built from the vocabulary file that open_clip_torch ships,
truncated to its first ``TINY_MERGES`` merges (ids then match open_clip's tokenizer for those tokens).

Coherence of the tiny chain (train -> swap -> generate -> evaluate):

- ``tiny-clip`` is a full ``CLIPModel`` (text + vision). The tiny SD pipeline's ``text_encoder`` *is* its
  text tower (same weights), just as SD 1.x's encoder is CLIP ViT-L/14's text tower.
- ``tiny-clip-g`` plays OpenCLIP bigG: a second ``CLIPModel`` with a wider text tower, whose
  ``CLIPTextModelWithProjection`` is the tiny SDXL pipeline's ``text_encoder_2``.
- The two towers have different widths (32 and 48), so SDXL's split of the 80-dim conditioning is checkable.

These weights are random: any number measured with them says nothing about real models.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import torch

from . import _compat

_compat.patch_cpu_torchvision()

from transformers import (  # noqa: E402
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionConfig,
)

TINY_MERGES = 486  # 256 bytes + 256 "</w>" bytes + 486 merges + 2 specials = 1,000 tokens
TINY_VERSION = 1  # bump when the builders change, so cached directories are rebuilt
TEXT_WIDTH = 32  # tiny "ViT-L/14" text tower (SD 1.x, SDXL slot 1)
TEXT_WIDTH_G = 48  # tiny "bigG" text tower (SDXL slot 2)
PROJECTION_DIM = 32
PROJECTION_DIM_G = 48
IMAGE_SIZE = 32


# ----------------------------------------------------------------------------------------------- tokenizer


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable unicode map (the same table as GPT-2 and open_clip)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def _open_clip_bpe_file() -> Path:
    spec = importlib.util.find_spec("open_clip")  # locate without importing (import costs seconds)
    if spec is None or spec.origin is None:
        raise ImportError("open_clip_torch is needed for the tiny tokenizer: pip install open_clip_torch")
    path = Path(spec.origin).parent / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise FileNotFoundError(f"open_clip_torch does not ship its BPE vocabulary where expected: {path}")
    return path


@lru_cache(maxsize=4)
def clip_bpe_vocab(num_merges: int = TINY_MERGES) -> tuple[dict[str, int], list[str]]:
    """CLIP's vocabulary and merges, keeping the first ``num_merges`` merges (48,894 gives the full 49,408)."""
    lines = gzip.open(_open_clip_bpe_file()).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1][:num_merges]
    byte_chars = list(_bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def save_clip_tokenizer(directory: str | os.PathLike, num_merges: int = TINY_MERGES, pad_token: str | None = None) -> CLIPTokenizer:
    """Write ``vocab.json`` + ``merges.txt`` for a (truncated) CLIP BPE tokenizer and return it loaded."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_bpe_vocab(num_merges)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    kwargs = {"model_max_length": 77}
    if pad_token is not None:
        kwargs["pad_token"] = pad_token
    tokenizer = CLIPTokenizer.from_pretrained(directory, **kwargs)
    tokenizer.save_pretrained(directory)
    return tokenizer


# ----------------------------------------------------------------------------------------------- configs


def tiny_text_config(tokenizer: CLIPTokenizer, hidden_size: int = TEXT_WIDTH, projection_dim: int = PROJECTION_DIM) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=77,
        projection_dim=projection_dim,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,  # CLIP pools at the first eos: it must be the tokenizer's
        pad_token_id=tokenizer.pad_token_id,
    )


def tiny_vision_config(projection_dim: int = PROJECTION_DIM) -> CLIPVisionConfig:
    return CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        image_size=IMAGE_SIZE,
        patch_size=8,
        projection_dim=projection_dim,
    )


# ----------------------------------------------------------------------------------------------- builders


def _atomic_dir(target: Path, build) -> Path:
    """Build into a temporary sibling and rename, so a killed build never leaves a half-written model."""
    if (target / ".complete").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        build(tmp)
        (tmp / ".complete").write_text("ok\n")
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race: keep theirs
            if not (target / ".complete").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def build_tiny_clip(directory: str | os.PathLike, seed: int = 0, text_width: int = TEXT_WIDTH, projection_dim: int = PROJECTION_DIM) -> Path:
    """A tiny ``CLIPModel`` directory with tokenizer and image processor (``CLIPProcessor``)."""
    directory = Path(directory)
    tokenizer = save_clip_tokenizer(directory)
    config = CLIPConfig(
        text_config=tiny_text_config(tokenizer, text_width, projection_dim).to_dict(),
        vision_config=tiny_vision_config(projection_dim).to_dict(),
        projection_dim=projection_dim,
    )
    torch.manual_seed(seed)
    CLIPModel(config).eval().save_pretrained(directory, safe_serialization=True)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    return directory


def _tiny_unet(cross_attention_dim: int, sdxl: bool):
    from diffusers import UNet2DConditionModel

    kwargs = dict(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32),
        norm_num_groups=8,
        attention_head_dim=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
    )
    if sdxl:
        kwargs.update(
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=6 * 8 + PROJECTION_DIM_G,
            use_linear_projection=True,
            transformer_layers_per_block=1,
        )
    return UNet2DConditionModel(**kwargs)


def _tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(16, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
        sample_size=32,
    )


def _scheduler():
    from diffusers import EulerDiscreteScheduler

    # SD's training schedule; Euler (deterministic) as in SDXL's default
    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)


def build_tiny_sd(directory: str | os.PathLike, seed: int = 0, clip_dir: str | os.PathLike | None = None) -> Path:
    """A tiny SD 1.x pipeline directory whose ``text_encoder`` is the text tower of a tiny CLIP."""
    from diffusers import StableDiffusionPipeline

    directory = Path(directory)
    clip_dir = Path(clip_dir) if clip_dir is not None else tiny_model_dir("clip", seed)
    text_encoder = CLIPTextModel.from_pretrained(clip_dir, use_safetensors=True)
    tokenizer = CLIPTokenizer.from_pretrained(clip_dir)
    torch.manual_seed(seed + 1)
    unet = _tiny_unet(cross_attention_dim=text_encoder.config.hidden_size, sdxl=False)
    torch.manual_seed(seed + 2)
    vae = _tiny_vae()
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(directory, safe_serialization=True)
    return directory


def build_tiny_sdxl(
    directory: str | os.PathLike,
    seed: int = 0,
    clip_dir: str | os.PathLike | None = None,
    clip_g_dir: str | os.PathLike | None = None,
) -> Path:
    """A tiny SDXL pipeline directory: ``text_encoder`` from tiny-clip, ``text_encoder_2`` from tiny-clip-g."""
    from diffusers import StableDiffusionXLPipeline

    directory = Path(directory)
    clip_dir = Path(clip_dir) if clip_dir is not None else tiny_model_dir("clip", seed)
    clip_g_dir = Path(clip_g_dir) if clip_g_dir is not None else tiny_model_dir("clip-g", seed)
    text_encoder = CLIPTextModel.from_pretrained(clip_dir, use_safetensors=True)
    text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(clip_g_dir, use_safetensors=True)
    tokenizer = CLIPTokenizer.from_pretrained(clip_dir)
    tokenizer_2 = CLIPTokenizer.from_pretrained(clip_g_dir, pad_token="!")  # as SDXL's second tokenizer
    torch.manual_seed(seed + 1)
    cross = text_encoder.config.hidden_size + text_encoder_2.config.hidden_size
    unet = _tiny_unet(cross_attention_dim=cross, sdxl=True)
    torch.manual_seed(seed + 2)
    vae = _tiny_vae()
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=_scheduler(),
    )
    pipe.save_pretrained(directory, safe_serialization=True)
    return directory


def perturbed_text_encoder(source, seed: int = 1, scale: float = 0.5):
    """A copy of ``source`` (a CLIP text model) with seeded Gaussian noise added to every weight.

    Stands in for a "safe" encoder in offline runs before any training: same architecture and tokenizer,
    different conditioning. Random weights, not a safety model.
    """
    import copy

    model = copy.deepcopy(source)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale * (p.std() if p.numel() > 1 else 1.0))
    return model


def build_tiny_safe_encoder(directory: str | os.PathLike, seed: int = 0, sdxl: bool = False) -> Path:
    """A diffusers-style directory (``text_encoder/`` [+ ``text_encoder_2/``]) of perturbed tiny encoders."""
    directory = Path(directory)
    te = CLIPTextModel.from_pretrained(tiny_model_dir("clip", seed), use_safetensors=True)
    perturbed_text_encoder(te, seed=seed + 100).save_pretrained(directory / "text_encoder", safe_serialization=True)
    if sdxl:
        te2 = CLIPTextModelWithProjection.from_pretrained(tiny_model_dir("clip-g", seed), use_safetensors=True)
        perturbed_text_encoder(te2, seed=seed + 200).save_pretrained(directory / "text_encoder_2", safe_serialization=True)
    return directory


# ----------------------------------------------------------------------------------------------- cache

TINY_KINDS = ("clip", "clip-g", "sd", "sdxl", "safe-sd", "safe-sdxl")


def tiny_cache_root() -> Path:
    root = os.environ.get("SAFERCLIP_TINY_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "saferclip_diffusers" / "tiny"


def tiny_model_dir(kind: str, seed: int = 0) -> Path:
    """The cached directory of a tiny model, built on first use (atomically, safe across processes).

    ``kind`` is one of ``clip``, ``clip-g``, ``sd``, ``sdxl``, ``safe-sd``, ``safe-sdxl``.
    """
    builders = {
        "clip": lambda d: build_tiny_clip(d, seed),
        "clip-g": lambda d: build_tiny_clip(d, seed + 1000, text_width=TEXT_WIDTH_G, projection_dim=PROJECTION_DIM_G),
        "sd": lambda d: build_tiny_sd(d, seed),
        "sdxl": lambda d: build_tiny_sdxl(d, seed),
        "safe-sd": lambda d: build_tiny_safe_encoder(d, seed),
        "safe-sdxl": lambda d: build_tiny_safe_encoder(d, seed, sdxl=True),
    }
    if kind not in builders:
        raise ValueError(f"unknown tiny model kind {kind!r}; choose one of {', '.join(TINY_KINDS)}")
    return _atomic_dir(tiny_cache_root() / f"v{TINY_VERSION}" / f"{kind}-seed{seed}", builders[kind])
