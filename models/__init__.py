"""Networks, data, training, evaluation and reports for audio-visual event localization.

``models.build_model(name, num_classes=29, **options)`` builds any registered network (localization
and cross-modality alike); importing this package stays light (torch is imported on first use).
"""

from __future__ import annotations

from typing import Any


def build_model(name: str, num_classes: int = 29, **options: Any):
    """A localization network (``a``, ``v``, ..., ``dmrn``) or a cross-modality one (``avdln``, ``dcca``)."""
    from models.networks import build_model as build

    return build(name, num_classes=num_classes, **options)


def model_names(task: str | None = None) -> list[str]:
    from models.networks import model_names as names

    return names(task)
