"""Networks, training and evaluation for audio-visual event localization.

``models.build_model(name, num_classes=29, **options)`` builds a registered network (see
``models.registry``); importing this package stays light (torch is imported on first use).
"""

from __future__ import annotations

from typing import Any


def build_model(name: str, num_classes: int = 29, **options: Any):
    from models.registry import build_model as _build

    return _build(name, num_classes=num_classes, **options)


def model_names() -> list[str]:
    from models.registry import MODELS

    return sorted(MODELS)
