"""The AVE dataset over the feature stores: samples from the manifest, features memory-mapped.

A sample is a manifest row (several rows can share a video); its features are the rows of its
YouTube ID in the stores ``audio`` (10,128), ``visual`` (10,7,7,512) NHWC and ``visual_vec`` (10,512).
Only the stores a network needs are opened; shards stay memory-mapped and each batch is gathered and
converted to float32. Samples whose video is missing from a store (failed download/extraction) are
left out and counted. ``make_synthetic_store`` writes an AVE-shaped data folder (manifest, classes,
stores through the real ``StoreWriter``) for tests and benchmarks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.manifest import clip_ids, load_classes, load_manifest
from pipeline.core.io import write_parquet
from pipeline.core.store import FeatureStore, StoreWriter

ROW_SHAPES = {
    "audio": (10, 128),
    "visual": (10, 7, 7, 512),
    "visual_vec": (10, 512),
    "audio_maps": (10, 6, 4, 512),
}
EXTRA_BACKGROUND = "extra_background.parquet"


_STORES: dict[tuple[str, int], FeatureStore] = {}


def open_store(data_dir: str | Path, name: str) -> FeatureStore:
    """A FeatureStore shared by every dataset of this process (one memory map per shard, not one per
    dataset); a rewritten store (new index file) is opened afresh."""
    root = (Path(data_dir) / "features" / name).resolve()
    index = root / "index.parquet"
    key = (str(root), index.stat().st_mtime_ns if index.is_file() else -1)
    if key not in _STORES:
        _STORES[key] = FeatureStore.open(data_dir, name)
    return _STORES[key]


def extra_background_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / EXTRA_BACKGROUND


@dataclass
class AVEDataset:
    """Samples of one split with per-second and video labels; ``batches`` yields float32 tensors."""

    data_dir: Path
    split: str
    stores: tuple[str, ...]
    background_videos: bool = False
    clip_ids: list[str] = field(init=False)
    samples: np.ndarray = field(init=False)
    segment_labels: np.ndarray = field(init=False)
    video_labels: np.ndarray = field(init=False)
    num_classes: int = field(init=False)
    missing: list[str] = field(init=False)
    extra_videos: int = field(init=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        manifest = load_manifest(self.data_dir)
        if not (self.data_dir / "classes.parquet").is_file():
            raise FileNotFoundError(
                f"{self.data_dir}/classes.parquet not found: run `make annotations` first"
            )
        self.class_names = load_classes(self.data_dir)
        self.num_classes = len(self.class_names)
        background = self.num_classes - 1
        rows = manifest[manifest["split"] == self.split]
        if rows.empty:
            raise ValueError(f"{self.data_dir}/manifest.parquet: no rows in split {self.split!r}")
        self._stores = {name: open_store(self.data_dir, name) for name in self.stores}
        for name, store in self._stores.items():
            if name in ROW_SHAPES and store.row_shape != ROW_SHAPES[name]:
                raise ValueError(
                    f"store {store.root}: rows {store.row_shape}, expected {ROW_SHAPES[name]}"
                )
        keys = clip_ids(rows)  # the stores' key: clip_id (= youtube_id for AVE)
        ok = np.array([all(y in s for s in self._stores.values()) for y in keys], bool)
        self.missing = keys[~ok].tolist()
        rows = rows[ok]
        ids = keys[ok].tolist()
        samples = rows["sample"].to_numpy(np.int64)
        seg = (
            np.stack([np.asarray(s, np.int64) for s in rows["segment_labels"]])
            if len(rows)
            else np.zeros((0, 10), np.int64)
        )
        vid = rows["label"].to_numpy(np.int64)
        self.extra_videos = 0
        path = extra_background_path(self.data_dir)
        if self.background_videos and self.split == "train" and path.is_file():
            extra = pd.read_parquet(path)
            if "split" in extra.columns:
                extra = extra[extra["split"] == "train"]
            extra_ids = [
                y for y in extra["youtube_id"] if all(y in s for s in self._stores.values())
            ]
            self.extra_videos = len(extra_ids)
            ids += extra_ids
            samples = np.concatenate([samples, np.full(len(extra_ids), -1, np.int64)])
            seg = np.concatenate([seg, np.full((len(extra_ids), 10), background, np.int64)])
            vid = np.concatenate([vid, np.full(len(extra_ids), background, np.int64)])
        self.clip_ids, self.samples, self.segment_labels, self.video_labels = (
            ids,
            samples,
            seg,
            vid,
        )

    def __len__(self) -> int:
        return len(self.clip_ids)

    def batch(self, indices: Sequence[int]):
        """Features (float32 tensors, keyed by store name) and labels for the given positions."""
        import torch

        ids = [self.clip_ids[i] for i in indices]
        out = {name: torch.from_numpy(store.gather(ids)) for name, store in self._stores.items()}
        idx = np.asarray(indices, np.int64)
        out["segment_labels"] = torch.from_numpy(self.segment_labels[idx])
        out["video_labels"] = torch.from_numpy(self.video_labels[idx])
        return out

    def batches(self, batch_size: int, shuffle: bool = False, generator=None) -> Iterator[dict]:
        """Batches in order, or in a permutation drawn from ``generator`` (a seeded torch.Generator)."""
        import torch

        order = (
            torch.randperm(len(self), generator=generator).tolist() if shuffle else range(len(self))
        )
        order = list(order)
        for start in range(0, len(order), batch_size):
            yield self.batch(order[start : start + batch_size])


def model_inputs(batch: dict, device) -> tuple:
    """(audio, visual) for ``LocalizationNet.forward`` from a batch (absent stores give None);
    (audio, visual, audio_maps) when the batch has the VGGish pool5 maps (supplementary models)."""
    audio = batch.get("audio")
    visual = batch.get("visual", batch.get("visual_vec"))
    out = (
        audio.to(device) if audio is not None else None,
        visual.to(device) if visual is not None else None,
    )
    if "audio_maps" in batch:
        out += (batch["audio_maps"].to(device),)
    return out


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
    write_parquet(manifest, data_dir / "manifest.parquet")
    write_parquet(
        pd.DataFrame({"index": range(len(names)), "name": names}), data_dir / "classes.parquet"
    )
    extra_ids = [f"bgv{i:08d}" for i in range(background_videos)]
    if extra_ids:
        write_parquet(
            pd.DataFrame({"youtube_id": extra_ids, "split": "train"}),
            extra_background_path(data_dir),
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
