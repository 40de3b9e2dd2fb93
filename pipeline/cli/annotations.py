"""``avel annotations``: flags -> ``AnnotationsConfig`` -> ``run_annotations`` -> summary."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.cli.common import str_list
from pipeline.stages.annotations.clip_lists import parse_label_spec
from pipeline.stages.annotations.stage import AnnotationsConfig, format_summary, run_annotations


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
    cfg = AnnotationsConfig(
        data_dir=args.data_dir,
        ave_annotations=args.ave_annotations,
        ave_splits=args.ave_splits,
        audioset_csv=str_list(args.audioset_csv),
        force=args.force,
        clip_list=str_list(args.clip_list),
        clip_list_format=args.clip_list_format,
        labels=parse_label_spec(args.labels),
        class_labels=args.class_labels,
    )
    summary = run_annotations(cfg)
    print(format_summary(summary, cfg.data_dir))
    return 0
