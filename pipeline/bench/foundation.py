"""Benchmark of the foundation backbones (CLIP image, CLAP audio) as the extraction driver runs them:
network throughput against a naive baseline, and the fraction of the device's peak it reaches.

Optimised: the backbone's own ``run`` (CLIP: batches of ``batch`` frames normalised on the device,
CLAP: batches of 1 s segments through the feature extractor), ``torch.inference_mode``, autocast in
``precision``. Naive, as a hand-written loop does: one frame (CLIP, through ``CLIPProcessor``) or one
second (CLAP) per forward pass, fp32, ``no_grad``. Random weights of the real architectures (CLIP
ViT-L/14 or ViT-B/16, CLAP HTS-AT from its default config): the arithmetic is the checkpoints'.

Fraction of peak: FLOPs of one forward pass counted by torch's ``FlopCounterMode`` per second of
wall time, over this device's measured dense matrix-multiply rate in the same precision.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import numpy as np

from pipeline.bench.peak import counted_flops, matmul_probe
from pipeline.core.manifest import CLIP_SECONDS

#: CLIP vision towers by name: (image size, patch, width, layers, heads, projection).
CLIP_VISION = {
    "vit-l/14": (224, 14, 1024, 24, 16, 768),
    "vit-b/16": (224, 16, 768, 12, 12, 512),
}


def clip_config(name: str) -> Any:
    """A CLIPConfig with the vision tower ``name`` (:data:`CLIP_VISION`)."""
    from transformers import CLIPConfig

    size, patch, width, layers, heads, proj = CLIP_VISION[name]
    vision = {"image_size": size, "patch_size": patch, "hidden_size": width}
    vision.update(num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=4 * width)
    text = {"num_hidden_layers": 1, "hidden_size": 64, "num_attention_heads": 4}
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=proj)


def _sync(device: str) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn: Any, device: str) -> float:
    fn()  # warm-up: cudnn / oneDNN primitives
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _backbone(cls: Any, model: Any, extra: dict[str, Any], device: str, precision: str) -> Any:
    backbone = cls(SimpleNamespace(**extra), ".")
    backbone.model, backbone.precision = model.to(device).eval(), precision
    backbone.device = device
    return backbone


def bench_clip(
    device: str = "cpu",
    precision: str = "fp32",
    model: str = "vit-b/16",
    frames: int = 8,
    batch: int = 8,
    naive_frames: int = 2,
    config: Any = None,
    peak_gflops: float | None = None,
) -> dict[str, Any]:
    """CLIP image features: frames/s of the backbone (optimised) and of a per-frame loop (naive);
    ``config``: another CLIPConfig, ``peak_gflops``: the device's peak (default: measured)."""
    import torch
    from transformers import CLIPImageProcessor, CLIPModel

    from pipeline.backbones.clip_backbone import CLIPBackbone, image_embeddings

    torch.manual_seed(0)
    net = CLIPModel(config or clip_config(model)).eval()
    side = net.config.vision_config.image_size
    processor = CLIPImageProcessor(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side}
    )
    b = _backbone(CLIPBackbone, net, {"clip_tokens": False, "batch_size": batch}, device, precision)
    b.processor, b.shapes = processor, {"crop": side}
    rng = np.random.default_rng(0)
    per_second = max(1, frames // CLIP_SECONDS)
    clip = rng.integers(0, 256, (CLIP_SECONDS * per_second, side, side, 3), dtype=np.uint8)

    def naive() -> None:
        with torch.no_grad():
            for frame in clip[:naive_frames]:
                pixels = processor(images=[frame], return_tensors="pt")["pixel_values"]
                image_embeddings(b.model, pixels.to(device))[0].cpu()

    x = b.pixels(clip[:1])
    flops = counted_flops(lambda: image_embeddings(b.model, x))
    optimised_s = _timed(lambda: b.run([{"clip": clip}]), device)
    b.model.float()
    naive_s = _timed(naive, device)
    res = {
        "model": model if config is None else "custom",
        "precision": precision,
        "batch": batch,
        "flops_per_frame": flops,
        "optimised_frames_per_s": round(len(clip) / optimised_s, 3),
        "naive_frames_per_s": round(naive_frames / naive_s, 3),
    }
    return _peak(res, "frames", device, precision, peak_gflops)


def bench_clap(
    device: str = "cpu",
    precision: str = "fp32",
    seconds: int = 10,
    batch: int = 10,
    naive_seconds: int = 2,
    config: Any = None,
    peak_gflops: float | None = None,
) -> dict[str, Any]:
    """CLAP audio features: seconds of audio per second, batched (optimised) and one by one
    (``config``, ``peak_gflops``: as :func:`bench_clip`'s)."""
    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    from pipeline.backbones.clap_backbone import CLAPBackbone, audio_embeddings

    torch.manual_seed(0)
    net = ClapModel(config or ClapConfig(projection_dim=512)).eval()
    extractor = ClapFeatureExtractor(truncation="rand_trunc", padding="repeatpad")
    b = _backbone(CLAPBackbone, net, {"batch_size": batch}, device, precision)
    b.extractor = extractor
    rate = extractor.sampling_rate
    rng = np.random.default_rng(0)
    clips = [
        {"clap": rng.uniform(-0.5, 0.5, (CLIP_SECONDS, rate)).astype(np.float32)}
        for _ in range(max(1, seconds // CLIP_SECONDS))
    ]

    def naive() -> None:
        with torch.no_grad():
            for second in clips[0]["clap"][:naive_seconds]:
                inputs = extractor([second], sampling_rate=rate, return_tensors="pt")
                audio_embeddings(b.model, {k: v.to(device) for k, v in inputs.items()}).cpu()

    x = b.features(clips[0]["clap"][:1])
    flops = counted_flops(lambda: audio_embeddings(b.model, x))
    optimised_s = _timed(lambda: b.run(clips), device)
    b.model.float()
    naive_s = _timed(naive, device)
    res = {
        "model": "clap-htsat" if config is None else "custom",
        "precision": precision,
        "batch": batch,
        "flops_per_second": flops,
        "optimised_seconds_per_s": round(len(clips) * CLIP_SECONDS / optimised_s, 3),
        "naive_seconds_per_s": round(naive_seconds / naive_s, 3),
    }
    return _peak(res, "seconds", device, precision, peak_gflops)


def _peak(
    res: dict[str, Any], unit: str, device: str, precision: str, peak: float | None
) -> dict[str, Any]:
    """Add the speedup, GFLOP/s and the fraction of the matmul peak in ``precision``."""
    import torch

    rate = res[f"optimised_{unit}_per_s"]
    res["speedup"] = round(rate / max(res[f"naive_{unit}_per_s"], 1e-9), 2)
    res["optimised_gflops"] = round(rate * res[f"flops_per_{unit[:-1]}"] / 1e9, 2)
    if peak is None:
        peak = matmul_probe(device, precision if str(device).startswith("cuda") else "fp32")
    res["matmul_peak_gflops"] = round(peak, 1)
    res["fraction_of_peak"] = round(res["optimised_gflops"] / max(peak, 1e-9), 3)
    res["device"] = (
        torch.cuda.get_device_name()
        if str(device).startswith("cuda")
        else f"cpu ({torch.get_num_threads()} threads)"
    )
    return res
