"""VGG-19 pool5 maps per second of a clip: planned frames -> VGG-19 features -> mean per second.

:func:`extract_visual` keeps the accelerator busy: clips are decoded in DataLoader worker processes
(one ffmpeg per clip, planned frames only, already 224x224), uint8 frames travel through pinned host
memory with non-blocking copies, batches of ``batch_size`` frames are formed across clips on the
device, the network runs channels-last under ``torch.inference_mode`` (autocast bf16/fp16 where the
device has them natively: CUDA, or bf16 on a CPU with AVX512-BF16/AMX), and per-second sums are
accumulated on the device in fp32. A clip that fails yields an error string.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.backbones.frames import SIZE, FrameDecodeError, decode_planned
from pipeline.backbones.precision import check_precision
from pipeline.backbones.vgg19 import VGG19Weights
from pipeline.core.manifest import CLIP_SECONDS

Item = tuple[str, str | os.PathLike, np.ndarray]


def visual_vec(maps: np.ndarray) -> np.ndarray:
    """pool5 maps (..., 7, 7, 512) NHWC -> the 7x7 average (..., 512) (release ``visual_feature_vec``)."""
    maps = np.asarray(maps)
    return maps.mean(axis=(-3, -2), dtype=np.float64).astype(maps.dtype)


def _check_plan(plan: np.ndarray, clip_id: str) -> np.ndarray:
    plan = np.asarray(plan)
    if plan.ndim != 2 or plan.shape[0] != CLIP_SECONDS or plan.shape[1] < 1:
        raise ValueError(f"{clip_id}: frame plan must be ({CLIP_SECONDS}, F), got {plan.shape}")
    return plan.astype(np.int64)


class ClipFrames:
    """Map-style dataset: clip i -> its distinct planned frames (uint8) and their order, or an error."""

    def __init__(self, items: Sequence[Item], threads: int = 1, size: int = SIZE):
        self.items, self.threads, self.size = items, threads, size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch

        _, path, plan = self.items[i]
        try:
            frames, inverse = decode_planned(path, plan, self.size, self.threads)
        except (FrameDecodeError, ValueError, OSError) as exc:
            return {"i": i, "error": str(exc)}
        return {
            "i": i,
            "frames": torch.from_numpy(frames.copy()),
            "inverse": torch.from_numpy(inverse),
        }


@dataclass
class _Pending:
    clip_id: str
    frames: Any  # (N, 224, 224, 3) uint8 on the device, N = 10 * F, plan order
    per_second: int
    done: int = 0  # frames already through the network
    sums: Any = None  # (10, 512, 7, 7) fp32 on the device


def extract_visual(
    items: Sequence[Item],
    model: Any,
    weights: VGG19Weights,
    device: str = "cpu",
    precision: str = "fp32",
    batch_size: int = 64,
    num_workers: int = 2,
    decoder_threads: int = 1,
    prefetch_clips: int = 2,
    size: int = SIZE,
    stats: dict[str, float] | None = None,
) -> Iterator[tuple[str, np.ndarray | str]]:
    """Yield ``(clip_id, pool5 maps (10, 7, 7, 512) float32 | error string)`` in input order.

    ``items``: ``(clip_id, clip_path, frame_indices (10, F))``; each second's F planned frames are
    averaged after pool5. ``model``/``weights`` come from :func:`build_vgg19_pool5` (the model is
    moved to ``device`` in channels-last layout, in place). ``precision`` bf16/fp16 run under
    autocast where the device has them natively (fp16: CUDA; bf16: CUDA or a CPU with
    AVX512-BF16/AMX, :mod:`pipeline.backbones.precision`); sums stay fp32. ``num_workers`` decoder
    processes (0: in this process); ``prefetch_clips`` clips decoded ahead per worker. ``size`` is the frame side (224 for
    the release features; smaller sizes give smaller maps and exist for fast tests). ``stats``, when
    given, accumulates ``wait_s`` (this process waiting for decoded clips) and ``total_s``: when
    waiting is most of the time, decoding, not the network, bounds the run.
    """
    import torch

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    check_precision(dev, precision)
    items = [(str(y), p, _check_plan(f, str(y))) for y, p, f in items]
    if not items:
        return
    if cuda:
        torch.backends.cudnn.benchmark = True
    model = model.to(dev, memory_format=torch.channels_last).eval()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    loader = torch.utils.data.DataLoader(
        ClipFrames(items, decoder_threads, size),
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=cuda,
        prefetch_factor=prefetch_clips if num_workers > 0 else None,
        persistent_workers=False,
    )
    results: OrderedDict[int, Any] = OrderedDict((i, None) for i in range(len(items)))
    queue: list[tuple[int, _Pending]] = []  # clips whose frames are on the device, in order

    def run_batch(final: bool) -> None:
        """Run full batches of frames taken across queued clips (and a last partial one if final)."""
        while queue:
            available = sum(len(p.frames) - p.done for _, p in queue)
            if available == 0 or (available < batch_size and not final):
                return
            parts, owners = [], []
            need = batch_size
            for i, p in queue:
                take = min(need, len(p.frames) - p.done)
                if take > 0:
                    parts.append(p.frames[p.done : p.done + take])
                    owners.append((i, p, p.done, take))
                    need -= take
                if need == 0:
                    break
            x = weights.preprocess(torch.cat(parts) if len(parts) > 1 else parts[0])
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
                y = model(x)
            y = y.float()
            start = 0
            for _i, p, first, take in owners:
                seconds = torch.arange(first, first + take, device=dev) // p.per_second
                if p.sums is None:
                    p.sums = torch.zeros(
                        (CLIP_SECONDS, *y.shape[1:]), dtype=torch.float32, device=dev
                    )
                p.sums.index_add_(0, seconds, y[start : start + take])
                p.done += take
                start += take
            while queue and queue[0][1].done == len(queue[0][1].frames):
                i, p = queue.pop(0)
                maps = (p.sums / p.per_second).permute(0, 2, 3, 1).contiguous()
                if cuda:  # copy back without stalling the stream; _drain waits on the event
                    host = torch.empty(maps.shape, dtype=maps.dtype, pin_memory=True)
                    host.copy_(maps, non_blocking=True)
                    event = torch.cuda.Event()
                    event.record()
                    results[i] = (host, event)
                else:
                    results[i] = maps.numpy()

    stats = {} if stats is None else stats
    stats.setdefault("wait_s", 0.0)
    stats.setdefault("total_s", 0.0)
    began = time.perf_counter()
    with torch.inference_mode():
        samples = iter(loader)
        while True:
            start = time.perf_counter()
            sample = next(samples, None)
            stats["wait_s"] += time.perf_counter() - start
            if sample is None:
                break
            i = int(sample["i"])
            if "error" in sample:
                results[i] = str(sample["error"])
            else:
                frames = sample["frames"].to(dev, non_blocking=cuda)
                inverse = sample["inverse"].to(dev, non_blocking=cuda)
                per_second = items[i][2].shape[1]
                queue.append((i, _Pending(items[i][0], frames[inverse], per_second)))
                run_batch(final=False)
            yield from _drain(results, items, wait=False)
        run_batch(final=True)
        yield from _drain(results, items, wait=True)
    stats["total_s"] += time.perf_counter() - began


def _drain(
    results: OrderedDict[int, Any], items: Sequence[Item], wait: bool
) -> Iterator[tuple[str, np.ndarray | str]]:
    """Yield finished results from the front (input order); CUDA copies still in flight stop the
    drain unless ``wait``."""
    while results:
        i, value = next(iter(results.items()))
        if value is None:
            return
        if isinstance(value, tuple):
            host, event = value
            if not wait and not event.query():
                return
            event.synchronize()
            value = host.numpy()
        del results[i]
        yield items[i][0], value
