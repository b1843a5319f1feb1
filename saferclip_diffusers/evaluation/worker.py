"""A scoring worker: scores generated images (NudeNet, Q16) and appends their records in a background thread.

The generator hands over (metas, images, extra) batches with :meth:`ScoringWorker.submit`; the worker runs the
scorers, lets a caller hook save files, and appends one record per image to a store (anything with
``append(records) -> int``, such as :class:`~saferclip_diffusers.evaluation.store.ResultStore`). A bounded queue keeps
memory flat. The worker measures how long the generator waited for it (a full queue, and the tail at
:meth:`close`), so callers report what scoring costs a run without patching anything.

Any object with NudeNet's ``detect(images) -> list[list[dict]]`` works as ``nudenet``; ``q16`` is a callable
``images -> list[float]`` or None.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

logger = logging.getLogger(__name__)


class Detector(Protocol):
    def detect(self, images: Sequence[Any]) -> list[list[dict[str, Any]]]: ...


def image_sha256(image: Any) -> str:
    """sha256 of an image's RGB pixels (identical images give identical digests, whatever the file format)."""
    return hashlib.sha256(np.asarray(image.convert("RGB")).tobytes()).hexdigest()


class ScoringWorker:
    """Scores and stores records in a background thread; re-raises a scoring failure in the caller's thread.

    ``on_image(meta, image, record)`` runs in the worker for every image before its record is stored (save files,
    add fields). ``progress`` is anything with ``update(n)``. Timing (seconds): ``blocked_s`` the generator waited
    on a full queue, ``tail_s`` it waited in :meth:`close`, ``score_s`` the worker spent scoring and storing."""

    _STOP = object()

    def __init__(
        self,
        store,
        nudenet: Detector,
        q16: Callable[[Sequence[Any]], list[float]] | None = None,
        *,
        on_image: Callable[[dict[str, Any], Any, dict[str, Any]], None] | None = None,
        progress=None,
        queue_size: int = 4,
    ):
        self.store, self.nudenet, self.q16 = store, nudenet, q16
        self.on_image = on_image
        self.progress = progress
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        self.error: BaseException | None = None
        self.written = 0
        self.batches = 0
        self.blocked_s = 0.0
        self.tail_s = 0.0
        self.score_s = 0.0
        self.thread = threading.Thread(target=self._run, name="saferclip-scoring", daemon=True)
        self.thread.start()

    def submit(
        self, metas: list[dict[str, Any]], images: list[Any], redirection: list[float] | None = None
    ) -> None:
        """Queue a batch; blocks while the queue is full (the time counts as ``blocked_s``)."""
        start = time.perf_counter()
        try:
            while True:
                if self.error is not None:
                    raise RuntimeError("scoring failed; see the error above") from self.error
                try:
                    self.queue.put((metas, images, redirection), timeout=0.5)
                    self.batches += 1
                    return
                except queue.Full:
                    continue
        finally:
            self.blocked_s += time.perf_counter() - start

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is self._STOP:
                return
            if self.error is not None:
                continue  # drain without work after a failure
            start = time.perf_counter()
            try:
                self._score(*item)
            except BaseException as err:  # noqa: BLE001 - handed to the main thread
                logger.exception("scoring worker failed")
                self.error = err
            finally:
                self.score_s += time.perf_counter() - start

    def _score(self, metas, images, redirection) -> None:
        detections = self.nudenet.detect(images)
        q16 = self.q16(images) if self.q16 is not None else [None] * len(images)
        records = []
        for i, (meta, image) in enumerate(zip(metas, images, strict=True)):
            record = dict(meta)
            record["nudenet"] = detections[i]
            record["q16"] = q16[i]
            record["redirection_score"] = float(redirection[i]) if redirection is not None else None
            record["image_sha256"] = image_sha256(image)
            record["image_file"] = None
            if self.on_image is not None:
                self.on_image(meta, image, record)
            records.append(record)
        self.written += self.store.append(records)
        if self.progress is not None:
            self.progress.update(len(records))

    def close(self) -> None:
        """Finish what is queued, stop the thread, re-raise a scoring failure."""
        start = time.perf_counter()
        try:
            self.queue.put(self._STOP)
            self.thread.join()
        finally:
            self.tail_s += time.perf_counter() - start
        if self.error is not None:
            raise RuntimeError("scoring failed; see the error above") from self.error

    def timing(self) -> dict[str, float]:
        return {
            "batches": self.batches,
            "blocked_s": self.blocked_s,
            "tail_s": self.tail_s,
            "score_s": self.score_s,
        }
