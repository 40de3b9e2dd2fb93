"""A data folder from Python: its manifest and classes (pandas), its feature stores (NumPy) and
the AVE dataset over them (PyTorch, map-style: usable with ``torch.utils.data.DataLoader``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from models.data.ave import AVEDataset
from pipeline.core.manifest import clip_ids, load_classes, load_manifest
from pipeline.core.store import FeatureStore

__all__ = ["AVEDataset", "FeatureStore", "class_names", "open_manifest", "open_store"]


def open_manifest(data_dir: str | Path) -> pd.DataFrame:
    """The manifest: one row per sample (``clip_id``, the stores' key; ``split``, ``label``,
    ``segment_labels``...). A manifest of an earlier version gets its ``clip_id`` column here."""
    manifest = load_manifest(data_dir)
    return (
        manifest if "clip_id" in manifest.columns else manifest.assign(clip_id=clip_ids(manifest))
    )


def class_names(data_dir: str | Path) -> list[str]:
    """The class names in label order; the last one is ``background``."""
    return load_classes(data_dir)


def open_store(data_dir: str | Path, name: str) -> FeatureStore:
    """A finished feature store (``audio``, ``visual``, ``visual_vec``, ``c3d``, ...): ``get(clip_id)``
    gives one row in the storage dtype, ``gather(clip_ids)`` stacks rows as float32."""
    return FeatureStore.open(data_dir, name)
