"""VGGish as a backbone: the segments stage's log-mel patches -> ``audio`` (10, 128) embeddings per
second and, with ``audio_maps``, the pool5 maps (10, 6, 4, 512) from the same pass."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.backbones.base import PATCHES, Backbone, BackboneError, StoreSpec, weights_identity
from pipeline.core.manifest import CLIP_SECONDS

AUDIO_ROW = (CLIP_SECONDS, 128)
AUDIO_MAP_ROW = (CLIP_SECONDS, 6, 4, 512)
#: Patches per forward pass when the stage's ``batch_size`` is not given.
DEFAULT_BATCH = 256


class VGGishBackbone(Backbone):
    """Settings read: ``vggish_checkpoint``, ``vggish_output``, ``vggish_pca_params``,
    ``audio_maps``, ``allow_download``, ``allow_random_weights``, ``precision``, ``batch_size``."""

    kind = "audio"
    network = "vggish"
    inputs = "patches"

    def stores(self) -> dict[str, StoreSpec]:
        stores = {"audio": StoreSpec(AUDIO_ROW)}
        if self.settings.audio_maps:
            stores["audio_maps"] = StoreSpec(AUDIO_MAP_ROW)
        return stores

    def batch(self) -> int:
        return self.settings.batch_size or DEFAULT_BATCH

    def clips_per_batch(self) -> int:
        return max(1, self.batch() // CLIP_SECONDS)

    def _build(self) -> Any:
        from pipeline.backbones import vggish as vg
        from pipeline.core.fetch import SourceError, fetch

        s = self.settings
        pca = None
        if s.vggish_output == "pca":
            location = s.vggish_pca_params or vg.VGGISH_PCA_PARAMS_URL
            if location.startswith(("http://", "https://")) and not s.allow_download:
                raise BackboneError(
                    "--vggish-output pca needs vggish_pca_params.npz: pass --vggish-pca-params"
                )
            try:
                pca = fetch(location, self.weights_dir)
            except SourceError as exc:
                raise BackboneError(f"cannot get the VGGish PCA parameters: {exc}") from exc
        checkpoint = s.vggish_checkpoint
        try:
            if checkpoint and Path(checkpoint).suffix in (".pt", ".pth"):
                return vg.load_vggish(checkpoint, pca_params=pca)
            info = vg.ensure_vggish_weights(
                self.weights_dir, checkpoint=checkpoint, allow_download=s.allow_download
            )
            return vg.load_vggish(info.path, pca_params=pca)
        except vg.VGGishWeightsError as exc:
            if checkpoint or not s.allow_random_weights:
                raise BackboneError(str(exc)) from exc
            return vg.random_vggish(seed=0, pca_params=pca)

    def prepare(self, device: str, known: dict[str, Any] | None = None) -> None:
        from pipeline.backbones.vggish_model import probe_vggish_precision

        self.model = self._build().eval()
        self.device = device
        info = self.model.weights_info.with_mode(output=self.settings.vggish_output, framing="ave")
        self.record = info.to_dict()
        self.random = info.is_random
        self.weights_line = self.model.weights_info.describe()
        self.settle_precision(
            device, lambda p: probe_vggish_precision(self.model.to(device), device, p), known
        )

    def identity(self) -> dict[str, Any]:
        weights = self.record["weights"]
        return {
            "backbone": "vggish",
            "weights": weights_identity(weights["source"], weights["sha256"]),
            "preprocessing": self.record["preprocessing"],
            "output": self.record["output"],
            "pca_sha256": self.record["pca_sha256"],
            "precision": self.precision,
        }

    def describe(self) -> dict[str, Any]:
        return {**self.record, "precision_probe": self.probe}

    def load(self, device: str) -> None:
        if self.model is None:
            self.model = self._build()
        self.device = device
        self.model = self.model.to(device).eval()

    def run(self, clips: Sequence[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        import torch

        from pipeline.backbones.precision import autocast

        maps = "audio_maps" in self.stores()
        output = self.settings.vggish_output
        patches = np.concatenate([c[PATCHES] for c in clips]) if clips else np.zeros((0, 96, 64))
        emb = np.empty((len(patches), *AUDIO_ROW[1:]), dtype=np.float32)
        pool5 = np.empty((len(patches), *AUDIO_MAP_ROW[1:]), dtype=np.float32) if maps else None
        step = self.batch()
        with torch.inference_mode(), autocast(self.device, self.precision):
            for start in range(0, len(patches), step):
                x = torch.from_numpy(patches[start : start + step]).to(self.device)
                if pool5 is None:
                    emb[start : start + len(x)] = self.model(x, output=output).float().cpu().numpy()
                    continue
                maps_x = self.model.pool5(x)
                emb[start : start + len(x)] = self.model.head(maps_x, output).float().cpu().numpy()
                pool5[start : start + len(x)] = maps_x.float().cpu().numpy()
        out = []
        for k in range(len(clips)):
            rows = slice(CLIP_SECONDS * k, CLIP_SECONDS * (k + 1))
            values = {"audio": emb[rows]}
            if pool5 is not None:
                values["audio_maps"] = pool5[rows]
            out.append(values)
        return out


BACKBONE = VGGishBackbone
