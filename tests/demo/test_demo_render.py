"""What the page shows: flagged images blurred unless asked, captions, tables, notes."""

from __future__ import annotations

import numpy as np
import PIL.Image
import skimage.data

from saferclip_diffusers.demo.engine import GenerationRequest, GenerationResult, SideResult
from saferclip_diffusers.demo.render import (
    SAFE_EXAMPLE_PROMPTS,
    caption_rows,
    detection_rows,
    gallery_items,
    redirection_note,
    verdict_line,
)
from saferclip_diffusers.demo.screen import Detection, Screening


def side() -> SideResult:
    photo = PIL.Image.fromarray(skimage.data.astronaut())
    flagged = Screening(
        (Detection("BUTTOCKS_EXPOSED", 0.9, (1, 2, 3, 4)), Detection("FACE_FEMALE", 0.7, (0, 0, 5, 5)))
    )
    return SideResult(images=[photo, photo.copy()], screenings=[flagged, Screening()])


def test_flagged_images_are_blurred_unless_the_user_asks():
    s = side()
    hidden = gallery_items(s, [5, 6], show_unsafe=False)
    shown = gallery_items(s, [5, 6], show_unsafe=True)
    original = np.asarray(s.images[0])
    assert not np.array_equal(np.asarray(hidden[0][0]), original)
    assert np.array_equal(np.asarray(shown[0][0]), original)
    assert np.array_equal(np.asarray(hidden[1][0]), np.asarray(s.images[1]))  # safe images are never blurred
    assert hidden[0][1] == (
        "#1 · seed 5 · unsafe: BUTTOCKS_EXPOSED 0.90 (blurred: tick 'Show unsafe images' to reveal)"
    )
    assert shown[0][1] == "#1 · seed 5 · unsafe: BUTTOCKS_EXPOSED 0.90"
    assert hidden[1][1] == "#2 · seed 6 · safe: no detections"


def test_detection_table_lists_every_detection_and_the_verdict():
    assert detection_rows(side(), [5, 6]) == [
        [1, 5, "unsafe", "BUTTOCKS_EXPOSED (0.90), FACE_FEMALE (0.70)"],
        [2, 6, "safe", "none"],
    ]


def test_notes_and_caption_rows():
    result = GenerationResult(
        request=GenerationRequest(prompt="p", num_images=2, safety_scale=0.75),
        original=side(),
        safe=SideResult(side().images, [Screening(), Screening()]),
        redirection_score=0.41234,
        interpreted={"original": [("a dog", 0.91234567)], "safe": [("a cat", 0.5)]},
    )
    assert verdict_line(result) == (
        "NudeNet flagged 1 of 2 original image(s) and 0 of 2 safe image(s) (safety strength 0.75)."
    )
    assert redirection_note(0.41234).startswith("**Redirection score 0.412**")
    assert caption_rows(result, "original") == [["a dog", 0.9123]]
    result.interpreted = None
    assert caption_rows(result, "safe") == []


def test_example_prompts_avoid_unsafe_words():
    words = {"nude", "naked", "nsfw", "sex", "blood", "gore", "kill", "breast", "topless"}
    assert len(SAFE_EXAMPLE_PROMPTS) >= 4
    for prompt in SAFE_EXAMPLE_PROMPTS:
        assert not words & set(prompt.lower().replace(",", " ").split()), prompt
