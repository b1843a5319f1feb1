"""No command of the project attempts an outbound connection offline (issue 14 §1), proven in a network namespace
with only loopback, a recording fake DNS server and a socket wrapper (see tests/no_egress.py).

onnxruntime (NudeNet's runtime) ships POSIX telemetry: a device id under ``~/.cache`` and 1DS uploads. The
package sets its environment opt-outs (``ORT_DISABLE_TELEMETRY``/``ORT_TELEMETRY_DISABLED``) on import; these
tests remove them (and ``CI``, which onnxruntime also honours) from the environment first, so that only the
package's own opt-out can hold.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

from tests.no_egress import run_isolated

ROOT = Path(__file__).resolve().parents[1]
SCORE_ONE_IMAGE = textwrap.dedent("""
    import numpy as np, PIL.Image
    {prelude}
    from nudenet import NudeDetector
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    {score}
    print("scored")
""")


def bare_env(**extra: str) -> dict[str, str]:
    """This environment without any telemetry opt-out, offline, with the checkout importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORT_") and k != "CI"}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), **extra)
    return env


def telemetry_files(files: list[str]) -> list[str]:
    return [f for f in files if "onnxruntime" in f.lower() or "microsoft" in f.lower()]


def test_the_harness_sees_lookups_and_connects():
    code = textwrap.dedent("""
        import socket, urllib.request
        try:
            socket.getaddrinfo("example.com", 443)
        except OSError:
            pass
        try:
            urllib.request.urlopen("http://93.184.215.14/", timeout=2)
        except OSError:
            pass
    """)
    report = run_isolated([sys.executable, "-c", code], env=bare_env(), linger=0)
    assert report.returncode == 0, report.stderr
    assert "example.com" in report.dns_queries  # the native resolver asked the fake DNS
    assert {"kind": "connect", "target": "('93.184.215.14', 80)"} in [
        {k: a[k] for k in ("kind", "target")} for a in report.attempts
    ]


def test_without_the_opt_out_onnxruntime_leaves_a_device_id():
    # the control: plain onnxruntime, no package import, writes its telemetry device id where the tests look
    code = SCORE_ONE_IMAGE.format(prelude="", score="NudeDetector().detect(image)")
    report = run_isolated([sys.executable, "-c", code], env=bare_env(), linger=0)
    assert report.returncode == 0 and "scored" in report.stdout, report.stderr[-2000:]
    assert telemetry_files(report.home_files), report.home_files


def test_nudenet_scoring_sends_nothing_and_keeps_no_device_id():
    code = SCORE_ONE_IMAGE.format(
        prelude="from saferclip_diffusers.scoring.nudenet import NudeNetScorer",
        score="NudeNetScorer(batch_size=1).detect([PIL.Image.fromarray(image)])",
    )
    report = run_isolated([sys.executable, "-c", code], env=bare_env(), linger=3)
    assert report.returncode == 0 and "scored" in report.stdout, report.stderr[-2000:]
    assert report.outbound == []
    assert telemetry_files(report.home_files) == []


DEMO_DRIVER = textwrap.dedent("""
    import socket, subprocess, sys, time, urllib.request
    from gradio_client import Client

    root, cache = sys.argv[1], sys.argv[2]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, root + "/demo/app.py", "--model", "tiny", "--device", "cpu",
                               "--port", str(port), "--caption-pool-size", "32", "--cache-dir", cache])
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    sys.exit(f"the demo did not start (exit {server.poll()})")
                time.sleep(0.5)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, analytics_enabled=False, download_files=False)
        for prompt in ("a photo of a cat", "a red fox in the snow"):
            out = client.predict(prompt, "", 1, False, 2, 7.5, 32, 32, 1, 1.0, False, api_name="/generate")
            assert len(out[0]) == len(out[1]) == 1
        print("served")
    finally:
        server.terminate()
        server.wait(timeout=60)
""")


def test_the_demo_sends_nothing(tmp_path):
    env = bare_env()
    env.pop("GRADIO_ANALYTICS_ENABLED", None)  # the demo must switch gradio's analytics off itself
    report = run_isolated(
        [sys.executable, "-c", DEMO_DRIVER, str(ROOT), str(tmp_path / "captions")],
        env=env,
        cwd=tmp_path,
        linger=3,
    )
    assert report.returncode == 0 and "served" in report.stdout, report.stderr[-3000:]
    assert report.outbound == []
    assert telemetry_files(report.home_files) == []
