"""``avel.extract``: the features of one's own videos, in one call, made as a data folder's are.

The videos go through the stages every clip goes through, in a data folder of their own: a clip
list (the annotations stage's table reader) -> ``clips/<clip_id>.mp4`` (linked, else copied, as
``avel download --from-dir`` places clips) -> ``run_segments`` -> ``run_features``. So the arrays
are the rows the stores hold: the same decoding, frame plan, recipe and weights. A video's ID is
derived from its content, so a second call with the same videos recomputes nothing, and new
videos extend the folder's stores. Like every AVE clip, a video is read as 10 s: a longer one
gives its first 10 s, a shorter one is padded and flagged (``segments.parquet``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.io import atomic_path, write_parquet
from pipeline.core.layout import DataLayout
from pipeline.core.manifest import CLIP_SECONDS
from pipeline.core.store import FeatureStore
from pipeline.stages.annotations.clip_lists import make_clip_id
from pipeline.stages.annotations.stage import AnnotationsConfig, run_annotations
from pipeline.stages.features.stage import FeaturesConfig, run_features
from pipeline.stages.segments import SegmentsConfig, load_segment_failures, run_segments

__all__ = ["ExtractError", "ExtractedVideo", "extract", "video_id"]


class ExtractError(RuntimeError):
    """The videos could not be extracted at all (bad folder, missing weights, ...)."""


@dataclass
class ExtractedVideo:
    """One video's features: store name -> the row the store holds (``ExtractedVideo["audio"]``);
    ``problem`` says why a video has none (it could not be decoded, ...)."""

    path: Path
    clip_id: str
    features: dict[str, np.ndarray] = field(default_factory=dict)
    problem: str | None = None

    def __getitem__(self, store: str) -> np.ndarray:
        return self.features[store]

    @property
    def ok(self) -> bool:
        return self.problem is None


def video_id(path: str | os.PathLike) -> str:
    """An 11-character ID from the file's content (the clip list's ID alphabet: A-Z a-z 0-9 _ -)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return base64.urlsafe_b64encode(digest.digest()).decode()[:11]


def _own_folder(layout: DataLayout) -> None:
    """Refuse a data folder whose manifest came from elsewhere (AVE, a clip list): extracting
    there would replace it."""
    if not layout.manifest.is_file():
        return
    inputs = {}
    if layout.manifest_meta.is_file():
        inputs = json.loads(layout.manifest_meta.read_text()).get("inputs") or {}
    ours = [Path(p).resolve() for p in inputs.values()] == [layout.own_videos.resolve()]
    if not ours:
        raise ExtractError(
            f"{layout.root}: its manifest ({layout.manifest}) was made from other inputs (AVE or "
            "a clip list); extract into a data folder of its own (nothing was changed)"
        )


def _clip_list(layout: DataLayout, videos: list[tuple[Path, str]]) -> None:
    """The folder's clip list: the videos extracted before, plus these (one row per ID)."""
    old = pd.read_parquet(layout.own_videos) if layout.own_videos.is_file() else None
    known = set(old["youtube_id"]) if old is not None else set()
    new: dict[str, Path] = {}
    for path, vid in videos:
        if vid not in known:
            new.setdefault(vid, path)
    if old is not None and not new:
        return
    rows = pd.DataFrame(
        {
            "youtube_id": list(new),
            "start": 0.0,
            "end": float(CLIP_SECONDS),
            "source": [str(p) for p in new.values()],
        }
    )
    write_parquet(
        rows if old is None else pd.concat([old, rows], ignore_index=True), layout.own_videos
    )


def _place(source: Path, clip: Path) -> None:
    """``source`` as ``clip``: a hard link where the file system allows, else an atomic copy."""
    if clip.is_file():
        return  # the ID is the content's: the same file is there already
    clip.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, clip)
    except OSError:
        with atomic_path(clip, suffix=".mp4") as tmp:
            shutil.copyfile(source, tmp)


def extract(
    videos: str | os.PathLike | Iterable[str | os.PathLike],
    data_dir: str | os.PathLike,
    features: Iterable[str] = ("audio", "visual"),
    frames_per_segment: int = 16,
    workers: int = 1,
    progress: bool = True,
    **options: Any,
) -> list[ExtractedVideo]:
    """The features of ``videos`` (one path or several), in order, one :class:`ExtractedVideo`
    each, with the rows of the stores of ``features`` (``audio``, ``visual``, ``c3d``).

    ``data_dir`` holds them (clips, segments, stores): a folder of its own, reused by later calls.
    ``frames_per_segment`` and ``workers`` go to the segments stage; ``options`` are the features
    stage's settings (``FeaturesConfig``: ``device``, ``dtype``, ``vgg19_weights``,
    ``allow_random_weights``, ...), as ``avel features`` takes them. A video that cannot be decoded
    gets a ``problem`` and no features; a setting that stops the stage raises :class:`ExtractError`.
    """
    paths = [Path(videos)] if isinstance(videos, str | os.PathLike) else [Path(v) for v in videos]
    for path in paths:
        if not path.is_file():
            raise ExtractError(f"{path}: no such video file")
    layout = DataLayout(data_dir)
    _own_folder(layout)
    own = [(path, video_id(path)) for path in paths]
    _clip_list(layout, own)
    ids = [(path, make_clip_id(vid, 0)) for path, vid in own]  # the clip list's clip IDs
    run_annotations(
        AnnotationsConfig(
            data_dir=layout.root,
            clip_list=[str(layout.own_videos.resolve())],
            clip_list_format="table",
        )
    )
    for path, clip_id in ids:
        _place(path, layout.clip(clip_id))
    run_segments(
        SegmentsConfig(
            data_dir=layout.root,
            frames_per_segment=frames_per_segment,
            workers=workers,
            progress=progress,
        )
    )
    failed = load_segment_failures(layout.root)
    problems = dict(zip(failed["clip_id"].astype(str), failed["reason"].astype(str), strict=True))
    stores: dict[str, FeatureStore] = {}
    if any(clip_id not in problems for _, clip_id in ids):
        cfg = FeaturesConfig(
            data_dir=layout.root, features=tuple(features), progress=progress, **options
        )
        summary = run_features(cfg)
        if summary["errors"]:
            raise ExtractError(
                "; ".join(f"{kind}: {message}" for kind, message in summary["errors"].items())
            )
        stores = {name: FeatureStore.open(layout.root, name) for name in summary["stores"]}
    random = sorted(name for name, store in stores.items() if store.is_random)
    if random:
        warnings.warn(
            f"RANDOM WEIGHTS: the stores {random} come from random-weight networks; "
            "these features mean nothing",
            stacklevel=2,
        )
    return [_result(path, clip_id, stores, problems) for path, clip_id in ids]


def _result(
    path: Path, clip_id: str, stores: dict[str, FeatureStore], problems: dict[str, str]
) -> ExtractedVideo:
    found = {
        name: np.array(store.get(clip_id)) for name, store in stores.items() if clip_id in store
    }
    problem = problems.get(clip_id)
    if problem is None and len(found) < len(stores):
        failures = [
            f"{name}: {(store.meta.get('failed') or {}).get(clip_id, 'not extracted')}"
            for name, store in stores.items()
            if clip_id not in store
        ]
        problem = "; ".join(failures)
    return ExtractedVideo(path, clip_id, found if problem is None else {}, problem)
