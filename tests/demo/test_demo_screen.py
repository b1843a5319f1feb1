"""NudeNet screening on real photographs (scikit-image's, none unsafe) and the blur that hides flagged images."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import skimage.data

from saferclip_diffusers.demo.screen import (
    SLD_UNSAFE_CLASSES,
    Detection,
    NudityScreen,
    Screening,
    blur,
    to_bgr,
)


@pytest.fixture(scope="module")
def photos():
    return [PIL.Image.fromarray(skimage.data.astronaut()), PIL.Image.fromarray(skimage.data.chelsea())]


def test_to_bgr_reverses_channels_as_opencv_expects():
    red = PIL.Image.new("RGB", (4, 3), (255, 0, 0))
    arr = to_bgr(red)
    assert arr.shape == (3, 4, 3) and arr.dtype == np.uint8 and arr.flags["C_CONTIGUOUS"]
    assert arr[0, 0].tolist() == [0, 0, 255]
    assert to_bgr(red.convert("RGBA")).shape == (3, 4, 3)


def test_real_detector_output_becomes_detections_and_a_safe_verdict(photos):
    astronaut, cat = NudityScreen()(photos)
    assert not astronaut.unsafe and not cat.unsafe
    labels = [d.label for d in astronaut.detections]
    assert "FACE_FEMALE" in labels  # Eileen Collins' face
    # the box is (x, y, w, h) in pixels around her face, which lies within columns 150-290, rows 60-200 of the
    # 512 x 512 photograph (centre near (220, 130)): an (x1, y1, x2, y2) or a normalised box would not fit
    [face] = [d for d in astronaut.detections if d.label == "FACE_FEMALE"]
    x, y, bw, bh = face.box
    assert 150 <= x < 220 < x + bw <= 290 and 60 <= y < 130 < y + bh <= 200
    assert 60 <= bw <= 140 and 60 <= bh <= 140
    assert astronaut.summary().startswith("safe: FACE_FEMALE")
    assert cat.summary() == "safe: no detections"


def test_the_unsafe_rule_uses_its_classes_and_threshold_on_real_detections(photos):
    # Counting FACE_FEMALE as "unsafe" exercises the flagging path on an image that is not unsafe.
    flagged = NudityScreen(threshold=0.5, unsafe_classes=("FACE_FEMALE",))(photos[:1])[0]
    assert flagged.unsafe and [d.label for d in flagged.reasons] == ["FACE_FEMALE"]
    assert flagged.summary().startswith("unsafe: FACE_FEMALE")
    score = flagged.reasons[0].score
    above = NudityScreen(threshold=min(1.0, score + 0.01), unsafe_classes=("FACE_FEMALE",))(photos[:1])[0]
    assert not above.unsafe and above.detections  # still listed, no longer flagged


def test_screening_flags_only_listed_classes_at_or_above_the_threshold():
    dets = (
        Detection("FEMALE_BREAST_EXPOSED", 0.59, (0, 0, 1, 1)),
        Detection("FEET_EXPOSED", 0.99, (0, 0, 1, 1)),
    )
    assert not Screening(dets).unsafe  # SLD set at 0.6: feet do not count, 0.59 is below
    hit = Screening((*dets, Detection("BUTTOCKS_EXPOSED", 0.6, (0, 0, 1, 1))))
    assert hit.unsafe and [d.label for d in hit.reasons] == ["BUTTOCKS_EXPOSED"]
    assert set(SLD_UNSAFE_CLASSES) == {
        "ANUS_EXPOSED",
        "BUTTOCKS_EXPOSED",
        "FEMALE_BREAST_EXPOSED",
        "FEMALE_GENITALIA_EXPOSED",
        "MALE_GENITALIA_EXPOSED",
    }


def test_threshold_must_be_a_probability():
    with pytest.raises(ValueError, match="threshold must lie in"):
        NudityScreen(threshold=0)


def test_blur_keeps_size_and_removes_detail(photos):
    original = photos[0]
    hidden = blur(original)
    assert hidden.size == original.size and hidden.mode == "RGB"
    a = np.asarray(original.convert("L"), dtype=float)
    b = np.asarray(hidden.convert("L"), dtype=float)
    detail = lambda x: np.abs(np.diff(x, axis=1)).mean()  # noqa: E731
    assert detail(b) < detail(a) / 10
    assert abs(a.mean() - b.mean()) < 10  # same overall tone, not a black box
    # Nothing recognisable is left: NudeNet no longer finds the face.
    assert "FACE_FEMALE" not in [d.label for d in NudityScreen()([hidden])[0].detections]
