"""The training loop: accelerate (mixed precision, DDP, accumulation), checkpoints and exact resume.

Run layout (``output_dir``)::

    config.yaml              the resolved config
    cache/                   frozen embeddings and proximity targets (safetensors, reused on restart)
    checkpoints/step-N/      accelerate state + trainable weights + trainer_state.json (newest ``keep`` kept)
    train_log.jsonl          loss terms every ``run.log_every`` steps
    validation.jsonl         validation metrics per epoch (epoch 0 = before training)
    text_encoder/ ...        the export (see :mod:`.export`), written when training finishes

Determinism: the sample order of epoch ``e`` is a permutation seeded by ``(seed, e)``, and the random state
(LoRA dropout) is re-seeded from ``(seed, step, micro-batch, rank)`` before every forward pass, so a run
stopped at a checkpoint and resumed with ``resume="latest"`` reproduces the uninterrupted run.

Batches: ``optim.batch_size`` items per process and micro-batch; ``optim.grad_accum`` micro-batches make one
optimizer step (gradients summed with ``1/k`` weights, synchronised across processes only on the last one).
The last global batch of an epoch wraps around to the start of the epoch's order, so every process always
gets full micro-batches.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .config import TrainConfig
from .curriculum import CurriculumSchedule, difficulty_buckets
from .data import SafetyData, Split, load_training_data, split_validation
from .losses import BatchEmbeddings, method_loss
from .mining import mine_targets
from .models import EncoderBundle, TrainableEncoders, build_encoder
from .reference import FrozenEmbeddings, load_or_compute_frozen, save_atomic
from .validation import evaluate_encoder

logger = logging.getLogger(__name__)

TRAINABLE_FILE = "trainable.safetensors"
STATE_FILE = "trainer_state.json"


@dataclass
class TrainResult:
    output_dir: Path
    global_step: int
    finished: bool
    validation: list[dict] = field(default_factory=list)


@dataclass
class Targets:
    """Per unsafe item: text target (safe index), image target (safe index) and difficulty (cosine)."""

    text: torch.Tensor
    image: torch.Tensor
    similarity: torch.Tensor


def write_jsonl_atomic(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def find_checkpoint(output_dir: Path, resume: str | None) -> Path | None:
    """``latest`` -> the newest complete checkpoint (or None); a path -> that checkpoint (must exist)."""
    if not resume:
        return None
    if resume != "latest":
        path = Path(resume)
        if not (path / STATE_FILE).is_file():
            raise FileNotFoundError(f"--resume {resume}: not a checkpoint folder (no {STATE_FILE})")
        return path
    done = complete_checkpoints(output_dir / "checkpoints")
    return done[-1] if done else None


def complete_checkpoints(folder: Path) -> list[Path]:
    """Finished checkpoints, oldest first (a ``.tmp`` folder is one whose writing was interrupted)."""
    return sorted(p for p in folder.glob("step-*") if p.suffix != ".tmp" and (p / STATE_FILE).is_file())


class Trainer:
    """Builds everything from a :class:`TrainConfig` and runs it; ``Trainer(cfg, out).train()``."""

    def __init__(self, cfg: TrainConfig, output_dir: str | os.PathLike, resume: str | None = None):
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        self.cfg = cfg
        self.out = Path(output_dir)
        self.accelerator = Accelerator(
            mixed_precision=cfg.optim.mixed_precision, cpu=cfg.run.cpu, step_scheduler_with_optimizer=False
        )
        self.is_main = self.accelerator.is_main_process
        self.device = self.accelerator.device
        self.world = self.accelerator.num_processes
        self.rank = self.accelerator.process_index
        self.checkpoint = find_checkpoint(self.out, resume)
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(cfg.to_yaml())
        set_seed(cfg.seed)

        self.data: SafetyData = load_training_data(cfg.data)
        self.split: Split = split_validation(self.data, cfg.data.val_size, cfg.seed)
        has_images = self.data.safe_images is not None or self.data.unsafe_images is not None
        if cfg.train_vision and not has_images:
            raise ValueError("train_vision (two-tower mode) needs images in the data; set image roots or use text-only")
        if cfg.mining.image_target == "nearest" and not (self.data.safe_images and self.data.unsafe_images):
            raise ValueError("mining.image_target=nearest needs safe and unsafe images; use mining.image_target=paired")
        self.bundles: list[EncoderBundle] = [build_encoder(s, cfg, has_images) for s in cfg.encoders]
        cache_dir = Path(cfg.run.cache_dir) if cfg.run.cache_dir else self.out / "cache"
        wait = self.accelerator.wait_for_everyone
        self.frozen: dict[str, FrozenEmbeddings] = {
            b.slot: load_or_compute_frozen(b, self.data, cfg, cache_dir, self.device, self.is_main, wait) for b in self.bundles
        }
        for b in self.bundles:
            b.frozen_vision = None  # only needed for the cache
        self.targets = self._targets(cache_dir)
        train_sim = self.targets.similarity[self.split.train_unsafe].numpy()
        quantiles = list(cfg.curriculum.quantiles)
        self.curriculum = CurriculumSchedule(difficulty_buckets(train_sim, quantiles), cfg.curriculum.stages,
                                             len(quantiles) + 1, enabled=cfg.curriculum_enabled)
        self.weights = cfg.loss_weights()

        self.model = TrainableEncoders(
            {b.slot: b.text for b in self.bundles},
            {b.slot: b.vision for b in self.bundles if b.vision is not None},
            {b.slot: b.eos_token_id for b in self.bundles},
            {b.slot: b.settings.hidden_layer if b.settings.hidden_weight else None for b in self.bundles},
        )
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("nothing to train: no parameter requires a gradient")
        optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        from transformers import get_scheduler

        self.total_steps = self._total_steps()
        scheduler = get_scheduler(cfg.optim.scheduler, optimizer, num_warmup_steps=cfg.optim.warmup_steps,
                                  num_training_steps=max(self.total_steps, 1))
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(self.model, optimizer, scheduler)
        self.accelerator.register_save_state_pre_hook(self._save_hook)
        self.accelerator.register_load_state_pre_hook(self._load_hook)
        self.state = {"global_step": 0, "epoch": 1, "micro_offset": 0, "validated_epoch": -1,
                      "world_size": self.world, "batch_size": cfg.optim.batch_size, "grad_accum": cfg.optim.grad_accum}
        if self.checkpoint is not None:
            self.accelerator.load_state(str(self.checkpoint))
            self.state.update(json.loads((self.checkpoint / STATE_FILE).read_text()))
            if self.state["world_size"] != self.world and self.is_main:
                logger.warning("resuming with %d processes (checkpoint: %d): the sample order changes from here",
                               self.world, self.state["world_size"])
            self.state["world_size"] = self.world
        # --- methods hook: a registered method (DES, ...) supplies the batch loss ---
        from .methods import METHODS, get_method

        self.method = get_method(cfg.method) if cfg.method in METHODS else None
        if self.method is not None:
            self.method.setup(self)
        # --- end methods hook ---

    # ------------------------------------------------------------------ setup helpers
    def _targets(self, cache_dir: Path) -> Targets:
        from .reference import fingerprint

        ref = self.bundles[self.cfg.mining.encoder]
        frozen = self.frozen[ref.slot]
        key = f"{fingerprint(ref, self.data)}-{self.cfg.targets}-{self.cfg.mining.image_target}-{self.cfg.seed}-{self.cfg.data.val_size}"
        path = cache_dir / f"targets-{key}.safetensors"
        if self.is_main and not path.is_file():
            # training items: nearest among the training captions; validation items: among all captions
            # (their own held-out partner included), i.e. the target the method would pick for them
            cand = torch.as_tensor(self.split.train_safe)
            chunk, dev = self.cfg.mining.chunk_size, self.device
            text, sim = mine_targets(frozen.text_unsafe, frozen.text_safe, cand, chunk, show_progress=True, device=dev)
            val = torch.as_tensor(self.split.val_unsafe, dtype=torch.long)
            if len(val):
                v_text, v_sim = mine_targets(frozen.text_unsafe[val], frozen.text_safe, None, chunk, device=dev)
                text[val], sim[val] = v_text, v_sim
            pair = torch.as_tensor(self.data.pair)
            if self.cfg.targets == "paired" and (pair >= 0).any():
                text = torch.where(pair >= 0, pair, text)
                sim = torch.nn.functional.cosine_similarity(frozen.text_unsafe, frozen.text_safe[text], dim=-1)
            image = text.clone()
            if self.cfg.mining.image_target == "nearest":
                image, _ = mine_targets(frozen.image_unsafe, frozen.image_safe, cand, chunk, device=dev)
            save_atomic({"text": text.contiguous(), "image": image.contiguous(), "similarity": sim.float().contiguous()}, path)
        self.accelerator.wait_for_everyone()
        t = load_file(str(path))
        return Targets(t["text"], t["image"], t["similarity"])

    def epoch_plan(self, epoch: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Global micro-batches of epoch ``epoch``: (unsafe indices, preservation safe indices), each of size B*world."""
        items = self.split.train_unsafe[self.curriculum.active(epoch)]
        if len(items) == 0:
            return []
        order = items[np.random.default_rng([self.cfg.seed, epoch]).permutation(len(items))]
        gb = self.cfg.optim.batch_size * self.world
        n = math.ceil(len(order) / gb)
        order = np.resize(order, n * gb)  # wrap around to fill the last batch
        if self.data.paired:
            keep = self.data.pair[order]
        else:  # unpaired: cycle through the training pool for the preservation terms
            pool = self.split.train_safe[np.random.default_rng([self.cfg.seed, epoch, 1]).permutation(len(self.split.train_safe))]
            keep = np.resize(pool, len(order))
        return [(order[i * gb : (i + 1) * gb], keep[i * gb : (i + 1) * gb]) for i in range(n)]

    def _steps_in_epoch(self, epoch: int) -> int:
        return math.ceil(len(self.epoch_plan(epoch)) / self.cfg.optim.grad_accum)

    def _total_steps(self) -> int:
        total = sum(self._steps_in_epoch(e) for e in range(1, self.cfg.optim.epochs + 1))
        return min(total, self.cfg.optim.max_steps) if self.cfg.optim.max_steps else total

    def used_prompts(self) -> dict[str, list[str]]:
        """The captions training actually used: trained unsafe prompts; safe targets and preservation captions."""
        unsafe, safe = set(), set(self.targets.text[self.split.train_unsafe].tolist())
        for epoch in range(1, self.cfg.optim.epochs + 1):
            for u, k in self.epoch_plan(epoch):
                unsafe.update(u.tolist())
                safe.update(k.tolist())
        return {"unsafe": [self.data.unsafe_texts[i] for i in sorted(unsafe)],
                "safe": [self.data.safe_texts[i] for i in sorted(safe)]}

    # ------------------------------------------------------------------ checkpoints
    def _save_hook(self, models, weights, output_dir):
        if self.is_main:
            unwrapped = self.accelerator.unwrap_model(models[0])
            state = {n: p.detach().cpu().contiguous() for n, p in unwrapped.named_parameters() if p.requires_grad}
            save_file(state, str(Path(output_dir) / TRAINABLE_FILE))
        while weights:
            weights.pop()

    def _load_hook(self, models, input_dir):
        unwrapped = self.accelerator.unwrap_model(models[0])
        state = load_file(str(Path(input_dir) / TRAINABLE_FILE))
        params = dict(unwrapped.named_parameters())
        expected = {n for n, p in params.items() if p.requires_grad}
        if set(state) != expected:
            raise ValueError(f"checkpoint {input_dir} does not match this config's trainable parameters "
                             f"(missing {sorted(expected - set(state))[:3]}, unexpected {sorted(set(state) - expected)[:3]})")
        with torch.no_grad():
            for n, v in state.items():
                params[n].copy_(v)
        while models:
            models.pop()

    def save_checkpoint(self) -> Path:
        step = self.state["global_step"]
        final = self.out / "checkpoints" / f"step-{step:08d}"
        tmp = final.with_name(final.name + ".tmp")
        if self.is_main and tmp.exists():
            shutil.rmtree(tmp)
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(tmp))
        self.accelerator.wait_for_everyone()
        if self.is_main:
            (tmp / STATE_FILE).write_text(json.dumps(self.state, indent=1))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            for old in complete_checkpoints(final.parent)[: -self.cfg.run.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        return final

    # ------------------------------------------------------------------ one step
    def _batch_loss(self, unsafe_idx: np.ndarray, keep_idx: np.ndarray) -> tuple[torch.Tensor, dict[str, float]]:
        if self.method is not None:  # methods hook
            return self.method.batch_loss(self, unsafe_idx, keep_idx)
        d, dev = self.data, self.device
        u = torch.as_tensor(unsafe_idx)
        k = torch.as_tensor(keep_idx)
        hat, img_hat = self.targets.text[u], self.targets.image[u]
        texts = [d.unsafe_texts[i] for i in unsafe_idx] + [d.safe_texts[i] for i in keep_idx]
        text_inputs = {b.slot: b.tokenize(texts).to(dev) for b in self.bundles}
        images = {}
        for b in self.bundles:
            if b.vision is not None:
                paths = ([d.unsafe_images[i] for i in unsafe_idx] if d.unsafe_images else []) + \
                        ([d.safe_images[i] for i in keep_idx] if d.safe_images else [])
                images[b.slot] = b.pixel_values(paths).to(dev)
        out = self.model(text=text_inputs, images=images or None)
        total, logs, n = 0.0, {}, len(unsafe_idx)
        for b in self.bundles:
            o, f = out[b.slot], self.frozen[b.slot]
            get = lambda t, idx: t[idx].to(dev) if t is not None else None  # noqa: E731
            v_vs = v_v = None
            if o["image"] is not None:
                n_vs = n if d.unsafe_images else 0
                v_vs = o["image"][:n_vs] if n_vs else None
                v_v = o["image"][n_vs:] if d.safe_images else None
            hidden = o["hidden"]
            e = BatchEmbeddings(
                T_t=o["text"][n:], T_ts=o["text"][:n],
                T0_t=get(f.text_safe, k), T0_ts=get(f.text_unsafe, u), T0_hat=get(f.text_safe, hat),
                V_v=v_v, V_vs=v_vs,
                V0_v=get(f.image_safe, k), V0_vs=get(f.image_unsafe, u), V0_hat=get(f.image_safe, img_hat),
                H_t=hidden[n:] if hidden is not None else None, H_ts=hidden[:n] if hidden is not None else None,
                H0_t=get(f.hidden_safe, k), H0_hat=get(f.hidden_safe, hat),
            )
            loss, terms = method_loss(self.cfg.method, e, self.weights, self.cfg.loss.logit_scale,
                                      self.cfg.loss.relative_scale, b.settings.hidden_weight)
            total = total + b.settings.weight * loss
            prefix = f"{b.slot}/" if len(self.bundles) > 1 else ""
            logs.update({prefix + name: v.item() for name, v in terms.items()})
        logs["loss"] = float(total.item())
        return total, logs

    def _seed_step(self, micro: int) -> None:
        torch.manual_seed((self.cfg.seed * 1_000_003 + self.state["global_step"] * 1009 + micro * 31 + self.rank) % 2**63)

    # ------------------------------------------------------------------ validation
    def validate(self, epoch: int) -> dict:
        row = {"epoch": epoch, "step": self.state["global_step"]}
        if self.is_main and len(self.split.val_unsafe):
            model = self.accelerator.unwrap_model(self.model)
            for b in self.bundles:
                vision = model.vision[b.slot] if b.slot in model.vision else None
                metrics = evaluate_encoder(b, model.text[b.slot], vision, self.frozen[b.slot], self.data, self.split,
                                           self.targets.text, self.device, self.cfg.run.encode_batch_size)
                row.update({f"{b.slot}/{k}": v for k, v in metrics.items()})
            path = self.out / "validation.jsonl"
            rows = [r for r in read_jsonl(path) if r["epoch"] < epoch] + [row]
            write_jsonl_atomic(path, rows)
        self.state["validated_epoch"] = epoch
        self.accelerator.wait_for_everyone()
        return row

    # ------------------------------------------------------------------ loop
    def train(self) -> TrainResult:
        from tqdm.auto import tqdm

        cfg, acc, st = self.cfg, self.accelerator, self.state
        log_path = self.out / "train_log.jsonl"
        if self.is_main:  # drop log rows past the resumed step (they are recomputed)
            write_jsonl_atomic(log_path, [r for r in read_jsonl(log_path) if r["step"] <= st["global_step"]])
        if st["validated_epoch"] < 0:
            self.validate(0)
        start_step = st["global_step"]
        bar = tqdm(total=self.total_steps, initial=start_step, desc=f"train {cfg.name}", disable=not acc.is_local_main_process,
                   unit="step")
        self.model.train()
        stopped = False
        max_steps = cfg.optim.max_steps
        while st["epoch"] <= cfg.optim.epochs and not stopped:
            epoch = st["epoch"]
            plan = self.epoch_plan(epoch)
            B = cfg.optim.batch_size
            while st["micro_offset"] < len(plan):
                if max_steps and st["global_step"] >= max_steps:
                    break
                window = plan[st["micro_offset"] : st["micro_offset"] + cfg.optim.grad_accum]
                sums: dict[str, float] = {}
                for m, (u, keep) in enumerate(window):
                    self._seed_step(m)
                    mine = slice(self.rank * B, (self.rank + 1) * B)
                    sync = contextlib.nullcontext() if m == len(window) - 1 else acc.no_sync(self.model)
                    with sync:
                        loss, logs = self._batch_loss(u[mine], keep[mine])
                        acc.backward(loss / len(window))
                    for key, v in logs.items():
                        sums[key] = sums.get(key, 0.0) + v / len(window)
                if cfg.optim.max_grad_norm:
                    acc.clip_grad_norm_(self.model.parameters(), cfg.optim.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                st["global_step"] += 1
                st["micro_offset"] += len(window)
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{sums['loss']:.4f}")
                if self.is_main and (st["global_step"] % cfg.run.log_every == 0 or st["global_step"] == 1):
                    row = {"step": st["global_step"], "epoch": epoch, "lr": self.scheduler.get_last_lr()[0], **sums}
                    with log_path.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
                done_here = st["global_step"] - start_step
                if cfg.run.stop_after_steps and done_here >= cfg.run.stop_after_steps:
                    stopped = True
                if st["global_step"] % cfg.run.checkpoint_every == 0 or stopped:
                    self.save_checkpoint()
                if stopped:
                    break
            if stopped:
                break
            if st["validated_epoch"] < epoch:
                self.validate(epoch)
            if max_steps and st["global_step"] >= max_steps:
                break
            st["epoch"], st["micro_offset"] = epoch + 1, 0
        bar.close()
        finished = not stopped
        if finished:
            last = self.out / "checkpoints" / f"step-{st['global_step']:08d}"
            if not (last / STATE_FILE).is_file():
                self.save_checkpoint()
        return TrainResult(self.out, st["global_step"], finished, read_jsonl(self.out / "validation.jsonl"))

    def export(self, push_to_hub: str | None = None):
        """Write the merged encoders, model card and training prompts into the run folder (main process)."""
        from .export import export_run

        if self.is_main:
            export_run(self, self.out, push_to_hub=push_to_hub or self.cfg.export.push_to_hub)
        self.accelerator.wait_for_everyone()
        return self.out


def train(cfg: TrainConfig, output_dir: str | os.PathLike, resume: str | None = None, export: bool = True) -> TrainResult:
    """Train (or resume) and, when the run finished, export. Returns where things are and the validation rows."""
    trainer = Trainer(cfg, output_dir, resume)
    result = trainer.train()
    if result.finished and export:
        trainer.export()
    trainer.accelerator.end_training()
    return result
