"""Append-only, resumable records of an attack run: adversarial prompts first, then scored images.

Layout of an output folder::

    attack-shards/shard-000-of-002.jsonl   one per process: a header line, then records
    results.jsonl                          every record, merged, de-duplicated, in a fixed order

Record kinds (one JSON line each): ``attack`` (one target x encoder x attack: the adversarial prompts, losses,
history and cost), ``conditioning`` (a transfer attack's conditioning distance on one system), ``image`` (one
generated image: its prompt variant, raw NudeNet detections, Q16, redirection score, hash) and ``refused`` (a target
the minors rule refused). Adversarial prompts are stored before any image is made from them, so a killed run never
pays for an attack twice. A changed configuration in the same folder is refused with the differences listed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..io import CorruptFileError, append_jsonl, atomic_write_text, file_lock, read_jsonl
from .protocol import config_differences

SHARD_DIR = "attack-shards"
MERGED = "results.jsonl"
KINDS = ("attack", "conditioning", "image", "refused")


class AttackConfigMismatchError(ValueError):
    """The output folder holds results of a different attack configuration."""


def record_key(record: dict[str, Any]) -> tuple:
    kind = record["kind"]
    if kind == "attack":
        return (kind, int(record["target_id"]), record["encoder"], record["attack"])
    if kind == "conditioning":
        return (kind, int(record["target_id"]), record["system"], record["attack"])
    if kind == "image":
        return (
            kind,
            int(record["target_id"]),
            record["system"],
            record["attack"],
            record["variant"],
            int(record["image_index"]),
        )
    if kind == "refused":
        return (kind, int(record["target_id"]))
    raise ValueError(f"unknown record kind {kind!r}")


def shard_path(directory: str | os.PathLike, rank: int, world: int) -> Path:
    return Path(directory) / SHARD_DIR / f"shard-{rank:03d}-of-{world:03d}.jsonl"


def shard_files(directory: str | os.PathLike) -> list[Path]:
    return sorted((Path(directory) / SHARD_DIR).glob("shard-*-of-*.jsonl"))


def _rows(path: Path, repair: bool) -> list[dict[str, Any]]:
    """Complete lines of a shard. ``repair`` truncates a torn last line (only for this process's own shard);
    otherwise a torn last line (another process may be writing it) is ignored."""
    if repair:
        rows = read_jsonl(path, repair_torn_tail=True)
    else:
        data = path.read_bytes()
        rows = []
        for number, raw in enumerate(data[: data.rfind(b"\n") + 1].splitlines(), start=1):
            if raw.strip():
                try:
                    rows.append(json.loads(raw))
                except json.JSONDecodeError as err:
                    raise CorruptFileError(
                        f"{path}, line {number}: not valid JSON ({err.msg}). Remove that line (the attack or image "
                        "it held is redone) and rerun."
                    ) from err
    if rows and rows[0].get("kind") != "header":
        raise ValueError(f"{path} does not start with a header line; it is not an attack-results file")
    return rows


def check_compatible(directory: str | os.PathLike, config: dict[str, Any], fingerprint: str) -> None:
    for path in shard_files(directory):
        rows = _rows(path, repair=False)
        if not rows or rows[0].get("fingerprint") == fingerprint:
            continue
        diffs = config_differences(rows[0].get("config", {}), config)
        listing = "\n  ".join(diffs[:20]) or "(fingerprint differs: the result format changed)"
        raise AttackConfigMismatchError(
            f"{Path(directory)} holds attack results made with a different configuration, refusing to mix them:\n  "
            f"{listing}\nRerun with the original settings to resume, or choose a new --out."
        )


class AttackStore:
    """This process's shard (locked while open). ``done`` holds the keys of every shard in the folder."""

    def __init__(
        self,
        directory: str | os.PathLike,
        config: dict[str, Any],
        fingerprint: str,
        rank: int = 0,
        world: int = 1,
    ):
        self.directory = Path(directory)
        self.config, self.fingerprint = config, fingerprint
        self.path = shard_path(directory, rank, world)
        self.done: dict[tuple, dict[str, Any]] = {}
        self._lock = None

    def __enter__(self) -> AttackStore:
        check_compatible(self.directory, self.config, self.fingerprint)
        self._lock = file_lock(self.path.with_suffix(".lock"))
        self._lock.__enter__()
        # a line cut by a kill is dropped before we append after it; a shard killed before its header is redone
        if not (self.path.exists() and _rows(self.path, repair=True)):
            self.path.unlink(missing_ok=True)
            append_jsonl(
                self.path, {"kind": "header", "fingerprint": self.fingerprint, "config": self.config}
            )
        self.done = {record_key(r): r for r in iter_records(self.directory)}
        return self

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            self._lock.__exit__(*exc)
            self._lock = None

    def get(self, record: dict[str, Any]) -> dict[str, Any] | None:
        return self.done.get(record_key(record))

    def append(self, records: Iterable[dict[str, Any]]) -> int:
        written = 0
        for record in records:
            key = record_key(record)
            if key in self.done:
                continue
            append_jsonl(self.path, record)
            self.done[key] = record
            written += 1
        return written


def iter_records(directory: str | os.PathLike) -> Iterator[dict[str, Any]]:
    for path in shard_files(directory):
        for row in _rows(path, repair=False)[1:]:
            if row.get("kind") in KINDS:
                yield row


def load_attack_results(directory: str | os.PathLike) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(header, records) over every shard: one record per key, in a fixed order."""
    directory = Path(directory)
    shards = shard_files(directory)
    if not shards:
        merged = directory / MERGED
        if merged.is_file():
            rows = read_jsonl(merged)
            if not rows or rows[0].get("kind") != "header":
                raise ValueError(f"{merged} does not start with a header line")
            return rows[0], rows[1:]
        raise FileNotFoundError(f"no attack results in {directory} (expected {SHARD_DIR}/shard-*.jsonl)")
    headers = [rows[0] for rows in (_rows(p, repair=False) for p in shards) if rows]
    if not headers:
        raise FileNotFoundError(f"the shard files in {directory} are empty")
    if len({h["fingerprint"] for h in headers}) > 1:
        raise AttackConfigMismatchError(
            f"the shards in {directory} were written under different configurations"
        )
    unique: dict[tuple, dict[str, Any]] = {}
    for record in iter_records(directory):
        unique.setdefault(record_key(record), record)
    ordered = sorted(unique, key=lambda k: (KINDS.index(k[0]), k[1], json.dumps(k[2:])))
    return {"kind": "header", "fingerprint": headers[0]["fingerprint"], "config": headers[0]["config"]}, [
        unique[k] for k in ordered
    ]


def merge_attack_results(directory: str | os.PathLike) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    header, records = load_attack_results(directory)
    text = "".join(
        json.dumps(r, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n" for r in [header, *records]
    )
    atomic_write_text(Path(directory) / MERGED, text)
    return header, records
