"""Data folders as earlier versions left them: the clip key called ``youtube_id`` on disk; segments
without their audio recipe and hashes."""

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


#: What the segments stage recorded only once the audio recipe became a choice.
AUDIO_RECIPE_FIELDS = ("audio_recipe", "patches_sha256", "clip_sha256")


def write_before_audio_recipe(data_dir: Path) -> None:
    """Rewrite the segment receipts and table of ``data_dir`` as the version before the audio
    recipe wrote them (its patches were made by the ``soxr`` recipe): no recipe, no hashes."""
    layout = DataLayout(data_dir)
    for path in layout.segments.glob("*.json"):
        receipt = json.loads(path.read_text())
        path.write_text(
            json.dumps({k: v for k, v in receipt.items() if k not in AUDIO_RECIPE_FIELDS})
        )
    if layout.segments_table.is_file():
        table = pd.read_parquet(layout.segments_table)
        table.drop(columns=list(AUDIO_RECIPE_FIELDS)).to_parquet(layout.segments_table)
