"""Cross-modality networks by name (to be folded into ``models.build_model``)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from models.avdln import build_avdln
from models.dcca import build_dcca

CROSSMODAL_MODELS: dict[str, Callable[..., nn.Module]] = {"avdln": build_avdln, "dcca": build_dcca}


def build_crossmodal(name: str, **options) -> nn.Module:
    """Build a cross-modality network: ``avdln`` (AVE paper) or ``dcca`` (Andrew et al. 2013)."""
    try:
        builder = CROSSMODAL_MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown cross-modal model {name!r}; choose one of {sorted(CROSSMODAL_MODELS)}"
        ) from None
    return builder(**options)
