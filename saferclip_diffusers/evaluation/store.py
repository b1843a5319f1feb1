"""Append-only per-image results (JSON Lines) with resume, sharding and a configuration guard.

Layout of an output directory::

    shards/shard-000-of-002.jsonl   one file per process: a header line, then one line per image
    results.jsonl                   the merged, de-duplicated, deterministically ordered records

The header carries the run configuration and its fingerprint; reopening a directory with a different
fingerprint is refused. A record is a line ending in a newline: a line cut short by a kill is ignored when
reading and cut off before the next append. Records are keyed by ``(prompt_id, system, image_index)``; any
process reads every shard to know what is done, so a resumed run may use a different number of processes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..io import CorruptFileError, LockedError, atomic_write_text, file_lock
from .protocol import config_differences

logger = logging.getLogger(__name__)

Key = tuple[int, str, int]
SHARD_DIR = "shards"
MERGED = "results.jsonl"


class ConfigMismatchError(ValueError):
    """The output directory holds results of a different configuration."""


def record_key(record: dict[str, Any]) -> Key:
    return (int(record["prompt_id"]), str(record["system"]), int(record["image_index"]))


def shard_path(directory: str | os.PathLike, rank: int, world: int) -> Path:
    return Path(directory) / SHARD_DIR / f"shard-{rank:03d}-of-{world:03d}.jsonl"


def shard_files(directory: str | os.PathLike) -> list[Path]:
    return sorted((Path(directory) / SHARD_DIR).glob("shard-*-of-*.jsonl"))


def iter_lines(path: Path) -> Iterator[dict[str, Any]]:
    """Parsed complete lines of a JSONL file; a final line without its newline (cut by a kill, or being written by
    another process) is skipped. A corrupt complete line is a :class:`CorruptFileError` that says how to recover."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.endswith(b"\n"):
                logger.info("ignoring an incomplete last line in %s (interrupted write)", path)
                return
            if raw.strip():
                try:
                    yield json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError) as err:
                    raise CorruptFileError(_corrupt_message(path, number, err)) from err


def _corrupt_message(path: Path, number: int, err: Exception) -> str:
    if number == 1:
        return (
            f"{path}, line 1 (the header that holds the run configuration) is corrupt ({err}). This shard cannot "
            f"be used: move {path} out of the folder and rerun the same command (its images are generated again)."
        )
    return (
        f"{path}, line {number} is corrupt ({err}). Each line after the header is one image's record: delete "
        f"line {number} (for example `sed -i '{number}d' {path}`), then rerun the same command; only that image is "
        "generated again."
    )


def read_header(path: Path) -> dict[str, Any] | None:
    for line in iter_lines(path):
        if line.get("kind") != "header":
            raise ValueError(
                f"{path} does not start with a header line; it is not a results file of this tool"
            )
        return line
    return None


def check_compatible(directory: str | os.PathLike, identity: dict[str, Any], fingerprint: str) -> None:
    """Refuse (ConfigMismatchError) when a shard in ``directory`` was written under another configuration.

    ``identity`` is the configuration by content (see ``RunConfig.identity``); the differences are listed."""
    for path in shard_files(directory):
        header = read_header(path)
        if header is None or header.get("fingerprint") == fingerprint:
            continue
        diffs = config_differences(header.get("identity", header.get("config", {})), identity)
        listing = "\n  ".join(diffs[:20]) or "(fingerprint differs: code version of the result format)"
        raise ConfigMismatchError(
            f"{Path(directory)} holds results made with a different configuration, refusing to mix them:\n  "
            f"{listing}\nRerun with the original settings to resume, or choose a new --out folder."
        )


def _dump(obj: dict[str, Any]) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n"


class ResultStore:
    """This process's shard: resume-aware, append-only. Use as a context manager."""

    def __init__(
        self,
        directory: str | os.PathLike,
        config: dict[str, Any],
        fingerprint: str,
        rank: int = 0,
        world: int = 1,
        identity: dict[str, Any] | None = None,
    ):
        self.directory = Path(directory)
        self.config = config
        self.identity = identity if identity is not None else config
        self.fingerprint = fingerprint
        self.path = shard_path(directory, rank, world)
        self._file = None
        self._lock: contextlib.ExitStack | None = None
        self.done: set[Key] = set()

    def __enter__(self) -> ResultStore:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        """Lock this shard (one writer per shard), check the folder's configuration, write the header of a new
        shard, cut a torn last line, and read what every shard has done."""
        lock = contextlib.ExitStack()
        try:
            lock.enter_context(file_lock(self.path.with_name(self.path.stem + ".lock")))
        except LockedError as err:
            raise LockedError(
                f"another run is writing to {self.path}; wait for it or stop it first ({err})"
            ) from None
        self._lock = lock
        try:
            check_compatible(self.directory, self.identity, self.fingerprint)
            if not self.path.exists():
                atomic_write_text(
                    self.path,
                    _dump(
                        {
                            "kind": "header",
                            "fingerprint": self.fingerprint,
                            "config": self.config,
                            "identity": self.identity,
                        }
                    ),
                )
            self._file = open(self.path, "r+b")
            self._drop_partial_tail()
            self._file.seek(0, os.SEEK_END)
            self.done = done_keys(self.directory)
        except BaseException:
            self.close()  # release the lock: the caller may fix the file and retry in the same process
            raise

    def _drop_partial_tail(self) -> None:
        """Cut a last line that lacks its newline (a write interrupted by a kill)."""
        f = self._file
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        pos, chunk = size, 4096
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            block = f.read(pos - start)
            cut = block.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            pos = start
        else:
            keep = 0
        logger.warning("dropping %d bytes of an interrupted write at the end of %s", size - keep, self.path)
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())

    def append(self, records: Iterable[dict[str, Any]]) -> int:
        """Write records not yet done (one write, flushed and synced). Returns how many were written."""
        if self._file is None:
            raise RuntimeError("ResultStore.append before open()")
        fresh = []
        for record in records:
            key = record_key(record)
            if key in self.done:
                continue
            self.done.add(key)
            fresh.append(_dump({"kind": "image", **record}))
        if fresh:
            self._file.write("".join(fresh).encode("utf-8"))
            self._file.flush()
            os.fsync(self._file.fileno())
        return len(fresh)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._lock is not None:
            self._lock.close()  # releases the lock
            self._lock = None


def iter_records(directory: str | os.PathLike) -> Iterator[dict[str, Any]]:
    for path in shard_files(directory):
        for line in iter_lines(path):
            if line.get("kind") == "image":
                yield line


def done_keys(directory: str | os.PathLike) -> set[Key]:
    return {record_key(r) for r in iter_records(directory)}


def load_results(directory: str | os.PathLike) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(header, records) over all shards: one record per key, ordered by prompt, system, image index."""
    directory = Path(directory)
    shards = shard_files(directory)
    if not shards:
        merged = directory / MERGED
        if merged.is_file():  # a directory holding only merged results (e.g. copied without shards)
            lines = list(iter_lines(merged))
            if not lines or lines[0].get("kind") != "header":
                raise ValueError(f"{merged} does not start with a header line")
            return lines[0], [r for r in lines[1:] if r.get("kind") == "image"]
        raise FileNotFoundError(f"no results in {directory} (expected {SHARD_DIR}/shard-*.jsonl)")
    headers = [h for h in (read_header(p) for p in shards) if h is not None]
    if not headers:
        raise FileNotFoundError(f"the shard files in {directory} are empty")
    fingerprints = {h["fingerprint"] for h in headers}
    if len(fingerprints) > 1:
        raise ConfigMismatchError(
            f"the shards in {directory} were written under different configurations; "
            "keep only the shards of one run"
        )
    header = {
        "kind": "header",
        "fingerprint": headers[0]["fingerprint"],
        "config": headers[0]["config"],
        "identity": headers[0].get("identity", headers[0]["config"]),
    }
    config = header["config"]
    prompt_order = {int(pid): i for i, pid in enumerate(config["prompts"]["ids"])}
    system_order = {s["name"]: i for i, s in enumerate(config["systems"])}
    unique: dict[Key, dict[str, Any]] = {}
    for record in iter_records(directory):
        unique.setdefault(record_key(record), record)

    def order(key: Key) -> tuple[int, int, int]:
        pid, system, index = key
        return (prompt_order.get(pid, len(prompt_order)), system_order.get(system, len(system_order)), index)

    return header, [unique[k] for k in sorted(unique, key=order)]


def merge_results(directory: str | os.PathLike) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Write ``results.jsonl`` (atomically) from all shards and return (header, records)."""
    header, records = load_results(directory)
    atomic_write_text(Path(directory) / MERGED, "".join(_dump(x) for x in [header, *records]))
    return header, records
