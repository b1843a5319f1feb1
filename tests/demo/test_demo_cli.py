"""``python demo/app.py``: its arguments, and the real command serving the tiny preset to gradio_client."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from saferclip_diffusers.cli.demo import build_parser

ROOT = Path(__file__).resolve().parents[2]
ENTRY = ROOT / "demo" / "app.py"


def test_defaults_are_private():
    args = build_parser().parse_args([])
    assert (args.model, args.host, args.port, args.share, args.device) == (
        "sd15",
        "127.0.0.1",
        7860,
        False,
        "auto",
    )
    assert (args.concurrency, args.queue_size, args.caption_pool_size, args.dtype) == (1, 16, 5000, "auto")
    assert args.max_file_size == 1.0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--concurrency", "0"], "argument --concurrency: expected an integer >= 1, got 0"),
        (["--queue-size", "0"], "argument --queue-size: expected an integer >= 1, got 0"),
        (["--caption-pool-size", "-1"], "argument --caption-pool-size: expected an integer >= 0, got -1"),
        (
            ["--nudenet-threshold", "nan"],
            "argument --nudenet-threshold: expected a number in [0.0, 1.0], got 'nan'",
        ),
        (["--port", "http"], "argument --port: expected an integer in [1, 65535], got 'http'"),
        (["--dtype", "float8"], "invalid choice: 'float8'"),
    ],
)
def test_bad_arguments_exit_with_a_message_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_old_spellings_still_work_and_warn():
    with pytest.warns(FutureWarning, match="--safe-text-encoder is deprecated; use --safe-encoder"):
        args = build_parser().parse_args(["--safe-text-encoder", "x", "--cpu"])
    assert (args.safe_encoder, args.device) == ("x", "cpu")
    assert "--safe-text-encoder" not in build_parser().format_help()


def run_entry(*argv: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, str(ENTRY), *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


@pytest.mark.parametrize("argv", [(), ("--model", "someone/not-in-the-cache")])
def test_an_unavailable_model_says_which_why_and_the_offline_alternative(argv, tmp_path):
    # `python demo/app.py` with no arguments on a machine without the Hub or the model in its cache
    result = run_entry(*argv, "--device", "cpu", env={"HF_HOME": str(tmp_path / "hf")})
    model = argv[1] if argv else "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert f"error: could not load the base pipeline (--model) '{model}': offline mode" in result.stderr
    assert "use --model tiny" in result.stderr


def test_a_missing_local_model_folder_never_mentions_the_hub(tmp_path):
    result = run_entry("--model", str(tmp_path / "nowhere"), "--device", "cpu")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        "--model pipeline directory does not exist" in result.stderr and "huggingface.co" not in result.stderr
    )


def wait_until_serving(url: str, process: subprocess.Popen, log: Path, limit_s: float = 300) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"demo/app.py exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"demo/app.py did not serve {url} within {limit_s} s:\n{log.read_text()[-3000:]}")


def test_the_command_serves_the_tiny_preset(tmp_path, free_port):
    port = free_port
    log = tmp_path / "demo.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("GRADIO_ANALYTICS_ENABLED", None)  # the entry point must switch analytics off itself
    command = [
        sys.executable,
        str(ENTRY),
        "--model",
        "tiny",
        "--device",
        "cpu",
        "--port",
        str(port),
        "--caption-pool-size",
        "64",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--max-images",
        "2",
    ]
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until_serving(url, process, log)
        client = Client(url, verbose=False, analytics_enabled=False, download_files=str(tmp_path / "dl"))
        deadline = time.monotonic() + 120
        while True:  # the page is served at once; the caption index fills in from the background
            out = client.predict(
                "a photo of an astronaut riding a horse",
                "",
                1,
                False,
                2,
                7.5,
                32,
                32,
                2,
                1.0,
                False,
                api_name="/generate",
            )
            assert len(out[0]) == len(out[1]) == 2 and out[8] == 1 and 0 < out[4] <= 1.0001
            if out[7]["data"] or time.monotonic() > deadline:
                break
            assert "indexing" in out[5]  # the notes say why the caption tables are still empty
            time.sleep(1)
        assert len(out[7]["data"]) == 5  # captions once the index is ready
        with pytest.raises(
            AppError, match="Number of images must lie between 1 and 2, got 3"
        ):  # --max-images
            client.predict("a cat", "", 1, False, 2, 7.5, 32, 32, 3, 1.0, False, api_name="/generate")
        assert list((tmp_path / "cache").rglob("*.safetensors"))  # caption embeddings were cached
    finally:
        process.terminate()
        process.wait(timeout=30)
    text = log.read_text()
    assert "Running on local URL:  http://127.0.0.1:" in text and "gradio.live" not in text
