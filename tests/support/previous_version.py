"""A data folder as the previous version left it: the clip key called ``youtube_id`` on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipeline.core.layout import DataLayout


def write_previous_version(data_dir: Path) -> None:
    """Rewrite the download ledger, the segments tables and the segment receipts of ``data_dir``
    (those that exist) as the previous version wrote them: key ``youtube_id``, no source column."""
    layout = DataLayout(data_dir)
    if layout.ledger.is_file():
        ledger = pd.read_parquet(layout.ledger).drop(columns="youtube_id")
        ledger.rename(columns={"clip_id": "youtube_id"}).to_parquet(layout.ledger)
    for path in (layout.segments_table, layout.segments_failed):
        if path.is_file():
            pd.read_parquet(path).rename(columns={"clip_id": "youtube_id"}).to_parquet(path)
    for path in layout.segments.glob("*.json"):
        receipt = json.loads(path.read_text())
        path.write_text(json.dumps({_old(k): v for k, v in receipt.items()}))


def _old(key: str) -> str:
    return "youtube_id" if key == "clip_id" else key


def key_columns(path: Path) -> set[str]:
    """Which of ``clip_id`` / ``youtube_id`` the Parquet file at ``path`` has, as stored."""
    return {"clip_id", "youtube_id"} & set(pd.read_parquet(path).columns)
