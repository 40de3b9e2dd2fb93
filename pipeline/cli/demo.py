"""``avel demo``: flags -> ``DemoConfig`` -> ``run_demo`` -> the results table."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.cli.common import positive_int
from pipeline.demo.run import DemoConfig, format_table, run_demo


def register(subparsers: argparse._SubParsersAction) -> None:
    d = DemoConfig()
    p = subparsers.add_parser(
        "demo", help="generate a small event set, serve it on loopback and run every stage on it"
    )
    p.add_argument("--data-dir", type=Path, default=d.data_dir, help=f"default {d.data_dir}")
    p.add_argument("--run-dir", type=Path, default=d.run_dir, help=f"default {d.run_dir}")
    p.add_argument(
        "--clips", type=positive_int, default=d.clips, help=f"clips to generate (default {d.clips})"
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--frames-per-segment",
        type=positive_int,
        default=d.frames_per_segment,
        help=f"frames per 1 s segment for the visual features (default {d.frames_per_segment})",
    )
    p.add_argument(
        "--epochs",
        type=positive_int,
        default=d.epochs,
        help=f"training epochs (default {d.epochs})",
    )
    p.add_argument("--force", action="store_true", help="regenerate the set and rerun every step")
    p.add_argument("--quiet", action="store_true", help="do not echo each stage's output")
    p.add_argument(
        "--offline",
        action="store_true",
        help="do not try to fetch the pretrained VGGish / VGG-19 weights (RANDOM unless cached)",
    )
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    cfg = DemoConfig(
        data_dir=args.data_dir,
        run_dir=args.run_dir,
        clips=args.clips,
        seed=args.seed,
        frames_per_segment=args.frames_per_segment,
        epochs=args.epochs,
        force=args.force,
        offline=args.offline,
        echo=not args.quiet,
    )
    summary = run_demo(cfg)
    print(format_table(summary))
    print(f"\n-> {cfg.run_dir / 'demo_summary.json'}")
    return 1 if summary["failed"] else 0
