"""Text inputs (annotation files, split and clip lists, CSVs): decoded as UTF-8 in one place, with
one clear line naming the file and where it stops being text."""

from __future__ import annotations

import io
import os
from pathlib import Path


class TextInputError(ValueError):
    """A text input is not UTF-8 text (binary data, another encoding) or cannot be read."""


def _position(data: bytes, offset: int) -> str:
    line = data.count(b"\n", 0, offset) + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return f"line {line}, column {column}"


def read_text(path: str | os.PathLike, what: str = "a text file") -> str:
    """The file decoded as UTF-8 (a byte-order mark dropped, line ends kept as they are).

    Raises :class:`TextInputError` for a binary file (a NUL byte) or bytes that are not UTF-8
    (e.g. a Latin-1 file), naming the file, the position and what to do.
    """
    path = Path(path)
    data = path.read_bytes()
    nul = data.find(b"\0")
    if nul >= 0:
        raise TextInputError(
            f"{path}: binary data (a NUL byte at {_position(data, nul)}), not {what}; "
            "give the right file"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TextInputError(
            f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at "
            f"{_position(data, exc.start)}); save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
        ) from None
    return text.removeprefix("\ufeff")


def read_lines(path: str | os.PathLike, what: str = "a text file") -> list[str]:
    """The lines of a UTF-8 text file without line ends (``\\n``, ``\\r\\n`` or ``\\r``)."""
    return [line.rstrip("\n") for line in io.StringIO(read_text(path, what), newline=None)]


def shell_word(value: str | os.PathLike) -> str:
    """``value`` as one word of a command a person can paste into a shell (quoted when needed)."""
    import shlex

    return shlex.quote(str(value))
