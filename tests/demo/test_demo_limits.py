from __future__ import annotations

import pytest

from saferclip_diffusers.demo.limits import MAX_SEED, InputError, Limits

OK = dict(
    prompt="a cat",
    negative_prompt="",
    steps=4,
    guidance_scale=7.5,
    height=32,
    width=32,
    num_images=1,
    safety_scale=1.0,
    seed=0,
)


def test_for_size_spans_half_to_twice_the_native_size_capped_at_1536():
    assert (Limits.for_size(32).min_size, Limits.for_size(32).max_size) == (16, 64)
    assert (Limits.for_size(512).min_size, Limits.for_size(512).max_size) == (256, 1024)
    assert (Limits.for_size(1024).min_size, Limits.for_size(1024).max_size) == (512, 1536)
    assert Limits.for_size(512, max_size=768).max_size == 768
    assert Limits.for_size(512, max_steps=30).max_steps == 30


def test_a_request_inside_the_limits_passes():
    Limits.for_size(32).check(**OK)
    Limits.for_size(32).check(**{**OK, "seed": MAX_SEED, "safety_scale": 0.0, "num_images": 4, "height": 64})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prompt": "   "}, "Enter a prompt"),
        ({"prompt": "x" * 501}, "prompt has 501 characters; at most 500"),
        ({"negative_prompt": "x" * 501}, "negative prompt has 501 characters"),
        ({"steps": 0}, "Steps must lie between 1 and 50"),
        ({"steps": 51}, "Steps must lie between 1 and 50"),
        ({"steps": 2.5}, "Steps must be a whole number"),
        ({"guidance_scale": 25.0}, "Guidance scale must lie between 0.0 and 20.0"),
        ({"height": 128}, "Height must lie between 16 and 64 px, got 128 px"),
        ({"width": 8}, "Width must lie between 16 and 64 px"),
        ({"width": 36}, "Width must be a multiple of 8 px, got 36"),
        ({"num_images": 5}, "Number of images must lie between 1 and 4"),
        ({"safety_scale": 1.5}, "Safety strength must lie between 0.0 and 1.0"),
        ({"seed": -1}, "Seed must lie between 0 and"),
        ({"seed": MAX_SEED + 1}, "Seed must lie between 0 and"),
        ({"seed": None}, "Seed must be a number, got None"),
        ({"steps": float("nan")}, "Steps must be a number, got NaN"),
        ({"num_images": True}, "Number of images must be a number"),
    ],
)
def test_out_of_range_inputs_name_the_input_and_the_allowed_range(change, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Limits.for_size(32).check(**{**OK, **change})


def test_inconsistent_limits_are_refused():
    with pytest.raises(ValueError, match="min_size <= max_size"):
        Limits(min_size=512, max_size=256)
    with pytest.raises(ValueError, match="multiples of 8"):
        Limits(min_size=250, max_size=1024)
    with pytest.raises(ValueError, match="min_steps <= max_steps"):
        Limits(min_steps=10, max_steps=5)
