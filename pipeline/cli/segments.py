"""``avel segments`` (adapter still inside the library module; to be moved here)."""

from __future__ import annotations

import argparse

from pipeline.stages.segments import register as _register_0


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_0(subparsers)
