"""The ``avel`` command: one subcommand per stage, each a thin call of the stage's ``run_*``."""

from __future__ import annotations

import argparse
import importlib
import sys

#: Modules that register subcommands, in pipeline order. Each exposes ``register(subparsers)``.
COMMAND_MODULES = [
    "pipeline.cli.annotations",
    "pipeline.cli.download",
    "pipeline.cli.segments",
    "pipeline.cli.features",
    "pipeline.cli.release",
    "pipeline.cli.train",
    "pipeline.cli.evaluate",
    "pipeline.cli.zero_shot",
    "pipeline.cli.reports",
    "pipeline.cli.checkpoint",
    "pipeline.cli.bench",
    "pipeline.cli.demo",
    "pipeline.cli.rehearsal",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avel", description="Audio-visual event localization: AVE data, features and models."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
