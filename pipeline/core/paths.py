"""Data values as file names: the one place that turns a value (a clip ID, a store or run name)
into a path under a folder, and refuses anything that would land elsewhere."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

#: Longest name accepted, in UTF-8 bytes (file systems stop at 255; suffixes need room).
MAX_NAME_BYTES = 200


class UnsafeNameError(ValueError):
    """A data value cannot be a file name (a separator, '..', a leading '.', a control character)."""


def name_problem(value: object) -> str | None:
    """Why ``value`` cannot be a plain file name, or None when it can."""
    text = str(value)
    if not text.strip():
        return "is empty"
    if text in (".", ".."):
        return "names a folder, not a file"
    if "/" in text or "\\" in text:
        return "holds a path separator"
    if text.startswith("."):
        return "starts with '.' (hidden and temporary files do)"
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        return "holds a control character"
    if len(text.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes"
    return None


#: What :func:`name_problem` may refuse, as one pattern: a screen for lists of millions of names.
_SUSPECT = r"[/\\\x00-\x1f\x7f]|^\."


def first_bad_name(values: pd.Series) -> tuple[int, str, str] | None:
    """The first of ``values`` that cannot be a file name: (position, value, why); None when
    every one can. One vectorised screen, then :func:`name_problem` on what it flags."""
    text = pa.chunked_array([pa.array(values.astype(str).array, pa.string())])
    flagged = pc.or_(
        pc.or_(pc.match_substring_regex(text, _SUSPECT), pc.utf8_is_space(text)),
        pc.or_(
            pc.equal(pc.utf8_length(text), 0), pc.greater(pc.binary_length(text), MAX_NAME_BYTES)
        ),
    )
    for row in np.flatnonzero(flagged.to_numpy(zero_copy_only=False)):
        value = str(values.iloc[row])
        problem = name_problem(value)
        if problem is not None:
            return int(row), value, problem
    return None


def safe_name(value: object, what: str = "name") -> str:
    """``value`` as a file name; :class:`UnsafeNameError` (naming ``what``) when it is not one."""
    problem = name_problem(value)
    if problem is not None:
        raise UnsafeNameError(f"{what} {str(value)!r} {problem}: it cannot be a file name")
    return str(value)


def child(folder: str | os.PathLike, name: object, suffix: str = "", what: str = "name") -> Path:
    """``folder/<name><suffix>``, always directly inside ``folder``."""
    return Path(folder) / f"{safe_name(name, what)}{suffix}"
