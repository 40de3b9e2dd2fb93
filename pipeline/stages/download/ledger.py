"""The download ledger ``DATA_DIR/clips/status.parquet``: one row per video, rewritten atomically.

Every finished video rewrites the whole (small: ~4k rows) table to a temp file and renames it, so a
kill at any moment leaves either the previous or the new ledger, never a torn one.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from pipeline.core.io import write_parquet
from pipeline.core.layout import DataLayout
from pipeline.stages.download.classify import PENDING, STATUSES

COLUMNS = (
    "youtube_id",
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
OPTIONAL = ("range",)


def _now() -> pd.Timestamp:
    return pd.Timestamp(datetime.now(UTC))


class Ledger:
    """Thread-safe status table keyed by YouTube ID; ``update`` persists immediately."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.rows: dict[str, dict] = {}
        if self.path.is_file():
            table = pd.read_parquet(self.path)
            missing = set(COLUMNS) - set(OPTIONAL) - set(table.columns)
            if missing:
                raise ValueError(
                    f"{self.path}: not a download ledger (missing columns {sorted(missing)})"
                )
            for rec in table.to_dict("records"):
                row = {k: _plain(rec.get(k)) for k in COLUMNS}
                self.rows[rec["youtube_id"]] = dict(row, range=row["range"] or "")

    def get(self, youtube_id: str) -> dict | None:
        with self._lock:
            row = self.rows.get(youtube_id)
            return dict(row) if row else None

    def status(self, youtube_id: str) -> str | None:
        row = self.get(youtube_id)
        return row["status"] if row else None

    def ensure(self, youtube_ids: list[str]) -> None:
        """Add a ``pending`` row for every ID not yet in the ledger, and persist."""
        with self._lock:
            for vid in youtube_ids:
                if vid not in self.rows:
                    self.rows[vid] = _row(
                        vid, PENDING, "pending", "", 0, None, None, "", _now(), ""
                    )
            self._write()

    def update(
        self,
        youtube_id: str,
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
            old = self.rows.get(youtube_id)
            total = (old["attempts"] if old else 0) + attempts
            self.rows[youtube_id] = _row(
                youtube_id, status, kind, reason, total, bytes, duration, source, _now(), range
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
        for col in ("youtube_id", "status", "kind", "reason", "source", "range"):
            df[col] = df[col].astype("string")
        return df.sort_values("youtube_id", kind="stable").reset_index(drop=True)

    def _write(self) -> None:
        write_parquet(self._frame(), self.path)


def _row(vid, status, kind, reason, attempts, nbytes, duration, source, when, span) -> dict:
    return {
        "youtube_id": vid,
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


def load_ledger(data_dir: str | Path) -> pd.DataFrame:
    """Read ``DATA_DIR/clips/status.parquet`` (later stages use it to find the valid clips)."""
    path = DataLayout(data_dir).ledger
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `make download DATA_DIR={data_dir}` first")
    return pd.read_parquet(path)
