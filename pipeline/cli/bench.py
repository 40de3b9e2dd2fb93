"""``avel bench``: every stage benchmark against its naive baseline; the table to stdout."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="benchmark every stage against its naive baseline")
    p.add_argument(
        "--data-dir", type=Path, default=Path("data"), help="work files go to DATA_DIR/bench"
    )
    p.add_argument("--out-dir", type=Path, default=Path("bench"))
    p.add_argument("--device", default="auto", help="auto = CPU, plus CUDA when present")
    p.add_argument(
        "--quick", action="store_true", help="smaller sizes (a smoke run of the benchmark)"
    )
    p.set_defaults(func=bench_main)


def bench_main(args: argparse.Namespace) -> int:
    from pipeline.bench.run import format_table, run_bench
    from pipeline.core.io import check_writable
    from pipeline.core.layout import DataLayout

    for folder in (DataLayout(args.data_dir).bench, args.out_dir):  # before minutes of work
        check_writable(folder)
    results = run_bench(args.data_dir, args.out_dir, args.device, args.quick)
    print(format_table(results))
    print(f"-> {args.out_dir / 'results.json'}, {args.out_dir / 'results.md'}")
    return 0
