"""Generic clip lists (AudioSet segment CSVs, VGGSound, a plain table) -> an avel manifest.

Every later stage keys on ``clip_id``: for AVE it is the YouTube ID (unchanged paths and store keys);
for a generic list it is ``<youtube_id>_<start in ms>`` (:func:`make_clip_id`), so one source video
can yield several clips. The manifest keeps the mapping (``clip_id`` -> ``youtube_id``,
``clip_start``, ``clip_end``); never parse a clip ID back (YouTube IDs contain ``_`` and ``-``).

Labels of a generic list are clip-level: ``category``/``label`` is the clip's (first selected)
class, ``labels`` all its selected classes, and ``segment_labels`` puts ``label`` on all 10
seconds (``start`` 0, ``end`` 10). A list without labels gets ``label`` -1, an empty ``category``
and background on every second (background = the number of classes, 0 when there are none).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core.io import read_parquet
from pipeline.core.manifest import CLIP_SECONDS, YOUTUBE_ID, AnnotationError
from pipeline.stages.annotations.ave import check_times, parse_audioset_csv, read_text_lines

FORMATS = ("audioset", "vggsound", "table")
MANIFEST_COLUMNS = [
    "sample",
    "youtube_id",
    "clip_id",
    "category",
    "label",
    "labels",
    "start",
    "end",
    "split",
    "match_split",
    "clip_start",
    "clip_end",
    "segment_labels",
]


def make_clip_id(youtube_id: str, start: float) -> str:
    """``<youtube_id>_<start in integer milliseconds>``: unique per (video, start)."""
    return f"{youtube_id}_{int(round(float(start) * 1000))}"


def read_csv_table(path: Path, **options) -> pd.DataFrame:
    """A CSV text input with a header line (UTF-8, checked by :func:`read_text_lines`)."""
    text = "\n".join(read_text_lines(path))
    if not text.strip():
        raise AnnotationError(f"{path}: empty file; a CSV table with a header line is expected")
    try:
        return pd.read_csv(io.StringIO(text), **options)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise AnnotationError(f"{path}: not a readable CSV table ({reason})") from None


def parse_label_spec(text: str | None) -> list[str]:
    """``--labels`` value: ';'-separated MIDs or display names (names may contain commas)."""
    if not text:
        return []
    return [part.strip() for part in text.split(";") if part.strip()]


def read_class_labels(path: str | Path) -> pd.DataFrame:
    """AudioSet ``class_labels_indices.csv`` (``index,mid,display_name``), in index order."""
    path = Path(path)
    table = read_csv_table(path, dtype={"mid": str, "display_name": str})
    missing = {"index", "mid", "display_name"} - set(table.columns)
    if missing:
        raise AnnotationError(
            f"{path}: not a class_labels_indices.csv (missing columns {sorted(missing)}; "
            "expected 'index,mid,display_name')"
        )
    return table.sort_values("index").reset_index(drop=True)


def _check_id(youtube_id: str, where: str) -> None:
    if not YOUTUBE_ID.match(youtube_id):
        raise AnnotationError(
            f"{where}: malformed YouTube ID {youtube_id!r} (expected 11 characters of A-Z a-z 0-9 _ -)"
        )


# ----------------------------------------------------------------------------- readers
# Each returns the rows (youtube_id, start, end, labels: list[str], split or None) and the class
# names in index order (None: take the labels seen, sorted); the AudioSet reader, whose lists hold
# 2 M rows, returns them column by column (:class:`ClipRows`) instead.


@dataclass
class ClipRows:
    """Rows of clip lists column by column: ``table`` (``youtube_id``, ``start``, ``end``,
    ``split``) in file order, and their labels as two flat arrays, ``label_rows`` (the row of each
    label, in row order) and ``label_ids`` (its index in ``classes``)."""

    table: pd.DataFrame
    label_rows: np.ndarray
    label_ids: np.ndarray
    classes: list[str]

    @classmethod
    def from_tuples(cls, rows: list[tuple], classes: list[str] | None) -> ClipRows:
        names = classes if classes is not None else sorted({n for r in rows for n in r[3]})
        index = {name: i for i, name in enumerate(names)}
        pairs = [(i, index[n]) for i, r in enumerate(rows) for n in r[3] if n in index]
        table = pd.DataFrame(
            [(y, s, e, sp) for y, s, e, _, sp in rows],
            columns=["youtube_id", "start", "end", "split"],
        )
        flat = np.array(pairs, np.int64).reshape(-1, 2)
        return cls(table, flat[:, 0], flat[:, 1], list(names))


def _check_ids(ids: pd.Series, where: str) -> None:
    """Every ID well formed, else the error for the first bad one (``where`` takes its row)."""
    bad = ~ids.str.fullmatch(YOUTUBE_ID.pattern.strip("^$")).fillna(False).to_numpy(bool)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        _check_id(str(ids.iloc[first]), where.format(row=first + 1))


def read_audioset(paths: list[Path], class_labels: Path | None, wanted: list[str]) -> ClipRows:
    names: dict[str, str] = {}
    order: list[str] | None = None
    if class_labels is not None:
        table = read_class_labels(class_labels)
        names = dict(zip(table["mid"], table["display_name"], strict=True))
        order = list(table["mid"])
    by_name = {v: k for k, v in names.items()}
    selected: list[str] | None = None
    if wanted:
        selected = []
        for item in wanted:
            mid = item if item.startswith("/") else by_name.get(item)
            if mid is None:
                hint = "" if names else " (pass --class-labels class_labels_indices.csv for names)"
                raise AnnotationError(f"--labels: unknown AudioSet class {item!r}{hint}")
            selected.append(mid)
    parts = []
    for path in paths:
        part = parse_audioset_csv(path)
        _check_ids(part["youtube_id"], f"{path} (data row {{row}})")
        parts.append(part.assign(split="test" if "eval" in path.name else "train"))
    table = pd.concat(parts, ignore_index=True)
    lists = pc.split_pattern(pa.array(table["positive_labels"].fillna("")), ",")
    mids = pc.utf8_trim_whitespace(pc.list_flatten(lists))
    rows = pc.list_parent_indices(lists).to_numpy().astype(np.int64)
    given = pc.not_equal(mids, "").to_numpy(zero_copy_only=False)
    mids, rows = mids.filter(given), rows[given]
    if selected is not None:  # only these classes, in the order asked for, once per row
        rank = pc.index_in(mids, value_set=pa.array(selected, pa.string()))
        found = rank.is_valid().to_numpy(zero_copy_only=False)
        code = np.unique(rows[found] * len(selected) + rank.filter(found).to_numpy())
        rows, ids = code // len(selected), code % len(selected)
        kept = np.zeros(len(table), bool)
        kept[rows] = True
        table = table[kept].reset_index(drop=True)
        rows = (np.cumsum(kept) - 1)[rows]
        classes_mid = selected
    else:
        classes_mid = order if order is not None else sorted(pc.unique(mids).to_pylist())
        index = pc.index_in(mids, value_set=pa.array(classes_mid, pa.string()))
        known = index.is_valid().to_numpy(zero_copy_only=False)
        rows, ids = rows[known], index.filter(known).to_numpy()
    table = table.rename(columns={"start_seconds": "start", "end_seconds": "end"})
    return ClipRows(
        table[["youtube_id", "start", "end", "split"]],
        rows,
        ids.astype(np.int64),
        [names.get(m, m) for m in classes_mid],
    )


def read_vggsound(path: Path, wanted: list[str]) -> tuple[list[tuple], list[str] | None]:
    """``youtube_id,start_seconds,label,split`` without a header (the public vggsound.csv)."""
    rows = []
    for lineno, fields in enumerate(csv.reader(read_text_lines(path)), start=1):
        if not fields or not "".join(fields).strip():
            continue
        if len(fields) != 4:
            raise AnnotationError(
                f"{path}:{lineno}: expected 'youtube_id,start_seconds,label,split', "
                f"found {len(fields)} field(s)"
            )
        ytid, start_s, label, split = (x.strip() for x in fields)
        _check_id(ytid, f"{path}:{lineno}")
        try:
            start = float(start_s)
        except ValueError:
            raise AnnotationError(f"{path}:{lineno}: start {start_s!r} is not a number") from None
        check_times(start, None, f"{path}:{lineno}")
        if wanted and label not in wanted:
            continue
        rows.append((ytid, start, start + CLIP_SECONDS, [label], split or None))
    unknown = set(wanted) - {r[3][0] for r in rows}
    if unknown:
        raise AnnotationError(f"--labels: no clip of {path} has label(s) {sorted(unknown)}")
    return rows, (list(wanted) if wanted else None)


def read_table(path: Path, wanted: list[str]) -> tuple[list[tuple], list[str] | None]:
    """CSV or Parquet with columns ``youtube_id, start, end`` and optional ``label``, ``split``."""
    if path.suffix == ".parquet":
        table = read_parquet(path, "give a clip table (CSV or Parquet)")
    else:
        table = read_csv_table(path, dtype=str)
        blank = table.apply(lambda col: col.fillna("").str.strip() == "").all(axis=1)
        table = table[~blank]  # blank or whitespace-only lines (e.g. at the end of the file)
    missing = {"youtube_id", "start", "end"} - set(table.columns)
    if missing:
        raise AnnotationError(
            f"{path}: missing column(s) {sorted(missing)}; a clip table has youtube_id,start,end[,label]"
        )
    rows = []
    for i, rec in enumerate(table.to_dict("records")):
        where = f"{path} (row {i + 1})"
        ytid = str(rec["youtube_id"]).strip()
        _check_id(ytid, where)
        try:
            start, end = float(rec["start"]), float(rec["end"])
        except (TypeError, ValueError):
            raise AnnotationError(f"{where}: start/end are not numbers") from None
        check_times(start, end, where)
        label = rec.get("label")
        labels = [] if label is None or pd.isna(label) or not str(label).strip() else [str(label)]
        if wanted and not (labels and labels[0] in wanted):
            continue
        split = rec.get("split")
        split = None if split is None or pd.isna(split) else str(split)
        rows.append((ytid, start, end, labels, split))
    return rows, (list(wanted) if wanted else None)


# ----------------------------------------------------------------------------- manifest


def build_clip_manifest(
    paths: list[Path],
    fmt: str,
    labels: list[str] | None = None,
    class_labels: Path | None = None,
) -> tuple[pa.Table, list[str], dict]:
    """Manifest (one row per clip, first occurrence kept), class names and a summary. The manifest
    is built column by column (an Arrow table: 2 M rows hold no Python object per row)."""
    labels = labels or []
    if fmt == "audioset":
        rows = read_audioset(paths, class_labels, labels)
    elif fmt in ("vggsound", "table"):
        reader = read_vggsound if fmt == "vggsound" else read_table
        found, classes = [], None
        for path in paths:
            part, classes = reader(path, labels)
            found += part
        rows = ClipRows.from_tuples(found, classes)
    else:
        raise AnnotationError(f"--clip-list-format must be one of {FORMATS}, got {fmt!r}")
    if rows.table.empty:
        raise AnnotationError(f"{', '.join(map(str, paths))}: no clip (after the --labels filter)")
    table, classes = rows.table, rows.classes
    ms = np.rint(table["start"].to_numpy(np.float64) * 1000).astype(np.int64)
    clip_id = pc.binary_join_element_wise(
        pa.array(table["youtube_id"]).cast(pa.large_string()),
        pa.array(ms).cast(pa.large_string()),
        pa.scalar("_", pa.large_string()),
    )
    first = ~pd.Series(pd.array(clip_id, dtype="str")).duplicated(keep="first").to_numpy()
    repeats = int((~first).sum())
    keep = first[rows.label_rows]
    label_rows = (np.cumsum(first) - 1)[rows.label_rows[keep]]
    label_ids = rows.label_ids[keep]
    table, clip_id = table[first].reset_index(drop=True), clip_id.filter(first)
    n = len(table)
    label = np.full(n, -1, np.int64)
    leading = np.r_[True, label_rows[1:] != label_rows[:-1]] if len(label_rows) else []
    label[label_rows[leading]] = label_ids[leading]
    names = np.array([*classes, ""], dtype=object)
    scalars = pd.DataFrame(
        {
            "sample": np.arange(n, dtype=np.int64),
            "youtube_id": table["youtube_id"].astype("str"),
            "clip_id": pd.array(clip_id, dtype="str"),
            "category": pd.array(names[label], dtype="str"),
            "label": label.astype(np.int16),
            "start": np.zeros(n, np.int64),
            "end": np.full(n, CLIP_SECONDS, np.int64),
            "split": table["split"].astype("string"),
            "match_split": pd.array([None] * n, dtype="string"),
            "clip_start": table["start"].astype("Float64"),
            "clip_end": table["end"].astype("Float64"),
        }
    )
    offsets = np.r_[0, np.cumsum(np.bincount(label_rows, minlength=n))]
    per_second = np.repeat(np.where(label >= 0, label, len(classes)), CLIP_SECONDS)
    manifest = pa.Table.from_pandas(scalars, preserve_index=False)
    manifest = manifest.add_column(
        MANIFEST_COLUMNS.index("labels"),
        "labels",
        pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(label_ids, pa.int64())),
    ).append_column(
        "segment_labels",
        pa.ListArray.from_arrays(
            pa.array(np.arange(0, n * CLIP_SECONDS + 1, CLIP_SECONDS), pa.int32()),
            pa.array(per_second, pa.int64()),
        ),
    )
    per_video = scalars["youtube_id"].value_counts()
    summary = {
        "format": fmt,
        "rows": n,
        "clips": n,
        "unique_videos": int(per_video.size),
        "videos_with_several_clips": int((per_video > 1).sum()),
        "repeated_rows_dropped": repeats,
        "classes": len(classes) + 1,
        "unlabelled_clips": int((label < 0).sum()),
        "split_rows": {str(k): int(v) for k, v in scalars["split"].value_counts().items()},
    }
    return manifest, list(classes), summary


def format_clip_summary(summary: dict) -> list[str]:
    return [
        f"  clip list ({summary['format']}): {summary['clips']} clips from "
        f"{summary['unique_videos']} videos ({summary['videos_with_several_clips']} videos give "
        f"several clips; {summary['repeated_rows_dropped']} repeated rows dropped)",
        f"  classes: {summary['classes']} (incl. background)   unlabelled clips: "
        f"{summary['unlabelled_clips']}",
        "  splits: " + (", ".join(f"{k} {v}" for k, v in summary["split_rows"].items()) or "none"),
        "  labels are clip-level: the clip's class on every second",
    ]
