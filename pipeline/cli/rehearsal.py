"""``avel rehearsal``: flags -> ``RehearsalConfig`` -> ``run_rehearsal`` -> the report."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.cli.common import non_negative_int, positive_int, show_progress


def register(subparsers: argparse._SubParsersAction) -> None:
    from pipeline.rehearsal.run import RehearsalConfig

    d = RehearsalConfig()
    p = subparsers.add_parser(
        "rehearsal",
        help="AVE's structure served on loopback with faults, every stage killed and resumed, measured",
    )
    p.add_argument("--data-dir", type=Path, default=d.data_dir, help=f"default {d.data_dir}")
    p.add_argument("--run-dir", type=Path, default=d.run_dir, help=f"default {d.run_dir}")
    p.add_argument(
        "--clips",
        type=non_negative_int,
        default=d.clips,
        help=f"annotation rows to use, evenly spaced (default {d.clips}; 0 = every row)",
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
    from pipeline.rehearsal.run import RehearsalConfig, format_report, run_rehearsal

    cfg = RehearsalConfig(
        data_dir=args.data_dir,
        run_dir=args.run_dir,
        clips=args.clips or None,
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
