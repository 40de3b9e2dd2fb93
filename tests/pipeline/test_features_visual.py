"""The visual seam of `avel features`: the VGG-19 extractor filling `visual`/`visual_vec`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.backbones.vgg19 import build_vgg19_pool5
from pipeline.backbones.visual import extract_visual
from pipeline.core.store import FeatureStore
from pipeline.stages.features.core import FeaturesConfig
from pipeline.stages.features.stage import format_summary, run_features
from pipeline.stages.segments import SegmentsConfig, frame_plan, load_segments, run_segments
from tests.support.media import make_clip

IDS = ["vis_a______", "vis_b______", "vis_bad____"]
SIZE = 32  # frame side: pool5 is 1 x 1 (224 gives the release's 7 x 7)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("visdata")
    make_clip(d / "clips" / f"{IDS[0]}.mp4", duration=10, fps=5, size=(48, 32))
    make_clip(d / "clips" / f"{IDS[1]}.mp4", duration=6, fps=4, size=(30, 30))  # short clip
    (d / "clips" / f"{IDS[2]}.mp4").write_bytes(b"not a video")
    pd.DataFrame({"sample": range(3), "youtube_id": IDS}).to_parquet(d / "manifest.parquet")
    run_segments(SegmentsConfig(d, frames_per_segment=2, workers=1, progress=False))
    return d


def test_visual_stores_equal_extractor_output(data):
    cfg = FeaturesConfig(
        data,
        features=("visual",),
        dtype="float32",
        frame_size=SIZE,
        workers=0,
        allow_random_weights=True,
        shard_size=1,
        progress=False,
        batch_size=5,
    )
    summary = run_features(cfg)
    assert not summary["errors"], summary["errors"]
    assert "RANDOM WEIGHTS" in format_summary(summary)
    maps, vecs = FeatureStore.open(data, "visual"), FeatureStore.open(data, "visual_vec")
    assert (
        maps.is_random
        and maps.meta["frames_per_segment"] == 2
        and maps.row_shape == (10, 1, 1, 512)
    )
    assert len(maps) == 2 and vecs.row_shape == (10, 512)
    model, weights = build_vgg19_pool5("random", allow_random=True, seed=0)
    segments = load_segments(data)
    items = [(y, data / "clips" / f"{y}.mp4", frame_plan(segments, y)) for y in IDS[:2]]
    expected = dict(extract_visual(items, model, weights, batch_size=3, num_workers=0, size=SIZE))
    for clip_id in IDS[:2]:
        np.testing.assert_allclose(maps.get(clip_id), expected[clip_id], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(
            vecs.get(clip_id), expected[clip_id].mean(axis=(1, 2)), atol=1e-5
        )
    again = run_features(cfg)  # finished stores are not rewritten
    assert again["stores"]["visual"].get("already_complete")


def test_visual_refuses_without_weights(data, tmp_path):
    missing = tmp_path / "vgg19-missing.pth"
    cfg = FeaturesConfig(
        data, features=("visual",), frame_size=SIZE, vgg19_weights=str(missing), progress=False
    )
    summary = run_features(FeaturesConfig(**{**cfg.__dict__, "force": True}))
    assert str(missing) in summary["errors"]["visual"] and "visual" not in summary["stores"]
    assert FeatureStore.open(data, "visual").row_shape == (10, 1, 1, 512)  # untouched


def test_other_frames_per_segment_stops_then_rebuilds_with_force(tmp_path):
    """`make segments FRAMES_PER_SEGMENT=2` after a store built at 1: the stage stops naming the
    difference (never "already complete"); with --force the store is rebuilt at 2."""
    data = tmp_path / "data"
    ids = ["fps_a______"]
    make_clip(data / "clips" / f"{ids[0]}.mp4", duration=10, fps=4, size=(32, 32))
    pd.DataFrame({"sample": [0], "youtube_id": ids}).to_parquet(data / "manifest.parquet")
    cfg = FeaturesConfig(
        data,
        features=("visual",),
        dtype="float32",
        frame_size=SIZE,
        workers=0,
        allow_random_weights=True,
        progress=False,
    )
    run_segments(SegmentsConfig(data, frames_per_segment=1, workers=1, progress=False))
    assert not run_features(cfg)["errors"]
    one = FeatureStore.open(data, "visual")
    assert one.meta["frames_per_segment"] == 1
    at_one = {c: one.get(c).copy() for c in ids}

    run_segments(SegmentsConfig(data, frames_per_segment=2, workers=1, progress=False))
    summary = run_features(cfg)
    assert "frames_per_segment 1 -> 2" in summary["errors"]["visual"]
    assert "--force" in summary["errors"]["visual"] and not summary["stores"]
    summary = run_features(dataclasses.replace(cfg, force=True))
    assert not summary["errors"] and not summary["stores"]["visual"].get("already_complete")
    two = FeatureStore.open(data, "visual")
    assert two.meta["frames_per_segment"] == 2
    assert two.meta["identity"]["frames_per_segment"] == 2
    model, weights = build_vgg19_pool5("random", allow_random=True, seed=0)
    segments = load_segments(data)
    items = [(c, data / "clips" / f"{c}.mp4", frame_plan(segments, c)) for c in ids]
    expected = dict(extract_visual(items, model, weights, batch_size=4, num_workers=0, size=SIZE))
    for clip_id in ids:
        np.testing.assert_allclose(two.get(clip_id), expected[clip_id], rtol=1e-4, atol=1e-5)
        assert not np.allclose(two.get(clip_id), at_one[clip_id])  # other frames, other maps
    vec = FeatureStore.open(data, "visual_vec")
    assert vec.meta["frames_per_segment"] == 2
    assert run_features(cfg)["stores"]["visual"].get("already_complete")
