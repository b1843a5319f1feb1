"""The Safer pipelines: diffusers' SD 1.x/2.x and SDXL pipelines (text-to-image, img2img, inpainting, ControlNet),
SD 3 / 3.5 and FLUX.1 with safe text encoders swapped in. Importing this package registers them in diffusers'
auto-pipeline tables."""

from .controlnet import SaferStableDiffusionControlNetPipeline
from .controlnet_sd_xl import SaferStableDiffusionXLControlNetPipeline
from .flux import SaferFluxPipeline
from .output import SaferPipelineOutput
from .registry import register_auto_pipelines
from .stable_diffusion import SaferStableDiffusionPipeline
from .stable_diffusion_3 import SaferStableDiffusion3Pipeline
from .stable_diffusion_img2img import SaferStableDiffusionImg2ImgPipeline
from .stable_diffusion_inpaint import SaferStableDiffusionInpaintPipeline
from .stable_diffusion_xl import SaferStableDiffusionXLPipeline
from .stable_diffusion_xl_img2img import SaferStableDiffusionXLImg2ImgPipeline
from .stable_diffusion_xl_inpaint import SaferStableDiffusionXLInpaintPipeline

__all__ = [
    "SaferFluxPipeline",
    "SaferPipelineOutput",
    "SaferStableDiffusion3Pipeline",
    "SaferStableDiffusionControlNetPipeline",
    "SaferStableDiffusionImg2ImgPipeline",
    "SaferStableDiffusionInpaintPipeline",
    "SaferStableDiffusionPipeline",
    "SaferStableDiffusionXLControlNetPipeline",
    "SaferStableDiffusionXLImg2ImgPipeline",
    "SaferStableDiffusionXLInpaintPipeline",
    "SaferStableDiffusionXLPipeline",
]

register_auto_pipelines({name: globals()[name] for name in __all__ if name != "SaferPipelineOutput"})
