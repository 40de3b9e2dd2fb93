"""The ``avel`` command: one subcommand per stage, each a thin call of the stage's ``run_*``.

Global options come before the command: ``--version``, ``--quiet`` (no progress bars, warnings and
errors only; also ``AVEL_QUIET=1``), ``--debug`` (tracebacks; also ``AVEL_DEBUG=1``). Every
command's failure goes through :func:`pipeline.cli.common.report`: one line, exit 1 (2 for bad usage).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib.metadata import PackageNotFoundError, version

from pipeline.cli.common import configure, report

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


def _version() -> str:
    try:
        return f"avel {version('avel')}"
    except PackageNotFoundError:
        return "avel (not installed: run from a checkout)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avel",
        description="Audio-visual event localization: AVE data, features and models.",
        epilog="Exit codes: 0 done, 1 the run failed, 2 bad usage (avel download: 0/2/3/4/5, "
        "see its --help). Environment: AVEL_QUIET=1 is --quiet, AVEL_DEBUG=1 is --debug.",
    )
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument(
        "--quiet",
        "-q",
        dest="global_quiet",
        action="store_true",
        help="no progress bars, only warnings and errors (bars are off anyway off a terminal)",
    )
    parser.add_argument(
        "--debug",
        dest="global_debug",
        action="store_true",
        help="show the traceback of an error (and debug messages)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure(
        quiet=args.global_quiet or bool(getattr(args, "quiet", False)), debug=args.global_debug
    )
    try:
        return int(args.func(args) or 0)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - the one place errors are reported
        return report(exc)


if __name__ == "__main__":
    sys.exit(main())
