"""`avel features --features audio,visual,clip,clap`: VGGish, VGG-19, CLIP and CLAP in one run, on
the local and the Ray executor (one frame decode per clip shared by VGG-19 and CLIP at the same
size, the waveform declared with its fixed shape): equal stores, reused on a second run."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers", reason='pip install -e ".[foundation]"')
pytest.importorskip("ray", reason="Ray is not installed (pip install 'avel[ray]')")
pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'avel[ray]')")

import torch  # noqa: E402

from pipeline.core.store import FeatureStore  # noqa: E402
from pipeline.stages.features.core import FeaturesConfig  # noqa: E402
from pipeline.stages.features.stage import run_features  # noqa: E402
from tests.support.foundation import CLIP_SIDE, tiny_clap, tiny_clip  # noqa: E402
from tests.support.media import segmented_set  # noqa: E402

pytestmark = pytest.mark.slow  # starting Ray costs ~10-20 s on 2 cores
IDS = ["fdr_a______", "fdr_b______", "fdr_bad____"]
STORES = ("audio", "visual", "visual_vec", "clip", "clap")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    d = tmp_path_factory.mktemp("foundation_ray")
    models = {"clip": tiny_clip(d / "m" / "clip"), "clap": tiny_clap(d / "m" / "clap")}
    segmented_set(d / "data", IDS, fps=[5, 4, 4], sizes=[(48, 32), (30, 30), (30, 30)])
    return d / "data", models


def config(data: Path, models: dict[str, Path], engine: str) -> FeaturesConfig:
    return FeaturesConfig(
        data,
        features=("audio", "visual", "clip", "clap"),
        dtype="float32",
        device="cpu",
        frame_size=CLIP_SIDE,  # VGG-19 and CLIP ask the same size: one scaled output
        clip_weights=str(models["clip"]),
        clap_weights=str(models["clap"]),
        workers=0,
        allow_random_weights=True,
        allow_download=False,
        shard_size=2,
        batch_size=20,
        progress=False,
        engine=engine,
    )


def test_foundation_stores_equal_on_both_executors(local_ray, prepared, tmp_path):
    segmented, models = prepared
    local, distributed = tmp_path / "local", tmp_path / "ray"
    for target in (local, distributed):
        shutil.copytree(segmented, target, ignore=shutil.ignore_patterns("features"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a Ray actor with num_cpus=1 runs one torch thread
    try:
        assert not run_features(config(local, models, "local"))["errors"]
    finally:
        torch.set_num_threads(threads)
    summary = run_features(config(distributed, models, "ray"))
    assert not summary["errors"], summary["errors"]
    for name in STORES:
        assert summary["stores"][name]["complete"]
        left, right = FeatureStore.open(local, name), FeatureStore.open(distributed, name)
        assert left.clip_ids == right.clip_ids and set(IDS[:2]) <= set(left.clip_ids)
        np.testing.assert_array_equal(left.gather(left.clip_ids), right.gather(left.clip_ids))
        assert set(right.meta["failed"]) == set(left.meta["failed"])
        assert (IDS[2] in left.meta["failed"]) == (name != "audio")  # its patches were made
        assert left.meta["identity"] == right.meta["identity"]
    again = run_features(config(distributed, models, "ray"))
    assert all(r.get("already_complete") for r in again["stores"].values())
