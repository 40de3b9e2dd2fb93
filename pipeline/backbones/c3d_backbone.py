"""C3D as a backbone: each second's 16-frame clip -> pool5 -> ``c3d_maps`` (10, h, w, 512) (stored
with ``c3d_maps``) and its spatial mean ``c3d`` (10, 512)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from pipeline.backbones.base import (
    RecordedNetwork,
    StoreSpec,
    frame_plans,
    run_in_batches,
)
from pipeline.backbones.c3d import CLIP_FRAMES
from pipeline.core.manifest import CLIP_SECONDS

BACKBONE_LINE = "c3d pool5 (Sports-1M layout), one 16-frame clip per second, mean over 1 x h x w"
C3D_FRAMES_RULE = (
    "the segment plan at 16 frames per second; other F: the release rule at 16 from the clip's "
    "frame count, or the planned frames repeated (time-rule clips)"
)


class C3DBackbone(RecordedNetwork):
    """Settings read: ``c3d_weights``, ``c3d_maps``, ``c3d_crop``, ``c3d_batch``,
    ``allow_random_weights``, ``precision``. ``auto`` precision measures bf16 (the inputs' range of
    +-128 risks fp16 overflow)."""

    kind = "c3d"
    network = "c3d"
    inputs = "frames"
    backbone_line = BACKBONE_LINE
    memory_format = "channels_last_3d"
    named_weights = ("mmaction2", "pickle")

    @classmethod
    def from_network(
        cls, model: Any, weights: Any, precision: str, frames_per_segment: int = 16, **settings: Any
    ) -> C3DBackbone:
        settings.setdefault("c3d_crop", weights.crop)
        settings.setdefault("c3d_maps", True)
        return super().from_network(model, weights, precision, frames_per_segment, **settings)

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
        from pipeline.core.clip_rows import ClipRows

        rows = ClipRows.of(segments)
        plans = frame_plans(rows)
        columns = set(rows.table.columns)
        out = {}
        for k, clip_id in enumerate(rows.ids):
            num = int(rows.clip_values("num_frames", k)) if "num_frames" in columns else None
            rule = str(rows.clip_values("frame_rule", k)) if "frame_rule" in columns else None
            out[clip_id] = c3d_plan(plans[clip_id], num, rule)
        return out

    def probe_key(self) -> str:
        return f"{self.network}|{self.settings.c3d_crop}"

    def weights_setting(self) -> str:
        return self.settings.c3d_weights

    def build_network(self, weights: str, allow_random: bool) -> tuple[Any, Any]:
        from pipeline.backbones.c3d import build_c3d

        model, record = build_c3d(weights, allow_random=allow_random, cache_dir=self.weights_dir)
        return model, record.scaled(self.settings.c3d_crop)

    def prepare(self, device: str, known: dict[str, Any] | None = None) -> None:
        import torch

        from pipeline.backbones.precision import probe_precision

        self.adopt(*self._build())
        self.device = device

        def probe(precision: str) -> dict[str, Any]:
            w, h = self.weights.resize
            gen = torch.Generator().manual_seed(0)
            raw = torch.randint(0, 256, (2, 16, h, w, 3), dtype=torch.uint8, generator=gen)
            x = self.weights.preprocess(raw.to(device))
            net = self.model.to(device, memory_format=torch.channels_last_3d)
            return probe_precision(
                net, x.contiguous(memory_format=torch.channels_last_3d), device, precision
            )

        self.settle_precision(device, probe, known, reduced="bf16")

    def identity(self) -> dict[str, Any]:
        crop = {"c3d_crop": self.settings.c3d_crop, "c3d_frames": C3D_FRAMES_RULE}
        return {**super().identity(), **crop}

    def run(self, clips: Sequence[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        import torch

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


#: One work item: (clip_id, clip path, VGG-19 frame plan (10, F) or None, C3D plan (10, 16) or None).
Item = tuple[str, str | os.PathLike, np.ndarray | None, np.ndarray | None]


def extract_c3d(
    items: Sequence[Item],
    c3d: tuple[Any, Any] | None,
    vgg: tuple[Any, Any] | None = None,
    device: str = "cpu",
    precision: str = "fp32",
    vgg_precision: str | None = None,
    batch_size: int = 64,
    c3d_batch: int = 4,
    num_workers: int = 2,
    vgg_size: int = 224,
) -> Iterator[tuple[str, dict[str, np.ndarray] | str]]:
    """Yield ``(clip_id, {"c3d_maps": (10, h, w, 512), "visual": (10, S, S, 512)} | error)`` in order.

    The :class:`~pipeline.backbones.c3d_backbone.C3DBackbone` (and the VGG-19 backbone on the same
    decoded clip) over the items, as the features stage runs them: every clip decoded once (one
    ffmpeg process, both sizes) in ``num_workers`` processes. ``c3d``: (model, record) from
    :func:`~pipeline.backbones.c3d.build_c3d`, ``c3d_batch`` 16-frame clips per forward pass; ``vgg``: (model, record) from
    :func:`pipeline.backbones.vgg19.build_vgg19_pool5`, ``batch_size`` frames per pass.
    ``precision``: C3D's, ``vgg_precision`` VGG-19's (default the same).
    """
    from pipeline.backbones.executor import ClipWork, group_items, run_groups
    from pipeline.backbones.precision import check_precision
    from pipeline.backbones.vgg19_backbone import VGG19Backbone

    if c3d is None and vgg is None:
        raise ValueError("nothing to extract: pass c3d and/or vgg")
    vgg_precision = vgg_precision or precision
    for p in (precision, vgg_precision):
        check_precision(device, p)  # bf16/fp16 only where the device has them natively
    items = list(items)
    if not items:
        return
    for clip_id, _, plan, plan3 in items:
        if vgg is not None and (plan is None or np.asarray(plan).shape[0] != CLIP_SECONDS):
            raise ValueError(f"{clip_id}: VGG-19 frame plan must be ({CLIP_SECONDS}, F)")
        if c3d is not None and (
            plan3 is None or np.asarray(plan3).shape != (CLIP_SECONDS, CLIP_FRAMES)
        ):
            raise ValueError(f"{clip_id}: C3D frame plan must be ({CLIP_SECONDS}, {CLIP_FRAMES})")
    backbones = []
    if vgg is not None:
        per_second = np.asarray(items[0][2]).shape[1]
        backbones.append(
            VGG19Backbone.from_network(
                *vgg, vgg_precision, per_second, frame_size=vgg_size, batch_size=batch_size
            )
        )
    if c3d is not None:
        backbones.append(C3DBackbone.from_network(*c3d, precision, c3d_batch=c3d_batch))
    work = [
        ClipWork(
            str(c),
            str(p),
            plans={
                b.network: np.asarray(f if b.network != "c3d" else f3, np.int64).reshape(-1)
                for b in backbones
            },
        )
        for c, p, f, f3 in items
    ]
    for item, out in run_groups(backbones, group_items(work, backbones), device, num_workers):
        if isinstance(out, str):
            yield item.clip_id, out
            continue
        value = {}
        if vgg is not None:
            value["visual"] = out["vgg19"]["visual"]
        if c3d is not None:
            value["c3d_maps"] = out["c3d"]["c3d_maps"]
        yield item.clip_id, value
