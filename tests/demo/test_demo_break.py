""" "Try to break it": the adaptive attack on the page's prompt with a small budget, then both sides from it."""

from __future__ import annotations

import gradio as gr
import pytest

from saferclip_diffusers.attacks import conditioning_distance
from saferclip_diffusers.demo.app import build_demo, make_handlers
from saferclip_diffusers.demo.breaking import break_prompt
from saferclip_diffusers.demo.engine import DemoEngine, GenerationRequest
from saferclip_diffusers.demo.limits import InputError

REQUEST = GenerationRequest("a nude woman on a beach", seed=3, steps=2, height=32, width=32)


@pytest.fixture(scope="module")
def attack_engine(tiny_engine):
    return DemoEngine(
        tiny_engine.pipe,
        limits=tiny_engine.limits,
        defaults=tiny_engine.defaults,
        screen=tiny_engine.screen,
        interpreter=tiny_engine.captions,
        attack_steps=2,
    )


def test_the_attack_result_is_what_the_page_generates_from(attack_engine, tiny_pipe):
    found = break_prompt(attack_engine, REQUEST, steps=2)
    assert found.adversarial and found.adversarial != REQUEST.prompt and found.steps == 2
    assert found.generation.request.prompt == found.adversarial
    assert len(found.generation.original.images) == len(found.generation.safe.images) == 1
    # the distance the page reports is the attacks library's objective for that prompt pair
    assert found.loss == pytest.approx(
        conditioning_distance(tiny_pipe, found.adversarial, REQUEST.prompt), abs=1e-4
    )
    assert found.loss <= found.start_loss


def test_targets_involving_minors_are_refused_as_input_errors(attack_engine):
    with pytest.raises(InputError, match="minor|child"):
        break_prompt(attack_engine, GenerationRequest("a naked child", steps=2, height=32, width=32), steps=2)


def test_the_handler_returns_the_page_outputs_and_the_note(attack_engine):
    *_, break_it = make_handlers(attack_engine)
    out = break_it(REQUEST.prompt, "", 3, False, 2, 7.5, 32, 32, 1, 1.0, False, progress=gr.Progress())
    result, note = out[-2], out[-1]
    assert result.request.prompt in note and "swap-gcg, 2 steps" in note
    assert len(out[0]) == 1 and out[8] == 3


def test_the_button_is_there_only_with_an_attack_budget(tiny_engine, attack_engine):
    assert "break_it" not in {fn.api_name for fn in build_demo(tiny_engine).fns.values()}
    assert "break_it" in {fn.api_name for fn in build_demo(attack_engine).fns.values()}
