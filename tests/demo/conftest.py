"""Demo test set-up: one tiny Safer pipeline, engine and launched app per session (offline, CPU)."""

from __future__ import annotations

import os
import socket
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault(
    "SAFERCLIP_TINY_CACHE", os.path.join(tempfile.gettempdir(), "saferclip-tiny-test-cache")
)

import pytest  # noqa: E402

import saferclip_diffusers  # noqa: E402,F401  - applies the CPU torchvision workaround before transformers
from saferclip_diffusers.demo.engine import DemoEngine, GenerationRequest  # noqa: E402
from saferclip_diffusers.demo.interpret import CaptionInterpreter, load_captions  # noqa: E402
from saferclip_diffusers.demo.limits import Limits  # noqa: E402
from saferclip_diffusers.demo.loading import load_demo_pipeline, resolve_model  # noqa: E402
from saferclip_diffusers.demo.screen import NudityScreen  # noqa: E402

POOL_SIZE = 200  # captions for "Interpreted as" in tests: enough for two cache chunks of 128


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return _free_port()


@pytest.fixture(scope="session")
def tiny_pipe():
    return load_demo_pipeline(resolve_model("tiny"), device="cpu")


@pytest.fixture(scope="session")
def caption_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("caption-cache")


@pytest.fixture(scope="session")
def tiny_engine(tiny_pipe, caption_cache):
    interpreter = CaptionInterpreter(tiny_pipe, load_captions(limit=POOL_SIZE), caption_cache, chunk_size=128)
    defaults = GenerationRequest(prompt="", steps=3, guidance_scale=7.5, height=32, width=32)
    return DemoEngine(
        tiny_pipe,
        limits=Limits.for_size(32),
        defaults=defaults,
        screen=NudityScreen(),
        interpreter=interpreter,
        description="tiny random-weight models (tests)",
    )


@pytest.fixture(scope="session")
def launched_app(tiny_engine):
    """The demo served on 127.0.0.1 at a free port, two generations at a time, eight waiting at most."""
    from saferclip_diffusers.demo.app import build_demo, launch_demo

    demo = build_demo(tiny_engine, concurrency_limit=2, queue_size=8)
    _, url, share_url = launch_demo(demo, port=_free_port(), block=False, quiet=True)
    try:
        yield demo, url, share_url
    finally:
        demo.close()
