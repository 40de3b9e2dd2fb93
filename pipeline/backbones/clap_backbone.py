"""CLAP audio features as a backbone: each second of the clip's audio, mono at the feature
extractor's rate (48 kHz for LAION CLAP), -> ``ClapModel.get_audio_features`` -> ``clap`` (10, D)
(D = 512 for ``laion/clap-htsat-unfused``), aligned with the visual seconds.

Framing of a second: CLAP was trained on 10 s inputs. Each 1 s segment goes alone through the
model's own ``ClapFeatureExtractor``; shorter than its ``max_length_s``, it is framed by the
extractor's padding rule: ``repeatpad`` (the LAION checkpoints) tiles the second ten times to fill
the 10 s window (then zero-pads any remainder), so the model sees a 10 s input made of that one
second; ``is_longer`` is false. Nothing of the neighbouring seconds leaks into a segment's row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.backbones.base import StoreSpec
from pipeline.backbones.hf_weights import SMALL_TEXT_CONFIG, HFBackbone
from pipeline.core.manifest import CLIP_SECONDS

BACKBONE_LINE = "clap get_audio_features (transformers ClapModel), one 1 s segment per row"
#: Seconds per forward pass when the stage's ``batch_size`` is not given.
DEFAULT_BATCH = 40


def small_config() -> Any:
    """The default config of a random CLAP when the model's config is not at hand (smoke runs)."""
    from transformers import ClapConfig

    return ClapConfig(
        text_config=dict(SMALL_TEXT_CONFIG),
        audio_config={
            "depths": [1, 1],
            "num_attention_heads": [2, 4],
            "patch_embeds_hidden_size": 32,
            "hidden_size": 64,
        },
        projection_dim=512,
    )


def load_feature_extractor(folder: Any) -> Any:
    """The folder's CLAP feature extractor, else LAION's unfused settings."""
    from transformers import ClapFeatureExtractor

    if folder is not None:
        try:
            return ClapFeatureExtractor.from_pretrained(str(folder))
        except (OSError, ValueError):
            pass
    return ClapFeatureExtractor(truncation="rand_trunc", padding="repeatpad")


def audio_embeddings(model: Any, features: dict[str, Any]) -> Any:
    """``get_audio_features`` of prepared inputs, as a tensor."""
    out = model.get_audio_features(**features)
    return out.pooler_output if hasattr(out, "pooler_output") else out


def framing(extractor: Any) -> str:
    """How a 1 s segment becomes the model's input, in words (recorded in the identity)."""
    return (
        f"each 1 s alone through ClapFeatureExtractor (max_length_s {extractor.max_length_s}, "
        f"padding {extractor.padding}, truncation {extractor.truncation}): "
        + (
            "the second tiled to fill the window, zero-padded after"
            if extractor.padding == "repeatpad"
            else f"{extractor.padding} to fill the window"
        )
    )


class CLAPBackbone(HFBackbone):
    """Settings read: ``clap_weights``, ``allow_download``, ``allow_random_weights``,
    ``precision``, ``batch_size``."""

    kind = "clap"
    network = "clap"
    inputs = "waveform"

    model_class = "ClapModel"
    weights_option = "clap_weights"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.extractor: Any = None
        self.dim = 0

    def stores(self) -> dict[str, StoreSpec]:
        return {"clap": StoreSpec((CLIP_SECONDS, self.dim))}

    def sample_rate(self) -> int:
        return int(self.extractor.sampling_rate)

    def batch(self) -> int:
        return self.settings.batch_size or DEFAULT_BATCH

    def clips_per_batch(self) -> int:
        return max(1, self.batch() // CLIP_SECONDS)

    def small_config(self) -> Any:
        return small_config()

    def after_load(self, folder: Any) -> None:
        self.extractor = load_feature_extractor(folder)
        self.dim = int(self.model.config.projection_dim)

    def prepare(self, device: str, known: dict[str, Any] | None = None) -> None:
        from pipeline.backbones.precision import probe_precision

        self.prepare_weights(device)

        def probe(precision: str) -> dict[str, Any]:
            rng = np.random.default_rng(0)
            seconds = rng.uniform(-0.5, 0.5, (4, self.sample_rate())).astype(np.float32)
            x = self.features(seconds)
            return probe_precision(
                lambda v: audio_embeddings(self.model, v), _Batch(x), device, precision
            )

        self.settle_precision(device, probe, known, reduced="bf16")

    def identity(self) -> dict[str, Any]:
        from pipeline.backbones.hf_weights import processor_config

        return {
            "backbone": BACKBONE_LINE,
            "weights": self.weights.identity(),
            "preprocessing": {
                "framing": framing(self.extractor),
                "feature_extractor": processor_config(self.extractor),
            },
            "precision": self.precision,
        }

    def features(self, seconds: np.ndarray) -> dict[str, Any]:
        """(N, rate) one-second waveforms -> the feature extractor's inputs on the device."""
        prepared = self.extractor(
            list(seconds), sampling_rate=self.sample_rate(), return_tensors="pt"
        )
        return {k: v.to(self.device) for k, v in prepared.items()}

    def run(self, clips: Sequence[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        import torch

        from pipeline.backbones.precision import autocast

        if not clips:
            return []
        seconds = np.concatenate([c[self.network] for c in clips])  # (10 K, rate)
        rows = []
        with torch.inference_mode():
            for start in range(0, len(seconds), self.batch()):
                x = self.features(seconds[start : start + self.batch()])
                with autocast(self.device, self.precision):
                    rows.append(audio_embeddings(self.model, x).float().cpu().numpy())
        emb = np.concatenate(rows)
        return [{"clap": emb[k * CLIP_SECONDS : (k + 1) * CLIP_SECONDS]} for k in range(len(clips))]


class _Batch(dict):
    """Prepared inputs that :func:`~pipeline.backbones.precision.probe_precision` can count."""

    def __len__(self) -> int:
        return len(next(iter(self.values())))


BACKBONE = CLAPBackbone
