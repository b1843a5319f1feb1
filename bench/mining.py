"""Proximity mining cost: :func:`saferclip_diffusers.training.mining.mine_targets` over random embeddings of the
reference encoder's width, for growing numbers of captions: wall time and the memory it needs beyond its inputs
(peak RSS), each size in a fresh process (``python -m bench.mining --mining UNSAFE SAFE``).
"""

from __future__ import annotations

import time
from typing import Any

import torch


def mine_once(
    n_unsafe: int, n_safe: int, dim: int, chunk: int, device: str = "cpu", seed: int = 0
) -> dict[str, Any]:
    """Mine proximity targets once over random embeddings; call in a fresh process for a clean peak RSS."""
    from saferclip_diffusers.training.mining import mine_targets

    from .memory import current_rss_bytes, peak_rss_bytes

    gen = torch.Generator().manual_seed(seed)
    unsafe = torch.randn(n_unsafe, dim, generator=gen)
    safe = torch.randn(n_safe, dim, generator=gen)
    cuda = device.startswith("cuda")
    if cuda:
        unsafe, safe = unsafe.to(device), safe.to(device)
        torch.cuda.reset_peak_memory_stats()
    before = max(current_rss_bytes(), peak_rss_bytes())  # inputs allocated and touched
    start = time.perf_counter()
    idx, sim = mine_targets(unsafe, safe, chunk_size=chunk)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if idx.shape != (n_unsafe,) or sim.shape != (n_unsafe,):
        raise RuntimeError(
            f"mine_targets returned shapes {tuple(idx.shape)}, {tuple(sim.shape)} for {n_unsafe} queries"
        )
    return {
        "unsafe": n_unsafe,
        "safe": n_safe,
        "seconds": seconds,
        "input_bytes": (unsafe.numel() + safe.numel()) * 4,
        "extra_peak_rss_bytes": max(0, peak_rss_bytes() - before),
        "cuda_peak_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        "pairs_per_second": n_unsafe * n_safe / seconds,
    }


def measure_mining(
    sizes: list[tuple[int, int]], dim: int, chunk: int, device: str = "cpu"
) -> list[dict[str, Any]]:
    """Time and extra peak memory of proximity mining per (unsafe, safe) caption count, each in a fresh process."""
    from tqdm.auto import tqdm

    from .memory import run_module_in_child

    return [
        run_module_in_child(
            "bench.mining",
            [
                "--mining",
                str(n_unsafe),
                str(n_safe),
                "--dim",
                str(dim),
                "--chunk",
                str(chunk),
                "--device",
                device,
                "--threads",
                str(torch.get_num_threads()),
            ],
        )
        for n_unsafe, n_safe in tqdm(sizes, desc="proximity mining", leave=False)
    ]


def main(argv: list[str] | None = None) -> None:
    import argparse
    import json

    from .memory import RESULT_PREFIX

    p = argparse.ArgumentParser(description="one proximity-mining measurement, in this (fresh) process")
    p.add_argument("--mining", nargs=2, type=int, required=True, metavar=("UNSAFE", "SAFE"))
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--chunk", type=int, default=4096)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    print(RESULT_PREFIX + json.dumps(mine_once(*a.mining, a.dim, a.chunk, a.device)), flush=True)


if __name__ == "__main__":
    main()
