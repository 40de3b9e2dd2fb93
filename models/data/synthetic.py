"""A synthetic AVE-shaped store where background seconds are decidable only by audio-visual agreement.

``make_agreement_store(data_dir, n_rows)`` writes the manifest and classes of
``models.data.ave.make_synthetic_store`` (random class, event start and length per clip) and stores
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

from pathlib import Path

import numpy as np

from models.data.ave import ROW_SHAPES, make_synthetic_store
from pipeline.core.manifest import load_manifest
from pipeline.core.store import StoreWriter


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
