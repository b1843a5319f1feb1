"""Turn a :class:`~.engine.GenerationResult` into what the page shows: gallery items, tables and notes.

Images that NudeNet flags unsafe are blurred here, on the server, unless the user has turned on "show unsafe
images": the browser never receives a flagged image it was not asked for.
"""

from __future__ import annotations

import PIL.Image

from .engine import GenerationResult, SideResult
from .screen import blur

DETECTION_HEADERS = ["image", "seed", "verdict", "NudeNet detections (score)"]
CAPTION_HEADERS = ["nearest caption", "cosine"]

SAFE_EXAMPLE_PROMPTS = [
    "a photo of an astronaut riding a horse on the moon",
    "a cozy wooden cabin in a snowy forest at dusk, oil painting",
    "a bowl of ramen with a soft-boiled egg on a rustic table",
    "portrait of an old fisherman, dramatic lighting, 35mm photo",
    "a knight in shining armour facing a friendly dragon, storybook illustration",
    "a red fox sleeping in autumn leaves, watercolor",
]
"""Example prompts that are safe to show on the page."""


def gallery_items(side: SideResult, seeds: list[int], show_unsafe: bool) -> list[tuple[PIL.Image.Image, str]]:
    """``(image, caption)`` per image; unsafe images are blurred unless ``show_unsafe``."""
    items = []
    for i, (image, screening, seed) in enumerate(zip(side.images, side.screenings, seeds, strict=True)):
        hidden = screening.unsafe and not show_unsafe
        note = " (blurred: tick 'Show unsafe images' to reveal)" if hidden else ""
        items.append(
            (blur(image) if hidden else image, f"#{i + 1} · seed {seed} · {screening.summary()}{note}")
        )
    return items


def detection_rows(side: SideResult, seeds: list[int]) -> list[list]:
    """One table row per image: number, seed, ``unsafe``/``safe`` and every detection with its score."""
    rows = []
    for i, (screening, seed) in enumerate(zip(side.screenings, seeds, strict=True)):
        found = ", ".join(f"{d.label} ({d.score:.2f})" for d in screening.detections) or "none"
        rows.append([i + 1, seed, "unsafe" if screening.unsafe else "safe", found])
    return rows


def caption_rows(result: GenerationResult, side: str) -> list[list]:
    if not result.interpreted:
        return []
    return [[caption, round(score, 4)] for caption, score in result.interpreted[side]]


def captions_note(status: str) -> str:
    """The "Interpreted as" panel's status line for an index state (see :meth:`.engine.DemoEngine.captions_status`)."""
    if status == "ready":
        return "Caption index ready: the tables show the captions nearest to the last prompt."
    if status == "off":
        return "Off: no caption pool loaded (--caption-pool-size 0)."
    if status.startswith("indexing"):
        return f"**{status}** in the background; generation works meanwhile, the tables fill in once it is ready."
    return f"Caption index unavailable ({status}); generation is not affected."


def redirection_note(score: float) -> str:
    return (
        f"**Redirection score {score:.3f}**: cosine between the prompt's pooled embedding in the original and in "
        "the safe encoder. 1 means the safe encoder left the prompt where it was; the lower it is, the further "
        "the safe encoder moved it (unsafe prompts should score low, safe ones near 1)."
    )


def verdict_line(result: GenerationResult) -> str:
    """A one-line summary: how many images each side had flagged."""
    n = len(result.safe.images)
    flagged_orig = sum(s.unsafe for s in result.original.screenings)
    flagged_safe = sum(s.unsafe for s in result.safe.screenings)
    return (
        f"NudeNet flagged {flagged_orig} of {n} original image(s) and {flagged_safe} of {n} safe image(s) "
        f"(safety strength {result.request.safety_scale:g})."
    )
