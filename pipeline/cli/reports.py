"""``avel table, attention-maps`` (adapter still inside the library module; to be moved here)."""

from __future__ import annotations

import argparse

from models.reports.attention_maps import register as _register_1
from models.reports.table import register as _register_0


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_0(subparsers)
    _register_1(subparsers)
