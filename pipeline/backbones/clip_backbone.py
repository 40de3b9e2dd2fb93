"""CLIP image features as a backbone: each second's F planned frames -> CLIP's image embedding
(``CLIPModel.get_image_features``), averaged per second -> ``clip`` (10, D) and, with
``clip_tokens``, the vision tower's last-layer tokens averaged the same way -> ``clip_tokens``
(10, T, D') (T = 1 class token + the patch tokens).

The model's own preprocessing: the planned frames are decoded at their own size (in the same
ffmpeg pass as the other frame backbones' scaled frames), the CLIP image processor resizes their
shortest edge and center-crops them to S x S in the decoder process (:class:`ProcessorFrames`;
S = 224 for both default checkpoints), and its rescale and normalisation run on the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.backbones.base import BackboneError, StoreSpec, frame_plans
from pipeline.backbones.hf_weights import SMALL_TEXT_CONFIG, HFBackbone
from pipeline.core.manifest import CLIP_SECONDS

BACKBONE_LINE = (
    "clip get_image_features (transformers CLIPModel), mean over the frames of each second"
)
FRAMES_LINE = (
    "frames decoded at their own size; the CLIP image processor's shortest-edge resize and center "
    "crop to S x S (in the decoder), its rescale and normalisation (on the device)"
)
#: Frames per forward pass when the stage's ``batch_size`` is not given.
DEFAULT_BATCH = 64


def small_config() -> Any:
    """The default config of a random CLIP when the model's config is not at hand (smoke runs)."""
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config=dict(SMALL_TEXT_CONFIG),
        vision_config={
            "image_size": 224,
            "patch_size": 32,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
        },
        projection_dim=64,
    )


def load_image_processor(folder: Any, image_size: int) -> Any:
    """The folder's CLIP image processor, else CLIP's defaults at ``image_size``."""
    from transformers import CLIPImageProcessor

    if folder is not None:
        try:
            return CLIPImageProcessor.from_pretrained(str(folder))
        except (OSError, ValueError):
            pass
    return CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )


class ProcessorFrames:
    """The image processor's geometry alone: frames at their own size (uint8 (H, W, 3) each) ->
    resized and center-cropped uint8 (N, S, S, 3), exactly the processor's pixels before its
    rescale and normalisation (picklable: it runs in the decoder processes)."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def __call__(self, frames: list[np.ndarray]) -> np.ndarray:
        out = self.processor(
            images=list(frames), do_rescale=False, do_normalize=False, return_tensors="np"
        )["pixel_values"]
        out = np.asarray(out)
        if out.dtype != np.uint8:
            out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(out.transpose(0, 2, 3, 1))


def image_embeddings(model: Any, pixel_values: Any) -> tuple[Any, Any]:
    """``(get_image_features, last-layer tokens)`` of a batch of pixel values."""
    out = model.get_image_features(pixel_values=pixel_values)
    if hasattr(out, "pooler_output"):
        return out.pooler_output, out.last_hidden_state
    return out, model.vision_model(pixel_values=pixel_values).last_hidden_state


class CLIPBackbone(HFBackbone):
    """Settings read: ``clip_weights``, ``clip_tokens``, ``allow_download``,
    ``allow_random_weights``, ``precision``, ``batch_size``."""

    kind = "clip"
    network = "clip"
    inputs = "frames"

    model_class = "CLIPModel"
    weights_option = "clip_weights"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.processor: Any = None
        self.shapes: dict[str, int] = {}

    def stores(self) -> dict[str, StoreSpec]:
        s = self.shapes
        stores = {"clip": StoreSpec((CLIP_SECONDS, s["dim"]))}
        if self.settings.clip_tokens:
            stores["clip_tokens"] = StoreSpec((CLIP_SECONDS, s["tokens"], s["width"]))
        return stores

    def frame_size(self) -> tuple[int, int]:
        return (self.shapes["crop"], self.shapes["crop"])

    def frame_plans(self, segments: Any) -> dict[str, np.ndarray]:
        return frame_plans(segments)

    def frame_preparer(self) -> ProcessorFrames:
        return ProcessorFrames(self.processor)

    def batch(self) -> int:
        return self.settings.batch_size or DEFAULT_BATCH

    def small_config(self) -> Any:
        return small_config()

    def after_load(self, folder: Any) -> None:
        vision = self.model.config.vision_config
        self.processor = load_image_processor(folder, vision.image_size)
        crop = self.processor.crop_size
        if crop["height"] != crop["width"]:
            raise BackboneError(f"{self.weights_name()}: a non-square crop {crop} is not supported")
        self.shapes = {
            "crop": int(crop["height"]),
            "dim": int(self.model.config.projection_dim),
            "tokens": (vision.image_size // vision.patch_size) ** 2 + 1,
            "width": int(vision.hidden_size),
        }

    def prepare(self, device: str, known: dict[str, Any] | None = None) -> None:
        import torch

        from pipeline.backbones.precision import probe_precision

        self.prepare_weights(device)

        def probe(precision: str) -> dict[str, Any]:
            side = self.shapes["crop"]
            gen = torch.Generator().manual_seed(0)
            raw = torch.randint(0, 256, (8, side, side, 3), dtype=torch.uint8, generator=gen)
            x = self.pixels(raw.numpy())
            return probe_precision(
                lambda v: image_embeddings(self.model, v)[0], x, device, precision
            )

        self.settle_precision(device, probe, known)

    def identity(self) -> dict[str, Any]:
        from pipeline.backbones.hf_weights import processor_config

        return {
            "backbone": BACKBONE_LINE,
            "weights": self.weights.identity(),
            "preprocessing": {"frames": FRAMES_LINE, "processor": processor_config(self.processor)},
            "tokens": bool(self.settings.clip_tokens),
            "precision": self.precision,
        }

    def pixels(self, frames: np.ndarray) -> Any:
        """Resized and cropped uint8 (N, S, S, 3) frames (:class:`ProcessorFrames`) -> the
        processor's pixel values (N, 3, S, S) on the device: its rescale and normalisation."""
        import torch

        p = self.processor
        x = torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2).float()
        if p.do_rescale:
            x = x * p.rescale_factor
        if p.do_normalize:
            mean = torch.tensor(p.image_mean, dtype=torch.float32, device=x.device)
            std = torch.tensor(p.image_std, dtype=torch.float32, device=x.device)
            x = (x - mean[:, None, None]) / std[:, None, None]
        return x.contiguous()

    def run(self, clips: Sequence[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        import torch

        from pipeline.backbones.precision import autocast

        if not clips:
            return []
        per_second = len(clips[0][self.network]) // CLIP_SECONDS
        frames = np.concatenate([c[self.network] for c in clips])
        tokens = bool(self.settings.clip_tokens)
        embeds, hidden = [], []
        with torch.inference_mode():
            for start in range(0, len(frames), self.batch()):
                x = self.pixels(frames[start : start + self.batch()])
                with autocast(self.device, self.precision):
                    e, h = image_embeddings(self.model, x)
                embeds.append(e.float())
                if tokens:
                    hidden.append(h.float())
            e = torch.cat(embeds)
            h = torch.cat(hidden) if tokens else None
            out = []
            per_clip = CLIP_SECONDS * per_second
            for k in range(len(clips)):
                rows = slice(k * per_clip, (k + 1) * per_clip)
                values = {"clip": _mean_per_second(e[rows], per_second)}
                if h is not None:
                    values["clip_tokens"] = _mean_per_second(h[rows], per_second)
                out.append(values)
        return out


def _mean_per_second(y: Any, per_second: int) -> np.ndarray:
    """(10 F, ...) outputs in plan order -> (10, ...) float32 means of each second's F rows."""
    return y.reshape(CLIP_SECONDS, per_second, *y.shape[1:]).mean(1).cpu().numpy()


BACKBONE = CLIPBackbone
