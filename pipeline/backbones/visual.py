"""VGG-19 pool5 maps per second of clips, outside a feature store: :func:`extract_visual` runs the
:class:`~pipeline.backbones.vgg19_backbone.VGG19Backbone` over ``(clip_id, path, plan)`` items with
decoder processes (:mod:`pipeline.backbones.executor`), exactly as the features stage does."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from pipeline.backbones.executor import ClipWork, group_items, run_groups
from pipeline.backbones.frames import SIZE
from pipeline.backbones.precision import check_precision
from pipeline.backbones.vgg19 import VGG19Weights
from pipeline.backbones.vgg19_backbone import VGG19Backbone
from pipeline.core.manifest import CLIP_SECONDS

Item = tuple[str, str | os.PathLike, np.ndarray]


def _check_plan(plan: np.ndarray, clip_id: str) -> np.ndarray:
    plan = np.asarray(plan)
    if plan.ndim != 2 or plan.shape[0] != CLIP_SECONDS or plan.shape[1] < 1:
        raise ValueError(f"{clip_id}: frame plan must be ({CLIP_SECONDS}, F), got {plan.shape}")
    return plan.astype(np.int64)


def extract_visual(
    items: Sequence[Item],
    model: Any,
    weights: VGG19Weights,
    device: str = "cpu",
    precision: str = "fp32",
    batch_size: int = 64,
    num_workers: int = 2,
    size: int = SIZE,
    stats: dict[str, float] | None = None,
) -> Iterator[tuple[str, np.ndarray | str]]:
    """Yield ``(clip_id, pool5 maps (10, S/32, S/32, 512) float32 | error string)`` in input order.

    ``items``: ``(clip_id, clip_path, frame_indices (10, F))`` (one F for all); each second's F
    planned frames are averaged after pool5. ``model``/``weights`` come from
    :func:`~pipeline.backbones.vgg19.build_vgg19_pool5`. ``precision`` bf16/fp16 run under autocast
    where the device has them natively. ``num_workers`` decoder processes (0: in this process);
    ``size`` the frame side (224 for the release features). ``stats`` accumulates ``wait_s`` and
    ``total_s`` (decoding- or network-bound).
    """
    check_precision(device, precision)
    plans = [(str(c), p, _check_plan(f, str(c))) for c, p, f in items]
    if not plans:
        return
    per_second = plans[0][2].shape[1]
    backbone = VGG19Backbone.from_network(
        model, weights, precision, per_second, frame_size=size, batch_size=batch_size
    )
    work = [ClipWork(c, str(p), plans={backbone.network: f.reshape(-1)}) for c, p, f in plans]
    for item, out in run_groups(
        [backbone], group_items(work, [backbone]), device, num_workers, stats
    ):
        yield item.clip_id, out if isinstance(out, str) else out[backbone.network]["visual"]
