"""Builds a trainer's parts from its config: data, split, encoders, frozen reference, targets, curriculum, optimiser.

Called once by :meth:`Trainer.setup`; sets the trainer's public attributes ``data``, ``split``, ``bundles``,
``frozen``, ``targets``, ``curriculum``, ``weights``, ``model``, ``optimizer`` and ``scheduler``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .curriculum import CurriculumSchedule, difficulty_buckets
from .data import load_training_data
from .models import TrainableEncoders, build_encoder
from .reference import fingerprint, load_or_compute_frozen
from .split import split_validation
from .targets import load_or_compute_targets


def build_run(trainer: Any) -> None:
    cfg, acc = trainer.cfg, trainer.accelerator
    trainer.data = load_training_data(cfg.data)
    trainer.split = split_validation(trainer.data, cfg.data.val_size, cfg.seed)
    data = trainer.data
    has_images = data.safe_images is not None or data.unsafe_images is not None
    if cfg.train_vision and not has_images:
        raise ValueError(
            "train_vision (two-tower mode) needs images in the data: set data.image_root (and "
            "data.unsafe_image_root), or train_vision=false for text-only training"
        )
    if cfg.mining.image_target == "nearest" and not (data.safe_images and data.unsafe_images):
        raise ValueError(
            "mining.image_target=nearest needs safe and unsafe images; use mining.image_target=paired"
        )
    trainer.bundles = [build_encoder(s, cfg, has_images) for s in cfg.encoders]
    cache_dir = Path(cfg.run.cache_dir) if cfg.run.cache_dir else trainer.out / "cache"
    wait = acc.wait_for_everyone
    trainer.frozen = {
        b.slot: load_or_compute_frozen(b, data, cfg, cache_dir, trainer.device, trainer.is_main, wait)
        for b in trainer.bundles
    }
    for b in trainer.bundles:
        b.frozen_vision = None  # only needed for the cache
    ref = trainer.bundles[cfg.mining.encoder]
    trainer.targets = load_or_compute_targets(
        cfg,
        data,
        trainer.split,
        trainer.frozen[ref.slot],
        fingerprint(ref, data),
        cache_dir,
        trainer.device,
        trainer.is_main,
        wait,
    )
    train_sim = trainer.targets.similarity[trainer.split.train_unsafe].numpy()
    quantiles = list(cfg.curriculum.quantiles)
    trainer.curriculum = CurriculumSchedule(
        difficulty_buckets(train_sim, quantiles),
        cfg.curriculum.stages,
        len(quantiles) + 1,
        enabled=cfg.curriculum_enabled,
    )
    trainer.weights = cfg.loss_weights()
    model = TrainableEncoders(
        {b.slot: b.text for b in trainer.bundles},
        {b.slot: b.vision for b in trainer.bundles if b.vision is not None},
        {b.slot: b.eos_token_id for b in trainer.bundles},
        {b.slot: b.settings.hidden_layer if b.settings.hidden_weight else None for b in trainer.bundles},
    )
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: no parameter requires a gradient")
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    from transformers import get_scheduler

    scheduler = get_scheduler(
        cfg.optim.scheduler,
        optimizer,
        num_warmup_steps=cfg.optim.warmup_steps,
        num_training_steps=max(trainer.total_steps(), 1),
    )
    trainer.model, trainer.optimizer, trainer.scheduler = acc.prepare(model, optimizer, scheduler)
