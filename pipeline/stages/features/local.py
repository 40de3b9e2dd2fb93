"""The local executor: decoder processes on this machine feed the backbones in this process
(:func:`pipeline.backbones.executor.run_groups`)."""

from __future__ import annotations

from collections.abc import Iterator

from pipeline.backbones.base import Backbone
from pipeline.backbones.executor import ClipWork, Outputs, run_groups
from pipeline.stages.features.core import FeaturesConfig, features_device


def device(cfg: FeaturesConfig) -> str:
    return str(features_device(cfg))


def run(
    cfg: FeaturesConfig,
    backbones: list[Backbone],
    groups: list[list[ClipWork]],
    device: str,
    stats: dict[str, float],
) -> Iterator[tuple[ClipWork, Outputs]]:
    """Yield ``(item, {network: primary outputs} | error)`` for every item of ``groups`` in order."""
    return run_groups(backbones, groups, device, cfg.decode_workers(device), stats)
