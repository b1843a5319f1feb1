"""Training: step time with cached frozen embeddings vs recomputing the reference every step; proximity mining.

Step time
    Two :class:`~saferclip_diffusers.training.trainer.Trainer` objects are built from the same config. One is the
    trainer as shipped: the frozen reference embeddings ``T0`` (and pooled token states) of every caption are
    computed once and cached. The other carries a :class:`Recompute` callback: before every micro-batch it
    recomputes, with the frozen reference encoder, the rows that batch reads (its unsafe captions, its preservation
    captions and their proximity targets) - what a trainer without the cache pays. Both run alternately, a few
    optimizer steps at a time; step times come from a :class:`StepClock` callback (``on_step_end``), so they cover
    the real loop (batching, tokenisation, forward, backward, optimizer). Only the trainer's public hooks are used.

Proximity mining (:mod:`bench.mining`, reported by :mod:`bench.training_report`)
    :func:`saferclip_diffusers.training.mining.mine_targets` over random embeddings of the reference encoder's
    width, for growing numbers of captions: wall time and the memory it needs beyond its inputs (peak RSS sampled
    while it runs).
"""

from __future__ import annotations

import copy
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .environment import cpu_supports_bf16
from .mining import measure_mining, mine_once  # noqa: F401 - mine_once re-exported
from .report import Section
from .timing import spread
from .training_report import CACHED_TARGET, to_section  # noqa: F401 - CACHED_TARGET re-exported


@dataclass
class TrainingBenchConfig:
    device: str = "cpu"
    config: str = (
        "sd15-unpaired"  # the shipped training config whose settings both trainers use (bundled data)
    )
    model: str = "clip-l"  # clip-l: real-size random CLIP ViT-L/14 text tower; or tiny:clip
    batch_size: int | None = 16  # None: the config's (48 for sd15)
    max_unsafe: int = 224  # enough for (rounds + 1) x steps_per_call steps without an epoch end
    max_safe: int = 256
    mixed_precision: str | None = None  # None: the config's, or "no" on a CPU without native bf16
    steps_per_call: int = 3
    rounds: int = 3
    mining_sizes: list[tuple[int, int]] = field(
        default_factory=lambda: [
            (2352, 1_000),
            (2352, 10_000),
            (2352, 30_000),
            (2352, 100_000),
            (2352, 300_000),
        ]
    )
    mining_dim: int = 768
    mining_chunk: int = 4096


def default_config(device: str = "cpu", quick: bool = False) -> TrainingBenchConfig:
    if quick:
        return TrainingBenchConfig(
            device=device,
            config="tiny",
            model="tiny:clip",
            batch_size=8,
            max_unsafe=96,
            max_safe=128,
            steps_per_call=3,
            rounds=2,
            mining_sizes=[(100, 500), (100, 2_000)],
            mining_dim=32,
            mining_chunk=256,
        )
    if device.startswith("cuda"):
        return TrainingBenchConfig(device=device, batch_size=None, max_unsafe=1024, max_safe=2048, rounds=5)
    return TrainingBenchConfig(device=device)


# ----------------------------------------------------------------------------------------------- trainers


class Recompute:
    """Trainer callback: before each micro-batch, recompute the frozen reference rows it reads (no cache)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_batch_start(self, trainer, unsafe_idx, keep_idx) -> None:
        from saferclip_diffusers.training.models import encode_text, reference_towers

        start = time.perf_counter()
        u = torch.as_tensor(unsafe_idx)
        safe_rows = torch.cat([torch.as_tensor(keep_idx), trainer.targets.text[u]])
        with trainer.accelerator.autocast():  # the same precision as the trainer's own forward passes
            for bundle in trainer.bundles:
                frozen = trainer.frozen[bundle.slot]
                with reference_towers(bundle, trainer.cfg) as (text0, _):
                    for rows, texts, embeds, hidden in (
                        (u, trainer.data.unsafe_texts, frozen.text_unsafe, frozen.hidden_unsafe),
                        (safe_rows, trainer.data.safe_texts, frozen.text_safe, frozen.hidden_safe),
                    ):
                        ids = bundle.tokenize([texts[i] for i in rows.tolist()]).to(trainer.device)
                        e, h = encode_text(text0, ids, bundle.eos_token_id, bundle.settings.hidden_layer)
                        embeds[rows] = e.float().cpu()
                        if h is not None and hidden is not None:
                            hidden[rows] = h.float().cpu()
        self.seconds.append(time.perf_counter() - start)


class StepClock:
    """Trainer callback: a timestamp at the end of every optimizer step."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.stamps: list[float] = []

    def on_step_end(self, trainer, step, logs) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        self.stamps.append(time.perf_counter())


def train_config(bench: TrainingBenchConfig, scratch: Path):
    """The shipped config with the benchmark's model, data size and batch; same for both trainers."""
    from saferclip_diffusers.training.config import load_config

    model = bench.model
    if model == "clip-l":
        from .models import real_size_dir

        model = str(real_size_dir("clip-l"))
    overrides = [
        f"encoders.0.model={model}",
        f"data.max_unsafe={bench.max_unsafe}",
        f"data.max_safe={bench.max_safe}",
        "curriculum.enabled=false",  # every step from the whole pool: no epoch ends inside the measurement
        f"run.cpu={str(not bench.device.startswith('cuda')).lower()}",
        f"run.cache_dir={scratch / 'cache'}",
        "run.checkpoint_every=1000000",
        f"run.stop_after_steps={bench.steps_per_call}",
        "optim.max_steps=1000000",
    ]
    if bench.batch_size:
        overrides.append(f"optim.batch_size={bench.batch_size}")
    cfg = load_config(bench.config, overrides)
    if bench.mixed_precision:
        cfg.optim.mixed_precision = bench.mixed_precision
    elif (
        not bench.device.startswith("cuda")
        and cfg.optim.mixed_precision == "bf16"
        and not cpu_supports_bf16()
    ):
        cfg.optim.mixed_precision = "no"
    return cfg


def measure_step_times(bench: TrainingBenchConfig) -> dict[str, Any]:
    """Alternate ``rounds`` times: ``steps_per_call`` steps of the cached trainer, then of the recomputing one."""
    from tqdm.auto import tqdm

    from saferclip_diffusers.training.trainer import Trainer

    with tempfile.TemporaryDirectory(prefix="saferclip-bench-train-") as tmp:
        scratch = Path(tmp)
        cfg = train_config(bench, scratch)
        recompute_cb = Recompute()
        clocks = {"cached": StepClock(bench.device), "recompute": StepClock(bench.device)}
        t0 = time.perf_counter()
        cached = Trainer(copy.deepcopy(cfg), scratch / "cached", callbacks=[clocks["cached"]]).setup()
        precompute_s = time.perf_counter() - t0  # computes and caches T0 for every caption
        recompute = Trainer(
            copy.deepcopy(cfg),
            scratch / "recompute",  # reads the same cache
            callbacks=[recompute_cb, clocks["recompute"]],
        ).setup()
        trainers = {"cached": cached, "recompute": recompute}
        per_round: dict[str, list[float]] = {name: [] for name in trainers}
        intervals: dict[str, list[float]] = {name: [] for name in trainers}
        order = list(trainers)
        try:
            for r in tqdm(range(bench.rounds + 1), desc="training steps", leave=False):  # round 0 warms up
                for name in order[r % 2 :] + order[: r % 2]:
                    clocks[name].stamps.clear()
                    trainers[name].train(validate_first=False)  # the validation pass is not a training step
                    steps = clocks[name].stamps
                    gaps = [
                        b - a for a, b in zip(steps, steps[1:], strict=False)
                    ]  # the first step also pays set-up
                    if r > 0 and gaps:
                        per_round[name].append(spread(gaps)["median"])
                        intervals[name].extend(gaps)
        finally:
            for trainer in trainers.values():
                trainer.close()
        n_recompute = len(recompute_cb.seconds)
        recompute_part = recompute_cb.seconds[-(bench.rounds * bench.steps_per_call) :] if n_recompute else []
        settings = {
            "config": bench.config,
            "model": bench.model,
            "device": bench.device,
            "batch_size": cfg.optim.batch_size,
            "mixed_precision": cfg.optim.mixed_precision,
            "finetune": cfg.finetune,
            "lora_r": cfg.lora.r,
            "hidden_layer": cfg.encoders[0].hidden_layer,
            "captions": {"unsafe": len(cached.data.unsafe_texts), "safe": len(cached.data.safe_texts)},
            "threads": torch.get_num_threads(),
        }
    ratios = [rc / c for rc, c in zip(per_round["recompute"], per_round["cached"], strict=True)]
    return {
        "settings": settings,
        "bench": asdict(bench),
        "precompute_seconds": precompute_s,
        "step_seconds": {name: spread(v) for name, v in intervals.items()},
        "speedup": spread(ratios),
        "recompute_seconds": spread(recompute_part) if recompute_part else None,
        "per_round": per_round,
    }


def run_training(device: str = "cpu", quick: bool = False, **overrides: Any) -> Section:
    bench = default_config(device, quick)
    for key, value in overrides.items():
        setattr(bench, key, value)
    steps = measure_step_times(bench)
    mining = measure_mining(bench.mining_sizes, bench.mining_dim, bench.mining_chunk, device)
    return to_section(steps, mining, {"dim": bench.mining_dim, "chunk": bench.mining_chunk}, device)
