"""Annotations stage: AVE annotation file + split lists (+ AudioSet CSVs) -> ``manifest.parquet``.

The manifest is the single source of truth for every later stage: one row per annotation row
(a sample), with its video, class, event span, splits, AudioSet clip offset and per-second labels.
"""

from __future__ import annotations

import csv
import json
import math
from array import array
from collections import Counter
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.manifest import (
    CLIP_SECONDS,
    SPLITS,
    YOUTUBE_ID,
    AnnotationError,
    segment_labels,
)
from pipeline.core.text import TextInputError, read_lines

SOURCES_FILE = "sources.json"  # package data beside this module

#: The 28 AVE categories in the block order of the published Annotations.txt (see the AVE reference).
AVE_CATEGORIES = (
    "Church bell",
    "Male speech, man speaking",
    "Bark",
    "Fixed-wing aircraft, airplane",
    "Race car, auto racing",
    "Female speech, woman speaking",
    "Helicopter",
    "Violin, fiddle",
    "Flute",
    "Ukulele",
    "Frying (food)",
    "Truck",
    "Shofar",
    "Motorcycle",
    "Acoustic guitar",
    "Train horn",
    "Clock",
    "Banjo",
    "Goat",
    "Baby cry, infant cry",
    "Bus",
    "Chainsaw",
    "Cat",
    "Horse",
    "Toilet flush",
    "Rodents, rats, mice",
    "Accordion",
    "Mandolin",
)


def load_sources() -> dict:
    """Public URLs and checksums of the annotation inputs (package data ``sources.json``)."""
    return json.loads(resources.files(__package__).joinpath(SOURCES_FILE).read_text())


# --------------------------------------------------------------------------- text inputs


def read_text_lines(path: str | Path) -> list[str]:
    """The lines of a UTF-8 text input without line ends; a byte-order mark is dropped (editors
    on Windows write one), so it never becomes part of the first field. A binary or non-UTF-8
    file is an :class:`AnnotationError` naming the file and where."""
    try:
        return read_lines(path, "a text input")
    except TextInputError as exc:
        raise AnnotationError(str(exc)) from None


# --------------------------------------------------------------------------- annotation file


def parse_annotations(path: str | Path) -> pd.DataFrame:
    """Parse ``Category&YouTubeID&Quality&StartTime&EndTime`` lines, validating every field."""
    path = Path(path)
    rows = []
    lines = read_text_lines(path)
    while lines and not lines[-1].strip():  # trailing blank lines end the file
        lines.pop()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            raise AnnotationError(
                f"{path}:{lineno}: empty line; every line must be an annotation "
                "(the row index of every later line would shift)"
            )
        parts = line.split("&")
        if len(parts) != 5:
            raise AnnotationError(
                f"{path}:{lineno}: expected 5 '&'-separated fields "
                f"(Category&YouTubeID&Quality&StartTime&EndTime), found {len(parts)}: {line!r}"
            )
        category, youtube_id, quality, start_s, end_s = parts
        if not category:
            raise AnnotationError(f"{path}:{lineno}: empty category")
        if not YOUTUBE_ID.match(youtube_id):
            raise AnnotationError(
                f"{path}:{lineno}: malformed YouTube ID {youtube_id!r} "
                "(expected 11 characters of A-Z a-z 0-9 _ -)"
            )
        try:
            start, end = int(start_s), int(end_s)
        except ValueError:
            raise AnnotationError(
                f"{path}:{lineno}: start/end must be integer seconds, found {start_s!r}, {end_s!r}"
            ) from None
        if not (0 <= start <= CLIP_SECONDS and 0 <= end <= CLIP_SECONDS):
            raise AnnotationError(
                f"{path}:{lineno}: times {start}..{end} lie outside the 0..{CLIP_SECONDS} s clip"
            )
        if start > end:
            raise AnnotationError(f"{path}:{lineno}: start {start} is after end {end}")
        rows.append((lineno - 1, category, youtube_id, quality, start, end, lineno))
    if not rows:
        raise AnnotationError(f"{path}: no annotations")
    df = pd.DataFrame(
        rows, columns=["sample", "category", "youtube_id", "quality", "start", "end", "line"]
    )
    _check_category_blocks(df, path)
    return df


def _check_category_blocks(df: pd.DataFrame, path: Path) -> None:
    """Class indices are the order of contiguous category blocks; a category may not come back."""
    seen: dict[str, int] = {}
    previous = None
    for category, line in zip(df["category"], df["line"], strict=True):
        if category != previous and category in seen:
            raise AnnotationError(
                f"{path}:{line}: category {category!r} reappears after another category's block "
                f"(first block starts at line {seen[category]}); class indices come from the order "
                "of contiguous blocks, so the file must keep each category together"
            )
        seen.setdefault(category, line)
        previous = category


def class_names(annotations: pd.DataFrame) -> list[str]:
    """Category names in block order."""
    return list(dict.fromkeys(annotations["category"]))


# --------------------------------------------------------------------------- split lists


def read_split(path: str | Path) -> np.ndarray:
    """Read one split list: the release's h5 (dataset ``order``) or one 0-based index per line."""
    path = Path(path)
    if path.suffix in (".h5", ".hdf5"):
        import h5py

        try:
            with h5py.File(path, "r") as f:
                if "order" not in f:
                    raise AnnotationError(f"{path}: no dataset 'order' (keys: {list(f.keys())})")
                return np.asarray(f["order"][...], dtype=np.int64).reshape(-1)
        except OSError as exc:
            raise AnnotationError(f"{path}: not a readable HDF5 file ({exc})") from exc
    values = []
    for lineno, raw in enumerate(read_text_lines(path), start=1):
        text = raw.strip()
        if not text:
            continue
        try:
            values.append(int(text))
        except ValueError:
            raise AnnotationError(
                f"{path}:{lineno}: expected one integer row index, found {text!r}"
            ) from None
    return np.asarray(values, dtype=np.int64)


def check_partition(splits: dict[str, np.ndarray], n_rows: int, names: dict[str, str]) -> None:
    """Split lists must be disjoint, index existing rows and cover every row."""
    owner: dict[int, str] = {}
    for split, indices in splits.items():
        bad = indices[(indices < 0) | (indices >= n_rows)]
        if bad.size:
            raise AnnotationError(
                f"{names[split]}: index {int(bad[0])} is past the end of the annotation file "
                f"({n_rows} rows, valid 0..{n_rows - 1}); {bad.size} such indices"
            )
        counts = Counter(indices.tolist())
        repeated = [i for i, c in counts.items() if c > 1]
        if repeated:
            raise AnnotationError(
                f"{names[split]}: row {repeated[0]} is listed {counts[repeated[0]]} times"
            )
        for i in indices.tolist():
            if i in owner:
                raise AnnotationError(
                    f"{names[split]}: row {i} is also in {names[owner[i]]}; split lists must not overlap"
                )
            owner[i] = split
    missing = sorted(set(range(n_rows)) - owner.keys())
    if missing:
        raise AnnotationError(
            f"split lists ({', '.join(names.values())}) miss {len(missing)} of {n_rows} rows, "
            f"e.g. row {missing[0]}; every annotation row must be in exactly one split"
        )


def split_column(splits: dict[str, np.ndarray], n_rows: int) -> list[str | None]:
    column: list[str | None] = [None] * n_rows
    for split, indices in splits.items():
        for i in indices.tolist():
            column[i] = split
    return column


# --------------------------------------------------------------------------- AudioSet CSVs


def check_times(start: float, end: float | None, where: str) -> None:
    """A clip's source times: finite, start >= 0, end after start (they become file names and
    the range cut from the source)."""
    if not math.isfinite(start) or start < 0:
        raise AnnotationError(f"{where}: start {start} must be a finite number of seconds >= 0")
    if end is not None and (not math.isfinite(end) or not end > start):
        raise AnnotationError(f"{where}: end {end} must be a finite time after start {start}")


def parse_audioset_csv(path: str | Path) -> pd.DataFrame:
    """Parse an AudioSet segment CSV (``# YTID, start_seconds, end_seconds, positive_labels``),
    line by line (2 M rows hold their columns, not their lines)."""
    path = Path(path)
    ids: list[str] = []
    labels: list[str] = []
    starts, ends = array("d"), array("d")
    lineno = 0

    def data_lines() -> Iterator[str]:
        nonlocal lineno
        try:
            with open(path, encoding="utf-8-sig") as f:  # universal newlines; a BOM is dropped
                for number, line in enumerate(f, start=1):
                    if "\0" in line:
                        read_text_lines(path)  # binary: the one clear error, naming where
                    if not line.startswith("#"):
                        lineno = number
                        yield line.rstrip("\n")
        except UnicodeDecodeError:
            read_text_lines(path)  # not UTF-8: the one clear error, naming where
            raise

    for fields in csv.reader(data_lines(), skipinitialspace=True, quotechar='"'):
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue
        if len(fields) < 3:
            raise AnnotationError(
                f"{path}:{lineno}: expected 'YTID, start_seconds, end_seconds, positive_labels', "
                f"found {len(fields)} field(s)"
            )
        try:
            start, end = float(fields[1]), float(fields[2])
        except ValueError:
            raise AnnotationError(
                f"{path}:{lineno}: start/end are not numbers: {fields[1:3]!r}"
            ) from None
        check_times(start, end, f"{path}:{lineno}")
        ids.append(fields[0].strip())
        starts.append(start)
        ends.append(end)
        labels.append(fields[3].strip() if len(fields) > 3 else "")
    return pd.DataFrame(
        {
            "youtube_id": ids,
            "start_seconds": np.frombuffer(starts, np.float64) if starts else np.zeros(0),
            "end_seconds": np.frombuffer(ends, np.float64) if ends else np.zeros(0),
            "positive_labels": labels,
        }
    )


# --------------------------------------------------------------------------- the manifest


def build_manifest(
    ann_path: Path, split_paths: dict[str, Path], csv_paths: list[Path]
) -> tuple[pd.DataFrame, list[str], dict]:
    """Parse and validate all inputs; return the manifest, the class names and a summary."""
    ann = parse_annotations(ann_path)
    n = len(ann)
    names = class_names(ann)
    background = len(names)
    label_of = {name: i for i, name in enumerate(names)}
    ann["label"] = ann["category"].map(label_of).astype(np.int16)

    loc = {s: read_split(split_paths[f"{s}_order"]) for s in SPLITS}
    check_partition(loc, n, {s: str(split_paths[f"{s}_order"]) for s in SPLITS})
    ann["split"] = split_column(loc, n)
    if all(f"{s}_order_match" in split_paths for s in SPLITS):
        match = {s: read_split(split_paths[f"{s}_order_match"]) for s in SPLITS}
        check_partition(match, n, {s: str(split_paths[f"{s}_order_match"]) for s in SPLITS})
        ann["match_split"] = split_column(match, n)
    else:
        ann["match_split"] = None

    offsets: dict[str, tuple[float, float]] = {}
    for path in csv_paths:
        table = parse_audioset_csv(path)
        table = table[table["youtube_id"].isin(ann["youtube_id"])]  # AVE's few of AudioSet's 2 M
        for ytid, start, end in zip(
            table["youtube_id"], table["start_seconds"], table["end_seconds"], strict=True
        ):
            offsets.setdefault(ytid, (start, end))
    ann["clip_start"] = [offsets.get(v, (np.nan, np.nan))[0] for v in ann["youtube_id"]]
    ann["clip_end"] = [offsets.get(v, (np.nan, np.nan))[1] for v in ann["youtube_id"]]
    ann["segment_labels"] = [
        segment_labels(s, e, lab, background)
        for s, e, lab in zip(ann["start"], ann["end"], ann["label"], strict=True)
    ]
    ann["clip_id"] = ann["youtube_id"]  # AVE: one clip per video, keyed by its YouTube ID
    manifest = ann[
        [
            "sample",
            "youtube_id",
            "clip_id",
            "category",
            "label",
            "start",
            "end",
            "split",
            "match_split",
            "clip_start",
            "clip_end",
            "segment_labels",
        ]
    ].copy()
    manifest["clip_start"] = manifest["clip_start"].astype("Float64")
    manifest["clip_end"] = manifest["clip_end"].astype("Float64")
    manifest["match_split"] = manifest["match_split"].astype("string")
    manifest["split"] = manifest["split"].astype("string")
    return manifest, names, summarise_manifest(manifest, ann, names, bool(csv_paths))


def summarise_manifest(
    manifest: pd.DataFrame, ann: pd.DataFrame, names: list[str], have_csv: bool
) -> dict:
    ids = manifest["youtube_id"]
    dup_counts = ids.value_counts()
    duplicates = sorted(dup_counts[dup_counts > 1].index)
    lengths = (manifest["end"] - manifest["start"]).astype(int)
    empty = manifest.loc[lengths == 0, "sample"].tolist()
    unique = ids.drop_duplicates()
    have_offset = manifest.drop_duplicates("youtube_id")["clip_start"].notna()
    return {
        "rows": int(len(manifest)),
        "unique_videos": int(unique.size),
        "classes": len(names) + 1,
        "duplicate_ids": len(duplicates),
        "duplicate_id_examples": duplicates[:5],
        "empty_event_rows": empty,
        "split_rows": {s: int((manifest["split"] == s).sum()) for s in SPLITS},
        "match_split_rows": {s: int((manifest["match_split"] == s).sum()) for s in SPLITS},
        "event_length_histogram": {int(k): int(v) for k, v in sorted(Counter(lengths).items())},
        "audioset_csv_used": have_csv,
        "videos_with_offset": int(have_offset.sum()),
        "videos_without_offset": int((~have_offset).sum()),
        "is_published_ave_classes": tuple(names) == AVE_CATEGORIES,
    }
