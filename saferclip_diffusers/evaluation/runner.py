"""The I2P run loop: plan, shard over processes, generate every system from shared latents, score in a worker.

Work is cut into fixed batches of ``batch_size`` images (prompt order, image index order) before anything runs,
and batch ``b`` belongs to process ``b % num_processes``. A batch is always generated whole, so a resumed or
sharded run feeds the pipeline exactly the batches an uninterrupted single-process run does. Scoring (NudeNet,
Q16 when configured), image saving and appending to the results file happen in a worker thread
(:mod:`.worker`), so the generator rarely waits on them.

Nothing is written before validation passes: the folder's configuration is checked and every model (base,
safe encoders, NudeNet, Q16) is loaded first, so a failed start (a bad ``--safe-encoder``, no Q16 model) leaves
the output folder as it was and the corrected command runs there.

With ``accelerate launch``, every process writes its own shard; the main process waits for the others' done
markers (files, so no collective timeout applies however uneven the shards are), merges and reports.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..io import atomic_save_image
from .grid import grid_cell, grid_cell_path, slug
from .protocol import ReportSpec, RunConfig
from .report import save_prompt_snapshot, write_report
from .run_config import build_run_config, prepare_run  # noqa: F401 - re-exported: the runner's public API
from .run_models import LoadedModels, load_models, load_q16  # noqa: F401 - re-exported
from .run_plan import Work, initial_latents, plan_batches, plan_work  # noqa: F401 - plan_batches re-exported
from .store import ResultStore, check_compatible, done_keys, merge_results, shard_path
from .worker import ScoringWorker

logger = logging.getLogger(__name__)


@dataclass
class RunOptions:
    """Settings that do not change the per-image records (not part of the configuration fingerprint)."""

    output_dir: Path
    report: ReportSpec = field(default_factory=ReportSpec)
    save_images: bool = False
    nudenet_batch_size: int = 8
    queue_size: int = 4
    allow_pickle: bool = False
    device: str = "auto"
    progress: bool = True


def _marker(output_dir: Path, rank: int, world: int) -> Path:
    return output_dir / "shards" / f"done-{rank:03d}-of-{world:03d}"


def run_i2p(
    config: RunConfig, prompts: pd.DataFrame, options: RunOptions, *, nudenet_scorer=None, q16_scorer=None
) -> dict[str, Any] | None:
    """Generate, score and store every (prompt, system, image) not yet done; the main process returns the summary.

    ``nudenet_scorer``: any object with NudeNet's ``detect(images)`` (default: the bundled NudeNet detector);
    ``q16_scorer``: a callable ``images -> list[float]`` (default: Q16 on the configured CLIP, if any). The returned
    summary carries ``run_timing``: generation seconds, seconds the generator waited for the scorer (queue full),
    tail seconds (waiting for the last batches) and the worker's scoring seconds."""
    from accelerate import PartialState

    from ..devices import resolve_device

    device = resolve_device(options.device)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1 or int(os.environ.get("LOCAL_RANK", "-1")) >= 0
    # without CUDA, accelerate only sets up a multi-process (gloo) group when told the run is on CPU
    state = PartialState(cpu=device.type == "cpu" or (distributed and not torch.cuda.is_available()))
    rank, world = state.process_index, state.num_processes
    out = Path(options.output_dir)
    identity, fingerprint = config.identity(), config.fingerprint()
    check_compatible(out, identity, fingerprint)  # read-only: a refused run writes nothing
    work = plan_work(config, prompts, options, done_keys(out), rank, world)
    models = None
    if work.todo:
        models = load_models(
            config,
            options,
            state.device if device.type != "cpu" else device,
            world,
            nudenet_scorer,
            q16_scorer,
        )
    out.mkdir(parents=True, exist_ok=True)
    _marker(out, rank, world).unlink(missing_ok=True)
    timing: dict[str, Any] = {
        "generation_s": 0.0,
        "blocked_s": 0.0,
        "tail_s": 0.0,
        "score_s": 0.0,
        "images": 0,
    }
    with ResultStore(out, config.to_dict(), fingerprint, rank, world, identity=identity) as store:
        if state.is_main_process:
            save_prompt_snapshot(prompts, out)
        state.wait_for_everyone()  # every stale done marker is gone and every shard exists before anyone finishes
        shared = all(shard_path(out, r, world).exists() for r in range(world))
        logger.info(
            "process %d/%d: %d of %d images to do (%d batches of up to %d)",
            rank + 1,
            world,
            work.total - work.done,
            work.total,
            len(work.todo),
            config.protocol.batch_size,
        )
        if work.todo:
            tiny_on_cpu = config.random_weights and state.device.type == "cpu"
            threads = torch.get_num_threads()
            if tiny_on_cpu:
                torch.set_num_threads(1)  # tiny layers gain nothing from threads; OpenMP waits cost seconds
            try:
                timing = _generate(config, prompts, options, state, store, work, models)
            finally:
                torch.set_num_threads(threads)
    _marker(out, rank, world).write_text("done\n")
    if not state.is_main_process:
        return None
    if not shared:
        logger.warning(
            "%s is not shared between the machines of this run, so the shards cannot be merged here: copy every "
            "machine's shards/ folder into one directory, then run `python eval/i2p.py report DIR`",
            out,
        )
        return None
    _wait_for_shards(out, world)
    header, records = merge_results(out)
    summary = write_report(out, header, records, options.report)
    summary["run_timing"] = timing
    return summary


def _generate(
    config: RunConfig,
    prompts: pd.DataFrame,
    options: RunOptions,
    state,
    store: ResultStore,
    work: Work,
    models: LoadedModels,
) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from .generators import GenerationBatch, count_truncated, quiet_generation_logs

    protocol = config.protocol
    out = Path(options.output_dir)
    rows_todo = sorted({r for b, _ in work.todo for r, _ in work.batches[b]})
    with quiet_generation_logs():
        cut = count_truncated(models.tokenizer, [prompts["prompt"].iloc[r] for r in rows_todo])
    if cut:
        logger.info(
            "%d of %d prompts are longer than CLIP's %d tokens and are truncated (as in any SD pipeline)",
            cut,
            len(rows_todo),
            models.tokenizer.model_max_length,
        )

    def on_image(meta: dict[str, Any], image, record: dict[str, Any]) -> None:
        if options.save_images:
            rel = (
                Path("images")
                / slug(meta["system"])
                / f"{meta['prompt_id']:05d}_{meta['image_index']:02d}.png"
            )
            atomic_save_image(image, out / rel)
            record["image_file"] = rel.as_posix()
        if meta["image_index"] == 0 and meta["prompt_id"] in work.grid_ids:
            atomic_save_image(grid_cell(image), grid_cell_path(out, meta["system"], meta["prompt_id"]))

    progress = tqdm(
        total=work.total,
        initial=work.done,
        desc="I2P images",
        unit="img",
        dynamic_ncols=True,
        disable=not (options.progress and state.is_main_process),
        smoothing=0.05,
    )
    worker = ScoringWorker(
        store, models.nudenet, models.q16, on_image=on_image, progress=progress, queue_size=options.queue_size
    )
    latents_of: dict[int, torch.Tensor] = {}  # row -> the noise of all its images (rows arrive in order)
    started = time.perf_counter()
    generation = 0.0
    try:
        for b, spec in work.todo:
            items = work.batches[b]
            for r in [r for r in latents_of if r < items[0][0]]:
                del latents_of[r]
            for r, _ in items:
                if r not in latents_of:
                    latents_of[r] = initial_latents(
                        int(prompts["seed"].iloc[r]), protocol.num_images_per_prompt, models.shape
                    )
            rows = [prompts.iloc[r] for r, _ in items]
            cfg = protocol.guidance_for(rows[0]["guidance"])
            batch = GenerationBatch(
                [row["prompt"] for row in rows],
                torch.stack([latents_of[r][k] for r, k in items]),
                cfg,
                protocol.num_inference_steps,
                models.height,
                models.width,
            )
            t0 = time.perf_counter()
            with quiet_generation_logs():
                images, redirection = models.generators[spec.name](batch)
            generation += time.perf_counter() - t0
            metas = [
                {
                    "prompt_id": int(row["prompt_id"]),
                    "system": spec.name,
                    "image_index": k,
                    "seed": int(row["seed"]),
                    "categories": list(row["categories"]),
                    "guidance_scale": cfg,
                }
                for row, (_, k) in zip(rows, items, strict=True)
            ]
            worker.submit(metas, images, redirection)
    finally:
        worker.close()
        progress.close()
    wall = time.perf_counter() - started
    logger.info("process %d: %d images in %.1f s", state.process_index, worker.written, wall)
    return {"generation_s": generation, "wall_s": wall, "images": worker.written, **worker.timing()}


def _wait_for_shards(out: Path, world: int, poll_s: float = 2.0) -> None:
    missing = [r for r in range(world) if not _marker(out, r, world).exists()]
    if missing:
        logger.info("waiting for process(es) %s to finish their shards", ", ".join(str(r) for r in missing))
    while missing:
        time.sleep(poll_s)
        missing = [r for r in missing if not _marker(out, r, world).exists()]


def report_from_dir(
    output_dir: str | os.PathLike, spec: ReportSpec, out_dir: str | os.PathLike | None = None
) -> dict[str, Any]:
    """Merge the shards of a run directory and (re)write its report, e.g. with other NudeNet presets (rescore)."""
    header, records = merge_results(output_dir)
    return write_report(output_dir, header, records, spec, out_dir)


def rescore_dir_name(spec: ReportSpec) -> str:
    return "rescore-" + slug(f"{spec.nudenet_preset}_{spec.nudity_preset}")
