"""The memory benchmark: a scenario in a fresh process, ratios and the compare-mode target."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import memory as mem
from bench import memory_report
from bench.rss import parameter_bytes


def test_scenario_runs_in_a_fresh_process_and_reports_memory():
    from bench.generation_systems import model_dirs

    base, safe = model_dirs("tiny")
    args = ["--base", base, "--safe", safe, "--height", "32", "--width", "32"]
    compare = mem.run_in_child("compare", args)
    assert compare["scenario"] == "compare" and compare["pipelines"] == 1
    assert compare["cuda_peak"] is None
    one = mem.run_in_child("one", args)
    # compare mode holds one more text encoder than one pipeline
    from transformers import CLIPTextModel

    encoder_bytes = sum(
        p.numel() * 4 for p in CLIPTextModel.from_pretrained(base, subfolder="text_encoder").parameters()
    )
    assert compare["parameter_bytes"] - one["parameter_bytes"] == pytest.approx(encoder_bytes, rel=0.01)


def test_a_child_does_not_inherit_its_parents_peak():
    # Linux carries ru_maxrss across execve: a child of a large parent would report the parent's size as its peak
    import subprocess
    import sys

    block = bytearray(1536 * 2**20)
    block[::4096] = b"\1" * (len(block) // 4096)  # touch every page: 1.5 GiB resident in this process
    code = "from bench.rss import peak_rss_bytes; print(peak_rss_bytes())"
    root = Path(__file__).resolve().parents[2]  # bench/ is importable from the checkout's root
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    ).stdout
    assert int(out.strip()) < 1024 * 2**20
    del block


def test_failing_child_is_a_clear_error():
    with pytest.raises(
        RuntimeError, match=r"(?s)memory scenario .one. failed \(exit 2\):.*--height: invalid int"
    ):
        mem.run_in_child("one", ["--base", "b", "--safe", "s", "--height", "tall"])


def test_parameter_bytes_counts_shared_modules_once(tiny_sd_dir, safe_sd_dir):
    from diffusers import StableDiffusionPipeline

    from saferclip_diffusers.pipelines import SaferStableDiffusionPipeline

    plain = StableDiffusionPipeline.from_pretrained(tiny_sd_dir)
    safer = SaferStableDiffusionPipeline.from_pipe(
        plain, safe_text_encoder=str(safe_sd_dir), keep_original=False
    )
    te = sum(p.numel() * p.element_size() for p in safer.text_encoder.parameters())
    te += sum(b.numel() * b.element_size() for b in safer.text_encoder.buffers())
    assert parameter_bytes(plain, safer) == pytest.approx(parameter_bytes(plain) + te, rel=0.01)


def _result(peak_gb: float, imports_gb: float = 0.5, params_gb: float = 4.0) -> dict:
    gb = 2**30
    return {
        "pipelines": 1,
        "parameter_bytes": params_gb * gb,
        "peak_rss": peak_gb * gb,
        "rss_after_load": gb,
        "rss_after_imports": imports_gb * gb,
        "load_seconds": 1.0,
        "cuda_peak": None,
    }


def test_ratios_and_target_verdict():
    results = {
        "one": _result(4.5),
        "compare": _result(4.95, params_gb=4.46),
        "two": _result(8.5, params_gb=8.0),
    }
    peak = memory_report.ratios(results, "peak_rss")
    assert peak["compare"] == pytest.approx(1.1)
    assert memory_report.ratios(results, "peak_rss", subtract="rss_after_imports")[
        "compare"
    ] == pytest.approx(4.45 / 4.0)
    section = memory_report.to_section(
        {"settings": {"model": "sd15", "height": 128, "width": 128, "dtype": "float32"}, "results": results},
        "cpu",
    )
    [target] = section.targets
    assert target.met is True and target.value.startswith("1.100")
    results["compare"] = _result(5.4, params_gb=4.46)
    [missed] = memory_report.to_section(
        {"settings": {"model": "sd15", "height": 128, "width": 128, "dtype": "float32"}, "results": results},
        "cpu",
    ).targets
    assert missed.met is False and "second text encoder" in missed.cause
