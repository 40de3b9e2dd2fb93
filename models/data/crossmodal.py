"""The cross-modality split: clips with both features (``Clips``), event masks, training pairs.

``load_clips(data_dir, split)`` reads the manifest rows of ``match_split == split`` whose clip is in
both the ``visual_vec`` (10, 512) and ``audio`` (10, 128) stores; ``build_pairs`` turns them into the
release's (visual, audio, y) training pairs.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.manifest import CLIP_SECONDS, clip_ids, load_manifest
from pipeline.core.store import ROW_SHAPES, FeatureStore

VISUAL_STORE = "visual_vec"
AUDIO_STORE = "audio"


@dataclass
class Clips:
    """The manifest rows of one cross-modal split that have both features, with their arrays."""

    rows: pd.DataFrame  # sample, youtube_id, start, end, ...
    visual: np.ndarray  # (N, 10, 512) float32
    audio: np.ndarray  # (N, 10, 128) float32
    missing: list[str]  # clip ids of split rows absent from a store
    random_features: bool = False  # a store came from a random-weight backbone (smoke run only)

    def __len__(self) -> int:
        return len(self.rows)


def load_clips(
    data_dir: str | Path,
    split: str,
    visual_store: str = VISUAL_STORE,
    audio_store: str = AUDIO_STORE,
    manifest: pd.DataFrame | None = None,
) -> Clips:
    """Rows of ``match_split == split`` with their visual-vector and audio features."""
    manifest = load_manifest(data_dir) if manifest is None else manifest
    if "match_split" not in manifest or manifest["match_split"].isna().all():
        raise ValueError(
            f"{data_dir}: the manifest has no cross-modality split (match_split is empty); rerun "
            "`make annotations` with the *_order_match split lists"
        )
    visual = FeatureStore.open(data_dir, visual_store)
    audio = FeatureStore.open(data_dir, audio_store)
    for store, shape in ((visual, ROW_SHAPES["visual_vec"]), (audio, ROW_SHAPES["audio"])):
        if tuple(store.row_shape) != shape:
            raise ValueError(
                f"{store.root}: rows are {tuple(store.row_shape)}, cross-modal models need {shape}"
            )
    rows = manifest[manifest["match_split"] == split].sort_values("sample")
    keys = clip_ids(rows)
    have = keys.map(lambda y: y in visual and y in audio).astype(bool)
    missing = keys[~have].tolist()
    rows = rows[have].reset_index(drop=True)
    ids = keys[have].tolist()
    random_features = visual.is_random or audio.is_random
    if random_features:
        print(
            f"warning: {data_dir}: features come from a backbone with RANDOM weights; "
            "cross-modal figures from them are a smoke test, not results",
            file=sys.stderr,
        )
    return Clips(rows, visual.gather(ids), audio.gather(ids), missing, random_features)


def event_mask(rows: pd.DataFrame) -> np.ndarray:
    """(N, 10) bool: second t of row r is an event second (start <= t < end)."""
    t = np.arange(CLIP_SECONDS)
    return (t >= rows["start"].to_numpy()[:, None]) & (t < rows["end"].to_numpy()[:, None])


def build_pairs(
    clips: Clips, mismatched: int = 0, positives_only: bool = False, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training pairs ``(visual, audio, y)`` as in the release.

    Every second of every clip gives the pair (visual_t, audio_t): y = 1 on event seconds, y = 0 on
    background seconds of the same video. ``mismatched`` adds, per event second, that many y = 0
    pairs of its visual vector with the audio of a random second of another video.
    ``positives_only`` keeps only the y = 1 pairs (DCCA).
    """
    mask = event_mask(clips.rows).reshape(-1)
    visual = clips.visual.reshape(-1, clips.visual.shape[-1])
    audio = clips.audio.reshape(-1, clips.audio.shape[-1])
    y = mask.astype(np.float32)
    if positives_only:
        return visual[mask], audio[mask], y[mask]
    if mismatched > 0:
        rng = np.random.default_rng(seed)
        videos = clips.rows["youtube_id"].to_numpy()
        pos = np.flatnonzero(mask)
        if len(np.unique(videos)) < 2:
            raise ValueError("mismatched pairs need at least two videos")
        src = np.repeat(pos, mismatched)
        clip_of = src // CLIP_SECONDS
        other = rng.integers(0, len(videos), size=src.size)
        clash = videos[other] == videos[clip_of]
        while clash.any():
            other[clash] = rng.integers(0, len(videos), size=int(clash.sum()))
            clash = videos[other] == videos[clip_of]
        other_rows = other * CLIP_SECONDS + rng.integers(0, CLIP_SECONDS, size=src.size)
        visual = np.concatenate([visual, visual[src]])
        audio = np.concatenate([audio, audio[other_rows]])
        y = np.concatenate([y, np.zeros(src.size, np.float32)])
    return visual, audio, y
