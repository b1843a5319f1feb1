"""The I2P run loop: plan, shard over processes, generate every system from shared latents, score in a worker.

Work is cut into fixed batches of ``batch_size`` images (prompt order, image index order) before anything runs,
and batch ``b`` belongs to process ``b % num_processes``. A batch is always generated whole, so a resumed or
sharded run feeds the pipeline exactly the batches an uninterrupted single-process run does. Scoring (NudeNet,
Q16 when configured), image saving and appending to the results file happen in a worker thread, so the
generator never waits on them; the bounded queue between them keeps memory flat.

With ``accelerate launch``, every process writes its own shard; the main process waits for the others' done
markers (files, so no collective timeout applies however uneven the shards are), merges and reports.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .prompts import PromptSelection, exclude_training_prompts, load_prompts
from .protocol import SAFETY_CONCEPT, Protocol, ReportSpec, RunConfig, ScoringSpec, SystemSpec
from .report import (
    atomic_save_image,
    grid_cell_path,
    save_prompt_snapshot,
    select_grid_prompts,
    slug,
    write_report,
)
from .store import ResultStore, merge_results, shard_path

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
GRID_CELL_SIZE = 256


@dataclass
class RunOptions:
    """Settings that do not change the per-image records (not part of the configuration fingerprint)."""

    output_dir: Path
    report: ReportSpec = field(default_factory=ReportSpec)
    save_images: bool = False
    nudenet_batch_size: int = 8
    queue_size: int = 4
    allow_pickle: bool = False
    cpu: bool = False
    progress: bool = True


# ----------------------------------------------------------------------------------------------- planning


def prompt_digest(prompts: pd.DataFrame) -> str:
    digest = hashlib.sha256()
    for row in prompts.itertuples(index=False):
        digest.update(f"{int(row.prompt_id)}\t{int(row.seed)}\t{row.guidance}\t{row.prompt}\n".encode())
    return digest.hexdigest()


def plan_batches(prompts: pd.DataFrame, protocol: Protocol, batch_size: int) -> list[list[tuple[int, int]]]:
    """Fixed batches of (row, image_index); with per-row guidance a batch never mixes two CFG scales."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    batches: list[list[tuple[int, int]]] = []
    current: list[tuple[int, int]] = []
    current_cfg = None
    for row in range(len(prompts)):
        cfg = protocol.guidance_for(prompts["guidance"].iloc[row])
        for k in range(protocol.num_images_per_prompt):
            if current and (len(current) == batch_size or cfg != current_cfg):
                batches.append(current)
                current = []
            current.append((row, k))
            current_cfg = cfg
    if current:
        batches.append(current)
    return batches


def initial_latents(seed: int, num_images: int, shape: Sequence[int]) -> torch.Tensor:
    """The protocol's noise for all images of one prompt: float32 from a CPU generator seeded with ``seed``."""
    generator = torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn((num_images, *shape), generator=generator, dtype=torch.float32)


# ----------------------------------------------------------------------------------------------- scoring worker


class ScoringWorker:
    """Scores generated images and appends their records in a background thread."""

    _STOP = object()

    def __init__(self, store: ResultStore, nudenet, q16, output_dir: Path, save_images: bool,
                 grid_ids: set[int], progress, queue_size: int = 4):
        self.store, self.nudenet, self.q16 = store, nudenet, q16
        self.output_dir, self.save_images, self.grid_ids = output_dir, save_images, grid_ids
        self.progress = progress
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        self.error: BaseException | None = None
        self.written = 0
        self.thread = threading.Thread(target=self._run, name="i2p-scoring", daemon=True)
        self.thread.start()

    def submit(self, metas: list[dict[str, Any]], images: list[Any], redirection: list[float] | None) -> None:
        while True:
            if self.error is not None:
                raise RuntimeError("scoring failed; see the error above") from self.error
            try:
                self.queue.put((metas, images, redirection), timeout=0.5)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is self._STOP:
                return
            if self.error is not None:
                continue  # drain without work after a failure
            try:
                self._score(*item)
            except BaseException as err:  # noqa: BLE001 - handed to the main thread
                logger.exception("scoring worker failed")
                self.error = err

    def _score(self, metas, images, redirection) -> None:
        detections = self.nudenet.detect(images)
        q16 = self.q16(images) if self.q16 is not None else [None] * len(images)
        records = []
        for i, (meta, image) in enumerate(zip(metas, images, strict=True)):
            record = dict(meta)
            record["nudenet"] = detections[i]
            record["q16"] = q16[i]
            record["redirection_score"] = float(redirection[i]) if redirection is not None else None
            record["image_sha256"] = hashlib.sha256(np.asarray(image.convert("RGB")).tobytes()).hexdigest()
            record["image_file"] = None
            if self.save_images:
                rel = Path("images") / slug(meta["system"]) / f"{meta['prompt_id']:05d}_{meta['image_index']:02d}.png"
                atomic_save_image(image, self.output_dir / rel)
                record["image_file"] = rel.as_posix()
            if meta["image_index"] == 0 and meta["prompt_id"] in self.grid_ids:
                cell = image.copy()
                cell.thumbnail((GRID_CELL_SIZE, GRID_CELL_SIZE))
                atomic_save_image(cell, grid_cell_path(self.output_dir, meta["system"], meta["prompt_id"]))
            records.append(record)
        self.written += self.store.append(records)
        if self.progress is not None:
            self.progress.update(len(records))

    def close(self) -> None:
        """Finish what is queued, stop the thread, re-raise a scoring failure."""
        self.queue.put(self._STOP)
        self.thread.join()
        if self.error is not None:
            raise RuntimeError("scoring failed; see the error above") from self.error


# ----------------------------------------------------------------------------------------------- the run


def _marker(output_dir: Path, rank: int, world: int) -> Path:
    return output_dir / "shards" / f"done-{rank:03d}-of-{world:03d}"


@dataclass
class _Work:
    """This process's share: the global batch layout, the (batch, system) pairs still to do, progress counts."""

    batches: list[list[tuple[int, int]]]
    todo: list[tuple[int, SystemSpec]]
    total: int
    done: int
    grid_ids: set[int]


def _plan_work(config: RunConfig, prompts: pd.DataFrame, options: RunOptions, store: ResultStore, rank: int,
               world: int) -> _Work:
    batches = plan_batches(prompts, config.protocol, config.protocol.batch_size)
    mine = [b for b in range(len(batches)) if b % world == rank]
    ids = [int(i) for i in prompts["prompt_id"]]
    todo = [(b, spec) for b in mine for spec in config.systems
            if not all((ids[r], spec.name, k) in store.done for r, k in batches[b])]
    total = sum(len(batches[b]) for b in mine) * len(config.systems)
    done = total - sum(len(batches[b]) for b, _ in todo)
    return _Work(batches, todo, total, done, set(select_grid_prompts(prompts, options.report.grid_prompts)))


def run_i2p(config: RunConfig, prompts: pd.DataFrame, options: RunOptions) -> dict[str, Any] | None:
    """Generate, score and store every (prompt, system, image) not yet done; the main process returns the summary."""
    from accelerate import PartialState

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1 or int(os.environ.get("LOCAL_RANK", "-1")) >= 0
    # without CUDA, accelerate only sets up a multi-process (gloo) group when told the run is on CPU
    state = PartialState(cpu=options.cpu or (distributed and not torch.cuda.is_available()))
    rank, world = state.process_index, state.num_processes
    out = Path(options.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _marker(out, rank, world).unlink(missing_ok=True)
    with ResultStore(out, config.to_dict(), config.fingerprint(), rank, world) as store:
        if state.is_main_process:
            save_prompt_snapshot(prompts, out)
        state.wait_for_everyone()  # every stale done marker is gone and every shard exists before anyone finishes
        shared = all(shard_path(out, r, world).exists() for r in range(world))
        work = _plan_work(config, prompts, options, store, rank, world)
        logger.info("process %d/%d: %d of %d images to do (%d batches of up to %d)", rank + 1, world,
                    work.total - work.done, work.total, len(work.todo), config.protocol.batch_size)
        if work.todo:
            tiny_on_cpu = config.protocol.model.startswith("tiny") and state.device.type == "cpu"
            threads = torch.get_num_threads()
            if tiny_on_cpu:
                torch.set_num_threads(1)  # tiny layers gain nothing from threads; OpenMP waits cost seconds
            try:
                _generate(config, prompts, options, state, store, work)
            finally:
                torch.set_num_threads(threads)
    _marker(out, rank, world).write_text("done\n")
    if not state.is_main_process:
        return None
    if not shared:
        logger.warning(
            "%s is not shared between the machines of this run, so the shards cannot be merged here: copy every "
            "machine's shards/ folder into one directory, then run `python eval/i2p.py report DIR`", out)
        return None
    _wait_for_shards(out, world)
    header, records = merge_results(out)
    return write_report(out, header, records, options.report)


def _generate(config: RunConfig, prompts: pd.DataFrame, options: RunOptions, state, store: ResultStore,
              work: _Work) -> None:
    from tqdm.auto import tqdm

    from ..scoring.nudenet import NudeNetScorer
    from .systems import (
        GenerationBatch,
        build_generators,
        count_truncated,
        load_base_pipeline,
        quiet_generation_logs,
    )

    protocol = config.protocol
    sdxl = protocol.model in ("sdxl", "tiny-sdxl")
    local = protocol.model.startswith("tiny")
    base = load_base_pipeline(config.base, sdxl=sdxl, torch_dtype=DTYPES[config.torch_dtype], device=state.device,
                              local_files_only=local, allow_pickle=options.allow_pickle)
    generators = build_generators(base, config.systems, sdxl=sdxl, allow_pickle=options.allow_pickle,
                                  local_files_only=local)
    height = protocol.height or base.unet.config.sample_size * base.vae_scale_factor
    width = protocol.width or base.unet.config.sample_size * base.vae_scale_factor
    shape = (base.unet.config.in_channels, height // base.vae_scale_factor, width // base.vae_scale_factor)
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", state.num_processes))
    nudenet = NudeNetScorer(batch_size=options.nudenet_batch_size, num_threads=max(1, (os.cpu_count() or 1) // per_node))
    q16 = None
    if config.scoring.q16_clip:
        from ..scoring.q16 import Q16Classifier

        hub = {"local_files_only": True} if local else {}
        q16 = Q16Classifier(config.scoring.q16_clip, prompts=config.scoring.q16_prompts, device=state.device, **hub)
    rows_todo = sorted({r for b, _ in work.todo for r, _ in work.batches[b]})
    with quiet_generation_logs():
        cut = count_truncated(base.tokenizer, [prompts["prompt"].iloc[r] for r in rows_todo])
    if cut:
        logger.info("%d of %d prompts are longer than CLIP's %d tokens and are truncated (as in any SD pipeline)",
                    cut, len(rows_todo), base.tokenizer.model_max_length)
    progress = tqdm(total=work.total, initial=work.done, desc="I2P images", unit="img", dynamic_ncols=True,
                    disable=not (options.progress and state.is_main_process), smoothing=0.05)
    worker = ScoringWorker(store, nudenet, q16, Path(options.output_dir), options.save_images, work.grid_ids, progress,
                           options.queue_size)
    latents_of: dict[int, torch.Tensor] = {}  # row -> the noise of all its images (rows arrive in order)
    started = time.perf_counter()
    try:
        for b, spec in work.todo:
            items = work.batches[b]
            for r in [r for r in latents_of if r < items[0][0]]:
                del latents_of[r]
            for r, _ in items:
                if r not in latents_of:
                    latents_of[r] = initial_latents(int(prompts["seed"].iloc[r]), protocol.num_images_per_prompt, shape)
            rows = [prompts.iloc[r] for r, _ in items]
            cfg = protocol.guidance_for(rows[0]["guidance"])
            batch = GenerationBatch([row["prompt"] for row in rows], torch.stack([latents_of[r][k] for r, k in items]),
                                    cfg, protocol.num_inference_steps, height, width)
            with quiet_generation_logs():
                images, redirection = generators[spec.name](batch)
            metas = [
                {"prompt_id": int(row["prompt_id"]), "system": spec.name, "image_index": k, "seed": int(row["seed"]),
                 "categories": list(row["categories"]), "guidance_scale": cfg}
                for row, (_, k) in zip(rows, items, strict=True)
            ]
            worker.submit(metas, images, redirection)
    finally:
        worker.close()
        progress.close()
    logger.info("process %d: %d images in %.1f s", state.process_index, worker.written, time.perf_counter() - started)


def _wait_for_shards(out: Path, world: int, poll_s: float = 2.0) -> None:
    missing = [r for r in range(world) if not _marker(out, r, world).exists()]
    if missing:
        logger.info("waiting for process(es) %s to finish their shards", ", ".join(str(r) for r in missing))
    while missing:
        time.sleep(poll_s)
        missing = [r for r in missing if not _marker(out, r, world).exists()]


# ----------------------------------------------------------------------------------------------- config


def build_run_config(
    *,
    protocol: Protocol,
    prompts: pd.DataFrame,
    selection_text: str,
    systems: Sequence[SystemSpec],
    base: str,
    torch_dtype: str,
    q16_clip: str | None = None,
    q16_prompts: str | None = None,
    excluded: dict[str, int] | None = None,
) -> RunConfig:
    """The fingerprinted configuration of a run (NudeNet version and ONNX hash included)."""
    from ..scoring.nudenet import nudenet_info

    if torch_dtype not in DTYPES:
        raise ValueError(f"unknown dtype {torch_dtype!r}; choose one of {', '.join(DTYPES)}")
    q16_sha = None
    if q16_clip:
        from ..data import Q16_PROMPTS_VIT_L14
        from ..scoring.q16 import file_sha256

        q16_sha = file_sha256(q16_prompts or Q16_PROMPTS_VIT_L14)
    return RunConfig(
        protocol=protocol,
        base=str(base),
        torch_dtype=torch_dtype,
        systems=tuple(systems),
        prompts={
            "selection": selection_text,
            "ids": [int(i) for i in prompts["prompt_id"]],
            "digest": prompt_digest(prompts),
            "excluded_training_prompts": dict(excluded or {}),
        },
        scoring=ScoringSpec(nudenet=nudenet_info(), q16_clip=q16_clip, q16_prompts=q16_prompts,
                            q16_prompts_sha256=q16_sha),
    )


def prepare_run(
    *,
    protocol: str = "i2p",
    overrides: dict[str, Any] | None = None,
    selection: PromptSelection | None = None,
    systems: Sequence[str] = ("original", "safe", "negative-prompt"),
    safe_encoders: Sequence[str] | None = None,
    safe_encoder_2: str | None = None,
    base: str | None = None,
    dtype: str = "auto",
    cpu: bool = False,
    q16_clip: str | None = None,
    q16_prompts: str | None = None,
    exclude_training: bool = True,
    negative_prompt: str = SAFETY_CONCEPT,
) -> tuple[RunConfig, pd.DataFrame]:
    """Resolve presets, prompts (filters, training-prompt exclusion) and systems into a run configuration."""
    from ..presets import get_preset
    from .protocol import get_protocol
    from .systems import build_system_specs

    proto = get_protocol(protocol, **(overrides or {}))
    preset = get_preset(proto.model)
    selection = selection or PromptSelection()
    if selection.limit is None and proto.limit is not None:
        selection = dataclasses.replace(selection, limit=proto.limit)
    encoders = list(safe_encoders) if safe_encoders else [preset.safe_text_encoder]
    if safe_encoder_2 is None and preset.sdxl and preset.offline:
        safe_encoder_2 = preset.safe_text_encoder_2
    specs = build_system_specs(list(systems), encoders, sdxl=preset.sdxl, safe_encoder_2=safe_encoder_2,
                               negative_prompt=negative_prompt)
    df = load_prompts(selection)
    excluded: dict[str, int] = {}
    if exclude_training:
        df, excluded = exclude_training_prompts(df, [s.safe_text_encoder for s in specs if s.kind == "safe"])
    if dtype == "auto":
        use_cuda = torch.cuda.is_available() and not cpu
        dtype = str(preset.dtype_for("cuda" if use_cuda else "cpu")).removeprefix("torch.")
    config = build_run_config(protocol=proto, prompts=df, selection_text=selection.describe(), systems=specs,
                              base=base or preset.base, torch_dtype=dtype, q16_clip=q16_clip,
                              q16_prompts=q16_prompts, excluded=excluded)
    return config, df


def report_from_dir(output_dir: str | os.PathLike, spec: ReportSpec, out_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Merge the shards of a run directory and (re)write its report, e.g. with other NudeNet presets (rescore)."""
    header, records = merge_results(output_dir)
    return write_report(output_dir, header, records, spec, out_dir)


def rescore_dir_name(spec: ReportSpec) -> str:
    return "rescore-" + slug(f"{spec.nudenet_preset}_{spec.nudity_preset}")
