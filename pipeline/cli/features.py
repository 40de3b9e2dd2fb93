"""``avel convert-vggish, features`` (adapter still inside the library module; to be moved here)."""

from __future__ import annotations

import argparse

from pipeline.stages.convert_vggish import register as _register_0
from pipeline.stages.features.stage import register as _register_1


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_0(subparsers)
    _register_1(subparsers)
