"""Command lines of every tool: ``python -m saferclip_diffusers.cli.<tool>`` or the ``saferclip-<tool>`` scripts.

Each module has ``build_parser()`` and ``main(argv=None) -> int`` and imports heavy libraries inside ``main``.
:func:`run_main` turns the errors a user can fix into one ``error: ...`` line and exit code 2.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

TOOLS = ("train", "i2p", "attacks", "retrieval", "zeroshot", "utility", "generate", "demo", "export")


def expected_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "the input or the environment is wrong", not "the program is wrong"."""
    from ..hub import ModelUnavailableError
    from ..io import CorruptFileError, LockedError

    return (
        ValueError,
        FileNotFoundError,
        NotADirectoryError,
        ModelUnavailableError,
        CorruptFileError,
        LockedError,
        ImportError,
        PermissionError,
    )


def run_main(body: Callable[[], int | None]) -> int:
    """Run a command body; user-fixable errors become ``error: <message>`` on stderr and exit code 2."""
    try:
        return int(body() or 0)
    except KeyboardInterrupt:
        print("\ninterrupted: finished work is saved; rerun the same command to continue", file=sys.stderr)
        return 130
    except expected_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
