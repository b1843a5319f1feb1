"""``python demo/app.py``: its arguments, and the real command serving the tiny preset to gradio_client."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

ROOT = Path(__file__).resolve().parents[2]
ENTRY = ROOT / "demo" / "app.py"


def entry_module():
    spec = importlib.util.spec_from_file_location("demo_app_entry", ENTRY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_defaults_are_private():
    args = entry_module().parse_args([])
    assert (args.model, args.host, args.port, args.share) == ("sd15", "127.0.0.1", 7860, False)
    assert (args.concurrency, args.queue_size, args.caption_pool_size, args.dtype) == (1, 16, 5000, "auto")
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"


@pytest.mark.parametrize(("argv", "message"), [
    (["--concurrency", "0"], "--concurrency must be at least 1"),
    (["--queue-size", "0"], "--queue-size must be at least 1"),
    (["--caption-pool-size", "-1"], "--caption-pool-size must be 0"),
    (["--dtype", "float8"], "invalid choice: 'float8'"),
])
def test_bad_arguments_exit_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        entry_module().parse_args(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


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
    command = [sys.executable, str(ENTRY), "--model", "tiny", "--device", "cpu", "--port", str(port),
               "--caption-pool-size", "64", "--cache-dir", str(tmp_path / "cache"), "--max-images", "2"]
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until_serving(url, process, log)
        client = Client(url, verbose=False, analytics_enabled=False, download_files=str(tmp_path / "dl"))
        out = client.predict("a photo of an astronaut riding a horse", "", 1, False, 2, 7.5, 32, 32, 2, 1.0, False,
                             api_name="/generate")
        assert len(out[0]) == len(out[1]) == 2 and out[8] == 1
        assert len(out[7]["data"]) == 5 and 0 < out[4] <= 1.0001  # captions and a redirection score
        with pytest.raises(AppError, match="greater than maximum value 2"):  # --max-images bounds the slider
            client.predict("a cat", "", 1, False, 2, 7.5, 32, 32, 3, 1.0, False, api_name="/generate")
        assert list((tmp_path / "cache").rglob("*.safetensors"))  # caption embeddings were cached
    finally:
        process.terminate()
        process.wait(timeout=30)
    text = log.read_text()
    assert "Running on local URL:  http://127.0.0.1:" in text and "gradio.live" not in text
