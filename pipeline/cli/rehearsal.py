"""``avel rehearsal``: flags -> ``RehearsalConfig`` -> ``run_rehearsal`` -> the report."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.cli.common import non_negative_int, positive_int, show_progress

SCALES = ("ave", "audioset")


def register(subparsers: argparse._SubParsersAction) -> None:
    from pipeline.rehearsal.run import RehearsalConfig
    from pipeline.rehearsal.scale import ScaleConfig

    d, s = RehearsalConfig(), ScaleConfig()
    p = subparsers.add_parser(
        "rehearsal",
        help="AVE's structure served on loopback with faults, every stage killed and resumed, "
        "measured; --scale audioset: every metadata path at AudioSet's size",
    )
    p.add_argument(
        "--scale",
        choices=SCALES,
        default="ave",
        help="ave: the AVE-size rehearsal (default); audioset: AudioSet-size lists generated "
        "offline through every metadata path without media (time and peak memory per path)",
    )
    p.add_argument(
        "--data-dir", type=Path, help=f"default {d.data_dir} (--scale audioset: {s.data_dir})"
    )
    p.add_argument(
        "--run-dir", type=Path, help=f"default {d.run_dir} (--scale audioset: {s.run_dir})"
    )
    p.add_argument(
        "--clips",
        type=non_negative_int,
        help=f"annotation rows to use, evenly spaced (default {d.clips}; 0 = every row); "
        f"--scale audioset: rows of the generated lists (default {s.rows:,})",
    )
    p.add_argument(
        "--ave-annotations",
        type=Path,
        help="the real AVE Annotations.txt (default: a generated AVE-like list)",
    )
    p.add_argument(
        "--ave-splits",
        type=Path,
        help="folder of the AVE split lists (text or *_order*.h5; default: splits/ next to it)",
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--workers", type=positive_int, default=d.workers, help="download workers")
    p.add_argument("--epochs", type=positive_int, default=d.epochs, help="training epochs on audio")
    p.add_argument(
        "--visual-sample",
        type=positive_int,
        default=d.visual_sample,
        help="clips for the visual timing",
    )
    p.add_argument(
        "--no-kill", action="store_true", help="run every stage once, without the kill-and-resume"
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if args.scale == "audioset":
        return _scale(args)
    from pipeline.rehearsal.run import RehearsalConfig, format_report, run_rehearsal

    d = RehearsalConfig()
    cfg = RehearsalConfig(
        data_dir=args.data_dir or d.data_dir,
        run_dir=args.run_dir or d.run_dir,
        clips=(d.clips if args.clips is None else args.clips) or None,
        ave_annotations=args.ave_annotations,
        ave_splits=args.ave_splits,
        seed=args.seed,
        workers=args.workers,
        epochs=args.epochs,
        visual_sample=args.visual_sample,
        kill=not args.no_kill,
        progress=show_progress() and not args.quiet,
    )
    report = run_rehearsal(cfg)
    print(format_report(report))
    print(f"-> {cfg.run_dir / 'report.json'}, {cfg.run_dir / 'report.md'}")
    return 0 if report["ok"] else 1


def _scale(args: argparse.Namespace) -> int:
    from pipeline.rehearsal.scale import ScaleConfig, format_scale_report, run_scale

    d = ScaleConfig()
    cfg = ScaleConfig(
        data_dir=args.data_dir or d.data_dir,
        run_dir=args.run_dir or d.run_dir,
        rows=args.clips or d.rows,
        seed=args.seed,
        workers=args.workers,
        progress=show_progress() and not args.quiet,
    )
    report = run_scale(cfg)
    print(format_scale_report(report))
    print(f"-> {cfg.run_dir / 'report.json'}, {cfg.run_dir / 'report.md'}")
    return 0
