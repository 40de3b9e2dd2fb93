"""Run backbones over clips on this machine: decoder processes feed the networks in this process.

Clips are decoded in DataLoader worker processes (each clip once, for every backbone that needs
frames or a waveform: :func:`pipeline.backbones.base.decode_inputs`), handed over through shared memory, gathered
into the given groups of whole clips and run through every backbone, group by group (the same
groups give the same floating-point results wherever they run). A clip that fails to decode comes
back as its error. Nothing here knows a backbone by name.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.backbones.base import Backbone, Request, decode_inputs, input_request

#: Per clip: its primary outputs per network, or its error.
Outputs = dict[str, dict[str, np.ndarray]] | str


@dataclass
class ClipWork:
    """One clip to compute: where its inputs are and the frames each backbone needs."""

    clip_id: str
    path: str
    patches: str | None = None
    plans: dict[str, np.ndarray] = field(default_factory=dict)  # network -> frame indices
    shard: int = 0


class ClipInputs:
    """Map-style dataset: work item i -> its decoded inputs (numpy arrays), or its error."""

    def __init__(self, items: Sequence[ClipWork], requests: dict[str, Request]) -> None:
        self.items, self.requests = items, requests

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.items[i]
        requests = {n: (item.plans.get(n), r) for n, r in self.requests.items()}
        try:
            inputs = decode_inputs(item.path, item.patches, requests)
        except Exception as exc:  # noqa: BLE001 - one bad clip is recorded, never fatal
            return {"i": i, "error": str(exc) or type(exc).__name__}
        return {"i": i, **inputs}


def group_items(items: list[ClipWork], backbones: list[Backbone]) -> list[list[ClipWork]]:
    """Consecutive groups of the largest ``clips_per_batch`` of the backbones."""
    size = max(b.clips_per_batch() for b in backbones)
    return [items[i : i + size] for i in range(0, len(items), size)]


def run_groups(
    backbones: list[Backbone],
    groups: list[list[ClipWork]],
    device: str,
    workers: int,
    stats: dict[str, float] | None = None,
    prefetch: int = 2,
) -> Iterator[tuple[ClipWork, Outputs]]:
    """Yield ``(item, {network: primary outputs} | error)`` for every item of ``groups`` in order;
    the clips of one group go through each backbone in one call. ``stats`` accumulates ``wait_s``
    (waiting for decoded clips) and ``total_s``."""
    import torch

    for b in backbones:
        b.load(device)
    items = [item for group in groups for item in group]
    if not items:
        return
    requests = {b.network: r for b in backbones if (r := input_request(b)) is not None}
    workers = min(workers if requests else 0, len(items))
    loader = torch.utils.data.DataLoader(
        ClipInputs(items, requests),
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        pin_memory=str(device).startswith("cuda"),
        prefetch_factor=prefetch if workers > 0 else None,
    )
    stats = {} if stats is None else stats
    stats.setdefault("wait_s", 0.0)
    stats.setdefault("total_s", 0.0)
    began = time.perf_counter()
    samples = iter(loader)
    for group in groups:
        buffer = []
        for _ in group:
            start = time.perf_counter()
            sample = next(samples)
            stats["wait_s"] += time.perf_counter() - start
            buffer.append((int(sample.pop("i")), sample))
        yield from run_group(backbones, items, buffer)
    stats["total_s"] += time.perf_counter() - began


def run_group(
    backbones: list[Backbone], items: list[ClipWork], buffer: list[tuple[int, dict[str, Any]]]
) -> Iterator[tuple[ClipWork, Outputs]]:
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
