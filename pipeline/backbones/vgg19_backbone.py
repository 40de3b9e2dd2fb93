"""VGG-19 as a backbone: each second's F planned frames at S x S -> pool5 maps, averaged per second
-> ``visual`` (10, S/32, S/32, 512) and its spatial mean ``visual_vec`` (10, 512) (the release's
``visual_feature`` and ``visual_feature_vec`` at S = 224)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.backbones.base import (
    RecordedNetwork,
    StoreSpec,
    frame_plans,
    per_second_mean,
    run_in_batches,
)
from pipeline.core.manifest import CLIP_SECONDS

#: Frames per forward pass on the CPU when the stage's ``batch_size`` is not given.
DEFAULT_BATCH = 64
#: CUDA: frames per GiB of GPU memory (VGG-19 at 224, inference, with room for decoded frames).
FRAMES_PER_GPU_GIB = 8
MAX_GPU_BATCH = 512
BACKBONE_LINE = "vgg19 pool5 (torchvision vgg19().features), mean over the frames of each second"


def default_batch(device: Any = None) -> int:
    """Frames per forward pass: on CUDA from the GPU's memory (:data:`FRAMES_PER_GPU_GIB` per GiB,
    a power of two, 64..:data:`MAX_GPU_BATCH`), else :data:`DEFAULT_BATCH`."""
    if device is not None and str(device).startswith("cuda"):
        import torch

        gib = torch.cuda.get_device_properties(torch.device(device)).total_memory / 2**30
        frames = max(DEFAULT_BATCH, int(gib * FRAMES_PER_GPU_GIB))
        return min(MAX_GPU_BATCH, 1 << (frames.bit_length() - 1))
    return DEFAULT_BATCH


class VGG19Backbone(RecordedNetwork):
    """Settings read: ``vgg19_weights``, ``frame_size``, ``allow_random_weights``, ``precision``,
    ``batch_size``."""

    kind = "visual"
    network = "vgg19"
    inputs = "frames"
    backbone_line = BACKBONE_LINE
    memory_format = "channels_last"
    named_weights = ("torchvision", "keras")

    def stores(self) -> dict[str, StoreSpec]:
        side = self.settings.frame_size // 32
        return {
            "visual": StoreSpec((CLIP_SECONDS, side, side, 512)),
            "visual_vec": StoreSpec(
                (CLIP_SECONDS, 512), derived_from="visual", meta={"reduction": "mean over 7x7"}
            ),
        }

    def frame_size(self) -> tuple[int, int]:
        return (self.settings.frame_size, self.settings.frame_size)

    def frame_plans(self, segments: Any) -> dict[str, np.ndarray]:
        return frame_plans(segments)

    def batch(self) -> int:
        return self.settings.batch_size or default_batch(self.device)

    def clips_per_batch(self) -> int:
        """Enough clips that whole forward batches come out of them (2 at 16 fps and 64)."""
        per_clip = CLIP_SECONDS * self.frames_per_segment
        batch = self.batch()
        clips = batch // np.gcd(batch, per_clip)
        return int(clips) if clips <= 4 else max(1, -(-batch // per_clip))

    def probe_key(self) -> str:
        return f"{self.network}|{self.settings.frame_size}"

    def weights_setting(self) -> str:
        return self.settings.vgg19_weights

    def build_network(self, weights: str, allow_random: bool) -> tuple[Any, Any]:
        from pipeline.backbones.vgg19 import build_vgg19_pool5

        return build_vgg19_pool5(weights, allow_random=allow_random, cache_dir=self.weights_dir)

    def prepare(self, device: str, known: dict[str, Any] | None = None) -> None:
        from pipeline.backbones.vgg19 import probe_vgg19_precision

        self.adopt(*self._build())
        self.device = device
        size = self.settings.frame_size
        self.settle_precision(
            device,
            lambda p: probe_vgg19_precision(self.model, self.weights, device, p, size=size),
            known,
        )

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "frame_size": self.settings.frame_size}

    def run(self, clips: Sequence[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        import torch

        if not clips:
            return []
        per_second = len(clips[0][self.network]) // CLIP_SECONDS
        frames = np.concatenate([c[self.network] for c in clips])
        with torch.inference_mode():
            x = torch.from_numpy(frames).to(self.device)
            y = run_in_batches(
                self.model,
                x,
                self.batch(),
                self.precision,
                self.weights.preprocess,
                torch.channels_last,
            )
            per_clip = CLIP_SECONDS * per_second
            out = []
            for k in range(len(clips)):
                maps = per_second_mean(y[k * per_clip : (k + 1) * per_clip], per_second)
                out.append({"visual": maps.contiguous().cpu().numpy()})
            return out


BACKBONE = VGG19Backbone
