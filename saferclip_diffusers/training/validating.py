"""The trainer's validation step: metrics after each epoch into ``validation.jsonl`` and the early-stopping state
(a mixin of :class:`~.trainer.Trainer`, which provides the model, data, split, targets and run state). With
early stopping on, the best trained epoch's weights are kept for the export (:mod:`.best`)."""

from __future__ import annotations

from saferclip_diffusers.io import atomic_write_text

from .best import record_if_best
from .run_folder import json_line as _json_line
from .run_folder import read_log

RECALL_SUM = ("redirect@1", "safe_self@1", "T->V@1", "T*->V@1", "V*->T@1")  # early-stopping score


class Validating:
    def validate(self, epoch: int) -> dict:
        """Validation metrics after ``epoch`` (0 = before training) into ``validation.jsonl``; early-stopping state."""
        from accelerate.utils import broadcast_object_list

        from .validation import evaluate_encoder

        row = {"epoch": epoch, "step": self.state["global_step"]}
        if self.is_main and len(self.split.val_unsafe):
            model = self.accelerator.unwrap_model(self.model)
            for b in self.bundles:
                vision = model.vision[b.slot] if b.slot in model.vision else None
                metrics = evaluate_encoder(
                    b,
                    model.text[b.slot],
                    vision,
                    self.frozen[b.slot],
                    self.data,
                    self.split,
                    self.targets.text,
                    self.device,
                    self.cfg.run.encode_batch_size,
                )
                row.update({f"{b.slot}/{k}": v for k, v in metrics.items()})
            self._track_best(row, epoch)
            path = self.out / "validation.jsonl"
            rows = [r for r in read_log(path) if r["epoch"] < epoch] + [row]
            atomic_write_text(path, "".join(_json_line(r) for r in rows))
        keys = ("best_score", "bad_epochs", "best_epoch", "best_epoch_step", "best_epoch_score")
        shared = [self.state[k] for k in keys]
        broadcast_object_list(shared)
        self.state.update(zip(keys, shared, strict=True))
        self.state["validated_epoch"] = epoch
        return row

    def _track_best(self, row: dict, epoch: int) -> None:
        score = sum(
            v for k, v in row.items() if k.split("/")[-1] in RECALL_SUM and isinstance(v, float) and v == v
        )
        row["recall_sum"] = score
        best = self.state["best_score"]
        if epoch == 0 or best is None or score > best:
            self.state["best_score"], self.state["bad_epochs"] = score, 0
        else:
            self.state["bad_epochs"] += 1
        record_if_best(self, epoch, score)  # the best trained epoch's weights, for the export (best.py)
