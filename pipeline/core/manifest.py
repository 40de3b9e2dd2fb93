"""The manifest: one row per clip (sample), the contract between the annotations stage and every later one.

Columns (``MANIFEST_VERSION`` 2): ``sample`` (1-based row), ``clip_id`` (the key of every later
stage: clip files, ledger, segments, stores; the YouTube ID for AVE, ``<youtube_id>_<start_ms>`` for
generic clip lists), ``youtube_id``, ``category``, ``label``, ``quality``, ``start``/``end`` (event
span, seconds), ``audioset_start``/``audioset_end``, the split columns and ``segment_labels`` (one
label per second, ``num_classes - 1`` = background). Both readers (the AVE annotation file and
generic clip lists) write this schema; everything downstream reads it through this module.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from pipeline.core.io import CorruptFileError, read_parquet
from pipeline.core.layout import DataLayout
from pipeline.core.paths import UnsafeNameError, first_bad_name
from pipeline.core.text import shell_word

YOUTUBE_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")
#: Length of one clip in seconds (= segments per clip): the one definition.
CLIP_SECONDS = 10
SPLITS = ("train", "val", "test")
MANIFEST_VERSION = 2  # 2: clip_id column (the key of every later stage)
BACKGROUND = "background"


class AnnotationError(ValueError):
    """An input file is malformed; the message names the file and line."""


def segment_labels(start: int, end: int, label: int, background: int) -> list[int]:
    """Per-second labels: the class where start <= t < end, else background."""
    return [label if start <= t < end else background for t in range(CLIP_SECONDS)]


def manifest_path(data_dir: str | Path) -> Path:
    return DataLayout(data_dir).manifest


def _rebuild(data_dir: str | Path) -> str:
    return f"rebuild it with `make annotations DATA_DIR={shell_word(data_dir)} FORCE=1`"


def load_manifest(data_dir: str | Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read ``DATA_DIR/manifest.parquet``, with a clear error when the stage has not run, the file
    is corrupt, or a clip ID could not name a file (a manifest made by another tool);
    ``columns``: only those of them the file has (a stage that needs a few of a large list's)."""
    path = manifest_path(data_dir)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: run `make annotations DATA_DIR={shell_word(data_dir)}` first"
        )
    manifest = read_parquet(path, _rebuild(data_dir), columns)
    if "clip_id" not in manifest.columns and "youtube_id" not in manifest.columns:
        raise CorruptFileError(f"{path}: no clip_id or youtube_id column; {_rebuild(data_dir)}")
    bad = first_bad_name(clip_ids(manifest))
    if bad is not None:
        row, key, problem = bad
        raise UnsafeNameError(
            f"{path} row {row}: clip ID {key!r} {problem}, so it cannot name the clip's files; "
            f"{_rebuild(data_dir)} (or fix the tool that wrote it)"
        )
    return manifest


def clip_ids(manifest: pd.DataFrame) -> pd.Series:
    """The key of every later stage per manifest row.

    ``clip_id`` (= ``youtube_id`` for AVE, ``<youtube_id>_<start_ms>`` for generic clip lists);
    manifests written before that column existed fall back to ``youtube_id``.
    """
    column = "clip_id" if "clip_id" in manifest.columns else "youtube_id"
    return manifest[column].astype(str)


#: What files of earlier versions (download ledger, segments tables and receipts, version-1 store
#: indexes) called the clip key: it held the clip ID, not necessarily a YouTube ID.
LEGACY_CLIP_KEY = "youtube_id"


def keyed_by_clip_id(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its clip key column named ``clip_id`` (renamed from :data:`LEGACY_CLIP_KEY`
    in a table written before the rename); a table without that old column is returned as it is."""
    if "clip_id" in table.columns or LEGACY_CLIP_KEY not in table.columns:
        return table
    return table.rename(columns={LEGACY_CLIP_KEY: "clip_id"})


def load_classes(data_dir: str | Path) -> list[str]:
    path = DataLayout(data_dir).classes
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: run `make annotations DATA_DIR={shell_word(data_dir)}` first"
        )
    return read_parquet(path, _rebuild(data_dir))["name"].tolist()
