"""``avel segments``: flags -> ``SegmentsConfig`` -> ``run_segments`` -> summary."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pipeline.cli.common import non_negative_int, positive_int, show_progress
from pipeline.stages.segment_audio import AUDIO_RECIPES
from pipeline.stages.segments import SegmentsConfig, format_summary, run_segments


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "segments",
        help="frame plan, audio spans and log-mel patches per clip -> DATA_DIR/segments.parquet",
    )
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument(
        "--frames-per-segment",
        type=positive_int,
        default=16,
        help="frames per 1 s segment (16 = release)",
    )
    p.add_argument(
        "--audio-recipe",
        choices=AUDIO_RECIPES,
        default=SegmentsConfig.audio_recipe,
        help="16 kHz audio of the patches: release (the AVE release: int16 PCM, each second "
        "resampled alone with resampy) or soxr (the whole clip resampled with soxr); "
        "a change redoes the audio of clips made with the other",
    )
    p.add_argument(
        "--workers", type=positive_int, default=os.cpu_count() or 1, help="parallel clip processes"
    )
    p.add_argument(
        "--limit",
        type=non_negative_int,
        default=None,
        help="process at most N pending clips (partial runs)",
    )
    p.add_argument(
        "--force", action="store_true", help="redo clips that already have a current receipt"
    )
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    cfg = SegmentsConfig(
        data_dir=args.data_dir,
        frames_per_segment=args.frames_per_segment,
        audio_recipe=args.audio_recipe,
        workers=args.workers,
        force=args.force,
        limit=args.limit,
        progress=show_progress(),
    )
    summary = run_segments(cfg)
    print(format_summary(summary))
    return 0
