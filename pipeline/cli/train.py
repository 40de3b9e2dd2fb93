"""``avel train, train-crossmodal, evaluate-crossmodal`` (adapter still inside the library module; to be moved here)."""

from __future__ import annotations

import argparse

from models.training.localization import register as _register_0
from pipeline.cli.crossmodal import register as _register_1


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_0(subparsers)
    _register_1(subparsers)
