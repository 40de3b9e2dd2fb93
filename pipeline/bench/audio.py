"""Benchmark of the audio feature path: VGGish frontend + network, batched vs a naive baseline.

The naive baseline does what the release scripts did: one video at a time, its patches through the
network in one call per video. The optimised path batches patches across videos under
``torch.inference_mode``, in fp32, the features stage's default on every host; the reduced
precision's probe (speed and error against fp32, :mod:`pipeline.backbones.precision`) is reported
beside it, never chosen by it. Both run in the same process on the same waveforms. The network's FLOPs per patch (torch FlopCounterMode) give its achieved
GFLOP/s for the fraction-of-peak column.
"""

from __future__ import annotations

import resource
import time

import numpy as np
import torch

from pipeline.backbones.precision import autocast
from pipeline.backbones.vggish_frontend import log_mel_patches
from pipeline.backbones.vggish_model import probe_vggish_precision
from pipeline.backbones.vggish_weights import random_vggish
from pipeline.bench.peak import counted_flops
from pipeline.core.manifest import CLIP_SECONDS


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_audio(
    n_videos: int = 16, sample_rate: int = 44_100, batch_size: int = 128, device: str = "cpu"
) -> dict:
    """Time frontend and VGGish on ``n_videos`` 10 s stereo waveforms; return rates and ratios."""
    rng = np.random.default_rng(0)
    waves = [
        rng.uniform(-0.5, 0.5, (CLIP_SECONDS * sample_rate, 2)).astype(np.float32)
        for _ in range(n_videos)
    ]
    model = random_vggish(seed=0).to(device).eval()
    low = "fp16" if device.startswith("cuda") else "bf16"
    probe = probe_vggish_precision(model, device, low)  # reported, not used: rows are fp32
    precision = "fp32"

    start = time.perf_counter()
    patches = [log_mel_patches(w, sample_rate) for w in waves]
    frontend_s = time.perf_counter() - start
    seconds = sum(len(p) for p in patches)

    def naive() -> None:
        with torch.no_grad():
            for p in patches:
                model(torch.from_numpy(p).to(device))

    def batched() -> None:
        flat = torch.from_numpy(np.concatenate(patches))
        with torch.inference_mode(), autocast(device, precision):
            for i in range(0, len(flat), batch_size):
                model(flat[i : i + batch_size].to(device, non_blocking=True))

    timings = {}
    for name, fn in (("naive", naive), ("batched", batched)):
        fn()  # warm-up (allocator, kernels)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        timings[name] = time.perf_counter() - start
    one = torch.from_numpy(patches[0][:1]).to(device)
    with torch.inference_mode():
        flops = counted_flops(lambda: model(one))
    return {
        "stage": "audio (VGGish)",
        "device": device,
        "videos": n_videos,
        "frontend_seconds_per_s": seconds / frontend_s,
        "naive_patches_per_s": seconds / timings["naive"],
        "batched_patches_per_s": seconds / timings["batched"],
        "ratio_vs_naive": timings["naive"] / timings["batched"],
        "precision": precision,
        "precision_probe": probe,
        "flops_per_patch": flops,
        "peak_rss_mb": _peak_rss_mb(),
    }
