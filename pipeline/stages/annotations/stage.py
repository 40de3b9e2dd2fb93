"""Annotations stage: AVE annotation file + split lists (+ AudioSet CSVs), or a generic clip list
-> ``DATA_DIR/manifest.parquet`` and ``classes.parquet`` (schema: ``pipeline.core.manifest``).

Two readers write the one manifest schema: ``ave`` (the published AVE files) and ``clip_lists``
(AudioSet segment CSVs, VGGSound, a plain table). Inputs are fetched (or read locally) with their
sha256 checked; a second run with the same inputs does nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.core.fetch import SourceError, fetch, is_url, sha256_file
from pipeline.core.io import write_json, write_parquet
from pipeline.core.layout import DataLayout
from pipeline.core.manifest import (
    BACKGROUND,
    MANIFEST_VERSION,
    SPLITS,
    AnnotationError,
    manifest_path,
)
from pipeline.stages.annotations.ave import (
    build_manifest,
    load_sources,
)
from pipeline.stages.annotations.clip_lists import build_clip_manifest, format_clip_summary

__all__ = ["AnnotationError", "AnnotationsConfig", "SourceError", "run_annotations"]


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
    clip_list_format: str = (
        "table"  # audioset, vggsound or table (pipeline.stages.annotations.clip_lists)
    )
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


def _read_meta(path: Path) -> dict | None:
    """The record of the last build; None when absent or unreadable (the manifest is rebuilt)."""
    try:
        meta = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def run_annotations(cfg: AnnotationsConfig) -> dict:
    """Build (or confirm up to date) the manifest; return the summary."""
    cfg.data_dir = Path(cfg.data_dir)
    if cfg.clip_list:
        return run_clip_list(cfg)
    ann_path, split_paths, csv_paths, notes = _resolve_inputs(cfg)
    inputs = {"annotations": str(ann_path), **{k: str(v) for k, v in split_paths.items()}}
    inputs.update({f"audioset_csv_{i}": str(p) for i, p in enumerate(csv_paths)})
    checksums = {k: sha256_file(v) for k, v in inputs.items()}
    meta_path = DataLayout(cfg.data_dir).manifest_meta
    meta = None if cfg.force or not manifest_path(cfg.data_dir).is_file() else _read_meta(meta_path)
    if meta is not None:
        if meta.get("sha256") == checksums and meta.get("version") == MANIFEST_VERSION:
            summary = dict(meta["summary"], skipped=True, notes=notes)
            return summary
    manifest, names, summary = build_manifest(ann_path, split_paths, csv_paths)
    published = load_sources()["ave"]["files"]["Annotations.txt"]
    summary["annotations_sha256_matches_published"] = checksums["annotations"] == published
    classes = pd.DataFrame({"index": range(len(names) + 1), "name": names + [BACKGROUND]})
    write_parquet(classes, DataLayout(cfg.data_dir).classes)
    write_parquet(manifest, manifest_path(cfg.data_dir))
    write_json(
        {"version": MANIFEST_VERSION, "inputs": inputs, "sha256": checksums, "summary": summary},
        meta_path,
    )
    return dict(summary, skipped=False, notes=notes)


def run_clip_list(cfg: AnnotationsConfig) -> dict:
    """Manifest from a generic clip list (``pipeline.stages.annotations.clip_lists``); skipped when inputs are unchanged."""

    cache = cfg.data_dir / "sources"
    paths = [fetch(loc, cache) for loc in cfg.clip_list]
    class_labels = fetch(cfg.class_labels, cache) if cfg.class_labels else None
    inputs = {f"clip_list_{i}": str(p) for i, p in enumerate(paths)}
    if class_labels is not None:
        inputs["class_labels"] = str(class_labels)
    checksums = {k: sha256_file(v) for k, v in inputs.items()}
    options = {"format": cfg.clip_list_format, "labels": list(cfg.labels)}
    meta_path = DataLayout(cfg.data_dir).manifest_meta
    meta = None if cfg.force or not manifest_path(cfg.data_dir).is_file() else _read_meta(meta_path)
    if meta is not None:
        same = meta.get("sha256") == checksums and meta.get("options") == options
        if same and meta.get("version") == MANIFEST_VERSION:
            return dict(meta["summary"], skipped=True, notes=[])
    manifest, names, summary = build_clip_manifest(
        paths, cfg.clip_list_format, list(cfg.labels), class_labels
    )
    classes = pd.DataFrame({"index": range(len(names) + 1), "name": names + [BACKGROUND]})
    write_parquet(classes, DataLayout(cfg.data_dir).classes)
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
