"""Synthetic AVE-shaped data folders (manifest, classes, stores through the real ``StoreWriter``).

``make_synthetic_store(data_dir, n_rows)``: random class, event start and length per clip; every
second carries its class's prototype plus noise, so a network can learn it.

``make_agreement_store(data_dir, n_rows)``: the same manifest and classes, with stores
``audio``, ``visual`` and ``visual_vec`` through the real ``StoreWriter``, built so that:
- every second shows one of ``types`` paired sources: audio carries its audio prototype, the visual
  map carries its visual prototype in 8 of the 49 regions; each modality's source is uniform over
  the types and independent across seconds, *whatever* the labels;
- on an event second audio and picture show the same source; on a background second they show two
  different sources. Each modality alone therefore has the same distribution on event and background
  seconds: only their agreement says which seconds are background;
- the clip's class is carried by a class prototype present on every second of both modalities
  (``class_signal``), so classification is easy and localization is the hard part.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.io import write_parquet
from pipeline.core.layout import DataLayout
from pipeline.core.manifest import load_manifest
from pipeline.core.store import ROW_SHAPES, StoreWriter


def make_synthetic_store(
    data_dir: str | Path,
    n_rows: int,
    num_classes: int = 28,
    seed: int = 0,
    splits: tuple[float, float, float] = (0.8, 0.1, 0.1),
    visual_dtype: str = "float16",
    shard_size: int = 256,
    signal: float = 1.0,
    noise: float = 1.0,
    stores: Sequence[str] = ("audio", "visual", "visual_vec"),  # also "audio_maps"
    background_videos: int = 0,
) -> dict:
    """Write an AVE-shaped data folder with random, class-dependent features.

    Every second carries its class's prototype (audio; visual in 8 of the 49 regions) times ``signal``
    plus Gaussian noise, so a network can learn it; ``signal=0`` gives pure noise. Returns a summary.
    """
    data_dir = Path(data_dir)
    rng = np.random.default_rng(seed)
    background = num_classes
    names = [f"class {i:02d}" for i in range(num_classes)] + ["background"]
    labels = rng.integers(0, num_classes, n_rows)
    starts = rng.integers(0, 9, n_rows)
    ends = np.minimum(10, starts + rng.integers(2, 11, n_rows))
    cut = np.cumsum(np.round(np.asarray(splits) / sum(splits) * n_rows).astype(int))
    split = np.array(["train"] * n_rows, dtype=object)
    split[cut[0] : cut[1]] = "val"
    split[cut[1] :] = "test"
    ids = [f"syn{i:08d}" for i in range(n_rows)]
    seg = [
        [int(lab) if s <= t < e else background for t in range(10)]
        for lab, s, e in zip(labels, starts, ends, strict=True)
    ]
    manifest = pd.DataFrame(
        {
            "sample": np.arange(n_rows),
            "youtube_id": ids,
            "category": [names[i] for i in labels],
            "label": labels.astype(np.int16),
            "start": starts,
            "end": ends,
            "split": pd.array(split, dtype="string"),
            "match_split": pd.array([None] * n_rows, dtype="string"),
            "clip_start": pd.array([None] * n_rows, dtype="Float64"),
            "clip_end": pd.array([None] * n_rows, dtype="Float64"),
            "segment_labels": seg,
        }
    )
    layout = DataLayout(data_dir)
    write_parquet(manifest, layout.manifest)
    write_parquet(pd.DataFrame({"index": range(len(names)), "name": names}), layout.classes)
    extra_ids = [f"bgv{i:08d}" for i in range(background_videos)]
    if extra_ids:
        write_parquet(
            pd.DataFrame({"youtube_id": extra_ids, "split": "train"}),
            layout.extra_background,
        )
    all_ids = ids + extra_ids
    all_seg = np.array(seg + [[background] * 10] * len(extra_ids), np.int64).reshape(-1, 10)
    proto_a = rng.standard_normal((num_classes + 1, 128)).astype(np.float32)
    proto_v = np.abs(rng.standard_normal((num_classes + 1, 512))).astype(np.float32)
    proto_m = np.abs(rng.standard_normal((num_classes + 1, 512))).astype(np.float32)
    meta = {"synthetic": True, "random_weights": True, "seed": seed}
    for name in stores:
        dtype = visual_dtype if name == "visual" else "float32"
        writer = StoreWriter.open(
            data_dir, name, all_ids, ROW_SHAPES[name], dtype, shard_size, meta
        )
        for shard, shard_ids in writer.pending_shards():
            lo = shard * shard_size
            srng = np.random.default_rng([seed, shard])
            lab = all_seg[lo : lo + len(shard_ids)]
            if name == "audio":
                x = signal * proto_a[lab] + noise * srng.standard_normal(
                    (*lab.shape, 128), np.float32
                )
            elif name == "audio_maps":  # VGGish pool5 maps: the class in 4 of the 24 regions
                maps = noise * np.abs(srng.standard_normal((*lab.shape, 24, 512), np.float32))
                where = srng.random((*lab.shape, 24)).argsort(-1)[..., :4]
                hot = np.zeros((*lab.shape, 24, 1), np.float32)
                np.put_along_axis(hot, where[..., None], 1.0, axis=-2)
                maps += signal * hot * proto_m[lab][..., None, :]
                x = maps.reshape(*lab.shape, 6, 4, 512)
            else:
                vrng = np.random.default_rng(
                    [seed, shard, 1]
                )  # same maps for visual and visual_vec
                maps = noise * np.abs(vrng.standard_normal((*lab.shape, 49, 512), np.float32))
                where = vrng.random((*lab.shape, 49)).argsort(-1)[..., :8]
                hot = np.zeros((*lab.shape, 49, 1), np.float32)
                np.put_along_axis(hot, where[..., None], 1.0, axis=-2)
                maps += signal * hot * proto_v[lab][..., None, :]
                x = maps.reshape(*lab.shape, 7, 7, 512) if name == "visual" else maps.mean(-2)
            writer.write_shard(shard, dict(zip(shard_ids, x, strict=True)))
        writer.finalize()
    return {
        "rows": n_rows,
        "classes": num_classes + 1,
        "extra_background": len(extra_ids),
        "splits": {s: int((split == s).sum()) for s in ("train", "val", "test")},
    }


def make_agreement_store(
    data_dir: str | Path,
    n_rows: int,
    num_classes: int = 28,
    types: int = 16,
    seed: int = 0,
    splits: tuple[float, float, float] = (0.8, 0.1, 0.1),
    signal: float = 2.0,
    class_signal: float = 1.0,
    noise: float = 1.0,
    shard_size: int = 256,
    visual_dtype: str = "float16",
) -> dict:
    """Write the store; returns a summary with the fraction of background seconds per split."""
    if types < 2:
        raise ValueError(
            f"types must be >= 2 (background needs two different sources), got {types}"
        )
    data_dir = Path(data_dir)
    summary = make_synthetic_store(data_dir, n_rows, num_classes, seed, splits, stores=())
    manifest = load_manifest(data_dir).sort_values("sample")
    ids = manifest["youtube_id"].tolist()
    seg = np.stack([np.asarray(s, np.int64) for s in manifest["segment_labels"]])
    labels = manifest["label"].to_numpy(np.int64)
    rng = np.random.default_rng([seed, 7])
    type_a = rng.standard_normal((types, 128)).astype(np.float32)
    type_v = np.abs(rng.standard_normal((types, 512))).astype(np.float32)
    class_a = rng.standard_normal((num_classes, 128)).astype(np.float32)
    class_v = np.abs(rng.standard_normal((num_classes, 512))).astype(np.float32)
    src_a = rng.integers(0, types, seg.shape)
    shift = rng.integers(1, types, seg.shape)
    src_v = np.where(seg == num_classes, (src_a + shift) % types, src_a)  # disagree on background
    meta = {
        "synthetic": True,
        "random_weights": True,
        "seed": seed,
        "generator": "agreement",
        "types": types,
    }
    writers = {
        name: StoreWriter.open(
            data_dir,
            name,
            ids,
            ROW_SHAPES[name],
            visual_dtype if name == "visual" else "float32",
            shard_size,
            meta,
        )
        for name in ("audio", "visual", "visual_vec")
    }
    for shard in range(writers["audio"].num_shards):
        todo = {name: w for name, w in writers.items() if not w.is_done(shard)}
        if not todo:
            continue
        shard_ids = writers["audio"].shard_ids(shard)
        lo, n = shard * shard_size, len(shard_ids)
        srng = np.random.default_rng([seed, shard, 11])
        lab = np.repeat(labels[lo : lo + n, None], seg.shape[1], 1)
        audio = (
            signal * type_a[src_a[lo : lo + n]]
            + class_signal * class_a[lab]
            + noise * srng.standard_normal((n, seg.shape[1], 128), np.float32)
        )
        maps = noise * np.abs(srng.standard_normal((n, seg.shape[1], 49, 512), np.float32))
        where = srng.random((n, seg.shape[1], 49)).argsort(-1)
        hot_type = np.zeros((n, seg.shape[1], 49, 1), np.float32)
        hot_class = np.zeros_like(hot_type)
        np.put_along_axis(hot_type, where[..., :8, None], 1.0, axis=-2)
        np.put_along_axis(hot_class, where[..., 8:16, None], 1.0, axis=-2)
        maps += signal * hot_type * type_v[src_v[lo : lo + n]][..., None, :]
        maps += class_signal * hot_class * class_v[lab][..., None, :]
        rows = {
            "audio": audio,
            "visual": maps.reshape(n, seg.shape[1], 7, 7, 512),
            "visual_vec": maps.mean(-2),
        }
        for name, writer in todo.items():
            writer.write_shard(shard, dict(zip(shard_ids, rows[name], strict=True)))
    for writer in writers.values():
        writer.finalize()
    split = manifest["split"].to_numpy()
    background = {
        s: float((seg[split == s] == num_classes).mean()) for s in ("train", "val", "test")
    }
    return {**summary, "generator": "agreement", "types": types, "background_fraction": background}
