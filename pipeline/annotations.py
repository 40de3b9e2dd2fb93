"""Annotations stage: AVE annotation file + split lists (+ AudioSet CSVs) -> ``manifest.parquet``.

The manifest is the single source of truth for every later stage: one row per annotation row
(a sample), with its video, class, event span, splits, AudioSet clip offset and per-second labels.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.io import write_json, write_parquet
from pipeline.sources import SourceError, fetch, is_url, sha256_file

SOURCES_FILE = Path(__file__).resolve().parents[1] / "annotations" / "sources.json"
YOUTUBE_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")
CLIP_SECONDS = 10
SPLITS = ("train", "val", "test")
MANIFEST_VERSION = 2  # 2: clip_id column (the key of every later stage)

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
BACKGROUND = "background"


class AnnotationError(ValueError):
    """An input file is malformed; the message names the file and line."""


def load_sources() -> dict:
    """Public URLs and checksums of the annotation inputs (``annotations/sources.json``)."""
    return json.loads(SOURCES_FILE.read_text())


# --------------------------------------------------------------------------- annotation file


def parse_annotations(path: str | Path) -> pd.DataFrame:
    """Parse ``Category&YouTubeID&Quality&StartTime&EndTime`` lines, validating every field."""
    path = Path(path)
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                raise AnnotationError(
                    f"{path}:{lineno}: empty line; every line must be an annotation"
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


def segment_labels(start: int, end: int, label: int, background: int) -> list[int]:
    """Per-second labels: the class where start <= t < end, else background."""
    return [label if start <= t < end else background for t in range(CLIP_SECONDS)]


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
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
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


def parse_audioset_csv(path: str | Path) -> pd.DataFrame:
    """Parse an AudioSet segment CSV (``# YTID, start_seconds, end_seconds, positive_labels``)."""
    path = Path(path)
    records = []
    with open(path, encoding="utf-8", newline="") as f:
        data_lines = ((n, line) for n, line in enumerate(f, start=1) if not line.startswith("#"))
        numbered = list(data_lines)
    reader = csv.reader((line for _, line in numbered), skipinitialspace=True, quotechar='"')
    for (lineno, _), fields in zip(numbered, reader, strict=True):
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue
        if len(fields) < 3:
            raise AnnotationError(
                f"{path}:{lineno}: expected 'YTID, start_seconds, end_seconds, positive_labels', "
                f"found {len(fields)} field(s)"
            )
        ytid = fields[0].strip()
        try:
            start, end = float(fields[1]), float(fields[2])
        except ValueError:
            raise AnnotationError(
                f"{path}:{lineno}: start/end are not numbers: {fields[1:3]!r}"
            ) from None
        labels = fields[3].strip() if len(fields) > 3 else ""
        records.append((ytid, start, end, labels))
    return pd.DataFrame(
        records, columns=["youtube_id", "start_seconds", "end_seconds", "positive_labels"]
    )


# --------------------------------------------------------------------------- the stage


@dataclass
class AnnotationsConfig:
    data_dir: Path = Path("data")
    ave_annotations: str | None = None  # path or URL; default: the public file
    ave_splits: str | None = None  # folder or URL base; default: the public folder
    audioset_csv: list[str] = field(
        default_factory=lambda: ["audioset"]
    )  # "audioset" = public CSVs
    force: bool = False
    clip_list: list[str] = field(default_factory=list)  # generic clip list(s) instead of AVE
    clip_list_format: str = "table"  # audioset, vggsound or table (pipeline.clip_lists)
    labels: list[str] = field(default_factory=list)  # keep only these classes (MIDs or names)
    class_labels: str | None = None  # AudioSet class_labels_indices.csv (names <-> MIDs)


def _resolve_inputs(cfg: AnnotationsConfig) -> tuple[Path, dict[str, Path], list[Path], list[str]]:
    sources = load_sources()
    ave = sources["ave"]
    cache = cfg.data_dir / "sources"
    notes: list[str] = []
    ann_location = cfg.ave_annotations or ave["base_url"] + "Annotations.txt"
    ann_path = fetch(ann_location, cache, sha256=ave["files"]["Annotations.txt"])
    split_paths: dict[str, Path] = {}
    base = cfg.ave_splits or ave["base_url"]
    for name in [f"{s}_order" for s in SPLITS] + [f"{s}_order_match" for s in SPLITS]:
        if is_url(base):
            url = base.rstrip("/") + f"/{name}.h5"
            try:
                split_paths[name] = fetch(url, cache, sha256=ave["files"][f"{name}.h5"])
            except SourceError:
                if name.endswith("_match"):
                    continue
                raise
            continue
        folder = Path(base)
        if not folder.is_dir():
            raise SourceError(
                f"{folder}: split folder not found (expected {{train,val,test}}_order[.h5|.txt])"
            )
        for ext in (".h5", ".txt"):
            candidate = folder / f"{name}{ext}"
            if candidate.is_file():
                split_paths[name] = candidate
                break
        else:
            if not name.endswith("_match"):
                raise SourceError(f"{folder}: no {name}.h5 or {name}.txt")
    if not any(n.endswith("_match") for n in split_paths):
        notes.append("no cross-modality split lists (*_order_match) found: match_split is null")
    csv_paths: list[Path] = []
    for location in cfg.audioset_csv:
        if location in ("", "none"):
            continue
        locations = (
            [sources["audioset"]["base_url"] + f for f in sources["audioset"]["files"]]
            if location == "audioset"
            else [location]
        )
        for loc in locations:
            try:
                csv_paths.append(fetch(loc, cache))
            except SourceError as exc:
                if location != "audioset":
                    raise
                notes.append(
                    f"WARNING: {exc} Clip offsets from it are unknown; pass AUDIOSET_CSV=<local paths> "
                    "or AUDIOSET_CSV=none."
                )
    return ann_path, split_paths, csv_paths, notes


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
    return manifest, names, _summarise(manifest, ann, names, bool(csv_paths))


def _summarise(manifest: pd.DataFrame, ann: pd.DataFrame, names: list[str], have_csv: bool) -> dict:
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


def manifest_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / "manifest.parquet"


def load_manifest(data_dir: str | Path) -> pd.DataFrame:
    """Read ``DATA_DIR/manifest.parquet``, with a clear error when the stage has not run."""
    path = manifest_path(data_dir)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: run `make annotations DATA_DIR={data_dir}` first"
        )
    return pd.read_parquet(path)


def clip_ids(manifest: pd.DataFrame) -> pd.Series:
    """The key of every later stage (clip files, ledger, segments, stores) per manifest row.

    ``clip_id`` (= ``youtube_id`` for AVE, ``<youtube_id>_<start_ms>`` for generic clip lists);
    manifests written before that column existed fall back to ``youtube_id``.
    """
    column = "clip_id" if "clip_id" in manifest.columns else "youtube_id"
    return manifest[column].astype(str)


def load_classes(data_dir: str | Path) -> list[str]:
    return pd.read_parquet(Path(data_dir) / "classes.parquet")["name"].tolist()


def run_annotations(cfg: AnnotationsConfig) -> dict:
    """Build (or confirm up to date) the manifest; return the summary."""
    cfg.data_dir = Path(cfg.data_dir)
    if cfg.clip_list:
        return run_clip_list(cfg)
    ann_path, split_paths, csv_paths, notes = _resolve_inputs(cfg)
    inputs = {"annotations": str(ann_path), **{k: str(v) for k, v in split_paths.items()}}
    inputs.update({f"audioset_csv_{i}": str(p) for i, p in enumerate(csv_paths)})
    checksums = {k: sha256_file(v) for k, v in inputs.items()}
    meta_path = cfg.data_dir / "manifest.json"
    if not cfg.force and manifest_path(cfg.data_dir).is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("sha256") == checksums and meta.get("version") == MANIFEST_VERSION:
            summary = dict(meta["summary"], skipped=True, notes=notes)
            return summary
    manifest, names, summary = build_manifest(ann_path, split_paths, csv_paths)
    published = load_sources()["ave"]["files"]["Annotations.txt"]
    summary["annotations_sha256_matches_published"] = checksums["annotations"] == published
    classes = pd.DataFrame({"index": range(len(names) + 1), "name": names + [BACKGROUND]})
    write_parquet(classes, cfg.data_dir / "classes.parquet")
    write_parquet(manifest, manifest_path(cfg.data_dir))
    write_json(
        {"version": MANIFEST_VERSION, "inputs": inputs, "sha256": checksums, "summary": summary},
        meta_path,
    )
    return dict(summary, skipped=False, notes=notes)


def run_clip_list(cfg: AnnotationsConfig) -> dict:
    """Manifest from a generic clip list (``pipeline.clip_lists``); skipped when inputs are unchanged."""
    from pipeline.clip_lists import build_clip_manifest

    cache = cfg.data_dir / "sources"
    paths = [fetch(loc, cache) for loc in cfg.clip_list]
    class_labels = fetch(cfg.class_labels, cache) if cfg.class_labels else None
    inputs = {f"clip_list_{i}": str(p) for i, p in enumerate(paths)}
    if class_labels is not None:
        inputs["class_labels"] = str(class_labels)
    checksums = {k: sha256_file(v) for k, v in inputs.items()}
    options = {"format": cfg.clip_list_format, "labels": list(cfg.labels)}
    meta_path = cfg.data_dir / "manifest.json"
    if not cfg.force and manifest_path(cfg.data_dir).is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        same = meta.get("sha256") == checksums and meta.get("options") == options
        if same and meta.get("version") == MANIFEST_VERSION:
            return dict(meta["summary"], skipped=True, notes=[])
    manifest, names, summary = build_clip_manifest(
        paths, cfg.clip_list_format, list(cfg.labels), class_labels
    )
    classes = pd.DataFrame({"index": range(len(names) + 1), "name": names + [BACKGROUND]})
    write_parquet(classes, cfg.data_dir / "classes.parquet")
    write_parquet(manifest, manifest_path(cfg.data_dir))
    write_json(
        {
            "version": MANIFEST_VERSION,
            "inputs": inputs,
            "sha256": checksums,
            "options": options,
            "summary": summary,
        },
        meta_path,
    )
    return dict(summary, skipped=False, notes=[])


def format_summary(summary: dict, data_dir: Path) -> str:
    if "format" in summary:  # a generic clip list
        from pipeline.clip_lists import format_clip_summary

        head = (
            "up to date (inputs unchanged): nothing rebuilt"
            if summary.get("skipped")
            else "manifest built"
        )
        return "\n".join([head, *format_clip_summary(summary), f"  -> {manifest_path(data_dir)}"])
    lines = [
        "up to date (inputs unchanged): nothing rebuilt"
        if summary.get("skipped")
        else "manifest built",
        f"  rows: {summary['rows']}   unique videos: {summary['unique_videos']}   "
        f"classes: {summary['classes']} (incl. background)",
        "  splits: " + ", ".join(f"{k} {v}" for k, v in summary["split_rows"].items()),
        "  cross-modality splits: "
        + ", ".join(f"{k} {v}" for k, v in summary["match_split_rows"].items()),
        f"  duplicate YouTube IDs: {summary['duplicate_ids']} (a sample is a row; videos are shared)",
        f"  empty-event rows (all background): {summary['empty_event_rows']}",
        "  event length (s): "
        + "  ".join(f"{k}:{v}" for k, v in summary["event_length_histogram"].items()),
    ]
    if summary["audioset_csv_used"]:
        lines.append(
            f"  AudioSet coverage: {summary['videos_with_offset']} videos with a clip offset, "
            f"{summary['videos_without_offset']} absent from the CSVs (they cannot be downloaded)"
        )
    else:
        lines.append(
            "  AudioSet CSVs: none given; clip offsets unknown (the download stage needs them)"
        )
    if not summary.get("annotations_sha256_matches_published", True):
        lines.append("  note: the annotation file differs from the published AVE file (custom set)")
    lines += [f"  {n}" for n in summary.get("notes", [])]
    lines.append(f"  -> {manifest_path(data_dir)}")
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "annotations", help="build DATA_DIR/manifest.parquet from the AVE annotations"
    )
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument(
        "--ave-annotations", help="Annotations.txt path or URL (default: the public file)"
    )
    p.add_argument(
        "--ave-splits", help="folder or URL base with {train,val,test}_order[_match].h5/.txt"
    )
    p.add_argument(
        "--audioset-csv",
        default="audioset",
        help="comma-separated AudioSet segment CSV paths/URLs; 'audioset' = the public CSVs, 'none' = skip",
    )
    p.add_argument(
        "--force", action="store_true", help="rebuild even when the inputs are unchanged"
    )
    p.add_argument(
        "--clip-list",
        help="comma-separated generic clip list(s) (paths/URLs) instead of AVE: see --clip-list-format",
    )
    p.add_argument(
        "--clip-list-format",
        default="table",
        choices=["audioset", "vggsound", "table"],
        help="audioset: segment CSVs; vggsound: youtube_id,start_seconds,label,split (no header); "
        "table: CSV/Parquet with youtube_id,start,end[,label][,split] (default)",
    )
    p.add_argument(
        "--labels", help="keep only these classes: ';'-separated AudioSet MIDs or display names"
    )
    p.add_argument("--class-labels", help="AudioSet class_labels_indices.csv (path/URL)")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from pipeline.clip_lists import parse_label_spec

    cfg = AnnotationsConfig(
        data_dir=args.data_dir,
        ave_annotations=args.ave_annotations,
        ave_splits=args.ave_splits,
        audioset_csv=[s.strip() for s in args.audioset_csv.split(",")],
        force=args.force,
        clip_list=[s.strip() for s in (args.clip_list or "").split(",") if s.strip()],
        clip_list_format=args.clip_list_format,
        labels=parse_label_spec(args.labels),
        class_labels=args.class_labels,
    )
    try:
        summary = run_annotations(cfg)
    except (AnnotationError, SourceError) as exc:
        print(f"error: {exc}")
        return 2
    print(format_summary(summary, cfg.data_dir))
    return 0
