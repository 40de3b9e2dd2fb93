"""The local executor: decoder processes on this machine feed the backbones in this process.

Clips are decoded in DataLoader worker processes (each clip once, for every backbone that needs
frames: :func:`pipeline.backbones.base.decode_inputs`), handed over through shared memory (pinned
on CUDA), gathered into batches of whole clips and run through every backbone. A clip that fails to
decode comes back as its error. Nothing here knows a backbone by name.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from pipeline.backbones.base import Backbone, decode_inputs
from pipeline.stages.features.core import FeaturesConfig, features_device


def device(cfg: FeaturesConfig) -> str:
    return str(features_device(cfg))


class ClipInputs:
    """Map-style dataset: work item i -> its decoded inputs (numpy arrays), or its error."""

    def __init__(self, items: Sequence[Any], sizes: dict[str, tuple[int, int]]) -> None:
        self.items, self.sizes = items, sizes

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.items[i]
        requests = {n: (plan, self.sizes[n]) for n, plan in item.plans.items()}
        try:
            inputs = decode_inputs(item.path, item.patches, requests)
        except Exception as exc:  # noqa: BLE001 - one bad clip is recorded, never fatal
            return {"i": i, "error": f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)}
        return {"i": i, **inputs}


def run(
    cfg: FeaturesConfig,
    backbones: list[Backbone],
    groups: list[list[Any]],
    device: str,
    stats: dict[str, float],
) -> Iterator[tuple[Any, dict[str, dict[str, np.ndarray]] | str]]:
    """Yield ``(item, {network: primary outputs} | error)`` for every item of ``groups`` in order;
    the clips of one group go through each backbone in one call."""
    import torch

    for b in backbones:
        b.load(device)
    items = [item for group in groups for item in group]
    sizes = {b.network: b.frame_size() for b in backbones if b.inputs == "frames"}
    cuda = str(device).startswith("cuda")
    workers = min(cfg.decode_workers(device) if sizes else 0, len(items))
    loader = torch.utils.data.DataLoader(
        ClipInputs(items, sizes),
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        pin_memory=cuda,
        prefetch_factor=2 if workers > 0 else None,
    )
    stats.setdefault("wait_s", 0.0)
    stats.setdefault("total_s", 0.0)
    began = time.perf_counter()
    samples = iter(loader)
    for group in groups:
        buffer = []
        for _ in group:
            t0 = time.perf_counter()
            sample = next(samples)
            stats["wait_s"] += time.perf_counter() - t0
            buffer.append((int(sample.pop("i")), sample))
        yield from run_group(backbones, items, buffer)
    stats["total_s"] += time.perf_counter() - began


def run_group(
    backbones: list[Backbone], items: list[Any], buffer: list[tuple[int, dict[str, Any]]]
) -> Iterator[tuple[Any, dict[str, dict[str, np.ndarray]] | str]]:
    """One group's decoded clips through every backbone; failed clips yield their error."""
    ok = [(i, s) for i, s in buffer if "error" not in s]
    clips = [{k: _array(v) for k, v in s.items()} for _, s in ok]
    outputs: dict[int, dict[str, dict[str, np.ndarray]]] = {i: {} for i, _ in ok}
    for b in backbones:
        for (i, _), out in zip(ok, b.run(clips), strict=True):
            outputs[i][b.network] = out
    for i, sample in buffer:
        yield items[i], (str(sample["error"]) if "error" in sample else outputs[i])


def _array(value: Any) -> np.ndarray:
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)
