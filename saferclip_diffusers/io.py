"""Files that survive a kill -9: atomic writes, append-only JSON lines, folder locks, export markers.

One home for every write whose torn state would mislead a later run. A write goes to a temporary sibling
and is renamed over the target (``os.replace`` is atomic on POSIX), so a reader sees the old file or the new
one, never half of each. JSON results are strict: NaN and infinity are refused (they are not JSON).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

EXPORT_MARKER = "export_complete.json"
"""Written last into a training run folder by the export: its presence means the export finished."""

RUN_FILES = ("config.yaml", "train_log.jsonl")
"""Files that make a folder a training run folder (see :func:`export_state`)."""


class CorruptFileError(ValueError):
    """A results file cannot be parsed; the message names the file, the line and how to recover."""


class LockedError(RuntimeError):
    """Another process holds the lock of a folder."""


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary sibling and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> Path:
    """Write ``obj`` as strict JSON (NaN/inf raise ``ValueError`` naming ``path``)."""
    try:
        text = json.dumps(obj, indent=indent, allow_nan=False, ensure_ascii=False)
    except ValueError as err:
        raise ValueError(
            f"refusing to write {path}: {err} (a NaN or infinite number is not valid JSON)"
        ) from err
    return atomic_write_text(path, text + "\n")


def atomic_save_image(image: Any, path: str | os.PathLike, **save_kwargs: Any) -> Path:
    """Save a PIL image atomically; the format comes from the suffix of ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        image.save(tmp, format=save_kwargs.pop("format", None) or _image_format(path), **save_kwargs)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _image_format(path: Path) -> str:
    from PIL import Image

    Image.init()
    fmt = Image.EXTENSION.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot tell the image format of {path} from its suffix; use .png, .jpg or .webp")
    return fmt


def atomic_save_safetensors(
    tensors: dict, path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> Path:
    """Save a dict of tensors as safetensors, atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_dir(target: str | os.PathLike, build: Callable[[Path], Any], marker: str = ".complete") -> Path:
    """Build a folder into a temporary sibling, write ``marker`` last, then rename it to ``target``.

    A folder that already has its marker is returned as is. A killed build leaves only a temporary folder
    (removed on the next try), never a half-written ``target``. When another process wins the race, its
    folder is kept.
    """
    target = Path(target)
    if (target / marker).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(tmp)
        (tmp / marker).write_text("ok\n")
        if target.exists() and not (target / marker).is_file():
            shutil.rmtree(target)  # an incomplete folder from an older, non-atomic writer
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / marker).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# ------------------------------------------------------------------------------------------- JSON lines


def append_jsonl(path: str | os.PathLike, row: dict) -> None:
    """Append one strict-JSON line and make it durable (flush + fsync) before returning."""
    line = json.dumps(row, allow_nan=False, ensure_ascii=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: str | os.PathLike, *, repair_torn_tail: bool = False) -> list[dict]:
    """Rows of a JSON-lines file ([] when it does not exist).

    A torn last line (a write cut by a kill) is dropped and the file truncated to the last whole line when
    ``repair_torn_tail``; otherwise it raises :class:`CorruptFileError`. A bad line anywhere else always
    raises, naming the file, the line and what to do.
    """
    path = Path(path)
    if not path.is_file():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    rows: list[dict] = []
    offset = 0
    for number, raw in enumerate(lines, start=1):
        is_last = number == len(lines) or (number == len(lines) - 1 and lines[-1] == b"")
        if raw.strip():
            try:
                rows.append(json.loads(raw))
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                if is_last and not data.endswith(b"\n"):
                    if repair_torn_tail:
                        with open(path, "r+b") as fh:
                            fh.truncate(offset)
                        return rows
                    raise CorruptFileError(
                        f"{path}: the last line ({number}) is cut off, probably by a killed write. Delete that "
                        f"line (everything after byte {offset}) and rerun to continue."
                    ) from err
                raise CorruptFileError(
                    f"{path}, line {number}: not valid JSON ({err.msg}). The file was damaged; remove line "
                    f"{number} (the rows after it are kept) or restore the file from a backup, then rerun."
                ) from err
        offset += len(raw) + 1
    return rows


# ------------------------------------------------------------------------------------------- locks


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive, non-blocking lock on ``path`` (a lock file, created if missing).

    Raises :class:`LockedError` naming the holder's pid when another process holds it. The lock goes away
    with the process, so a killed holder never leaves a stale lock behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise LockedError(
                f"{path.parent} is in use by another process (pid {holder}); wait for it to finish, or use "
                "another output folder"
            ) from err
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield path
    finally:
        fh.close()


# ------------------------------------------------------------------------------------------- exports


def export_state(folder: str | os.PathLike) -> str:
    """``"complete"`` (export marker present), ``"incomplete"`` (a training run folder without it), or
    ``"plain"`` (not a training run folder: a hub download, a hand-made encoder folder, ...)."""
    folder = Path(folder)
    if (folder / EXPORT_MARKER).is_file():
        return "complete"
    if any((folder / name).exists() for name in RUN_FILES):
        return "incomplete"
    return "plain"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------- content digests

FULL_HASH_LIMIT = 64 << 20  # files up to 64 MiB are hashed whole; larger weight files by size, head and tail
_SAMPLE = 4 << 20


def _file_digest(path: Path) -> str:
    size = path.stat().st_size
    if size <= FULL_HASH_LIMIT:
        return sha256_file(path)
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        digest.update(f.read(_SAMPLE))
        f.seek(size - _SAMPLE)
        digest.update(f.read(_SAMPLE))
    return digest.hexdigest()


def folder_digest(spec: str | os.PathLike | None) -> str | None:
    """A digest of a local model folder's content (relative names and file contents; weight files over 64 MiB by
    size, first and last 4 MiB), None for a hub id. Where the folder lies does not enter it."""
    if spec is None or not Path(spec).expanduser().is_dir():
        return None
    root = Path(spec).expanduser()
    digest = hashlib.sha256()
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix in (".safetensors", ".json", ".bin", ".txt")
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    for path in files:
        digest.update(f"{path.relative_to(root).as_posix()}\0{_file_digest(path)}\n".encode())
    return digest.hexdigest()
