"""Benchmark of C3D feature extraction beside VGG-19's: network frames/s against a naive baseline, and
the fraction of the device's peak it reaches.

Optimised: batches of ``clips_per_pass`` 16-frame clips, ``torch.inference_mode``, autocast on CUDA
(``precision``), and end to end :func:`pipeline.backbones.c3d.extract_c3d` (decoder processes, one
ffmpeg per clip). Naive, as the port's demo does: one clip per forward pass, fp32, ``no_grad``.

Fraction of peak: the network's arithmetic (2 x multiply-adds of the convolutions, analytic) per
second over this device's measured dense matrix-multiply rate in the same precision (a large
``torch.mm``, timed here), so CPU and GPU rows compare alike without a datasheet.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.backbones.c3d import CLIP_FRAMES, CONVS, POOLS, build_c3d, c3d_plan
from pipeline.backbones.c3d_backbone import extract_c3d
from pipeline.backbones.frames import count_frames
from pipeline.bench.peak import matmul_probe
from pipeline.bench.visual import make_bench_clips
from pipeline.stages.segments import release_frame_indices


def c3d_flops(crop: int = 112, frames: int = CLIP_FRAMES) -> int:
    """Floating-point operations of one clip through the convolutions (2 per multiply-add)."""
    t, side, total = frames, crop, 0
    for name, cin, cout in CONVS:
        total += 2 * cout * t * side * side * cin * 27
        if name in POOLS:
            (kt, ks, _), (_, pad, _) = POOLS[name]
            t //= kt
            side = (side + 2 * pad) // ks
    return total


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_c3d(
    device: str = "cpu",
    precision: str = "fp32",
    clips_per_pass: int = 2,
    model_clips: int = 4,
    crop: int = 112,
    e2e_clips: int = 1,
    num_workers: int = 2,
    work_dir: str | Path | None = None,
) -> dict[str, Any]:
    """C3D network frames/s (optimised and naive), fraction of peak, end-to-end clips/s."""
    import torch

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    model, record = build_c3d("random", allow_random=True)
    record = record.scaled(crop)
    model = model.to(dev, memory_format=torch.channels_last_3d).eval()
    w, h = record.resize
    clips = torch.randint(0, 256, (model_clips, CLIP_FRAMES, h, w, 3), dtype=torch.uint8)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def optimised(count: int = model_clips) -> None:
        with (
            torch.inference_mode(),
            torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None),
        ):
            for k in range(0, count, clips_per_pass):
                x = record.preprocess(clips[k : k + clips_per_pass].to(dev))
                model(x.contiguous(memory_format=torch.channels_last_3d))
        _sync(dev)

    def naive(count: int = model_clips) -> None:
        with torch.no_grad():
            for k in range(count):
                model(record.preprocess(clips[k : k + 1]).to(dev)).cpu()
        _sync(dev)

    res: dict[str, Any] = {
        "device": torch.cuda.get_device_name()
        if cuda
        else f"cpu ({torch.get_num_threads()} threads)",
        "precision": precision,
        "crop": crop,
        "clips_per_pass": clips_per_pass,
        "flops_per_clip": c3d_flops(crop),
    }
    for name, fn, warm_up in (("optimised", optimised, clips_per_pass), ("naive", naive, 1)):
        if name == "naive":
            model.to(memory_format=torch.contiguous_format)  # the port's layout
        fn(warm_up)  # cudnn autotune / oneDNN primitives
        start = time.perf_counter()
        fn()
        seconds = time.perf_counter() - start
        res[f"{name}_frames_per_s"] = round(model_clips * CLIP_FRAMES / seconds, 3)
        res[f"{name}_gflops"] = round(model_clips * res["flops_per_clip"] / seconds / 1e9, 2)
    peak = matmul_probe(device, precision if cuda else "fp32") * 1e9
    res["matmul_peak_gflops"] = round(peak / 1e9, 1)
    res["fraction_of_peak"] = round(res["optimised_gflops"] * 1e9 / peak, 3)
    res["speedup"] = round(res["optimised_frames_per_s"] / res["naive_frames_per_s"], 2)
    if e2e_clips:
        with tempfile.TemporaryDirectory() as tmp:
            paths = make_bench_clips(Path(work_dir or tmp), e2e_clips)
            items = []
            for p in paths:
                plan = release_frame_indices(count_frames(p), CLIP_FRAMES)
                items.append((p.stem, p, None, c3d_plan(plan)))
            start = time.perf_counter()
            for clip_id, value in extract_c3d(
                items,
                (model, record),
                device=device,
                precision=precision,
                c3d_batch=clips_per_pass,
                num_workers=num_workers,
            ):
                assert not isinstance(value, str), f"{clip_id}: {value}"
            res["e2e_clips_per_s"] = round(len(items) / (time.perf_counter() - start), 4)
    return res
