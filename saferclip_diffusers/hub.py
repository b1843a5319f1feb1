"""Local folder or Hub id? One rule for every loader, and errors that say why a model could not be had."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

HUB_KWARGS = ("cache_dir", "token", "revision", "local_files_only", "proxies", "force_download")


class ModelUnavailableError(OSError):
    """A model could not be loaded; the message says which, why, and what to do instead."""


def hub_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``from_pretrained`` keyword arguments that concern downloading."""
    return {k: kwargs[k] for k in HUB_KWARGS if k in kwargs}


def looks_like_path(spec: str | os.PathLike) -> bool:
    """Whether ``spec`` is written as a path (a Hub id is ``name`` or ``org/name``)."""
    text = str(spec)
    return (
        os.path.isabs(text)
        or text.startswith((".", "~"))
        or text.endswith(("/", os.sep))
        or text.count("/") > 1
        or "\\" in text
    )


def is_local(spec: str | os.PathLike) -> bool:
    """An existing path, or something written as one (which then must exist)."""
    return isinstance(spec, os.PathLike) or Path(str(spec)).expanduser().exists() or looks_like_path(spec)


def require_local_dir(spec: str | os.PathLike, what: str) -> Path:
    """``spec`` as an existing directory, or a FileNotFoundError that names ``what`` (never the Hub)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise NotADirectoryError(f"{what} {str(spec)!r} is a file; give the directory that holds it")
    raise FileNotFoundError(f"{what} directory does not exist: {str(spec)!r}")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _reason(err: BaseException | None) -> str:
    names = {type(e).__name__ for e in _chain(err)}
    text = " ".join(str(e) for e in _chain(err)).lower()
    if "GatedRepoError" in names or "gated" in text:
        return "it is a gated repository: accept its licence on the Hub and log in (`hf auth login`) or pass a token"
    if "RepositoryNotFoundError" in names or "404" in text or "not found" in text:
        return "no such repository on the Hub (or it is private: log in or pass a token)"
    if _offline() or "OfflineModeIsEnabled" in names:
        return "offline mode (HF_HUB_OFFLINE=1) and it is not in the local Hugging Face cache"
    if "LocalEntryNotFoundError" in names or "connect" in text or "resolve" in text or "network" in text:
        return "the Hub cannot be reached from this machine and it is not in the local Hugging Face cache"
    return f"{type(err).__name__}: {err}" if err is not None else "unknown reason"


def _chain(err: BaseException | None):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def explain_unavailable(
    spec: str | os.PathLike,
    what: str,
    err: BaseException | None = None,
    offline_alternative: str | None = None,
) -> ModelUnavailableError:
    """An error for ``raise ... from err`` that names the model, why it could not be had, and what to do."""
    if is_local(spec) and not Path(str(spec)).expanduser().exists():
        message = f"could not load the {what} {str(spec)!r}: that local directory does not exist"
    else:
        message = f"could not load the {what} {str(spec)!r}: {_reason(err)}"
    if offline_alternative:
        message += f". To run offline instead, use {offline_alternative}"
    return ModelUnavailableError(message + ".")
