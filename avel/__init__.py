"""avel's Python API: open a data folder, feed it to PyTorch, train, evaluate, predict, and extract
the features of one's own videos. A thin facade over the stages (``pipeline``) and the models
(``models``); importing it stays light (torch is imported on first use). Guide:
docs/python-api.md.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from avel.data import AVEDataset, FeatureStore, class_names, open_manifest, open_store
from avel.extract import ExtractedVideo, ExtractError, extract
from avel.runs import build_model, evaluate, load_model, model_names, predict, train
from pipeline.core.provenance import provenance

try:
    __version__ = version("avel")
except PackageNotFoundError:  # a checkout on the path, not installed
    __version__ = "0+unknown"

__all__ = [
    "AVEDataset",
    "ExtractError",
    "ExtractedVideo",
    "FeatureStore",
    "build_model",
    "class_names",
    "evaluate",
    "extract",
    "load_model",
    "model_names",
    "open_manifest",
    "open_store",
    "predict",
    "provenance",
    "train",
]
