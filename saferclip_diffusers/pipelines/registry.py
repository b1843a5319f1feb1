"""Register the Safer pipelines in diffusers' auto-pipeline tables.

diffusers' ``AutoPipelineFor{Text2Image,Image2Image,Inpainting}.from_pipe`` finds the sibling of a pipeline class
through ``auto_pipeline``'s ``AUTO_*_PIPELINES_MAPPING`` tables (keyed by a model-family name). Adding one family
per Safer variant makes ``AutoPipelineForImage2Image.from_pipe(safer_sd)`` return a
``SaferStableDiffusionImg2ImgPipeline`` that shares every module, original encoders included.
"""

from __future__ import annotations

FAMILIES = {
    "saferclip-stable-diffusion": (
        "SaferStableDiffusionPipeline",
        "SaferStableDiffusionImg2ImgPipeline",
        "SaferStableDiffusionInpaintPipeline",
    ),
    "saferclip-stable-diffusion-xl": (
        "SaferStableDiffusionXLPipeline",
        "SaferStableDiffusionXLImg2ImgPipeline",
        "SaferStableDiffusionXLInpaintPipeline",
    ),
    "saferclip-stable-diffusion-controlnet": ("SaferStableDiffusionControlNetPipeline", None, None),
    "saferclip-stable-diffusion-xl-controlnet": ("SaferStableDiffusionXLControlNetPipeline", None, None),
    "saferclip-stable-diffusion-3": ("SaferStableDiffusion3Pipeline", None, None),
    "saferclip-flux": ("SaferFluxPipeline", None, None),
}


def register_auto_pipelines(classes: dict[str, type]) -> None:
    """Add the Safer families to diffusers' auto-pipeline tables (idempotent)."""
    from diffusers.pipelines import auto_pipeline

    tables = (
        auto_pipeline.AUTO_TEXT2IMAGE_PIPELINES_MAPPING,
        auto_pipeline.AUTO_IMAGE2IMAGE_PIPELINES_MAPPING,
        auto_pipeline.AUTO_INPAINT_PIPELINES_MAPPING,
    )
    for family, names in FAMILIES.items():
        for table, name in zip(tables, names, strict=True):
            if name is not None and name in classes:
                table[family] = classes[name]
