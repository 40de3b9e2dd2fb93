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
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.io import read_parquet
from pipeline.core.manifest import CLIP_SECONDS, YOUTUBE_ID, AnnotationError, segment_labels
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
# Each returns rows (youtube_id, start, end, labels: list[str], split or None) and the class
# names in index order (None: take the labels seen, sorted).


def read_audioset(
    paths: list[Path], class_labels: Path | None, wanted: list[str]
) -> tuple[list[tuple], list[str] | None]:
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
    rows = []
    for path in paths:
        split = "test" if "eval" in path.name else "train"
        table = parse_audioset_csv(path)
        for lineno, (ytid, start, end, labels) in enumerate(
            zip(
                table["youtube_id"],
                table["start_seconds"],
                table["end_seconds"],
                table["positive_labels"],
                strict=True,
            ),
            start=1,
        ):
            _check_id(ytid, f"{path} (data row {lineno})")
            mids = [m.strip() for m in str(labels).split(",") if m.strip()]
            if selected is not None:
                mids = [m for m in selected if m in mids]  # in the order asked for
                if not mids:
                    continue
            rows.append((ytid, float(start), float(end), mids, split))
    classes_mid = selected if selected is not None else order
    if classes_mid is None:
        classes_mid = sorted({m for r in rows for m in r[3]})
    rows = [(y, s, e, [names.get(m, m) for m in mids], sp) for y, s, e, mids, sp in rows]
    return rows, [names.get(m, m) for m in classes_mid]


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
) -> tuple[pd.DataFrame, list[str], dict]:
    """Manifest (one row per clip, first occurrence kept), class names and a summary."""
    labels = labels or []
    if fmt == "audioset":
        rows, classes = read_audioset(paths, class_labels, labels)
    elif fmt in ("vggsound", "table"):
        reader = read_vggsound if fmt == "vggsound" else read_table
        rows, classes = [], None
        for path in paths:
            part, classes = reader(path, labels)
            rows += part
    else:
        raise AnnotationError(f"--clip-list-format must be one of {FORMATS}, got {fmt!r}")
    if not rows:
        raise AnnotationError(f"{', '.join(map(str, paths))}: no clip (after the --labels filter)")
    if classes is None:
        classes = sorted({name for r in rows for name in r[3]})
    index = {name: i for i, name in enumerate(classes)}
    background = len(classes)
    records, seen, repeats = [], set(), 0
    for ytid, start, end, names, split in rows:
        clip_id = make_clip_id(ytid, start)
        if clip_id in seen:
            repeats += 1
            continue
        seen.add(clip_id)
        ids = [index[n] for n in names if n in index]
        label = ids[0] if ids else -1
        per_second = (
            segment_labels(0, CLIP_SECONDS, label, background)
            if ids
            else [background] * CLIP_SECONDS
        )
        records.append(
            {
                "sample": len(records),
                "youtube_id": ytid,
                "clip_id": clip_id,
                "category": classes[label] if ids else "",
                "label": label,
                "labels": ids,
                "start": 0,
                "end": CLIP_SECONDS,
                "split": split,
                "match_split": None,
                "clip_start": start,
                "clip_end": end,
                "segment_labels": per_second,
            }
        )
    manifest = pd.DataFrame(records, columns=MANIFEST_COLUMNS)
    manifest["label"] = manifest["label"].astype(np.int16)
    manifest["clip_start"] = manifest["clip_start"].astype("Float64")
    manifest["clip_end"] = manifest["clip_end"].astype("Float64")
    for col in ("split", "match_split"):
        manifest[col] = manifest[col].astype("string")
    per_video = manifest["youtube_id"].value_counts()
    summary = {
        "format": fmt,
        "rows": int(len(manifest)),
        "clips": int(len(manifest)),
        "unique_videos": int(per_video.size),
        "videos_with_several_clips": int((per_video > 1).sum()),
        "repeated_rows_dropped": repeats,
        "classes": len(classes) + 1,
        "unlabelled_clips": int((manifest["label"] < 0).sum()),
        "split_rows": {str(k): int(v) for k, v in manifest["split"].value_counts().items()},
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
