"""What a process holds: its peak and current resident memory, and the bytes of a pipeline's parameters."""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def _proc_status_kb(field: str) -> int | None:
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def peak_rss_bytes() -> int:
    """This process's peak resident set size.

    Linux: ``VmHWM`` (the high-water mark of this process's own address space). Not ``ru_maxrss``: Linux carries
    a parent's high-water mark into a child across ``execve``, so a child started by a large parent would report
    the parent's size. Elsewhere ``ru_maxrss`` (bytes on macOS, KiB on other systems).
    """
    hwm = _proc_status_kb("VmHWM")
    if hwm is not None:
        return hwm * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def current_rss_bytes() -> int:
    rss = _proc_status_kb("VmRSS")
    if rss is not None:
        return rss * 1024
    import psutil

    return psutil.Process().memory_info().rss


def parameter_bytes(*pipes) -> int:
    """Bytes of the distinct parameters and buffers held by ``pipes`` (shared modules counted once)."""
    import torch

    seen, total = set(), 0
    for pipe in pipes:
        for component in pipe.components.values():
            if not isinstance(component, torch.nn.Module):
                continue
            for t in list(component.parameters()) + list(component.buffers()):
                key = (t.device, t.untyped_storage().data_ptr())
                if key not in seen:
                    seen.add(key)
                    total += t.untyped_storage().nbytes()
    return total
