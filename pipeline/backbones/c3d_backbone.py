"""C3D as a backbone: each second's 16-frame clip -> pool5 -> ``c3d_maps`` (10, h, w, 512) (stored
with ``c3d_maps``) and its spatial mean ``c3d`` (10, 512)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.backbones.base import (
    Backbone,
    BackboneError,
    StoreSpec,
    frame_plans,
    run_in_batches,
    weights_identity,
)
from pipeline.core.manifest import CLIP_SECONDS

BACKBONE_LINE = "c3d pool5 (Sports-1M layout), one 16-frame clip per second, mean over 1 x h x w"
C3D_FRAMES_RULE = (
    "the segment plan at 16 frames per second; other F: the release rule at 16 from the clip's "
    "frame count, or the planned frames repeated (time-rule clips)"
)


class C3DBackbone(Backbone):
    """Settings read: ``c3d_weights``, ``c3d_maps``, ``c3d_crop``, ``c3d_batch``,
    ``allow_random_weights``, ``precision``. ``auto`` precision measures bf16 (the inputs' range of
    +-128 risks fp16 overflow)."""

    kind = "c3d"
    network = "c3d"
    inputs = "frames"

    def stores(self) -> dict[str, StoreSpec]:
        from pipeline.backbones.c3d import pool5_side

        side = pool5_side(self.settings.c3d_crop)
        maps = StoreSpec((CLIP_SECONDS, side, side, 512))
        vec = StoreSpec(
            (CLIP_SECONDS, 512),
            derived_from="c3d_maps",
            meta={"reduction": f"mean over the pool5 map (1 x {side} x {side})"},
        )
        return {"c3d": vec, "c3d_maps": maps} if self.settings.c3d_maps else {"c3d": vec}

    def outputs(self) -> dict[str, tuple[int, ...]]:
        """The pool5 maps, always (``c3d`` is their spatial mean)."""
        from pipeline.backbones.c3d import pool5_side

        side = pool5_side(self.settings.c3d_crop)
        return {"c3d_maps": (CLIP_SECONDS, side, side, 512)}

    def frame_size(self) -> tuple[int, int]:
        return tuple(self.weights.resize)

    def frame_plans(self, segments: Any) -> dict[str, np.ndarray]:
        """Clip ID -> its (10, 16) C3D frames (:func:`pipeline.backbones.c3d.c3d_plan`)."""
        from pipeline.backbones.c3d import c3d_plan

        first = segments.drop_duplicates("clip_id").set_index("clip_id")
        out = {}
        for clip_id, plan in frame_plans(segments).items():
            row = first.loc[clip_id]
            num = int(row["num_frames"]) if "num_frames" in row else None
            rule = str(row["frame_rule"]) if "frame_rule" in row else None
            out[clip_id] = c3d_plan(plan, num, rule)
        return out

    def probe_key(self) -> str:
        return f"{self.network}|{self.settings.c3d_crop}"

    def _build(self) -> tuple[Any, Any]:
        from pipeline.backbones.c3d import build_c3d
        from pipeline.backbones.vgg19 import WeightsError

        name, allow = self.settings.c3d_weights, self.settings.allow_random_weights
        try:
            model, weights = build_c3d(name, allow_random=allow, cache_dir=self.weights_dir)
        except WeightsError as exc:
            if not (name in ("mmaction2", "pickle") and allow):
                raise BackboneError(str(exc)) from exc
            model, weights = build_c3d("random", allow_random=True, cache_dir=self.weights_dir)
        return model, weights.scaled(self.settings.c3d_crop)

    def prepare(self, device: str, known: dict[str, Any] | None = None) -> None:
        import torch

        from pipeline.backbones.precision import decide_precision, probe_precision

        self.model, self.weights = self._build()
        self.device = device
        self.record = self.weights.meta()
        self.random = bool(self.weights.is_random)
        self.weights_line = (
            f"c3d {self.weights.source or self.weights.name} sha256 {str(self.weights.sha256)[:12]}"
        )

        def probe(precision: str) -> dict[str, Any]:
            w, h = self.weights.resize
            gen = torch.Generator().manual_seed(0)
            raw = torch.randint(0, 256, (2, 16, h, w, 3), dtype=torch.uint8, generator=gen)
            x = self.weights.preprocess(raw.to(device))
            net = self.model.to(device, memory_format=torch.channels_last_3d)
            return probe_precision(
                net, x.contiguous(memory_format=torch.channels_last_3d), device, precision
            )

        try:
            self.precision, self.probe, self.advice = decide_precision(
                self.settings.precision, device, probe, known, reduced="bf16"
            )
        except ValueError as exc:
            raise BackboneError(str(exc)) from exc

    def identity(self) -> dict[str, Any]:
        w = self.weights
        return {
            "backbone": BACKBONE_LINE,
            "weights": weights_identity(w.source or w.url or w.name, w.sha256),
            "preprocessing": self.record.get("preprocessing"),
            "c3d_crop": self.settings.c3d_crop,
            "c3d_frames": C3D_FRAMES_RULE,
            "precision": self.precision,
        }

    def load(self, device: str) -> None:
        import torch

        if self.model is None:
            self.model, self.weights = self._build()
        self.device = device
        self.model = self.model.to(device, memory_format=torch.channels_last_3d).eval()

    def run(self, clips: Sequence[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        import torch

        from pipeline.backbones.c3d import CLIP_FRAMES

        if not clips:
            return []
        frames = np.concatenate([c[self.network] for c in clips])  # (160 K, H, W, 3)
        with torch.inference_mode():
            x = torch.from_numpy(frames).to(self.device)
            x = x.reshape(-1, CLIP_FRAMES, *x.shape[1:])  # one 16-frame clip per second
            pool5 = run_in_batches(
                self.model,
                x,
                self.settings.c3d_batch,
                self.precision,
                self.weights.preprocess,
                torch.channels_last_3d,
            )  # (10 K, 512, 1, h, w)
            maps = pool5.mean(2).permute(0, 2, 3, 1).contiguous().cpu().numpy()
        return [
            {"c3d_maps": maps[k * CLIP_SECONDS : (k + 1) * CLIP_SECONDS]} for k in range(len(clips))
        ]


BACKBONE = C3DBackbone
