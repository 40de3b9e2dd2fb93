"""Networks, training and evaluation for audio-visual event localization.

``models.build_model(name, num_classes=29, **options)`` builds a registered network (see
``models.registry``); importing this package stays light (torch is imported on first use).
"""

from __future__ import annotations

from typing import Any


def build_model(name: str, num_classes: int = 29, **options: Any):
    """A localization network (``a``, ``v``, ..., ``dmrn``) or a cross-modality one (``avdln``, ``dcca``)."""
    from models.crossmodal_registry import CROSSMODAL_MODELS, build_crossmodal

    if name in CROSSMODAL_MODELS:
        return build_crossmodal(name, **options)
    from models.registry import build_model as _build

    return _build(name, num_classes=num_classes, **options)


def model_names() -> list[str]:
    from models.crossmodal_registry import CROSSMODAL_MODELS
    from models.registry import MODELS

    return sorted(MODELS) + sorted(CROSSMODAL_MODELS)
