"""The ``avel`` command: one subcommand per stage, each a thin call of the stage's ``run_*``."""

from __future__ import annotations

import argparse
import importlib
import sys

#: Modules that register subcommands, in pipeline order. Each exposes ``register(subparsers)``.
COMMAND_MODULES = [
    "pipeline.cli.annotations",
    "pipeline.stages.download",
    "pipeline.stages.segments",
    "pipeline.stages.convert_vggish",
    "pipeline.stages.features.stage",
    "pipeline.stages.release.import_release",
    "pipeline.stages.release.export_release",
    "pipeline.cli.crossmodal",
    "models.training.localization",
    "models.reports.table",
    "models.evaluation.evaluate_run",
    "models.reports.attention_maps",
    "models.release.import_checkpoint",
    "pipeline.bench.run",
    "pipeline.demo.run",
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
