"""The "Interpreted as" index is built in the background: the page works at once and says "indexing n/N"."""

from __future__ import annotations

import threading

import pytest

from saferclip_diffusers.demo.app import captions_panel
from saferclip_diffusers.demo.engine import DemoEngine, GenerationRequest, build_engine
from saferclip_diffusers.demo.indexing import CaptionIndex
from saferclip_diffusers.demo.interpret import CaptionInterpreter, load_captions

REQUEST = GenerationRequest("a cat on a sofa", steps=2, height=32, width=32)


def test_status_follows_the_build_until_ready(tiny_engine):
    release, reported = threading.Event(), threading.Event()
    interpreter = tiny_engine.interpreter

    def build(progress):
        progress(128, 400)
        reported.set()
        release.wait(30)
        return interpreter

    index = CaptionIndex(build, total=400)
    assert reported.wait(30)
    assert index.status() == "indexing 128/400 captions" and index.interpreter is None and not index.ready
    release.set()
    assert index.wait(30) and index.status() == "ready" and index.interpreter is interpreter
    assert index.progress() == (400, 400)


def test_a_failed_build_is_reported_and_leaves_generation_working(tiny_engine):
    def build(progress):
        raise OSError("caption cache folder is read-only")

    index = CaptionIndex(build, total=10)
    assert index.wait(30) and index.status() == "failed: OSError: caption cache folder is read-only"
    engine = DemoEngine(
        tiny_engine.pipe,
        limits=tiny_engine.limits,
        defaults=tiny_engine.defaults,
        screen=tiny_engine.screen,
        interpreter=index,
    )
    result = engine.generate(REQUEST)
    assert result.interpreted is None and result.captions_status.startswith("failed: OSError")
    assert len(result.safe.images) == 1


def test_engine_serves_while_indexing_then_answers_with_captions(tiny_engine):
    release = threading.Event()

    def build(progress):
        progress(0, 400)
        release.wait(30)
        return tiny_engine.interpreter

    engine = DemoEngine(
        tiny_engine.pipe,
        limits=tiny_engine.limits,
        defaults=tiny_engine.defaults,
        screen=tiny_engine.screen,
        interpreter=CaptionIndex(build, total=400),
    )
    early = engine.generate(REQUEST)
    assert early.interpreted is None and early.captions_status == "indexing 0/400 captions"
    note, timer = captions_panel(engine)
    assert "indexing 0/400 captions" in note and timer.active is True
    release.set()
    assert engine.captions.wait(30)
    late = engine.generate(REQUEST)
    assert late.captions_status == "ready" and len(late.interpreted["safe"]) == 5
    note, timer = captions_panel(engine)
    assert "ready" in note and timer.active is False


def test_progress_counts_every_caption_of_every_slot_and_side(tiny_pipe, tmp_path):
    seen = []
    captions = load_captions(limit=40)
    CaptionInterpreter(
        tiny_pipe, captions, tmp_path, chunk_size=16, progress=lambda d, n: seen.append((d, n))
    )
    # SD: one swapped slot, two sides, 40 captions in chunks of 16, 16, 8
    assert seen == [(16, 80), (32, 80), (40, 80), (56, 80), (72, 80), (80, 80)]


def test_build_engine_returns_before_the_index_is_built(tmp_path):
    engine = build_engine(
        "tiny", device="cpu", caption_pool_size=300, cache_dir=tmp_path, background_index=True
    )
    assert engine.captions_status() in (
        "indexing 0/600 captions",
        "ready",
    ) or engine.captions_status().startswith("indexing ")
    assert engine.captions.wait(120) and engine.captions_status() == "ready"
    assert len(engine.interpreter.captions) == 300


def test_index_needs_exactly_one_source():
    with pytest.raises(ValueError, match="either build"):
        CaptionIndex()
