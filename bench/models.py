"""Real-size SD 1.5 and SDXL architectures with random weights, built offline from the public configs.

The configs below copy the published ``config.json`` files of ``stable-diffusion-v1-5/stable-diffusion-v1-5``
and ``stabilityai/stable-diffusion-xl-base-1.0`` (UNet, VAE, scheduler, CLIP ViT-L/14 and OpenCLIP bigG text
towers); nothing is downloaded. The tokenizers are CLIP's full BPE (49,408 tokens). Models are written as
ordinary diffusers directories under a cache directory (never in git), so every benchmark loads them through
the real ``from_pretrained`` paths, exactly as a user loads the real checkpoints.

Fast init: modules are built on the meta device and their parameters then filled once with a uniform
distribution of the default PyTorch scale (bound 1/sqrt(fan_in); norms 1/0), which skips the per-layer default
initialisers. The weights are random: timings and memory are those of the real architectures, images are noise.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from saferclip_diffusers.io import atomic_dir
from saferclip_diffusers.tiny import save_clip_tokenizer

FULL_CLIP_MERGES = 48894  # 256 + 256 byte tokens + 48,894 merges + 2 specials = 49,408 tokens
MODELS_VERSION = 1  # bump when a builder changes, so cached directories are rebuilt
KINDS = ("sd15", "sd15-safe", "sdxl", "sdxl-safe", "clip-l")

SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
    act_fn="silu",
    downsample_padding=1,
    flip_sin_to_cos=True,
    freq_shift=0,
)

SDXL_UNET = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048,
    addition_embed_type="text_time",
    addition_embed_type_num_heads=64,
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
    use_linear_projection=True,
    norm_num_groups=32,
    act_fn="silu",
    flip_sin_to_cos=True,
    freq_shift=0,
)

VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2,
    norm_num_groups=32,
    act_fn="silu",
)

CLIP_L_TEXT = dict(  # CLIP ViT-L/14 text tower (SD 1.x encoder; SDXL's text_encoder)
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_attention_heads=12,
    num_hidden_layers=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=768,
)

CLIP_BIGG_TEXT = dict(  # OpenCLIP ViT-bigG/14 text tower (SDXL's text_encoder_2, with projection)
    vocab_size=49408,
    hidden_size=1280,
    intermediate_size=5120,
    num_attention_heads=20,
    num_hidden_layers=32,
    max_position_embeddings=77,
    hidden_act="gelu",
    projection_dim=1280,
)


# ----------------------------------------------------------------------------------------------- init


@torch.no_grad()
def fast_random_init(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give every parameter of a (possibly meta-device) module real random CPU values, quickly.

    Weights of rank >= 2: U(-b, b) with b = 1/sqrt(fan_in), PyTorch's default scale for Linear/Conv;
    embeddings U(-0.02 sqrt(3), 0.02 sqrt(3)) (std 0.02, as CLIP); norm weights 1; biases 0.
    """
    gen = torch.Generator().manual_seed(seed)
    norms = (torch.nn.GroupNorm, torch.nn.LayerNorm, torch.nn.BatchNorm2d)
    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            value = torch.empty(param.shape, dtype=torch.float32)
            if isinstance(module, norms):
                value.fill_(1.0 if name == "weight" else 0.0)
            elif isinstance(module, torch.nn.Embedding):
                value.uniform_(-0.02 * math.sqrt(3), 0.02 * math.sqrt(3), generator=gen)
            elif param.ndim >= 2:
                bound = 1.0 / math.sqrt(max(1, math.prod(param.shape[1:])))
                value.uniform_(-bound, bound, generator=gen)
            else:
                value.zero_()
            setattr(module, name, torch.nn.Parameter(value, requires_grad=param.requires_grad))
    for module in model.modules():  # buffers built on meta (none expected) would be garbage: refuse them
        for name, buf in module.named_buffers(recurse=False):
            if buf.is_meta:
                raise RuntimeError(f"buffer {name} of {type(module).__name__} was left on the meta device")
    return model.eval()


def _empty(build):
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return build()


def build_unet(config: dict, seed: int):
    from diffusers import UNet2DConditionModel

    return fast_random_init(_empty(lambda: UNet2DConditionModel(**config)), seed)


def build_vae(seed: int, scaling_factor: float = 0.18215, sample_size: int = 512):
    from diffusers import AutoencoderKL

    return fast_random_init(
        _empty(lambda: AutoencoderKL(**VAE, sample_size=sample_size, scaling_factor=scaling_factor)), seed
    )


def build_text_encoder(arch: dict, tokenizer, seed: int, with_projection: bool = False):
    config = CLIPTextConfig(
        **arch,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,  # CLIP pools at the first eos: the tokenizer's real id
        pad_token_id=tokenizer.pad_token_id,
    )
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return fast_random_init(_empty(lambda: cls(config)), seed)


def sd15_scheduler():
    from diffusers import PNDMScheduler

    return PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        set_alpha_to_one=False,
        skip_prk_steps=True,
        steps_offset=1,
    )


def sdxl_scheduler():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        timestep_spacing="leading",
        interpolation_type="linear",
        prediction_type="epsilon",
    )


# ----------------------------------------------------------------------------------------------- builders


def build_sd15(directory: str | os.PathLike, seed: int = 0) -> Path:
    """SD 1.5 (UNet 860M, CLIP ViT-L/14 text 123M, VAE 84M), no safety checker, random weights."""
    from diffusers import StableDiffusionPipeline

    directory = Path(directory)
    tokenizer = save_clip_tokenizer(directory / "tokenizer", num_merges=FULL_CLIP_MERGES)
    pipe = StableDiffusionPipeline(
        vae=build_vae(seed + 2),
        text_encoder=build_text_encoder(CLIP_L_TEXT, tokenizer, seed),
        tokenizer=tokenizer,
        unet=build_unet(SD15_UNET, seed + 1),
        scheduler=sd15_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(directory, safe_serialization=True)
    return directory


def build_sdxl(directory: str | os.PathLike, seed: int = 0) -> Path:
    """SDXL base (UNet 2.6B, CLIP ViT-L/14 text 123M, bigG text 695M, VAE 84M), random weights."""
    from diffusers import StableDiffusionXLPipeline

    directory = Path(directory)
    tokenizer = save_clip_tokenizer(directory / "tokenizer", num_merges=FULL_CLIP_MERGES)
    tokenizer_2 = save_clip_tokenizer(directory / "tokenizer_2", num_merges=FULL_CLIP_MERGES, pad_token="!")
    pipe = StableDiffusionXLPipeline(
        vae=build_vae(seed + 2, scaling_factor=0.13025, sample_size=1024),
        text_encoder=build_text_encoder(CLIP_L_TEXT, tokenizer, seed),
        text_encoder_2=build_text_encoder(CLIP_BIGG_TEXT, tokenizer_2, seed + 3, with_projection=True),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=build_unet(SDXL_UNET, seed + 1),
        scheduler=sdxl_scheduler(),
        add_watermarker=False,
    )
    pipe.save_pretrained(directory, safe_serialization=True)
    return directory


def build_safe_encoders(directory: str | os.PathLike, seed: int = 1, sdxl: bool = False) -> Path:
    """A diffusers-layout export (``text_encoder/`` [+ ``text_encoder_2/``]) of freshly random encoders.

    Stands in for a SafeR-CLIP export: same architecture and tokenizer, other weights.
    """
    directory = Path(directory)
    tokenizer = save_clip_tokenizer(directory / "tokenizer", num_merges=FULL_CLIP_MERGES)
    te = build_text_encoder(CLIP_L_TEXT, tokenizer, seed + 100)
    te.save_pretrained(directory / "text_encoder", safe_serialization=True)
    if sdxl:
        tok2 = save_clip_tokenizer(directory / "tokenizer_2", num_merges=FULL_CLIP_MERGES, pad_token="!")
        te2 = build_text_encoder(CLIP_BIGG_TEXT, tok2, seed + 200, with_projection=True)
        te2.save_pretrained(directory / "text_encoder_2", safe_serialization=True)
    return directory


def build_clip_text(directory: str | os.PathLike, seed: int = 0) -> Path:
    """CLIP ViT-L/14's text tower with its projection (what training starts from), tokenizer alongside."""
    directory = Path(directory)
    tokenizer = save_clip_tokenizer(directory, num_merges=FULL_CLIP_MERGES)
    build_text_encoder(CLIP_L_TEXT, tokenizer, seed, with_projection=True).save_pretrained(
        directory, safe_serialization=True
    )
    return directory


def bench_cache_root() -> Path:
    root = os.environ.get("SAFERCLIP_BENCH_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "saferclip_diffusers" / "bench"


def real_size_dir(kind: str) -> Path:
    """The cached directory of a real-size random model, built on first use (atomic; minutes, GBs on disk).

    ``kind``: ``sd15`` (about 4.3 GB), ``sd15-safe`` (0.5 GB), ``sdxl`` (about 14 GB), ``sdxl-safe`` (3.3 GB),
    ``clip-l`` (CLIP ViT-L/14 text tower with projection, 0.5 GB; for the training benchmark).
    """
    builders = {
        "sd15": build_sd15,
        "sd15-safe": lambda d: build_safe_encoders(d, sdxl=False),
        "sdxl": build_sdxl,
        "sdxl-safe": lambda d: build_safe_encoders(d, sdxl=True),
        "clip-l": build_clip_text,
    }
    if kind not in builders:
        raise ValueError(f"unknown real-size model {kind!r}; choose one of {', '.join(KINDS)}")
    return atomic_dir(bench_cache_root() / f"v{MODELS_VERSION}" / f"{kind}-random", builders[kind])
