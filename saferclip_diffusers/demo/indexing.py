"""The "Interpreted as" caption index, built in a background thread so that the page is served at once.

Embedding the caption pool takes over a minute with the tiny model on a loaded CPU (far longer with a real CLIP):
:class:`CaptionIndex` starts that work in a daemon thread and answers at any time with its state,
``"indexing n/N captions"`` until the :class:`~.interpret.CaptionInterpreter` is ready, then ``"ready"``
(or ``"failed: ..."``, which leaves the rest of the demo working).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .interpret import CaptionInterpreter

Build = Callable[[Callable[[int, int], None]], CaptionInterpreter]


class CaptionIndex:
    """A caption interpreter that is being built (``build(progress)``), or one that is ready."""

    def __init__(
        self,
        build: Build | None = None,
        *,
        total: int = 0,
        ready: CaptionInterpreter | None = None,
        start: bool = True,
    ):
        if (build is None) == (ready is None):
            raise ValueError("give either build (to index in the background) or ready (an interpreter)")
        self._build = build
        self._lock = threading.Lock()
        self._done, self._total = (total, total) if ready is not None else (0, total)
        self._interpreter = ready
        self._error: BaseException | None = None
        self._finished = threading.Event()
        self._thread: threading.Thread | None = None
        if ready is not None:
            self._finished.set()
        elif start:
            self.start()

    @classmethod
    def of(cls, interpreter: CaptionInterpreter) -> CaptionIndex:
        return cls(ready=interpreter, total=2 * len(interpreter.captions))

    def start(self) -> None:
        if self._thread is None and not self._finished.is_set():
            self._thread = threading.Thread(target=self._run, name="caption-index", daemon=True)
            self._thread.start()

    def _progress(self, done: int, total: int) -> None:
        with self._lock:
            self._done, self._total = done, total

    def _run(self) -> None:
        try:
            interpreter = self._build(self._progress)
            with self._lock:
                self._interpreter = interpreter
                self._done = self._total
        except BaseException as err:  # noqa: BLE001 - reported in the page; the demo goes on without captions
            with self._lock:
                self._error = err
        finally:
            self._finished.set()

    @property
    def interpreter(self) -> CaptionInterpreter | None:
        """The ready interpreter, or None while indexing (or after a failure)."""
        with self._lock:
            return self._interpreter

    @property
    def ready(self) -> bool:
        return self.interpreter is not None

    def progress(self) -> tuple[int, int]:
        with self._lock:
            return self._done, self._total

    def status(self) -> str:
        """``"indexing n/N captions"``, ``"ready"`` or ``"failed: <why>"``."""
        with self._lock:
            if self._interpreter is not None:
                return "ready"
            if self._error is not None:
                return f"failed: {type(self._error).__name__}: {self._error}"
            return f"indexing {self._done}/{self._total} captions"

    def wait(self, timeout: float | None = None) -> bool:
        """Block until indexing has finished (ready or failed); True if it finished within ``timeout``."""
        return self._finished.wait(timeout)
