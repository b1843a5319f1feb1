"""What the page's buttons do: turn the inputs into engine requests (named range errors), run them with progress,
and render results (verdicts, blurred images, detections, captions). Gradio is only used for its types here."""

from __future__ import annotations

import secrets

import gradio as gr
import torch

from .engine import DemoEngine, GenerationRequest, GenerationResult  # noqa: E402
from .limits import MAX_SEED, InputError  # noqa: E402
from .render import (  # noqa: E402
    caption_rows,
    captions_note,
    detection_rows,
    gallery_items,
    redirection_note,
    verdict_line,
)


def make_handlers(engine: DemoEngine):
    """The page's callbacks: ``generate`` (the public API ``/generate``), ``rerender`` (blur toggle) and
    ``break_it`` ("Try to break it": the adaptive attack on the prompt, then both sides from its result)."""

    def request_of(
        prompt,
        negative_prompt,
        seed,
        randomize_seed,
        steps,
        guidance_scale,
        width,
        height,
        num_images,
        safety_scale,
    ) -> GenerationRequest:
        if randomize_seed is True:
            seed = secrets.randbelow(MAX_SEED + 1)
        return GenerationRequest(
            prompt=prompt or "",
            negative_prompt=negative_prompt or "",
            seed=seed,
            steps=steps,
            guidance_scale=guidance_scale,
            height=height,
            width=width,
            num_images=num_images,
            safety_scale=safety_scale,
        )

    def run(work, progress):
        progress(0, desc="starting")
        try:
            return work(lambda i, n, desc: progress((i, n), desc=desc, unit="steps"))
        except InputError as err:
            raise gr.Error(str(err), title="Invalid input", print_exception=False) from err
        except torch.OutOfMemoryError as err:
            raise gr.Error("Out of accelerator memory: lower the size or the number of images.") from err

    def generate(
        prompt,
        negative_prompt,
        seed,
        randomize_seed,
        steps,
        guidance_scale,
        width,
        height,
        num_images,
        safety_scale,
        show_unsafe,
        progress=gr.Progress(),  # noqa: B008 - gradio injects it
    ):
        request = request_of(
            prompt,
            negative_prompt,
            seed,
            randomize_seed,
            steps,
            guidance_scale,
            width,
            height,
            num_images,
            safety_scale,
        )
        result = run(lambda p: engine.generate(request, progress=p), progress)
        return (*render(result, show_unsafe), result.request.seed, result)

    def break_it(
        prompt,
        negative_prompt,
        seed,
        randomize_seed,
        steps,
        guidance_scale,
        width,
        height,
        num_images,
        safety_scale,
        show_unsafe,
        progress=gr.Progress(),  # noqa: B008 - gradio injects it
    ):
        from .breaking import break_note, break_prompt

        request = request_of(
            prompt,
            negative_prompt,
            seed,
            randomize_seed,
            steps,
            guidance_scale,
            width,
            height,
            num_images,
            safety_scale,
        )
        found = run(lambda p: break_prompt(engine, request, engine.attack_steps, progress=p), progress)
        result = found.generation
        return (*render(result, show_unsafe), result.request.seed, result, break_note(found))

    def rerender(result: GenerationResult | None, show_unsafe: bool):
        if result is None:
            return [], [], gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return render(result, show_unsafe)

    return generate, rerender, break_it


def captions_panel(engine: DemoEngine) -> tuple:
    """The "Interpreted as" status line and whether its timer should keep ticking (while indexing)."""
    status = engine.captions_status()
    return captions_note(status), gr.Timer(active=status.startswith("indexing"))


def render(result: GenerationResult, show_unsafe: bool) -> tuple:
    """Outputs in page order: two galleries, two detection tables, score, notes, two caption tables."""
    seeds = result.seeds
    notes = f"{verdict_line(result)}\n\n{redirection_note(result.redirection_score)}"
    if result.captions_status not in ("ready", "off"):
        notes += f"\n\n{captions_note(result.captions_status)}"
    return (
        gallery_items(result.original, seeds, bool(show_unsafe)),
        gallery_items(result.safe, seeds, bool(show_unsafe)),
        detection_rows(result.original, seeds),
        detection_rows(result.safe, seeds),
        round(result.redirection_score, 4),
        notes,
        caption_rows(result, "original"),
        caption_rows(result, "safe"),
    )
