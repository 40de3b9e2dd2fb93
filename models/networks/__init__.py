"""Every network, by name: ``build_model(name, num_classes=29, **options)``.

Importing this package imports each family module once, and each registers its builders in
``models.networks.registry``; the registry itself knows none of them.
"""

from models.networks import (  # noqa: F401  (each family registers itself)
    avdln,
    avelnet,
    cmbs,
    dcca,
    edtcn,
    fusion_zoo,
    localization,
    psp,
    supplementary,
    zero_shot,
)
from models.networks.registry import build_model, count_parameters, model_names, model_task

__all__ = ["build_model", "count_parameters", "model_names", "model_task"]
