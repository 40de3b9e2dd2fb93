"""The one model registry: a name -> builder table that knows none of its members.

Each family module registers its builders with ``@register_network("name")`` (cross-modality
networks with ``task="crossmodal"``); ``models.networks`` imports every family, so
``models.build_model(name, **options)`` sees them all. ``model.config`` records name and options, so
a checkpoint can rebuild its network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from models.networks.blocks.mil import MIL_MODES

TASKS = ("localization", "crossmodal")


@dataclass(frozen=True)
class Entry:
    builder: Callable[..., nn.Module]
    task: str


MODELS: dict[str, Entry] = {}


def register_network(
    name: str, task: str = "localization"
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: add a builder under ``name`` (localization builders take ``num_classes``)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice")
        MODELS[name] = Entry(builder, task)
        return builder

    return wrap


def model_task(name: str) -> str:
    """``localization`` or ``crossmodal``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name].task


def model_names(task: str | None = None) -> list[str]:
    return sorted(n for n, e in MODELS.items() if task is None or e.task == task)


def build_model(name: str, num_classes: int = 29, **options: Any) -> nn.Module:
    """Build a registered network; ``model.config`` records name, classes (localization) and options."""
    task = model_task(name)
    if task == "crossmodal":
        model = MODELS[name].builder(**options)
        model.config = {"name": name, **options}
    else:
        mil = options.get("mil")
        if mil is not None and mil not in MIL_MODES:
            raise ValueError(f"mil must be one of {MIL_MODES} or None, got {mil!r}")
        model = MODELS[name].builder(num_classes=num_classes, **options)
        model.config = {"name": name, "num_classes": num_classes, **options}
    model.task = task
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
