"""``avel import-release, export-release`` (adapter still inside the library module; to be moved here)."""

from __future__ import annotations

import argparse

from pipeline.stages.release.export_release import register as _register_1
from pipeline.stages.release.import_release import register as _register_0


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_0(subparsers)
    _register_1(subparsers)
