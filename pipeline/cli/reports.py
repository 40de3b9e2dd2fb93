"""``avel table`` (the paper's comparison tables) and ``avel attention-maps`` (a run's attention)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.cli.common import EXIT_FAILED, fail, positive_int, show_progress


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_table(subparsers)
    _register_attention_maps(subparsers)


def _register_table(subparsers: argparse._SubParsersAction) -> None:
    from models.reports.table import TABLES

    p = subparsers.add_parser(
        "table", help="train the paper's comparison configurations over seeds; Markdown + CSV table"
    )
    p.add_argument("table", choices=sorted(TABLES))
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument(
        "--run-dir",
        type=Path,
        default=Path("runs"),
        help="runs in RUN_DIR/NAME/seed-K, tables in RUN_DIR/tables/",
    )
    p.add_argument("--seeds", default="1,2,3", help="comma-separated seeds (default 1,2,3)")
    p.add_argument(
        "--epochs", type=positive_int, help="default: the trainer's (300 supervised, 250 weak)"
    )
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--device", default="auto")
    p.add_argument("--eval-every", type=positive_int, default=1, help="validate every N epochs")
    p.add_argument("--mil", choices=("mean", "max"), default="mean", help="weak table: MIL pooling")
    p.add_argument(
        "--no-background-videos",
        action="store_true",
        help="weak table: leave out the extra background-only videos",
    )
    p.add_argument("--only", help="comma-separated configuration keys (default: all; see --list)")
    p.add_argument("--list", action="store_true", help="list the table's configurations and exit")
    p.add_argument("--force", action="store_true", help="retrain seeds that already finished")
    p.set_defaults(func=_table)


def _table(args: argparse.Namespace) -> int:
    from models.reports.table import TABLES, TableConfig, run_table

    if args.list:
        for e in TABLES[args.table]:
            paper = f"  paper {e.paper}" if e.paper is not None else ""
            print(f"{e.key:24s} {e.model} {json.dumps(e.options) if e.options else ''}{paper}")
        return 0
    try:  # the options themselves: bad usage
        cfg = TableConfig(
            data_dir=str(args.data_dir),
            table=args.table,
            seeds=tuple(int(s) for s in str(args.seeds).split(",") if s.strip()),
            run_dir=str(args.run_dir),
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            device=args.device,
            eval_every=args.eval_every,
            mil=args.mil,
            background_videos=not args.no_background_videos,
            only=tuple(k.strip() for k in (args.only or "").split(",") if k.strip()),
            force=args.force,
        )
    except ValueError as exc:
        return fail(exc)
    summary = run_table(cfg, progress=show_progress())
    print(summary["markdown"])
    print(
        f"{summary['trained']} seed run(s) trained, {summary['reused']} reused; "
        f"skipped {summary['skipped'] or 'none'}, failed {summary['failed'] or 'none'}; "
        f"written {', '.join(summary['files'])}"
    )
    failed = [r for r in summary["rows"] if r["status"].startswith("failed")]
    if failed:
        first = failed[0]["status"].removeprefix("failed: ")
        return fail(
            f"table {args.table}: {len(failed)} configuration(s) failed; {failed[0]['key']}: {first}",
            EXIT_FAILED,
        )
    return 0


def _register_attention_maps(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "attention-maps", help="draw a run's 7x7 audio-guided attention over a clip"
    )
    p.add_argument(
        "run",
        nargs="?",
        type=Path,
        help="a run folder RUN_DIR/NAME/seed-K with an attention model",
    )
    p.add_argument("--run", dest="run_option", type=Path, help="same as RUN (for make RUN=...)")
    p.add_argument("--video", required=True, help="YouTube ID of the clip")
    p.add_argument("--data-dir", type=Path, help="data folder (default: the run's)")
    p.add_argument("--clip", type=Path, help="clip file (default DATA_DIR/clips/ID.mp4)")
    p.add_argument("--out", type=Path, help="PNG path (default RUN/attention-ID.png)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_attention_maps)


def _attention_maps(args: argparse.Namespace) -> int:
    from models.reports.attention_maps import run_attention_maps

    if args.run and args.run_option and Path(args.run) != Path(args.run_option):
        return fail(f"two runs given: {args.run} and --run {args.run_option}")
    run = args.run or args.run_option
    if run is None:
        return fail(
            "give the run: avel attention-maps RUN --video ID (make attention-maps RUN=...)"
        )
    path = run_attention_maps(run, args.video, args.data_dir, args.clip, args.out, args.device)
    print(f"attention maps for {args.video} -> {path}")
    return 0
