"""The Safer pipelines: diffusers' SD and SDXL pipelines with safe text encoders swapped in."""

from .conditioning import SaferPipelineOutput
from .flux import SaferFluxPipeline
from .stable_diffusion import SaferStableDiffusionPipeline
from .stable_diffusion_3 import SaferStableDiffusion3Pipeline
from .stable_diffusion_xl import SaferStableDiffusionXLPipeline

__all__ = ["SaferPipelineOutput", "SaferStableDiffusionPipeline", "SaferStableDiffusionXLPipeline"]
__all__ += ["SaferStableDiffusion3Pipeline", "SaferFluxPipeline"]  # modern helper
