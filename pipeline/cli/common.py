"""What every command adapter shares: errors to stderr with a non-zero exit, list parsing."""

from __future__ import annotations

import argparse
import sys

#: Exit status of a command that stopped on bad input or a missing prerequisite.
EXIT_ERROR = 2


def fail(message: object, code: int = EXIT_ERROR) -> int:
    """Print ``error: MESSAGE`` to stderr and return the exit status for ``main`` to return."""
    print(f"error: {message}", file=sys.stderr)
    return code


def warn(message: object) -> None:
    print(f"warning: {message}", file=sys.stderr)


def int_list(text: str) -> list[int]:
    """``1,2,3`` (or spaces) -> ``[1, 2, 3]``; an argparse ``type``."""
    try:
        return [int(t) for t in str(text).replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, found {text!r}"
        ) from None


def str_list(text: str | None, sep: str = ",") -> list[str]:
    return [s.strip() for s in (text or "").split(sep) if s.strip()]
