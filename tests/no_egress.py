"""Run a command with no way out and record every attempt to get out (issue 14 §1).

``run_isolated(argv)`` runs ``argv`` as root inside ``unshare -n -m``: a fresh network namespace that has only
loopback (so any connect to another address fails) and a private mount namespace in which ``/etc/resolv.conf``
is bind-mounted to ``nameserver 127.0.0.1``, where a fake DNS server (UDP and TCP) records every query and
answers NXDOMAIN. HOME and the XDG folders point into a fresh temporary folder, and a ``sitecustomize`` on
PYTHONPATH wraps ``socket.connect``/``connect_ex``/``getaddrinfo`` in every Python process of the command to log
non-loopback targets. The :class:`Report` lists the DNS queries, the logged attempts and every file written
under the temporary HOME/XDG folders (where onnxruntime would keep its telemetry device id).

Not a skip when unavailable: without root or ``unshare`` the harness raises, and the test fails loudly.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

SITECUSTOMIZE = r"""
import json, os, socket

_LOG = os.environ["NO_EGRESS_LOG"]
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}


def _local(host):
    host = str(host).strip("[]").lower()
    return host in _LOCAL_NAMES or host.startswith("127.") or host in ("::1", "0.0.0.0", "::")


def _log(kind, target):
    with open(_LOG, "a") as f:
        f.write(json.dumps({"kind": kind, "target": str(target), "pid": os.getpid()}) + "\n")


_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo


def _check(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
        _log("connect", address)


def connect(self, address):
    _check(self, address)
    return _connect(self, address)


def connect_ex(self, address):
    _check(self, address)
    return _connect_ex(self, address)


def getaddrinfo(host, *args, **kwargs):
    if host is not None and not _local(host.decode() if isinstance(host, bytes) else host):
        _log("getaddrinfo", host)
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
"""


@dataclass
class Report:
    returncode: int
    stdout: str
    stderr: str
    dns_queries: list[str] = field(default_factory=list)
    attempts: list[dict] = field(default_factory=list)  # non-loopback connects / lookups seen from Python
    home_files: list[str] = field(
        default_factory=list
    )  # files written under the temporary HOME / XDG folders

    @property
    def outbound(self) -> list[str]:
        return [f"DNS query {q}" for q in self.dns_queries] + [
            f"{a['kind']} {a['target']}" for a in self.attempts
        ]


def run_isolated(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    timeout: float = 900,
    linger: float = 2.0,
) -> Report:
    """Run ``argv`` in the isolated namespaces; ``linger`` seconds of listening after it exits (late flushes)."""
    if os.geteuid() != 0:
        raise RuntimeError("the no-egress harness needs root (unshare -n -m); CI runs as root")
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        raise RuntimeError("the no-egress harness needs util-linux's unshare and iproute2's ip")
    with tempfile.TemporaryDirectory(prefix="no-egress-") as tmp:
        spec = {
            "argv": argv,
            "env": env if env is not None else dict(os.environ),
            "cwd": str(cwd or os.getcwd()),
            "tmp": tmp,
            "timeout": timeout,
            "linger": linger,
        }
        (Path(tmp) / "spec.json").write_text(json.dumps(spec))
        proc = subprocess.run(
            ["unshare", "-n", "-m", "--", sys.executable, __file__, tmp],
            capture_output=True,
            text=True,
            timeout=timeout + 120,
        )
        result = Path(tmp) / "report.json"
        if not result.is_file():
            raise RuntimeError(
                f"the no-egress harness failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
            )
        return Report(**json.loads(result.read_text()))


# ------------------------------------------------------------------------------------------------ inside


def _qname(packet: bytes) -> tuple[str, int]:
    """The first question's name and the offset just past the question."""
    labels, i = [], 12
    while i < len(packet) and packet[i]:
        n = packet[i]
        labels.append(packet[i + 1 : i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    return ".".join(labels), i + 5  # the zero byte, QTYPE, QCLASS


def _nxdomain(query: bytes) -> bytes:
    _, end = _qname(query)
    return query[:2] + b"\x81\x83" + b"\x00\x01" + b"\x00\x00\x00\x00\x00\x00" + query[12:end]


class FakeDNS:
    def __init__(self):
        self.queries: list[str] = []
        self._lock = threading.Lock()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 53))
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("127.0.0.1", 53))
        self.tcp.listen(16)
        for target in (self._serve_udp, self._serve_tcp):
            threading.Thread(target=target, daemon=True).start()

    def _record(self, packet: bytes) -> None:
        with self._lock:
            self.queries.append(_qname(packet)[0])

    def _serve_udp(self) -> None:
        while True:
            data, peer = self.udp.recvfrom(4096)
            self._record(data)
            self.udp.sendto(_nxdomain(data), peer)

    def _serve_tcp(self) -> None:
        while True:
            conn, _ = self.tcp.accept()
            with conn:
                size = int.from_bytes(conn.recv(2), "big")
                data = conn.recv(size)
                self._record(data)
                answer = _nxdomain(data)
                conn.sendall(len(answer).to_bytes(2, "big") + answer)


def _inside(tmp: str) -> None:
    spec = json.loads((Path(tmp) / "spec.json").read_text())
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    resolv = Path(tmp) / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions attempts:1 timeout:1\n")
    subprocess.run(["mount", "--bind", str(resolv), "/etc/resolv.conf"], check=True)
    dns = FakeDNS()
    home, site, log = Path(tmp) / "home", Path(tmp) / "site", Path(tmp) / "attempts.jsonl"
    for d in (home, site, home / ".cache", home / ".config", home / ".local" / "share"):
        d.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(spec["env"])
    env.update(
        HOME=str(home),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        NO_EGRESS_LOG=str(log),
        PYTHONPATH=os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])]),
    )
    try:
        proc = subprocess.run(
            spec["argv"], env=env, cwd=spec["cwd"], capture_output=True, text=True, timeout=spec["timeout"]
        )
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        partial = exc.stdout or b""
        out = partial.decode(errors="replace") if isinstance(partial, bytes) else partial
        rc, err = 124, f"timed out after {spec['timeout']} s"
    time.sleep(spec["linger"])
    attempts = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    files = sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file())
    report = {
        "returncode": rc,
        "stdout": out[-20000:],
        "stderr": err[-20000:],
        "dns_queries": list(dns.queries),
        "attempts": attempts,
        "home_files": files,
    }
    (Path(tmp) / "report.json").write_text(json.dumps(report))


if __name__ == "__main__":
    _inside(sys.argv[1])
