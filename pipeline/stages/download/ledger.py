"""The download ledger ``DATA_DIR/clips/status.parquet``: one row per clip, rewritten atomically.

Rows are keyed by ``clip_id`` (the manifest's clip key; the YouTube ID for AVE), with the source
``youtube_id`` next to it. Every finished clip rewrites the whole (small: ~4k rows) table to a temp
file and renames it, so a kill at any moment leaves either the previous or the new ledger, never a
torn one. A ledger of an earlier version (key column ``youtube_id``, no source column) reads as if
written today and is saved in today's columns on the next write.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from pipeline.core.io import write_parquet
from pipeline.core.layout import DataLayout
from pipeline.core.manifest import keyed_by_clip_id
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


def _now() -> pd.Timestamp:
    return pd.Timestamp(datetime.now(UTC))


class Ledger:
    """Thread-safe status table keyed by clip ID; ``update`` persists immediately."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.rows: dict[str, dict] = {}
        if self.path.is_file():
            for rec in read_ledger(self.path).to_dict("records"):
                row = {k: _plain(rec.get(k)) for k in COLUMNS}
                self.rows[rec["clip_id"]] = dict(
                    row, youtube_id=row["youtube_id"] or "", range=row["range"] or ""
                )

    def get(self, clip_id: str) -> dict | None:
        with self._lock:
            row = self.rows.get(clip_id)
            return dict(row) if row else None

    def status(self, clip_id: str) -> str | None:
        row = self.get(clip_id)
        return row["status"] if row else None

    def ensure(self, sources: dict[str, str]) -> None:
        """Add a ``pending`` row for every clip (``clip_id -> youtube_id``) not yet in the ledger,
        fill the source of rows that lack it, and persist."""
        with self._lock:
            for clip_id, youtube_id in sources.items():
                row = self.rows.get(clip_id)
                if row is None:
                    self.rows[clip_id] = _row(
                        clip_id, youtube_id, PENDING, "pending", "", 0, None, None, "", _now(), ""
                    )
                elif not row["youtube_id"]:
                    row["youtube_id"] = youtube_id
            self._write()

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
            old = self.rows.get(clip_id) or {"attempts": 0, "youtube_id": ""}
            self.rows[clip_id] = _row(
                clip_id,
                old["youtube_id"],
                status,
                kind,
                reason,
                old["attempts"] + attempts,
                bytes,
                duration,
                source,
                _now(),
                range,
            )
            self._write()

    def table(self) -> pd.DataFrame:
        with self._lock:
            return self._frame()

    def _frame(self) -> pd.DataFrame:
        df = pd.DataFrame(list(self.rows.values()), columns=list(COLUMNS))
        df["attempts"] = df["attempts"].astype("int32")
        df["bytes"] = df["bytes"].astype("Int64")
        df["duration"] = df["duration"].astype("Float64")
        df["updated_at"] = pd.to_datetime(df["updated_at"], utc=True)
        for col in ("clip_id", "youtube_id", "status", "kind", "reason", "source", "range"):
            df[col] = df[col].astype("string")
        return df.sort_values("clip_id", kind="stable").reset_index(drop=True)

    def _write(self) -> None:
        write_parquet(self._frame(), self.path)


def _row(
    clip_id, youtube_id, status, kind, reason, attempts, nbytes, duration, source, when, span
) -> dict:
    return {
        "clip_id": clip_id,
        "youtube_id": youtube_id,
        "status": status,
        "kind": kind,
        "reason": reason,
        "attempts": int(attempts),
        "bytes": None if nbytes is None else int(nbytes),
        "duration": None if duration is None else float(duration),
        "source": source,
        "updated_at": when,
        "range": span,
    }


def _plain(value):
    if value is pd.NA or (isinstance(value, float) and value != value):
        return None
    return value


def read_ledger(path: Path) -> pd.DataFrame:
    """The ledger at ``path`` with today's columns (keyed ``clip_id``, optional ones filled empty),
    whatever version wrote it."""
    table = keyed_by_clip_id(pd.read_parquet(path))
    missing = set(COLUMNS) - set(OPTIONAL) - set(table.columns)
    if missing:
        raise ValueError(
            f"{path}: not a download ledger (missing columns {sorted(missing)}); move it aside and "
            "run `make download` again (finished clips are checked and kept)"
        )
    return table.assign(**{c: "" for c in OPTIONAL if c not in table.columns})


def load_ledger(data_dir: str | Path) -> pd.DataFrame:
    """Read ``DATA_DIR/clips/status.parquet`` (later stages use it to find the valid clips)."""
    path = DataLayout(data_dir).ledger
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `make download DATA_DIR={data_dir}` first")
    return read_ledger(path)
