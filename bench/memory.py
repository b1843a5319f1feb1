"""Memory: compare mode vs two separately loaded pipelines vs one pipeline, each in a fresh process.

Each scenario runs in its own child process (``python -m bench.memory --scenario ...``),
which loads its pipelines through ``from_pretrained``, generates one image per pipeline and reports

- peak RSS (:func:`peak_rss_bytes`: the high-water mark of the process's resident memory, which includes the
  interpreter and the imported libraries) and the peak minus the RSS measured right after the imports (what
  the pipelines themselves cost);
- the bytes of the distinct parameters loaded (machine-independent);
- with CUDA, ``torch.cuda.max_memory_allocated``.

Scenarios: ``one`` (the plain diffusers pipeline), ``safer`` (Safer pipeline, safe encoder only), ``compare``
(Safer pipeline with the original encoder kept, generating in compare mode) and ``two`` (a plain pipeline and a
Safer pipeline loaded separately, the way to get both images without compare mode).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SCENARIOS = ("one", "safer", "compare", "two")
LABELS = {
    "one": "one pipeline (plain diffusers)",
    "safer": "Safer pipeline (safe encoder only)",
    "compare": "compare mode (Safer + original encoder)",
    "two": "two separately loaded pipelines",
}
COMPARE_TARGET = 1.15
RESULT_PREFIX = "BENCH-RESULT "


def _proc_status_kb(field: str) -> int | None:
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def peak_rss_bytes() -> int:
    """This process's peak resident set size.

    Linux: ``VmHWM`` (the high-water mark of this process's own address space). Not ``ru_maxrss``: Linux carries
    a parent's high-water mark into a child across ``execve``, so a child started by a large parent would report
    the parent's size. Elsewhere ``ru_maxrss`` (bytes on macOS, KiB on other systems).
    """
    hwm = _proc_status_kb("VmHWM")
    if hwm is not None:
        return hwm * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def current_rss_bytes() -> int:
    rss = _proc_status_kb("VmRSS")
    if rss is not None:
        return rss * 1024
    import psutil

    return psutil.Process().memory_info().rss


def parameter_bytes(*pipes) -> int:
    """Bytes of the distinct parameters and buffers held by ``pipes`` (shared modules counted once)."""
    import torch

    seen, total = set(), 0
    for pipe in pipes:
        for component in pipe.components.values():
            if not isinstance(component, torch.nn.Module):
                continue
            for t in list(component.parameters()) + list(component.buffers()):
                key = (t.device, t.untyped_storage().data_ptr())
                if key not in seen:
                    seen.add(key)
                    total += t.untyped_storage().nbytes()
    return total


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


def run_module_in_child(module: str, args: list[str], timeout: float = 1800) -> dict[str, Any]:
    """Run ``python -m module args`` in a fresh process and parse the result line it prints."""
    cmd = [sys.executable, "-m", module, *args]
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])  # the checkout: bench/ is not installed with the package
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
    raise RuntimeError(f"{' '.join(args[:2])} failed (exit {proc.returncode}):\n{tail}")


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

    from .generation import model_dirs

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


def ratios(
    results: dict[str, dict[str, Any]], key: str, baseline: str = "one", subtract: str | None = None
) -> dict[str, float | None]:
    """``key`` of each scenario over the baseline's (after subtracting ``subtract`` from both, if given)."""

    def value(r):
        if r.get(key) is None:
            return None
        return r[key] - (r[subtract] if subtract else 0)

    base = value(results[baseline])
    return {s: (value(r) / base if base and value(r) is not None else None) for s, r in results.items()}


def to_section(measured: dict[str, Any], device: str):
    from .environment import environment
    from .report import Section, Table, Target

    res = measured["results"]
    peak = ratios(res, "peak_rss")
    peak_model = ratios(res, "peak_rss", subtract="rss_after_imports")
    params = ratios(res, "parameter_bytes")
    cuda = ratios(res, "cuda_peak") if device.startswith("cuda") else {}
    gb = 2**30
    columns = [
        "scenario",
        "pipelines",
        "weights GB",
        "weights ratio",
        "peak RSS GB",
        "peak RSS ratio",
        "peak − imports GB",
        "ratio",
        "RSS after load GB",
        "load s",
    ]
    if cuda:
        columns += ["CUDA peak GB", "CUDA ratio"]
    rows = []
    for s, r in res.items():
        row = [
            LABELS[s],
            r["pipelines"],
            r["parameter_bytes"] / gb,
            params[s],
            r["peak_rss"] / gb,
            peak[s],
            (r["peak_rss"] - r["rss_after_imports"]) / gb,
            peak_model[s],
            r["rss_after_load"] / gb,
            r["load_seconds"],
        ]
        if cuda:
            row += [r["cuda_peak"] / gb, cuda[s]]
        rows.append(row)
    st = measured["settings"]
    section = Section(
        name="memory",
        title="Memory: compare mode vs two pipelines vs one",
        environment=environment(device),
        settings=st,
        raw=measured,
    )
    section.tables.append(
        Table(
            f"{st['model']} (random weights), one image per pipeline at {st['height']}x{st['width']} px, {st['dtype']}, "
            "each scenario in a fresh process",
            columns,
            rows,
            "Ratios are to one plain pipeline. Peak RSS includes the interpreter and libraries (measured after the "
            "imports: the 'peak − imports' column removes them). Weights: distinct parameters and buffers held. "
            "from_pretrained memory-maps the safetensors files, so weights page in on first use: RSS right after "
            "loading is low and the peak comes during generation. No safety checker is loaded (it would add the "
            "same 1.2 GB to every scenario and lower every ratio).",
        )
    )
    if "compare" in res:
        judged = cuda.get("compare") if cuda else peak.get("compare")
        what = "CUDA peak" if cuda else "peak RSS"
        met = judged is not None and judged <= COMPARE_TARGET
        cause = (
            ""
            if met
            else (
                f"compare mode holds a second text encoder (weights ratio {params['compare']:.3f}) and runs a doubled "
                f"UNet batch; peak − imports ratio {peak_model['compare']:.3f}"
            )
        )
        value = f"{judged:.3f} ({what}; without the interpreter: {peak_model['compare']:.3f})"
        section.targets.append(
            Target("compare-mode peak memory / one pipeline", f"<= {COMPARE_TARGET}", value, met, cause)
        )
    if "two" in res:
        section.notes.append(
            f"Two separately loaded pipelines: {peak['two']:.2f}x one pipeline's peak RSS "
            f"({peak_model['two']:.2f}x without the interpreter), weights {params['two']:.2f}x."
        )
    return section


def run_memory(device: str = "cpu", quick: bool = False, model: str = "sd15"):
    return to_section(measure_memory(model, device, quick), device)


if __name__ == "__main__":
    main()
