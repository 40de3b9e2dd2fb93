"""The AVE dataset over the feature stores: samples from the manifest, features memory-mapped.

A sample is a manifest row (several rows can share a video); its features are the rows of its
YouTube ID in the stores ``audio`` (10,128), ``visual`` (10,7,7,512) NHWC and ``visual_vec`` (10,512),
or instead of ``visual_vec`` the C3D vectors ``c3d`` (10,512) or both concatenated (``VISUAL_FEATURES``).
Only the stores a network needs are opened. When a split's rows fit in half the available memory
they are read once into one tensor per store (storage dtype) and each batch is an index plus a
float32 conversion; otherwise shards stay memory-mapped and each batch is gathered row by row. Both
give the same float32 values. Samples whose video is missing from a store (failed download/extraction) are
left out and counted. Synthetic AVE-shaped data folders for tests and benchmarks: ``models.data.synthetic``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.layout import DataLayout
from pipeline.core.manifest import clip_ids, load_classes, load_manifest
from pipeline.core.store import ROW_SHAPES, FeatureStore

_STORES: dict[tuple[str, int], FeatureStore] = {}
#: Share of the available memory (MemAvailable) a dataset's in-memory features may take.
MEMORY_FRACTION = 0.5


def available_memory() -> int:
    """Bytes of memory available to new allocations (``MemAvailable``; 0 when unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


#: Visual vector features a model can read (model option ``visual``): name -> (stores, width). The
#: stores' rows are concatenated in this order: ``vgg19+c3d`` is VGG-19's 512 then C3D's 512.
#: ``clip`` is the default CLIP's (ViT-L/14) 768-d image embedding; a store of another width is
#: named with it, ``clip:512`` (ViT-B/16), which the trainer does from the store's rows.
VISUAL_FEATURES: dict[str, tuple[tuple[str, ...], int]] = {
    "vgg19": (("visual_vec",), 512),
    "c3d": (("c3d",), 512),
    "vgg19+c3d": (("visual_vec", "c3d"), 1024),
    "clip": (("clip",), 768),
    "vgg19+clip": (("visual_vec", "clip"), 1280),
}
#: Appended to the visual vector, in this order, when a batch holds them (``model_inputs``).
EXTRA_VISUAL = ("c3d", "clip")
#: Audio features a model can read (model option ``audio``): name -> (store, width).
AUDIO_FEATURES: dict[str, tuple[str, int]] = {"vggish": ("audio", 128), "clap": ("clap", 512)}


def _named_width(name: str, option: str, known: dict[str, Any]) -> tuple[str, int | None]:
    """``clip:512`` -> (``clip``, 512); ``clip`` -> (``clip``, None)."""
    base, _, width = str(name).partition(":")
    if base not in known:
        raise ValueError(f"{option} must be one of {sorted(known)}, got {name!r}")
    if not width:
        return base, None
    if not width.isdigit() or int(width) < 1:
        raise ValueError(f"{option}={name!r}: the width after ':' must be a positive integer")
    return base, int(width)


def visual_features(name: str) -> tuple[tuple[str, ...], int]:
    """(stores, width) of the visual vector feature set ``name`` (``VISUAL_FEATURES``,
    optionally ``name:width``)."""
    base, width = _named_width(name, "visual", VISUAL_FEATURES)
    stores, default = VISUAL_FEATURES[base]
    return stores, width or default


def audio_features(name: str) -> tuple[str, int]:
    """(store, width) of the audio feature ``name`` (``AUDIO_FEATURES``, optionally
    ``name:width``)."""
    base, width = _named_width(name, "audio", AUDIO_FEATURES)
    store, default = AUDIO_FEATURES[base]
    return store, width or default


def fit_widths(options: dict[str, Any], widths: dict[str, int]) -> dict[str, Any]:
    """Model options whose ``visual`` / ``audio`` feature sets name the width of the stores read
    (``widths``: store -> row width) where it is not the default model's: a ViT-B/16 ``clip``
    store (512) makes ``visual=clip`` read ``clip:512``."""
    out = dict(options)
    for option, lookup in (("visual", visual_features), ("audio", audio_features)):
        if option not in out:
            continue
        base = str(out[option]).partition(":")[0]
        stores = lookup(out[option])[0]
        stores = (stores,) if isinstance(stores, str) else stores
        if not all(s in widths for s in stores):
            continue
        width = sum(widths[s] for s in stores)
        out[option] = base if width == lookup(base)[1] else f"{base}:{width}"
    return out


def open_store(data_dir: str | Path, name: str) -> FeatureStore:
    """A FeatureStore shared by every dataset of this process (one memory map per shard, not one per
    dataset); a rewritten store (new index file) is opened afresh."""
    root = DataLayout(data_dir).store(name).resolve()
    index = root / "index.parquet"
    key = (str(root), index.stat().st_mtime_ns if index.is_file() else -1)
    if key not in _STORES:
        _STORES[key] = FeatureStore.open(data_dir, name)
    return _STORES[key]


def extra_background_path(data_dir: str | Path) -> Path:
    """Where ``import-release`` writes the background-only videos of weak training."""
    return DataLayout(data_dir).extra_background


@dataclass
class AVEDataset:
    """Samples of one split with per-second and video labels; ``batches`` yields float32 tensors,
    ``dataset[i]`` one sample (``torch.utils.data.DataLoader`` takes the dataset as it is)."""

    data_dir: Path
    split: str
    stores: tuple[str, ...]
    background_videos: bool = False
    in_memory: bool | None = None  # None: when the rows fit in MEMORY_FRACTION of the free memory
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
        classes = DataLayout(self.data_dir).classes
        if not classes.is_file():
            raise FileNotFoundError(f"{classes} not found: run `make annotations` first")
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
        self._rows: dict[str, object] | None = None  # store name -> tensor, once loaded

    @property
    def store_widths(self) -> dict[str, int]:
        """Store name -> the width of its rows (their last dimension)."""
        return {name: int(store.row_shape[-1]) for name, store in self._stores.items()}

    def feature_bytes(self) -> int:
        """Bytes the features of this split take in memory, in the stores' dtypes."""
        total = 0
        for store in self._stores.values():
            if store.clip_ids:
                row = store.get(store.clip_ids[0])
                total += len(self.clip_ids) * row.nbytes
        return total

    def _resident(self) -> dict[str, object] | None:
        """The split's rows as one tensor per store, loaded on first use when they fit."""
        import torch

        if self._rows is None:
            fits = self.feature_bytes() <= MEMORY_FRACTION * available_memory()
            if not (self.in_memory if self.in_memory is not None else fits):
                self._rows = {}
            else:
                self._rows = {
                    name: torch.from_numpy(
                        store.gather(self.clip_ids, dtype=store.get(self.clip_ids[0]).dtype)
                    )
                    for name, store in self._stores.items()
                    if self.clip_ids
                }
        return self._rows or None

    def __len__(self) -> int:
        return len(self.clip_ids)

    def __getitem__(self, index: int) -> dict:
        """One sample: ``batch([index])`` without its batch axis (float32 feature tensors keyed by
        store name, ``segment_labels`` (10,), ``video_labels`` ()). A map-style dataset: a
        ``torch.utils.data.DataLoader`` over it yields the batches ``batch`` gives."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample {index} outside 0..{len(self) - 1} of split {self.split!r}")
        return {key: value[0] for key, value in self.batch([index % len(self)]).items()}

    @property
    def random_features(self) -> bool:
        """A store of this dataset came from a random-weight backbone (a smoke run, not results)."""
        return any(s.is_random for s in self._stores.values())

    def batch(self, indices: Sequence[int]):
        """Features (float32 tensors, keyed by store name) and labels for the given positions."""
        import torch

        idx = np.asarray(indices, np.int64)
        rows = self._resident()
        if rows is not None:
            pick = torch.from_numpy(idx)
            out = {name: t.index_select(0, pick).float() for name, t in rows.items()}
        else:
            ids = [self.clip_ids[i] for i in indices]
            out = {name: torch.from_numpy(s.gather(ids)) for name, s in self._stores.items()}
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
    (audio, visual, audio_maps) when the batch has the VGGish pool5 maps (supplementary models).
    A ``c3d`` or ``clip`` row is the visual vector, or is appended to ``visual_vec`` (feature sets
    ``vgg19+c3d``, ``vgg19+clip``); a ``clap`` row is the audio input when ``audio`` is absent."""
    import torch

    audio = batch.get("audio", batch.get("clap"))
    visual = batch.get("visual", batch.get("visual_vec"))
    for name in EXTRA_VISUAL:
        if name in batch:
            visual = batch[name] if visual is None else torch.cat([visual, batch[name]], dim=-1)
    out = (
        audio.to(device) if audio is not None else None,
        visual.to(device) if visual is not None else None,
    )
    if "audio_maps" in batch:
        out += (batch["audio_maps"].to(device),)
    return out
