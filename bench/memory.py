"""Memory: compare mode vs two separately loaded pipelines vs one pipeline, each in a fresh process.

Each scenario runs in its own child process (``python -m bench.memory --scenario ...``),
which loads its pipelines through ``from_pretrained``, generates one image per pipeline and reports

- peak RSS (:func:`peak_rss_bytes`: the high-water mark of the process's resident memory, which includes the
  interpreter and the imported libraries) and the peak minus the RSS measured right after the imports (what
  the pipelines themselves cost);
- the bytes of the distinct parameters loaded (machine-independent);
- with CUDA, ``torch.cuda.max_memory_allocated``.

The RSS readers are in :mod:`.rss`, the child-process runner in :mod:`.child`, the report in
:mod:`.memory_report`. Scenarios: ``one`` (the plain diffusers pipeline), ``safer`` (Safer pipeline, safe
encoder only), ``compare`` (Safer pipeline with the original encoder kept, generating in compare mode) and ``two``
(a plain pipeline and a Safer pipeline loaded separately, the way to get both images without compare mode).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from .child import RESULT_PREFIX, run_module_in_child
from .memory_report import to_section
from .rss import current_rss_bytes, parameter_bytes, peak_rss_bytes

SCENARIOS = ("one", "safer", "compare", "two")


# ----------------------------------------------------------------------------------------------- child


def run_scenario(
    scenario: str,
    base: str,
    safe: str,
    sdxl: bool,
    device: str,
    dtype: str,
    height: int,
    width: int,
    steps: int,
) -> dict[str, Any]:
    """Load and generate for one scenario in this process; returns the memory figures (call in a fresh process)."""
    import diffusers
    import torch

    from saferclip_diffusers.pipelines import SaferStableDiffusionPipeline, SaferStableDiffusionXLPipeline

    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    diffusers.utils.logging.set_verbosity_error()
    cuda = device.startswith("cuda")
    plain_cls = diffusers.StableDiffusionXLPipeline if sdxl else diffusers.StableDiffusionPipeline
    safer_cls = SaferStableDiffusionXLPipeline if sdxl else SaferStableDiffusionPipeline
    rss_after_imports = current_rss_bytes()
    load = dict(torch_dtype=getattr(torch, dtype), local_files_only=True, use_safetensors=True)
    t0 = time.perf_counter()
    if scenario == "one":
        pipes = [plain_cls.from_pretrained(base, **load)]
    elif scenario == "safer":
        pipes = [safer_cls.from_pretrained(base, safe_text_encoder=safe, keep_original=False, **load)]
    elif scenario == "compare":
        pipes = [safer_cls.from_pretrained(base, safe_text_encoder=safe, keep_original=True, **load)]
    else:
        pipes = [
            plain_cls.from_pretrained(base, **load),
            safer_cls.from_pretrained(base, safe_text_encoder=safe, keep_original=False, **load),
        ]
    pipes = [p.to(device) for p in pipes]
    load_s = time.perf_counter() - t0
    rss_after_load = current_rss_bytes()
    cuda_after_load = torch.cuda.memory_allocated() if cuda else None
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    kwargs = dict(height=height, width=width, num_inference_steps=steps, output_type="np")
    for pipe in pipes:
        pipe.set_progress_bar_config(disable=True)
        extra = {"return_original": True} if scenario == "compare" else {}
        pipe(
            "a photograph of an astronaut riding a horse",
            generator=torch.Generator(device).manual_seed(0),
            **kwargs,
            **extra,
        )
    return {
        "scenario": scenario,
        "pipelines": len(pipes),
        "parameter_bytes": parameter_bytes(*pipes),
        "rss_after_imports": rss_after_imports,
        "rss_after_load": rss_after_load,
        "peak_rss": peak_rss_bytes(),
        "cuda_after_load": cuda_after_load,
        "cuda_peak": torch.cuda.max_memory_allocated() if cuda else None,
        "load_seconds": load_s,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="one memory scenario, in this (fresh) process")
    p.add_argument("--scenario", required=True, choices=SCENARIOS)
    p.add_argument("--base", required=True)
    p.add_argument("--safe", required=True)
    p.add_argument("--sdxl", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--steps", type=int, default=1)
    a = p.parse_args(argv)
    result = run_scenario(a.scenario, a.base, a.safe, a.sdxl, a.device, a.dtype, a.height, a.width, a.steps)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------------------------- parent


def run_in_child(scenario: str, args: list[str], timeout: float = 1800) -> dict[str, Any]:
    """Run one memory scenario in a fresh Python process and parse its result line."""
    try:
        return run_module_in_child("bench.memory", ["--scenario", scenario, *args], timeout)
    except RuntimeError as err:
        raise RuntimeError(
            f"memory scenario {scenario!r} failed {str(err).split(' failed ', 1)[1]}"
        ) from None


def measure_memory(
    model: str = "sd15", device: str = "cpu", quick: bool = False, scenarios: tuple[str, ...] = SCENARIOS
) -> dict[str, Any]:
    """Every scenario in its own fresh process; returns settings and per-scenario figures."""
    from tqdm.auto import tqdm

    from .generation_systems import model_dirs

    if quick:
        model = "tiny-sdxl" if model in ("sdxl", "tiny-sdxl") else "tiny"
    base, safe = model_dirs(model)
    size = 32 if model.startswith("tiny") else (512 if device.startswith("cuda") else 128)
    settings = {
        "model": model,
        "device": device,
        "dtype": "float16" if device.startswith("cuda") else "float32",
        "height": size,
        "width": size,
        "steps": 1,
    }
    args = [
        "--base",
        base,
        "--safe",
        safe,
        "--device",
        device,
        "--dtype",
        settings["dtype"],
        "--height",
        str(size),
        "--width",
        str(size),
        "--steps",
        "1",
    ]
    if model in ("sdxl", "tiny-sdxl"):
        args.append("--sdxl")
    results = {s: run_in_child(s, args) for s in tqdm(scenarios, desc="memory scenarios", leave=False)}
    return {"settings": settings, "results": results}


def run_memory(device: str = "cpu", quick: bool = False, model: str = "sd15"):
    return to_section(measure_memory(model, device, quick), device)


if __name__ == "__main__":
    main()
