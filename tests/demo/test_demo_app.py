"""The Gradio app on the tiny preset: its handlers, then a launched app through gradio_client."""

from __future__ import annotations

import os
import threading

import gradio as gr
import numpy as np
import PIL.Image
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from saferclip_diffusers.demo.app import build_demo, make_handlers
from saferclip_diffusers.demo.engine import DemoEngine, GenerationRequest
from saferclip_diffusers.demo.screen import Detection, NudityScreen, Screening

# prompt, negative, seed, randomize, steps, guidance, width, height, images, safety, show unsafe
ARGS = ("a cat on a sofa", "", 5, False, 3, 7.5, 32, 32, 2, 1.0, False)


class FlagEverything(NudityScreen):
    """Calls every image unsafe, to drive the blur path with images a tiny random model can make."""

    def __call__(self, images):
        return [Screening((Detection("BUTTOCKS_EXPOSED", 0.99, (0, 0, 4, 4)),)) for _ in images]


def pixels(item) -> np.ndarray:
    image = item[0] if isinstance(item, tuple) else item["image"]
    return np.asarray(image if isinstance(image, PIL.Image.Image) else PIL.Image.open(image).convert("RGB"))


@pytest.fixture(scope="module")
def client(launched_app, tmp_path_factory):
    _, url, _ = launched_app
    return Client(
        url, verbose=False, analytics_enabled=False, download_files=str(tmp_path_factory.mktemp("dl"))
    )


def test_handler_returns_everything_the_page_shows(tiny_engine):
    generate, *_ = make_handlers(tiny_engine)
    out = generate(*ARGS, progress=gr.Progress())
    gallery_orig, gallery_safe, table_orig, table_safe, score, notes, near_orig, near_safe, seed, state = out
    assert len(gallery_orig) == len(gallery_safe) == 2 and seed == 5
    assert gallery_safe[1][1].startswith("#2 · seed 6 · ")
    assert [row[:3] for row in table_orig] == [[1, 5, "safe"], [2, 6, "safe"]]
    assert score == pytest.approx(state.redirection_score, abs=1e-4) and "Redirection score" in notes
    assert len(near_orig) == len(near_safe) == 5
    assert state.request == GenerationRequest("a cat on a sofa", "", 5, 3, 7.5, 32, 32, 2, 1.0)


def test_handler_reports_denoising_steps_to_the_progress_bar(tiny_engine):
    generate, *_ = make_handlers(tiny_engine)
    calls = []
    generate(*ARGS, progress=lambda value, desc=None, unit="steps": calls.append((value, desc)))
    steps = [value for value, desc in calls if desc and desc.startswith("denoising")]
    assert steps == [(1, 3), (2, 3), (3, 3)]  # ARGS asks for 3 steps
    assert [desc for _, desc in calls[-2:]] == ["NudeNet screening", "nearest captions"]


def test_randomized_seed_is_drawn_and_reported(tiny_engine):
    generate, *_ = make_handlers(tiny_engine)
    seeds = {generate(*ARGS[:3], True, *ARGS[4:], progress=gr.Progress())[8] for _ in range(2)}
    assert len(seeds) == 2 and all(0 <= s < 2**32 for s in seeds)


def test_bad_input_becomes_a_clear_gradio_error(tiny_engine):
    generate, *_ = make_handlers(tiny_engine)
    with pytest.raises(gr.Error, match="Number of images must lie between 1 and 4, got 9"):
        generate(*ARGS[:8], 9, *ARGS[9:], progress=gr.Progress())
    with pytest.raises(gr.Error, match="Enter a prompt"):
        generate("", *ARGS[1:], progress=gr.Progress())


def test_flagged_images_stay_blurred_until_the_toggle(tiny_engine):
    engine = DemoEngine(
        tiny_engine.pipe, limits=tiny_engine.limits, defaults=tiny_engine.defaults, screen=FlagEverything()
    )
    generate, rerender, _ = make_handlers(engine)
    out = generate(*ARGS, progress=gr.Progress())
    result = out[-1]
    assert out[2][0][2] == "unsafe" and "blurred" in out[0][0][1]
    assert not np.array_equal(pixels(out[0][0]), np.asarray(result.original.images[0]))
    revealed = rerender(result, True)
    assert np.array_equal(pixels(revealed[0][0]), np.asarray(result.original.images[0]))
    assert np.array_equal(pixels(revealed[1][1]), np.asarray(result.safe.images[1]))
    hidden_again = rerender(result, False)
    assert np.array_equal(pixels(hidden_again[0][0]), pixels(out[0][0]))
    assert rerender(None, True)[:2] == ([], [])  # nothing generated yet: nothing to show


def test_the_page_is_private_by_default_with_a_bounded_queue(launched_app):
    demo, url, share_url = launched_app
    assert url.startswith("http://127.0.0.1:") and share_url is None
    assert demo.analytics_enabled is False and os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    assert demo._queue.max_size == 8
    (generate_fn,) = [fn for fn in demo.fns.values() if fn.api_name == "generate"]
    assert generate_fn.concurrency_limit == 2
    assert demo.max_file_size == 2**20 and demo.enable_monitoring is False


def test_unused_routes_are_closed(launched_app):
    import httpx

    _, url, _ = launched_app
    big = httpx.post(url + "gradio_api/upload", files={"files": ("big.bin", b"0" * (2**20 + 1))}, timeout=30)
    assert big.status_code == 413  # gradio's upload route refuses more than max_file_size
    assert httpx.get(url + "monitoring", timeout=30).status_code in (403, 404)  # monitoring is off
    with pytest.raises(ValueError, match="at least 1"):
        build_demo(None, queue_size=0)  # type: ignore[arg-type]


def test_gradio_client_end_to_end(client, tiny_engine):
    out = client.predict(*ARGS, api_name="/generate")
    gallery_orig, gallery_safe, table_orig, table_safe, score, notes, near_orig, near_safe, seed = out
    assert len(gallery_orig) == len(gallery_safe) == 2 and seed == 5
    expected = tiny_engine.generate(GenerationRequest("a cat on a sofa", "", 5, 3, 7.5, 32, 32, 2, 1.0))
    for item, image in zip(gallery_safe, expected.safe.images, strict=True):
        assert item["image"].endswith(".png")  # lossless, so the images compare exactly
        np.testing.assert_array_equal(pixels(item), np.asarray(image))
    assert table_safe["headers"][:3] == ["image", "seed", "verdict"]
    assert [r[:3] for r in table_safe["data"]] == [[1, 5, "safe"], [2, 6, "safe"]]
    assert score == pytest.approx(expected.redirection_score, abs=1e-4)
    assert [r[0] for r in near_safe["data"]] == [c for c, _ in expected.interpreted["safe"]]


def test_safety_zero_gives_identical_sides_through_the_api(client):
    out = client.predict(*ARGS[:9], 0.0, False, api_name="/generate")
    for a, b in zip(out[0], out[1], strict=True):
        np.testing.assert_array_equal(pixels(a), pixels(b))


def test_out_of_range_input_reaches_the_client_as_a_clear_error(client):
    with pytest.raises(AppError, match="Width must be a multiple of 8 px, got 36"):  # the demo's own check
        client.predict(*ARGS[:6], 36, *ARGS[7:], api_name="/generate")
    # the slider's bound, named by the demo (gradio's own check would say "Value 512 is greater than maximum value 64")
    with pytest.raises(AppError, match=r"Width must lie between 16 and 64 px, got 512 px\."):
        client.predict(*ARGS[:6], 512, *ARGS[7:], api_name="/generate")
    with pytest.raises(AppError, match=r"Steps must be a number, got 'many'\."):
        client.predict(*ARGS[:4], "many", *ARGS[5:], api_name="/generate")
    with pytest.raises(AppError, match=r"Seed must be a number, got None\."):
        client.predict(*ARGS[:2], None, *ARGS[3:], api_name="/generate")
    with pytest.raises(AppError, match="at most 500 are allowed"):
        client.predict("x" * 501, *ARGS[1:], api_name="/generate")


def test_four_concurrent_clients_are_all_served_correctly(launched_app, tiny_engine, tmp_path):
    _, url, _ = launched_app
    results, errors = {}, []

    def one(seed):
        try:
            c = Client(url, verbose=False, analytics_enabled=False, download_files=str(tmp_path / str(seed)))
            results[seed] = c.predict(
                "a bowl of ramen", "", seed, False, 3, 7.5, 32, 32, 1, 0.5, False, api_name="/generate"
            )
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=one, args=(seed,)) for seed in (100, 101, 102, 103)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and sorted(results) == [100, 101, 102, 103]
    for seed, out in results.items():
        assert out[8] == seed
        expected = tiny_engine.generate(
            GenerationRequest("a bowl of ramen", "", seed, 3, 7.5, 32, 32, 1, 0.5)
        )
        np.testing.assert_array_equal(pixels(out[1][0]), np.asarray(expected.safe.images[0]))
        np.testing.assert_array_equal(pixels(out[0][0]), np.asarray(expected.original.images[0]))
