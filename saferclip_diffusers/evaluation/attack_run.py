"""The attack run loop: for every target and system, find (or load) adversarial prompts, render, score, store.

Per target (``target_id``), in order:

1. Targets that involve minors are refused (a ``refused`` record; never attacked, never rendered).
2. Each attack runs against the text encoder a system actually uses: adaptive attacks (``swap-gcg``,
   ``ring-a-bell-adaptive``, ``unlearndiff``) once per encoder -- the original encoder (shared by ``original``,
   ``negative-prompt`` and SLD) and each safe encoder; transfer attacks (``mma``, ``ring-a-bell``, ``file:PATH``)
   once, against the original encoder, then replayed on every system. Results are stored before any image.
3. Every system renders the target itself (``pre``) and each adversarial prompt (``r0``, ``r1``, ... one per
   restart) from the same initial latents (the target's seed), then NudeNet (and Q16) score the images.
4. The conditioning distance of each system's best adversarial prompt is stored (``conditioning`` records).

Targets are sharded over processes (``accelerate launch``): target ``i`` belongs to process ``i % world``.
A killed run, rerun with the same command, continues without redoing stored attacks or images.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .attack_protocol import LIBRARY_NAME, AttackRunConfig, encoder_key, is_transfer
from .attack_render import looks_unsafe, render_variants  # noqa: F401 - looks_unsafe re-exported
from .attack_store import AttackStore, merge_attack_results

logger = logging.getLogger(__name__)

LIBRARY_KWARGS: dict[str, dict[str, Any]] = {
    "ring-a-bell": {"fitness": "original"},
    "ring-a-bell-adaptive": {"fitness": "safe"},
}


@dataclass
class AttackRunOptions:
    """Settings that do not change the stored records (not fingerprinted)."""

    output_dir: Path
    report: Any = None  # an AttackReportSpec; None = defaults
    save_images: bool = False
    blur_unsafe: bool = True
    nudenet_batch_size: int = 8
    allow_pickle: bool = False
    device: str = "auto"
    progress: bool = True
    grid_targets: int = 4
    nudenet_scorer: Any = None  # anything with NudeNetScorer's detect(images); None = NudeNet itself


def variant_prompts(target: str, attack_records: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(attack, variant, prompt) for one system: the target itself, then each attack's adversarial prompts."""
    out = [("", "pre", target)]
    for attack, record in attack_records.items():
        out += [(attack, f"r{i}", prompt) for i, prompt in enumerate(record["result"]["prompts"])]
    return out


@dataclass
class _Context:
    config: AttackRunConfig
    options: AttackRunOptions
    store: AttackStore
    models: Any  # runner.LoadedModels: generators, scorers, sizes, the base pipeline
    attack_pipes: dict[str, Any]
    grid_ids: set[int] = field(default_factory=set)


def run_attacks(
    config: AttackRunConfig, targets: pd.DataFrame, options: AttackRunOptions
) -> dict[str, Any] | None:
    """Attack, render, score and store everything not yet done; the main process writes and returns the summary.

    Nothing is written before every model has loaded (a run that fails validation leaves the folder as it was)."""
    from accelerate import PartialState

    from ..devices import resolve_device
    from .attack_report import write_attack_report
    from .attack_store import check_compatible, iter_records, record_key
    from .run_models import load_models

    device = resolve_device(options.device)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1 or int(os.environ.get("LOCAL_RANK", "-1")) >= 0
    state = PartialState(cpu=device.type == "cpu" or (distributed and not torch.cuda.is_available()))
    rank, world = state.process_index, state.num_processes
    out = Path(options.output_dir)
    check_compatible(out, config.to_dict(), config.fingerprint())
    done = {record_key(r): r for r in iter_records(out)} if out.is_dir() else {}
    mine = [i for i in range(len(targets)) if i % world == rank]
    todo = [i for i in mine if not _target_done(done, config, targets.iloc[i])]
    logger.info("process %d/%d: %d of %d targets to do", rank + 1, world, len(todo), len(mine))
    models = None
    if todo:
        models = load_models(config, options, device, world, nudenet_scorer=options.nudenet_scorer)
    out.mkdir(parents=True, exist_ok=True)
    marker = out / "attack-shards" / f"done-{rank:03d}-of-{world:03d}"
    marker.unlink(missing_ok=True)
    with AttackStore(out, config.to_dict(), config.fingerprint(), rank, world) as store:
        if state.is_main_process:
            targets.to_csv(out / "targets.csv.tmp", index=False)
            os.replace(out / "targets.csv.tmp", out / "targets.csv")
        if todo:
            pipes = {
                encoder_key(s): models.generators[s.name].pipe for s in config.systems if s.kind == "safe"
            }
            pipes["original"] = _identity_safer(models.base, config.sdxl)
            ids = [int(i) for i in targets["prompt_id"]]
            ctx = _Context(config, options, store, models, pipes, set(ids[: options.grid_targets]))
            _run(ctx, targets, todo, show=options.progress and state.is_main_process)
    marker.write_text("done\n")
    if not state.is_main_process:
        return None
    _wait(out, world)
    header, records = merge_attack_results(out)
    return write_attack_report(out, header, records, options.report)


def _target_done(done: dict, config: AttackRunConfig, row) -> bool:
    tid = int(row["prompt_id"])
    if ("refused", tid) in done:
        return True
    last = config.protocol.images_per_attempt - 1
    for system in config.systems:
        if ("image", tid, system.name, "", "pre", last) not in done:
            return False
        if any(("conditioning", tid, system.name, attack) not in done for attack in config.attacks):
            return False
    return True


def _wait(out: Path, world: int, poll_s: float = 2.0) -> None:
    missing = [
        r for r in range(world) if not (out / "attack-shards" / f"done-{r:03d}-of-{world:03d}").exists()
    ]
    while missing:
        time.sleep(poll_s)
        missing = [
            r for r in missing if not (out / "attack-shards" / f"done-{r:03d}-of-{world:03d}").exists()
        ]


def _run(ctx: _Context, targets: pd.DataFrame, todo: list[int], show: bool) -> None:
    from tqdm.auto import tqdm

    for i in tqdm(todo, desc="attack targets", unit="target", disable=not show):
        _one_target(ctx, targets.iloc[i])


def _identity_safer(base, sdxl: bool):
    """A Safer pipeline whose "safe" encoders ARE the originals: what an attack on the original encoder reads."""
    from ..pipelines import SaferStableDiffusionPipeline, SaferStableDiffusionXLPipeline

    cls = SaferStableDiffusionXLPipeline if sdxl else SaferStableDiffusionPipeline
    kwargs: dict[str, Any] = {"safe_text_encoder": base.text_encoder, "keep_original": True}
    if sdxl:
        kwargs["safe_text_encoder_2"] = base.text_encoder_2
    pipe = cls.from_pipe(base, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _one_target(ctx: _Context, row) -> None:
    from ..attacks.safety import RefusedTargetError, check_target

    cfg, tid, target = ctx.config, int(row["prompt_id"]), str(row["prompt"])
    try:
        check_target(target, cfg.minors_words)
        for adversarial in row.get("adversarial") or []:
            check_target(adversarial, cfg.minors_words)
    except RefusedTargetError as err:
        ctx.store.append([{"kind": "refused", "target_id": tid, "reason": str(err)}])
        logger.warning("%s", err)
        return
    per_encoder = {key: {} for key in {"original", *(encoder_key(s) for s in cfg.systems)}}
    for attack in cfg.attacks:
        keys = ["original"] if is_transfer(attack) else sorted(per_encoder)
        for key in keys:
            record = _attack(ctx, tid, target, row, attack, key)
            for k in list(per_encoder) if is_transfer(attack) else [key]:
                per_encoder[k][attack] = record
    seed = int(row["seed"])
    guidance = _guidance(cfg, row)
    latents = torch.randn(
        (cfg.protocol.images_per_attempt, *ctx.models.shape),
        dtype=torch.float32,
        generator=torch.Generator("cpu").manual_seed(seed),
    )
    for system in cfg.systems:
        records = per_encoder[encoder_key(system)]
        render_variants(ctx, tid, system.name, variant_prompts(target, records), latents, guidance, seed)
        _conditioning(ctx, tid, target, system, records)


def _guidance(cfg: AttackRunConfig, row) -> float:
    value = row.get("guidance")
    if cfg.protocol.row_guidance and value is not None and not (isinstance(value, float) and np.isnan(value)):
        return float(value)
    return float(cfg.protocol.guidance_scale)


def _attack(ctx: _Context, tid: int, target: str, row, attack: str, key: str) -> dict[str, Any]:
    probe = {"kind": "attack", "target_id": tid, "encoder": key, "attack": attack}
    done = ctx.store.get(probe)
    if done is not None:
        return done
    if attack.startswith("file:"):
        result = {
            "target": target,
            "prompts": list(row["adversarial"]),
            "losses": [],
            "history": [],
            "steps": 0,
            "seconds": 0.0,
            "meta": {"attack": attack, "source": attack[5:]},
        }
    else:
        from ..attacks import get_attack

        name = LIBRARY_NAME.get(attack, attack)
        budget = {**ctx.config.protocol.budget(attack), **LIBRARY_KWARGS.get(attack, {})}
        runner = get_attack(name, **budget)
        result = runner.run(ctx.attack_pipes[key], target, seed=int(row["seed"])).to_dict()
    record = {**probe, "result": result}
    ctx.store.append([record])
    return record


def _conditioning(ctx: _Context, tid: int, target: str, system, records: dict[str, dict[str, Any]]) -> None:
    """Conditioning distances of each attack's prompts on the system's encoder (the attack objective of
    :func:`saferclip_diffusers.attacks.conditioning_distance`); the target's own conditioning is encoded once."""
    from ..attacks.conditioning import ConditioningObjective, encoder_slots

    todo = [
        (record, {"kind": "conditioning", "target_id": tid, "system": system.name, "attack": attack})
        for attack, record in records.items()
    ]
    todo = [item for item in todo if ctx.store.get(item[1]) is None]
    if not todo:
        return
    pipe = ctx.attack_pipes[encoder_key(system)]
    slots = encoder_slots(pipe)
    objective = ConditioningObjective.for_slots(slots, target)
    target_distance = float(objective.score_prompts(slots, [target])[0])
    rows = []
    for record, probe in todo:
        prompts = record["result"]["prompts"]
        distances = [float(d) for d in objective.score_prompts(slots, prompts)] if prompts else []
        rows.append(
            {
                **probe,
                "distance": min(distances) if distances else None,
                "distances": distances,
                "target_distance": target_distance,
            }
        )
    ctx.store.append(rows)
