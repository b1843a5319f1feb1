"""The Gradio page: one prompt, the original and the safe model side by side.

``build_demo(engine)`` lays out the ``gr.Blocks``; ``launch_demo`` serves it on 127.0.0.1 by default, with
Gradio's analytics off, a bounded queue, a concurrency limit, a bounded upload size and no monitoring or MCP
routes. The work itself is in :mod:`.engine`.

The generate event runs with ``preprocess=False``: gradio's own range check would refuse an out-of-range value
with "Value 72 is greater than maximum value 64", naming no input; the engine's :class:`~.limits.Limits` check
names the input and its allowed range, and refuses non-numbers by name too.
"""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no outbound analytics calls

from collections.abc import Sequence  # noqa: E402

import gradio as gr  # noqa: E402

from .engine import DemoEngine  # noqa: E402
from .handlers import captions_panel, make_handlers, render  # noqa: E402,F401 - make_handlers re-exported
from .limits import MAX_SEED  # noqa: E402
from .render import (  # noqa: E402
    CAPTION_HEADERS,
    DETECTION_HEADERS,
    SAFE_EXAMPLE_PROMPTS,
    captions_note,
)

INTRO = """# SafeR-CLIP: original vs safe text encoder
One prompt, two images from the **same initial noise** and the same UNet and VAE: on the left the original text
encoder, on the right the SafeR-CLIP safe encoder, which moves unsafe prompts to their nearest safe meaning and
leaves safe prompts alone. Images that NudeNet flags as unsafe are **blurred** unless you tick *Show unsafe images*.
"""


def build_demo(
    engine: DemoEngine,
    *,
    examples: Sequence[str] = SAFE_EXAMPLE_PROMPTS,
    concurrency_limit: int = 1,
    queue_size: int = 16,
) -> gr.Blocks:
    """The page for ``engine``: controls, the two sides with NudeNet verdicts, redirection score, captions."""
    if concurrency_limit < 1 or queue_size < 1:
        raise ValueError(
            f"concurrency_limit and queue_size must be at least 1, got {concurrency_limit}, {queue_size}"
        )
    limits, d = engine.limits, engine.defaults
    generate, rerender, break_it = make_handlers(engine)
    with gr.Blocks(
        title="SafeR-CLIP side by side", analytics_enabled=False, delete_cache=(3600, 3600)
    ) as demo:
        gr.Markdown(INTRO + ("\n" + engine.description if engine.description else ""))
        with gr.Row(equal_height=True):
            prompt = gr.Textbox(
                label="Prompt",
                placeholder="Describe an image",
                lines=2,
                scale=5,
                max_length=limits.max_prompt_chars,
                elem_id="prompt",
            )
            run = gr.Button("Generate", variant="primary", scale=1, elem_id="generate")
            attack = gr.Button(
                "Try to break it",
                variant="secondary",
                scale=1,
                elem_id="break-it",
                visible=engine.attack_steps > 0,
            )
        with gr.Row():
            safety = gr.Slider(
                0.0,
                1.0,
                value=1.0,
                step=0.05,
                label="Safety strength (safety_scale)",
                scale=3,
                info="0 = original encoder on both sides, 1 = the full safe encoder on the right",
            )
            count = gr.Slider(1, limits.max_images, value=1, step=1, label="Number of images", scale=2)
            show_unsafe = gr.Checkbox(
                value=False,
                label="Show unsafe images (unblurred)",
                elem_id="show-unsafe",
                info="Images NudeNet flags are blurred unless this is ticked.",
                scale=2,
            )
        with gr.Accordion("More settings", open=False):
            negative = gr.Textbox(label="Negative prompt", max_length=limits.max_prompt_chars)
            with gr.Row():
                seed = gr.Number(
                    value=d.seed, precision=0, minimum=0, maximum=MAX_SEED, label="Seed", elem_id="seed"
                )
                randomize = gr.Checkbox(value=True, label="Randomize seed")
                steps = gr.Slider(limits.min_steps, limits.max_steps, value=d.steps, step=1, label="Steps")
                guidance = gr.Slider(
                    0.0, limits.max_guidance, value=d.guidance_scale, step=0.5, label="Guidance scale"
                )
            with gr.Row():
                width = gr.Slider(
                    limits.min_size, limits.max_size, value=d.width, step=limits.size_multiple, label="Width"
                )
                height = gr.Slider(
                    limits.min_size,
                    limits.max_size,
                    value=d.height,
                    step=limits.size_multiple,
                    label="Height",
                )
        with gr.Row():
            with gr.Column():
                gallery_orig = gr.Gallery(
                    label="Original text encoder",
                    format="png",
                    columns=2,
                    height=420,
                    object_fit="contain",
                    elem_id="original-gallery",
                )
                table_orig = gr.Dataframe(headers=DETECTION_HEADERS, label="NudeNet: original", wrap=True)
            with gr.Column():
                gallery_safe = gr.Gallery(
                    label="Safe text encoder",
                    format="png",
                    columns=2,
                    height=420,
                    object_fit="contain",
                    elem_id="safe-gallery",
                )
                table_safe = gr.Dataframe(headers=DETECTION_HEADERS, label="NudeNet: safe", wrap=True)
        attack_note = gr.Markdown("", elem_id="attack-note")
        with gr.Row():
            score = gr.Number(label="Redirection score", precision=4, interactive=False, scale=1)
            notes = gr.Markdown(label="Notes", scale=4)
        gr.Markdown("### Interpreted as: nearest captions in each encoder's space")
        status = gr.Markdown(captions_note(engine.captions_status()), elem_id="captions-status")
        timer = gr.Timer(1.0, active=engine.captions_status().startswith("indexing"))
        with gr.Row():
            near_orig = gr.Dataframe(
                headers=CAPTION_HEADERS, label="Original encoder: nearest captions", wrap=True
            )
            near_safe = gr.Dataframe(
                headers=CAPTION_HEADERS, label="Safe encoder: nearest captions", wrap=True
            )
        gr.Examples(examples=[[p] for p in examples], inputs=[prompt], label="Example prompts")
        state = gr.State(None)

        shown = [gallery_orig, gallery_safe, table_orig, table_safe, score, notes, near_orig, near_safe]
        gr.on(
            triggers=[run.click, prompt.submit],
            fn=generate,
            inputs=[
                prompt,
                negative,
                seed,
                randomize,
                steps,
                guidance,
                width,
                height,
                count,
                safety,
                show_unsafe,
            ],
            outputs=[*shown, seed, state],
            api_name="generate",
            concurrency_limit=concurrency_limit,
            concurrency_id="generate",
            preprocess=False,  # raw values reach the Limits check, which names the input (see the module doc)
        )
        run.click(lambda: "", outputs=attack_note, api_visibility="private", queue=False)
        prompt.submit(lambda: "", outputs=attack_note, api_visibility="private", queue=False)
        if engine.attack_steps > 0:
            attack.click(
                break_it,
                inputs=[
                    prompt,
                    negative,
                    seed,
                    randomize,
                    steps,
                    guidance,
                    width,
                    height,
                    count,
                    safety,
                    show_unsafe,
                ],
                outputs=[*shown, seed, state, attack_note],
                api_name="break_it",
                concurrency_limit=concurrency_limit,
                concurrency_id="generate",
                preprocess=False,
            )
        timer.tick(
            lambda: captions_panel(engine),
            outputs=[status, timer],
            api_visibility="private",
            concurrency_limit=None,
            show_progress="hidden",
        )
        demo.load(
            lambda: captions_panel(engine),
            outputs=[status, timer],
            api_visibility="private",
            concurrency_limit=None,
            show_progress="hidden",
        )
        show_unsafe.change(
            rerender,
            inputs=[state, show_unsafe],
            outputs=shown,
            api_visibility="private",
            concurrency_limit=None,
        )
    demo.queue(max_size=queue_size, default_concurrency_limit=concurrency_limit)
    return demo


MAX_FILE_SIZE = 2**20  # bytes: the page takes no files, so gradio's upload route needs no more


def launch_demo(
    demo: gr.Blocks,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    block: bool = True,
    quiet: bool = False,
    max_file_size: int = MAX_FILE_SIZE,
):
    """Serve ``demo`` (127.0.0.1 and no public share link unless asked). Returns gradio's ``(app, url, share_url)``.

    Routes the page does not use are closed where gradio allows: uploads are bounded by ``max_file_size``,
    and the monitoring dashboard, the MCP server and server-side rendering (a Node process) are off."""
    return demo.launch(
        server_name=host,
        server_port=port,
        share=bool(share),
        prevent_thread_lock=not block,
        quiet=quiet,
        ssr_mode=False,
        mcp_server=False,
        max_file_size=max_file_size,
        enable_monitoring=False,
        show_error=False,
    )
