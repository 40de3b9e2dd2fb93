"""What every command adapter shares: exit codes, the one error report, logging, progress, lists.

Every command reports a failure the same way: one line ``error: ...`` on stderr naming the file,
row or video and what to do, and an exit code: 1 the run failed, 2 bad usage (argparse's own code);
``avel download`` keeps its documented codes. ``avel --debug`` (or ``AVEL_DEBUG=1``) adds the
traceback. Progress bars are drawn only on a terminal and never with ``--quiet`` / ``AVEL_QUIET=1``.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import traceback
from pathlib import Path

from pipeline.core.options import (  # noqa: F401 - the CLI's argparse types
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)

#: Exit status of a run that failed (bad input file, missing prerequisite, a fault of the machine).
EXIT_FAILED = 1
#: Exit status of bad usage: the command line itself is wrong (argparse exits with it too).
EXIT_USAGE = 2
#: Exit status after Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130

log = logging.getLogger("avel")
_TRUE = ("1", "yes", "true", "on")
_REPO = Path(__file__).resolve().parents[2]
_PACKAGES = tuple(str(_REPO / package) + os.sep for package in ("pipeline", "models"))


def env_flag(name: str) -> bool:
    """An ``AVEL_*`` yes/no environment variable."""
    return os.environ.get(name, "").strip().lower() in _TRUE


class _Settings:
    quiet = False
    debug = False


settings = _Settings()


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (pytest's capture swaps it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(self.format(record), file=sys.stderr, flush=True)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {text}"
        return text


def configure(quiet: bool = False, debug: bool = False) -> None:
    """Set the process-wide conventions for one command: logging level, progress, tracebacks."""
    settings.quiet = quiet or env_flag("AVEL_QUIET")
    settings.debug = debug or env_flag("AVEL_DEBUG")
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(_Formatter("%(message)s"))
        log.addHandler(handler)
    log.propagate = False
    log.setLevel(
        logging.DEBUG if settings.debug else logging.WARNING if settings.quiet else logging.INFO
    )


def show_progress() -> bool:
    """Whether to draw progress bars: on a terminal, and not asked to be quiet."""
    return not settings.quiet and sys.stderr.isatty()


def fail(message: object, code: int = EXIT_USAGE) -> int:
    """Log ``error: MESSAGE`` and return the exit status for ``main`` to return (usage by default)."""
    log.error("%s", message)
    return code


def warn(message: object) -> None:
    log.warning("%s", message)


def set_exit_code(exc: BaseException, code: int) -> None:
    """Mark ``exc`` to end the command with ``code`` (a command's own documented codes)."""
    exc.exit_code = code  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- the error report

_ADVICE = {
    errno.EROFS: "the file system is read-only: give a writable folder (--data-dir, --run-dir, "
    "--out-dir) or remount it",
    errno.EACCES: "permission denied: fix its permissions or give another folder",
    errno.EPERM: "not permitted: fix its permissions or give another folder",
    errno.ENOENT: "not found",
    errno.ENOTDIR: "a file stands where a folder is needed",
    errno.EISDIR: "a folder stands where a file is needed",
}


def _raised_by_avel(exc: BaseException) -> bool:
    """True when the exception was raised in avel's own code (its message is written for users)."""
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    return last is not None and str(Path(last).resolve()).startswith(_PACKAGES)


def _os_error(exc: OSError) -> str:
    from pipeline.core.io import disk_full_error, is_disk_full

    where = exc.filename
    if is_disk_full(exc):
        return str(disk_full_error(Path(str(where)).parent if where is not None else "."))
    reason = _ADVICE.get(exc.errno or 0, exc.strerror)
    if where is None:
        return f"{exc.strerror} ({reason})" if reason != exc.strerror else str(reason)
    target = f" -> {exc.filename2}" if exc.filename2 is not None else ""
    return f"{where}{target}: {reason}"


def describe(exc: BaseException) -> str:
    """One line for a failed command: the exception's own message when avel raised it, else the
    library's with its type and a pointer to ``--debug``."""
    if isinstance(exc, OSError) and exc.errno is not None and exc.strerror is not None:
        return _os_error(exc)
    text = " ".join(str(exc).split()) or type(exc).__name__
    if _raised_by_avel(exc) or type(exc).__module__.startswith(("pipeline", "models")):
        return text
    return f"{type(exc).__name__}: {text} (`avel --debug ...` shows where)"


def report(exc: BaseException) -> int:
    """Report a command's failure (one line; the traceback with ``--debug``); its exit status."""
    if isinstance(exc, KeyboardInterrupt):
        log.error("interrupted")
        return EXIT_INTERRUPTED
    if settings.debug:
        traceback.print_exception(exc, file=sys.stderr)
    log.error("%s", describe(exc))
    return int(getattr(exc, "exit_code", EXIT_FAILED))


# ----------------------------------------------------------------------------- option values


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
