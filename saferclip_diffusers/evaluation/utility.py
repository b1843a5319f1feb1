"""Generation utility: CLIP score of generated images against their prompts, original vs safe text encoder.

Prompts are the bundled COCO-30k captions with their per-row seeds. Each prompt is generated once with the
original and once with the safe encoder from the very same initial latents (the Safer pipeline's compare mode:
``out.original_images`` / ``out.images``), so the difference isolates what the safe encoder costs in prompt
fidelity. The judge is a fixed CLIP named by the user (default OpenAI ViT-L/14), never the safe one.

CLIP score = 100 * max(cos(image, prompt), 0) on L2-normalised projected embeddings (the torchmetrics
convention; Hessel et al. 2021 use 2.5 instead of 100). Scores are appended per prompt to ``scores.jsonl``, so an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm.auto import tqdm

from ..data import COCO_30K_CSV
from ..datasets import Caption, read_coco_captions
from ..io import append_jsonl, atomic_save_image, atomic_write_json, file_lock, read_jsonl
from .clip_models import ClipEncoder
from .tables import ComparisonTable

SCORES_FILE = "scores.jsonl"
RUN_FILE = "run.json"


UtilityPrompt = Caption  # a COCO caption with its seed


def load_coco_prompts(path: str | os.PathLike = COCO_30K_CSV, limit: int | None = None) -> list[Caption]:
    """COCO captions with their evaluation seeds (see :func:`saferclip_diffusers.datasets.read_coco_captions`)."""
    return read_coco_captions(path, limit)


def clip_cosines(judge: ClipEncoder, images: Sequence[Image.Image], prompts: Sequence[str]) -> torch.Tensor:
    """Per pair ``cos(image_i, prompt_i)`` under the judge CLIP."""
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images for {len(prompts)} prompts")
    img = judge.encode_image(list(images), batch_size=max(1, len(images)))
    txt = judge.encode_text(list(prompts), batch_size=max(1, len(prompts)))
    return (img * txt).sum(dim=-1)


def clip_scores(judge: ClipEncoder, images: Sequence[Image.Image], prompts: Sequence[str]) -> torch.Tensor:
    """Per pair ``100 * max(cos(image_i, prompt_i), 0)``."""
    return 100.0 * clip_cosines(judge, images, prompts).clamp(min=0)


class ScoreStore:
    """Append-only JSONL of per-prompt results keyed by ``index`` (a torn last line is cut off on load)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.rows: dict[int, dict[str, Any]] = {}
        if self.path.is_file():
            for row in read_jsonl(self.path, repair_torn_tail=True):
                self.rows[int(row["index"])] = row

    def append(self, rows: Sequence[dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for r in rows:
            append_jsonl(self.path, r)
            self.rows[int(r["index"])] = r


def check_run_config(out_dir: str | os.PathLike, config: dict[str, Any]) -> None:
    """Refuse to mix results of different settings in one output folder (reads only; see :func:`record_run_config`)."""
    path = Path(out_dir) / RUN_FILE
    config = json.loads(json.dumps(config, default=str))
    if path.is_file():
        stored = json.loads(path.read_text(encoding="utf-8"))
        diff = {k: (stored.get(k), v) for k, v in config.items() if stored.get(k) != v}
        if diff:
            raise ValueError(
                f"{out_dir} holds results of a run with other settings ({diff}); use another --out folder or "
                "delete it to start over"
            )


def record_run_config(out_dir: str | os.PathLike, config: dict[str, Any]) -> None:
    """Write the run's settings once its models have loaded (a failed start leaves the folder as it was)."""
    check_run_config(out_dir, config)
    path = Path(out_dir) / RUN_FILE
    if not path.is_file():
        atomic_write_json(path, json.loads(json.dumps(config, default=str)), indent=2)


def generate_and_score(
    pipe: Any,
    judge: ClipEncoder,
    prompts: Sequence[UtilityPrompt],
    out_dir: str | os.PathLike,
    *,
    batch_size: int = 4,
    save_images: bool = False,
    compare_in_one_batch: bool = True,
    **generation_kwargs: Any,
) -> ScoreStore:
    """Generate every prompt not yet in ``scores.jsonl`` (original vs safe, same latents) and score it.

    ``generation_kwargs`` go to the pipeline (``num_inference_steps``, ``guidance_scale``, ``height``, ...).
    Seeds are per prompt, drawn on CPU generators so images do not depend on the device.
    """
    out_dir = Path(out_dir)
    with file_lock(out_dir / "scores.lock"):  # one writer per folder: two runs would duplicate rows
        return _generate_and_score(
            pipe, judge, prompts, out_dir, batch_size, save_images, compare_in_one_batch, generation_kwargs
        )


def _generate_and_score(
    pipe: Any,
    judge: ClipEncoder,
    prompts: Sequence[UtilityPrompt],
    out_dir: Path,
    batch_size: int,
    save_images: bool,
    compare_in_one_batch: bool,
    generation_kwargs: dict[str, Any],
) -> ScoreStore:
    store = ScoreStore(out_dir / SCORES_FILE)
    todo = [p for p in prompts if p.index not in store.rows]
    batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    for batch in tqdm(batches, desc="generating (original vs safe)", unit="batch", disable=not batches):
        texts = [p.prompt for p in batch]
        generators = [torch.Generator("cpu").manual_seed(p.seed) for p in batch]
        out = pipe(
            texts,
            generator=generators,
            return_original=True,
            compare_in_one_batch=compare_in_one_batch,
            output_type="pil",
            **generation_kwargs,
        )
        cos_safe = clip_cosines(judge, out.images, texts).tolist()
        cos_orig = clip_cosines(judge, out.original_images, texts).tolist()
        redirection = out.redirection_scores or [None] * len(batch)
        rows = []
        for p, co, cs, r, img_o, img_s in zip(
            batch, cos_orig, cos_safe, redirection, out.original_images, out.images, strict=True
        ):
            if save_images:
                for kind, image in (("original", img_o), ("safe", img_s)):
                    atomic_save_image(image, out_dir / "images" / kind / f"{p.index:05d}_{p.image_id}.png")
            rows.append(
                {
                    **asdict(p),
                    "original": 100.0 * max(co, 0.0),
                    "safe": 100.0 * max(cs, 0.0),
                    "original_cosine": co,
                    "safe_cosine": cs,
                    "redirection_score": r,
                }
            )
        store.append(rows)
    return store


def utility_table(rows: Sequence[dict[str, Any]], meta: dict[str, Any] | None = None) -> ComparisonTable:
    """Mean CLIP score, original vs safe, with the paired difference's 95% interval and win rate in ``meta``."""
    if not rows:
        raise ValueError("no scored prompts")
    n = len(rows)
    orig = torch.tensor([r["original"] for r in rows], dtype=torch.float64)
    safe = torch.tensor([r["safe"] for r in rows], dtype=torch.float64)
    diff = safe - orig
    half = 1.96 * diff.std().item() / math.sqrt(n) if n > 1 else float("nan")
    table = ComparisonTable("Generation utility: CLIP score on COCO captions", meta=dict(meta or {}))
    table.add("CLIP score", orig.mean().item(), safe.mean().item(), n=n)
    if all(
        "original_cosine" in r for r in rows
    ):  # unclamped: informative where the clamp bites (tiny models)
        table.add(
            "100 x cosine (unclamped)",
            100.0 * sum(r["original_cosine"] for r in rows) / n,
            100.0 * sum(r["safe_cosine"] for r in rows) / n,
            n=n,
        )
    table.meta["CLIP score"] = (
        "100 * max(cos(image, prompt), 0), judged by a fixed CLIP (torchmetrics convention)"
    )
    table.meta["paired difference (safe - original)"] = (
        f"{diff.mean().item():+.3f} +/- {half:.3f} (95% normal interval)"
    )
    table.meta["prompts where safe < original"] = f"{100.0 * (diff < 0).double().mean().item():.1f}%"
    redirection = [r["redirection_score"] for r in rows if r.get("redirection_score") is not None]
    if redirection:
        table.meta["mean redirection score"] = (
            f"{sum(redirection) / len(redirection):.4f} (cos of pooled text embeddings)"
        )
    return table
