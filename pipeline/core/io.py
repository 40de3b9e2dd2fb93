"""Atomic file writes shared by every stage: write to a temp name in the same folder, then rename.

A write that fails because the file system is full raises :class:`DiskFullError`, one line naming
the folder and its free space; the temp file is removed, so nothing half-written is left counted.
Tables the stages wrote are read back with :func:`read_parquet`: a corrupt one is one line naming
the file and the command that rebuilds it (:class:`CorruptFileError`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


class DiskFullError(RuntimeError):
    """A write failed because the file system is full (or over quota); the message is one line."""


class CorruptFileError(ValueError):
    """A file exists but cannot be read as what it should be; the message says how to rebuild it."""


def short_reason(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, at most ``limit`` characters."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_parquet(
    path: str | os.PathLike, remedy: str, columns: Sequence[str] | None = None
) -> pd.DataFrame:
    """A Parquet table (only those of ``columns`` it has, when given); :class:`CorruptFileError`
    (naming ``path``, then ``remedy``) when the file is not one (truncated, overwritten, another
    format). A missing or unreadable file (permissions) raises the ordinary ``OSError``."""
    try:
        if columns is not None:
            have = set(pq.read_schema(path).names)
            columns = [c for c in columns if c in have]
        return pd.read_parquet(path, columns=columns)
    except OSError as exc:
        if exc.errno is not None:
            raise
        error: Exception = exc
    except Exception as exc:  # noqa: BLE001 - pyarrow's errors for bad bytes have several types
        error = exc
    reason = re.sub(r"^Could not open Parquet input source '.*?': ", "", short_reason(error))
    raise CorruptFileError(
        f"{path}: not a readable Parquet table ({reason.split('. ')[0]}); {remedy}"
    ) from error


#: Messages of writes cut short by a full disk that carry no errno (NumPy's ``tofile``/``save``).
_FULL_MESSAGES = re.compile(r"no space left|disk quota|requested and \d+ written", re.I)


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) says the file system is full."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, DiskFullError):
            return True
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(e, OSError | RuntimeError) and _FULL_MESSAGES.search(str(e)):
            return True
        todo += [e.__cause__, e.__context__]
    return False


def free_bytes(folder: str | os.PathLike) -> int | None:
    """Bytes free for this user on the file system of ``folder`` (its nearest existing parent)."""
    path = Path(folder).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def human_bytes(n: int | None) -> str:
    if n is None:
        return "unknown"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - unreachable


def disk_full_error(folder: str | os.PathLike) -> DiskFullError:
    """The one-line error for a full file system under ``folder``."""
    return DiskFullError(
        f"disk full: {Path(folder)} has {human_bytes(free_bytes(folder))} free; free some space and "
        "run the same command again (finished work is kept, nothing half-written counts as done)"
    )


def check_writable(folder: str | os.PathLike) -> Path:
    """``folder``, created if needed, once a file could be written in it; the ``OSError`` naming it
    otherwise (a long command checks its output folders before it starts)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=".avel-write-check.", dir=folder)
    os.close(fd)
    os.unlink(probe)
    return folder


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.name}.",
            suffix=suffix if suffix is not None else ".tmp",
            dir=path.parent,
        )
    except OSError as exc:  # read-only, not ours, full: name the folder, not the temp name
        raise OSError(exc.errno, exc.strerror, str(path.parent)) from exc
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are ordinary shared files
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except Exception as exc:
        if isinstance(exc, DiskFullError) or not is_disk_full(exc):
            raise
        tmp_path.unlink(missing_ok=True)  # free the space before measuring what is left
        raise disk_full_error(path.parent) from exc
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_parquet(df: pd.DataFrame | pa.Table, path: str | os.PathLike) -> None:
    """Write a DataFrame (or an Arrow table) to Parquet atomically."""
    with atomic_path(path, suffix=".parquet") as tmp:
        if isinstance(df, pa.Table):
            pq.write_table(df, tmp)
        else:
            df.to_parquet(tmp, index=False)


def write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write JSON atomically (indented, keys sorted for stable diffs)."""
    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_npy(array: np.ndarray, path: str | os.PathLike) -> None:
    """Write a NumPy array atomically."""
    with atomic_path(path, suffix=".npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
