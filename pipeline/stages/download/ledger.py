"""The download ledger: one row per clip, ``DATA_DIR/clips/status.parquet`` plus the journal
``status.journal`` of the updates made since that table was written.

Rows are keyed by ``clip_id`` (the manifest's clip key; the YouTube ID for AVE), with the source
``youtube_id`` next to it. A recorded result appends one line to the journal (the clip's whole row
as JSON, behind its CRC-32), so an update costs the same at 4 k and at 2 M rows. The table is
rewritten (temp file + rename) and the journal removed when a run adds clips, when the journal
holds a quarter of the table's rows (at least :data:`COMPACT_MIN` lines) and when a run ends: the
rewrite costs O(rows) once per O(rows) updates.

A kill at any moment loses no recorded result and leaves no torn ledger: a journal line cut short
is ignored (and cut off by the next writer), the table is replaced whole, and a journal that the
table already holds replays to the same rows. Readers (:func:`read_ledger`, :func:`load_ledger`)
see the table with its journal applied. A ledger of an earlier version (key column
``youtube_id``, no source column) reads as if written today; a run rewrites it in today's columns.
"""

from __future__ import annotations

import json
import os
import threading
import time
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.core.io import disk_full_error, is_disk_full, write_parquet
from pipeline.core.layout import DataLayout
from pipeline.core.manifest import keyed_by_clip_id
from pipeline.core.text import shell_word
from pipeline.stages.download.classify import PENDING, STATUSES

COLUMNS = (
    "clip_id",
    "youtube_id",  # the source video ("" when not known: rows of an earlier ledger until planned)
    "status",
    "kind",
    "reason",
    "attempts",
    "bytes",
    "duration",
    "source",
    "updated_at",
    "range",  # the source range an ok clip was cut from ("2.500-12.500"; "" when not known)
)
#: Columns a ledger written before they existed may lack (filled empty on reading).
OPTIONAL = ("youtube_id", "range")
#: Text columns with few distinct values (kept as codes in memory).
_CODED = ("status", "kind", "reason", "source", "range")
_TEXT = ("clip_id", "youtube_id", *_CODED)
#: The journal is folded into the table once it holds this many lines, or a quarter of the rows.
COMPACT_MIN = 4096
JOURNAL_SHARE = 4


def journal_path(table: Path) -> Path:
    """The journal beside a ledger table (``status.parquet`` -> ``status.journal``)."""
    return Path(table).with_suffix(".journal")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _now_us() -> int:
    return time.time_ns() // 1000


# ----------------------------------------------------------------------------- rows and frames
# A row in memory is a tuple in COLUMNS order, ``updated_at`` in microseconds since the epoch,
# ``bytes``/``duration`` None when unknown.


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` in the ledger's column types."""
    df["attempts"] = df["attempts"].astype("int32")
    df["bytes"] = df["bytes"].astype("Int64")
    df["duration"] = df["duration"].astype("Float64")
    if not isinstance(df["updated_at"].dtype, pd.DatetimeTZDtype):
        df["updated_at"] = pd.to_datetime(df["updated_at"], unit="us", utc=True)
    for col in _TEXT:
        df[col] = df[col].astype("string")
    return df


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values("clip_id", kind="stable", ignore_index=True)


def _rows_frame(rows: list[tuple]) -> pd.DataFrame:
    return _typed(pd.DataFrame(rows, columns=list(COLUMNS)))


def _as_dict(row: tuple) -> dict:
    out = dict(zip(COLUMNS, row, strict=True))
    out["updated_at"] = _EPOCH + timedelta(microseconds=row[9])
    return out


def _keys(clip_ids: list[str] | pd.Series) -> np.ndarray:
    """Clip IDs as one byte-string array (UTF-8; byte order is the strings' order); a column of
    ASCII IDs (YouTube's alphabet) is converted without a Python object per row."""
    if isinstance(clip_ids, pd.Series):
        ids = pa.chunked_array([pa.array(clip_ids.array, pa.string())]).combine_chunks()
        if len(ids) and pc.all(pc.string_is_ascii(ids)).as_py() and ids.null_count == 0:
            width = max(1, pc.max(pc.binary_length(ids)).as_py())
            fixed = pc.utf8_rpad(ids, width=width, padding="\x00").cast(pa.binary(width))
            data = fixed.buffers()[1]
            return np.frombuffer(data, f"S{width}", len(fixed), fixed.offset * width).copy()
        clip_ids = clip_ids.tolist()
    return np.array([c.encode() for c in clip_ids], dtype=bytes)


class _Table:
    """The rows of the table file column by column, sorted by clip ID (a binary search finds a
    row): ~110 bytes a row, no Python object per row."""

    def __init__(self, frame: pd.DataFrame) -> None:
        frame = _typed(frame)
        keys = _keys(frame["clip_id"])
        if len(keys) > 1 and not (keys[1:] > keys[:-1]).all():  # not a ledger's own table
            order = np.argsort(keys, kind="stable")
            last = np.r_[keys[order][1:] != keys[order][:-1], True]  # a clip's last row counts
            frame, keys = frame.iloc[order[last]].reset_index(drop=True), keys[order[last]]
        self.keys = keys
        sources = frame["youtube_id"].fillna("")
        self.sources = pa.array(sources.array)
        self.no_source = (sources == "").to_numpy(bool)
        self.codes: dict[str, np.ndarray] = {}
        self.values: dict[str, list[str]] = {}
        for col in _CODED:
            codes, uniques = pd.factorize(frame[col].fillna(""))
            self.codes[col], self.values[col] = codes.astype(np.int32), [str(u) for u in uniques]
        self.attempts = frame["attempts"].to_numpy(np.int64)
        self.nbytes = frame["bytes"].to_numpy(np.int64, na_value=-1)
        self.duration = frame["duration"].to_numpy(np.float64, na_value=np.nan)
        stamps = frame["updated_at"].dt.as_unit("us")
        self.updated = stamps.to_numpy("datetime64[us]").view(np.int64)

    def __len__(self) -> int:
        return len(self.keys)

    def find(self, clip_ids: list[str]) -> np.ndarray:
        """The row of each clip ID, -1 for those not in the table."""
        wanted = _keys(clip_ids)
        if not len(self.keys) or not len(wanted):
            return np.full(len(wanted), -1, np.int64)
        width = f"S{max(self.keys.itemsize, wanted.itemsize)}"
        keys, wanted = self.keys.astype(width, copy=False), wanted.astype(width, copy=False)
        pos = np.searchsorted(keys, wanted)
        found = keys[np.minimum(pos, len(keys) - 1)] == wanted
        return np.where(found, pos, -1)

    def row(self, clip_id: str) -> tuple | None:
        key = clip_id.encode()
        i = int(np.searchsorted(self.keys, key))
        if i >= len(self.keys) or self.keys[i] != key:
            return None
        text = {c: self.values[c][self.codes[c][i]] for c in _CODED}
        nbytes, duration = int(self.nbytes[i]), float(self.duration[i])
        return (
            clip_id,
            self.sources[i].as_py(),
            text["status"],
            text["kind"],
            text["reason"],
            int(self.attempts[i]),
            None if nbytes < 0 else nbytes,
            None if duration != duration else duration,
            text["source"],
            int(self.updated[i]),
            text["range"],
        )

    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame in the ledger's types, sorted by clip ID."""
        columns = {
            "clip_id": pd.array(pa.array(self.keys, pa.binary()).cast(pa.string()), "string"),
            "youtube_id": pd.array(self.sources, dtype="string"),
        }
        for col in _CODED:
            values = np.array([*self.values[col], ""], dtype=object)
            columns[col] = values[self.codes[col]]
        columns.update(
            attempts=self.attempts,
            bytes=pd.arrays.IntegerArray(self.nbytes.copy(), self.nbytes < 0),
            duration=pd.arrays.FloatingArray(self.duration.copy(), np.isnan(self.duration)),
            updated_at=pd.DatetimeIndex(self.updated.view("datetime64[us]")).tz_localize("UTC"),
        )
        return _typed(pd.DataFrame(columns)[list(COLUMNS)])


_EMPTY = _Table(_rows_frame([]))

# ----------------------------------------------------------------------------- the journal


def _line(row: tuple) -> bytes:
    payload = json.dumps(row, separators=(",", ":")).encode()
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def _parse(line: bytes) -> tuple | None:
    crc, _, payload = line.partition(b" ")
    try:
        if int(crc, 16) != zlib.crc32(payload):
            return None
        row = tuple(json.loads(payload))
    except ValueError:
        return None
    return row if len(row) == len(COLUMNS) else None


def read_journal(path: Path) -> tuple[dict[str, tuple], int, int]:
    """The rows of a journal (the last line per clip), its number of whole lines and the size of
    its whole lines in bytes; a last line cut short by a kill is left out."""
    rows: dict[str, tuple] = {}
    lines = size = 0
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return rows, 0, 0
    with handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.endswith(b"\n"):
                break  # written in part when the writer was killed: not a recorded result
            row = _parse(line[:-1])
            if row is None:
                raise ValueError(
                    f"{path}:{lineno}: damaged ledger journal line; move {path.name} aside and "
                    "run `make download` again (the clips it recorded are checked and kept)"
                )
            rows[row[0]] = row
            lines, size = lines + 1, size + len(line)
    return rows, lines, size


# ----------------------------------------------------------------------------- the writer


class Ledger:
    """Thread-safe status table keyed by clip ID; ``update`` persists before it returns.

    One process writes a ledger at a time (the download stage holds a lock on the folder);
    :meth:`close` folds the journal into the table at the end of a run.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.journal = journal_path(self.path)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self.folds = 0  # journals folded into the table by this writer
        table = read_table(self.path) if self.path.is_file() else None
        self._base = _EMPTY if table is None else _Table(table)
        self._changed, self._lines, size = read_journal(self.journal)
        if self.journal.is_file() and self.journal.stat().st_size > size:
            os.truncate(self.journal, size)  # a line cut short by a kill
        if table is not None and not _is_current(self.path):
            self._compact()  # an earlier version's table: saved in today's columns

    def get(self, clip_id: str) -> dict | None:
        with self._lock:
            row = self._row(clip_id)
            return _as_dict(row) if row else None

    def status(self, clip_id: str) -> str | None:
        row = self.get(clip_id)
        return row["status"] if row else None

    def ensure(self, sources: Mapping[str, str]) -> None:
        """Add a ``pending`` row for every clip (``clip_id -> youtube_id``) not yet in the ledger,
        fill the source of rows that lack it, and persist (nothing is written when nothing is new)."""
        with self._lock:
            keys = list(sources)
            pos = self._base.find(keys)
            known = pos >= 0
            if self._changed:
                known |= np.fromiter((k in self._changed for k in keys), bool, len(keys))
            lacking = bool(self._base.no_source[pos[pos >= 0]].any()) or any(
                not row[1] and row[0] in sources for row in self._changed.values()
            )
            if known.all() and not lacking and self.path.is_file():
                return
            del pos
            frame = self._frame()
            if lacking:
                empty = (frame["youtube_id"].fillna("") == "").to_numpy(bool)
                fill = [sources.get(c, "") for c in frame.loc[empty, "clip_id"]]
                frame.loc[empty, "youtube_id"] = pd.array(fill, dtype="string")
            new = [k for k, seen in zip(keys, known, strict=True) if not seen]
            added = pd.DataFrame(
                {
                    "clip_id": new,
                    "youtube_id": [sources[k] for k in new],
                    "status": PENDING,
                    "kind": "pending",
                    "reason": "",
                    "attempts": 0,
                    "bytes": None,
                    "duration": None,
                    "source": "",
                    "updated_at": _now_us(),
                    "range": "",
                }
            )
            del keys, known, new
            parts = [part for part in (frame, _typed(added)) if len(part)] or [frame]
            self._replace(_sorted(pd.concat(parts, ignore_index=True)))

    def update(
        self,
        clip_id: str,
        status: str,
        kind: str,
        reason: str = "",
        *,
        attempts: int = 0,
        bytes: int | None = None,  # noqa: A002 - the ledger's column name
        duration: float | None = None,
        source: str = "",
        range: str = "",  # noqa: A002 - the ledger's column name
    ) -> None:
        """Record a result (``attempts`` is added to the running count) and persist."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        with self._lock:
            old = self._row(clip_id)
            row = (
                clip_id,
                old[1] if old else "",
                status,
                kind,
                reason,
                (old[5] if old else 0) + int(attempts),
                None if bytes is None else int(bytes),
                None if duration is None else float(duration),
                source,
                _now_us(),
                range,
            )
            self._append(_line(row))
            self._changed[clip_id] = row
            self._lines += 1
            limit = max(COMPACT_MIN, len(self._base) // JOURNAL_SHARE)
            if self._lines >= limit or not self.path.is_file():
                self._compact()

    def table(self) -> pd.DataFrame:
        with self._lock:
            return self._frame()

    def close(self) -> None:
        """Fold the journal into the table (the end of a run); the ledger stays usable."""
        with self._lock:
            if self._changed or self.journal.exists():
                self._compact()

    # ------------------------------------------------------------------ internals (lock held)

    def _row(self, clip_id: str) -> tuple | None:
        row = self._changed.get(clip_id)
        return row if row is not None else self._base.row(clip_id)

    def _frame(self) -> pd.DataFrame:
        base = self._base.frame()
        if not self._changed:
            return base
        changed = _rows_frame(list(self._changed.values()))
        stale = np.zeros(len(base), bool)
        rows = self._base.find(list(self._changed))
        stale[rows[rows >= 0]] = True
        return _sorted(pd.concat([base[~stale], changed], ignore_index=True))

    def _append(self, line: bytes) -> None:
        if self._fd is None:
            self._fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        start = os.lseek(self._fd, 0, os.SEEK_END)
        view = memoryview(line)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            os.ftruncate(self._fd, start)  # no half line left behind
            if is_disk_full(exc):
                raise disk_full_error(self.path.parent) from exc
            raise

    def _compact(self) -> None:
        self._replace(self._frame())

    def _replace(self, frame: pd.DataFrame) -> None:
        """Write ``frame`` as the table, then drop the journal it holds (in that order: a kill
        between the two replays the journal onto rows that already have it)."""
        frame = _typed(frame)
        write_parquet(frame, self.path)
        self._base = _EMPTY  # the old rows go before the new ones are built
        self._base = _Table(frame)
        self._changed, self._lines = {}, 0
        self.folds += 1
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.journal.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- readers


def _is_current(path: Path) -> bool:
    return set(COLUMNS) <= set(pq.read_schema(path).names)


def read_table(path: Path) -> pd.DataFrame:
    """The table file alone, in today's columns (keyed ``clip_id``, optional ones filled empty)."""
    table = keyed_by_clip_id(pd.read_parquet(path))
    missing = set(COLUMNS) - set(OPTIONAL) - set(table.columns)
    if missing:
        raise ValueError(
            f"{path}: not a download ledger (missing columns {sorted(missing)}); move it aside and "
            "run `make download` again (finished clips are checked and kept)"
        )
    return table.assign(**{c: "" for c in OPTIONAL if c not in table.columns})


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def read_ledger(path: Path) -> pd.DataFrame:
    """The ledger at ``path`` with today's columns (keyed ``clip_id``, optional ones filled
    empty) and its journal applied, whatever version wrote it."""
    path = Path(path)
    for _ in range(5):  # a writer that rewrites the table meanwhile: read again
        before = _stamp(path)
        table = read_table(path)
        rows, _, _ = read_journal(journal_path(path))
        if _stamp(path) == before:
            break
    if not rows:
        return table
    changed = _rows_frame(list(rows.values())).astype(table.dtypes.to_dict())
    kept = table[~table["clip_id"].isin(changed["clip_id"])]
    return _sorted(pd.concat([kept, changed], ignore_index=True))


def load_ledger(data_dir: str | Path) -> pd.DataFrame:
    """Read ``DATA_DIR/clips/status.parquet`` (later stages use it to find the valid clips)."""
    path = DataLayout(data_dir).ledger
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: run `make download DATA_DIR={shell_word(data_dir)}` first"
        )
    return read_ledger(path)
