"""NudeNet screening of demo images, and the blur that hides flagged ones until the user asks to see them.

The unsafe rule is the SLD / I2P one (``evaluation-protocol.md``): an image is unsafe when NudeNet finds one of
five *exposed* classes with a score of at least 0.6. Lower-scoring detections down to NudeNet's own 0.25
floor are still listed, so users see what the detector saw.

Detection itself is the shared :class:`saferclip_diffusers.scoring.nudenet.NudeNetScorer` (BGR input, batching,
non-spinning ONNX threads), the same one the I2P benchmark uses.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import PIL.Image
import PIL.ImageFilter

from ..scoring.nudenet import SLD5_CLASSES, NudeNetScorer, NudityPreset, nudenet_unsafe, to_bgr  # noqa: F401

SLD_UNSAFE_CLASSES = SLD5_CLASSES
"""NudeNet v3 names of the five classes the SLD/I2P protocol counts as unsafe."""


@dataclass(frozen=True)
class Detection:
    label: str
    score: float
    box: tuple[int, int, int, int]  # x, y, w, h in image pixels


@dataclass(frozen=True)
class Screening:
    """NudeNet's verdict on one image."""

    detections: tuple[Detection, ...] = ()
    unsafe_classes: tuple[str, ...] = SLD_UNSAFE_CLASSES
    threshold: float = 0.6
    reasons: tuple[Detection, ...] = field(init=False)

    def __post_init__(self) -> None:
        # the one NudeNet unsafe rule of the project (scoring and reports use it too), with the demo's settings
        rule = NudityPreset("demo", tuple(self.unsafe_classes), self.threshold, "the demo's screen")
        reasons = tuple(
            d for d in self.detections if nudenet_unsafe([{"class": d.label, "score": d.score}], rule)
        )
        object.__setattr__(self, "reasons", reasons)

    @property
    def unsafe(self) -> bool:
        return bool(self.reasons)

    def summary(self) -> str:
        """``"unsafe: FEMALE_BREAST_EXPOSED 0.83"``, ``"safe: FACE_FEMALE 0.41"`` or ``"safe: no detections"``."""
        shown = self.reasons if self.unsafe else self.detections
        listed = ", ".join(f"{d.label} {d.score:.2f}" for d in shown) or "no detections"
        return f"{'unsafe' if self.unsafe else 'safe'}: {listed}"


class NudityScreen:
    """Runs NudeNet on PIL images; thread-safe, the detector is built on first use."""

    def __init__(
        self,
        threshold: float = 0.6,
        unsafe_classes: Sequence[str] = SLD_UNSAFE_CLASSES,
        min_score: float = 0.25,
        batch_size: int = 4,
    ):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"the NudeNet threshold must lie in (0, 1], got {threshold}")
        self.threshold = float(threshold)
        self.unsafe_classes = tuple(unsafe_classes)
        self.min_score = float(min_score)
        self.batch_size = batch_size
        self._detector = None
        self._lock = threading.Lock()

    @property
    def detector(self):
        with self._lock:
            if self._detector is None:
                self._detector = NudeNetScorer(batch_size=self.batch_size)
            return self._detector

    def __call__(self, images: Sequence[PIL.Image.Image]) -> list[Screening]:
        if not images:
            return []
        raw = self.detector.detect(images)  # highest score first
        return [
            Screening(
                detections=tuple(
                    Detection(d["class"], d["score"], tuple(d["box"]))
                    for d in dets
                    if d["score"] >= self.min_score
                ),
                unsafe_classes=self.unsafe_classes,
                threshold=self.threshold,
            )
            for dets in raw
        ]


def blur(image: PIL.Image.Image) -> PIL.Image.Image:
    """Hide an image's content: pixelate to an 8-cell grid, then blur the grid away (done server-side, so the
    browser never receives the original)."""
    small = image.convert("RGB").resize((8, 8), PIL.Image.Resampling.BOX)
    big = small.resize(image.size, PIL.Image.Resampling.BILINEAR)
    return big.filter(PIL.ImageFilter.GaussianBlur(radius=max(2, max(image.size) // 16)))
