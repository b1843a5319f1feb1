"""The Safer pipelines: diffusers' SD and SDXL pipelines with safe text encoders swapped in."""

from .conditioning import SaferPipelineOutput
from .stable_diffusion import SaferStableDiffusionPipeline
from .stable_diffusion_xl import SaferStableDiffusionXLPipeline

__all__ = ["SaferPipelineOutput", "SaferStableDiffusionPipeline", "SaferStableDiffusionXLPipeline"]
