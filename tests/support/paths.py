"""Where the checkout and the shared data beside it are."""

from __future__ import annotations

import os
from pathlib import Path

#: The repository root.
REPO = Path(__file__).resolve().parents[2]


def shared_dir() -> Path:
    """``../shared`` beside the checkout (or $AVEL_SHARED)."""
    return Path(os.environ.get("AVEL_SHARED", REPO.parent / "shared"))
