"""`avel features --engine ray`: a local Ray (2 CPUs, no dashboard) gives the local engine's stores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'avel[ray]')")
pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'avel[ray]')")

from pipeline.core.store import FeatureStore, StoreWriter, store_dir  # noqa: E402
from pipeline.stages.features.core import FeaturesConfig  # noqa: E402
from pipeline.stages.features.stage import run_features, staging_path  # noqa: E402
from pipeline.stages.segments import SegmentsConfig, patches_path, run_segments  # noqa: E402
from tests.support.media import make_clip  # noqa: E402

pytestmark = pytest.mark.slow  # starting Ray costs ~10-20 s on 2 cores; see docs/testing.md
IDS = ["ray_a______", "ray_b______", "ray_bad____"]
SIZE = 32  # frame side: pool5 is 1 x 1


@pytest.fixture(scope="module")
def segmented(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("raydata")
    make_clip(d / "clips" / f"{IDS[0]}.mp4", duration=10, fps=5, size=(48, 32))
    make_clip(d / "clips" / f"{IDS[1]}.mp4", duration=10, fps=4, size=(30, 30), frequency=880.0)
    make_clip(d / "clips" / f"{IDS[2]}.mp4", duration=10, fps=4, size=(30, 30))
    pd.DataFrame({"sample": range(3), "youtube_id": IDS}).to_parquet(d / "manifest.parquet")
    run_segments(SegmentsConfig(d, frames_per_segment=2, workers=1, progress=False))
    # corrupt the third clip after segmenting: its decode fails in the features stage
    (d / "clips" / f"{IDS[2]}.mp4").write_bytes(b"not a video any more")
    patches_path(d, IDS[2]).write_bytes(b"not an npy file")
    return d


#: Examples per forward pass = one clip (10 patches; 10 seconds x 2 frames), so both engines run
#: the network on the same batches, and one torch thread in both (a Ray actor with num_cpus=1 has
#: one): CPU kernels round differently for other batch shapes or thread counts (~1e-5 relative).
BATCH = {"audio": 10, "visual": 20}


def config(data: Path, kind: str, engine: str, **kw) -> FeaturesConfig:
    return FeaturesConfig(
        data,
        features=(kind,),
        dtype="float32",
        device="cpu",
        frame_size=SIZE,
        workers=0,
        allow_random_weights=True,
        allow_download=False,
        shard_size=2,
        batch_size=BATCH[kind],
        progress=False,
        engine=engine,
        **kw,
    )


def copy_of(segmented: Path, tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(segmented, target, ignore=shutil.ignore_patterns("features"))
    return target


def assert_same_store(a: Path, b: Path, name: str) -> None:
    left, right = FeatureStore.open(a, name), FeatureStore.open(b, name)
    assert left.clip_ids == right.clip_ids == IDS[:2]
    np.testing.assert_array_equal(left.gather(IDS[:2]), right.gather(IDS[:2]))  # fp32, CPU
    assert set(left.meta["failed"]) == set(right.meta["failed"]) == {IDS[2]}
    for key in ("row_shape", "dtype", "weights", "preprocessing", "frames_per_segment"):
        assert left.meta.get(key) == right.meta.get(key), key


# every backbone's local-vs-Ray equality is test_c3d_ray's; here the Ray executor's resume from
# staged rows and its failure reasons, on the cheapest backbone
@pytest.mark.parametrize("kind", ["audio"])
def test_ray_store_equals_local_store_and_second_run_does_nothing(
    local_ray, segmented, tmp_path, kind
):
    local, distributed = copy_of(segmented, tmp_path, "local"), copy_of(segmented, tmp_path, "ray")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert not run_features(config(local, kind, "local"))["errors"]
    finally:
        torch.set_num_threads(threads)
    summary = run_features(config(distributed, kind, "ray"))
    assert not summary["errors"], summary["errors"]
    names = ["visual", "visual_vec"] if kind == "visual" else ["audio"]
    for name in names:
        assert (
            summary["stores"][name]["complete"] and summary["stores"][name]["shards_written"] == 2
        )
        assert_same_store(local, distributed, name)
        assert FeatureStore.open(distributed, name).meta["engine"] == "ray"
    reason = FeatureStore.open(distributed, names[0]).meta["failed"][IDS[2]]
    assert (
        ("decode" in reason.lower() or "ffmpeg" in reason.lower())
        if kind == "visual"
        else ("patches unreadable" in reason)
    )

    again = run_features(config(distributed, kind, "ray"))
    assert all(again["stores"][n].get("already_complete") for n in names)
    assert all(again["stores"][n]["shards_written"] == 0 for n in names)

    # a run killed inside shard 0 after its first clip came back (staged): only the second clip
    # of shard 0 is computed again, shard 1 is untouched, and the store is the same
    name = names[0]
    root = store_dir(distributed, name)
    staged = FeatureStore.open(distributed, name).get(IDS[0]).copy()
    for f in ("index.parquet", "meta.json", "shard-00000.index.parquet", "shard-00000.npy"):
        (root / f).unlink()
    writer = StoreWriter.open(distributed, name, IDS, staged.shape, dtype="float32", shard_size=2)
    staging_path(writer, IDS[0]).parent.mkdir(parents=True, exist_ok=True)
    np.save(staging_path(writer, IDS[0]), staged)
    resumed = run_features(config(distributed, kind, "ray"))
    assert resumed["stores"][name]["shards_written"] == 1
    assert resumed["stores"][name]["clips_computed"] == 1
    assert_same_store(local, distributed, name)
    assert not any((root / ".staging").iterdir())
    assert json.loads((root / "plan.json").read_text())["clip_ids"] == IDS
