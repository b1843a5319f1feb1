"""The demo's generation on the tiny preset: identical latents, seeds, limits, progress, threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from saferclip_diffusers.demo.engine import GenerationRequest
from saferclip_diffusers.demo.limits import InputError


def req(**kw) -> GenerationRequest:
    return GenerationRequest(
        **{"prompt": "a cat on a sofa", "seed": 11, "steps": 3, "height": 32, "width": 32, **kw}
    )


def arrays(images) -> list[np.ndarray]:
    return [np.asarray(im) for im in images]


def test_both_sides_come_from_identical_latents(tiny_engine):
    same = tiny_engine.generate(req(safety_scale=0.0, num_images=2))
    assert len(same.original.images) == len(same.safe.images) == 2
    assert same.safe.images[0].size == (32, 32)
    for a, b in zip(arrays(same.original.images), arrays(same.safe.images), strict=True):
        np.testing.assert_array_equal(a, b)  # safety 0: the safe side IS the original: same noise, same UNet
    full = tiny_engine.generate(req(safety_scale=1.0, num_images=2))
    for a, b in zip(arrays(same.original.images), arrays(full.original.images), strict=True):
        np.testing.assert_array_equal(a, b)  # the original side does not depend on the safety strength
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(arrays(full.original.images), arrays(full.safe.images), strict=True)
    )


def test_each_image_has_its_own_seed(tiny_engine):
    pair = tiny_engine.generate(req(seed=40, num_images=2))
    second = tiny_engine.generate(req(seed=41, num_images=1))
    assert pair.seeds == [40, 41]
    np.testing.assert_array_equal(arrays(pair.safe.images)[1], arrays(second.safe.images)[0])
    np.testing.assert_array_equal(arrays(pair.original.images)[1], arrays(second.original.images)[0])
    assert not np.array_equal(arrays(pair.safe.images)[0], arrays(pair.safe.images)[1])


def test_result_carries_score_screenings_and_captions(tiny_engine, tiny_pipe):
    result = tiny_engine.generate(req(num_images=2, safety_scale=0.5, negative_prompt="blurry"))
    assert result.redirection_score == pytest.approx(
        tiny_pipe.redirection_scores("a cat on a sofa")[0], abs=1e-5
    )
    assert len(result.original.screenings) == len(result.safe.screenings) == 2
    assert set(result.interpreted) == {"original", "safe"} and len(result.interpreted["safe"]) == 5
    assert result.request.safety_scale == 0.5 and result.request.negative_prompt == "blurry"


def test_progress_reports_every_step_then_the_later_stages(tiny_engine):
    calls = []
    tiny_engine.generate(req(steps=4), progress=lambda i, n, desc: calls.append((i, n, desc)))
    assert [c[:2] for c in calls[:4]] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert [c[2] for c in calls[4:]] == ["NudeNet screening", "nearest captions"]


def test_requests_outside_the_limits_are_refused_before_any_work(tiny_engine):
    calls = []
    with pytest.raises(InputError, match="Steps must lie between 1 and 50"):
        tiny_engine.generate(req(steps=500), progress=lambda *a: calls.append(a))
    with pytest.raises(InputError, match="Width must lie between 16 and 64 px"):
        tiny_engine.generate(req(width=512))
    assert calls == []


def test_concurrent_calls_give_the_same_images_as_sequential_ones(tiny_engine):
    requests = [req(seed=s, steps=3 + s % 2, safety_scale=0.25 * s) for s in range(4)]
    expected = [arrays(tiny_engine.generate(r).safe.images)[0] for r in requests]
    got, errors = [None] * 4, []

    def work(i):
        try:
            got[i] = arrays(tiny_engine.generate(requests[i]).safe.images)[0]
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_array_equal(a, b)


def test_tiny_sdxl_compares_from_identical_latents_too():
    from saferclip_diffusers.demo.engine import build_engine

    engine = build_engine("tiny-sdxl", device="cpu", caption_pool_size=0)
    assert engine.pipe.safe_slots == ["text_encoder", "text_encoder_2"]
    same = engine.generate(req(safety_scale=0.0, guidance_scale=5.0, negative_prompt="blurry"))
    np.testing.assert_array_equal(arrays(same.original.images)[0], arrays(same.safe.images)[0])
    full = engine.generate(req(safety_scale=1.0, guidance_scale=5.0, negative_prompt="blurry"))
    assert not np.array_equal(arrays(full.original.images)[0], arrays(full.safe.images)[0])
    # the score reported is the pipeline's own (min over the swapped slots), and the slots did change
    expected = engine.pipe.redirection_scores("a cat on a sofa")[0]
    assert full.redirection_score == pytest.approx(expected, abs=1e-5) and expected < 0.999
    assert full.interpreted is None
