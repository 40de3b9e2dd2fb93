import json

import numpy as np
import pandas as pd
import pytest

from pipeline.core.store import FeatureStore, StoreError, StoreWriter


def _values(youtube_id: str) -> np.ndarray:
    seed = sum(map(ord, youtube_id))
    return np.random.default_rng(seed).standard_normal((10, 4)).astype(np.float32)


IDS = [f"vid{i:08d}" for i in range(7)]


def test_write_resume_and_read(tmp_path):
    writer = StoreWriter.open(tmp_path, "audio", IDS, (10, 4), shard_size=3, meta={"backbone": "x"})
    assert writer.num_shards == 3
    shard, ids = next(writer.pending_shards())
    writer.write_shard(shard, {i: _values(i) for i in ids})
    assert writer.finalize() is None  # two shards missing
    # a "killed" run: a fresh writer resumes at the first unfinished shard
    writer = StoreWriter.open(tmp_path, "audio", IDS, (10, 4), shard_size=3, meta={"backbone": "x"})
    pending = list(writer.pending_shards())
    assert [s for s, _ in pending] == [1, 2]
    for shard, ids in pending:
        results = {i: _values(i) for i in ids}
        if shard == 2:
            results[ids[0]] = "decode failed: moov atom not found"
        writer.write_shard(shard, results)
    meta = writer.finalize()
    assert meta["videos"] == 6 and meta["failed"] == {IDS[6]: "decode failed: moov atom not found"}
    store = FeatureStore.open(tmp_path, "audio")
    assert len(store) == 6 and IDS[6] not in store
    got = store.gather([IDS[4], IDS[0], IDS[4]])
    assert got.dtype == np.float32
    np.testing.assert_allclose(got[1], _values(IDS[0]), atol=2e-3)  # float16 storage
    np.testing.assert_array_equal(got[0], got[2])
    assert store.meta["backbone"] == "x" and store.meta["dtype"] == "float16"
    assert json.loads((tmp_path / "features/audio/meta.json").read_text())["num_shards"] == 3


def test_parallel_shard_workers_fill_disjoint_parts(tmp_path):
    w0 = StoreWriter.open(tmp_path, "v", IDS, (10, 4), dtype="float32", shard_size=2)
    w1 = StoreWriter.open(tmp_path, "v", IDS, (10, 4), dtype="float32", shard_size=2)
    mine0 = [s for s, _ in w0.pending_shards(0, 2)]
    mine1 = [s for s, _ in w1.pending_shards(1, 2)]
    assert mine0 == [0, 2] and mine1 == [1, 3]
    for w, k in ((w0, 0), (w1, 1)):
        for shard, ids in w.pending_shards(k, 2):
            w.write_shard(shard, {i: _values(i) for i in ids})
    assert w1.finalize() is not None
    store = FeatureStore.open(tmp_path, "v")
    np.testing.assert_array_equal(store.get(IDS[5]), _values(IDS[5]))
    assert pd.read_parquet(tmp_path / "features/v/index.parquet")["shard"].tolist() == [
        0,
        0,
        1,
        1,
        2,
        2,
        3,
    ]


def test_plan_change_and_bad_shapes_are_refused(tmp_path):
    writer = StoreWriter.open(tmp_path, "a", IDS, (10, 4), shard_size=4)
    with pytest.raises(StoreError, match="does not match"):
        writer.write_shard(0, {IDS[0]: np.zeros((10, 5))})
    with pytest.raises(StoreError, match="different plan"):
        StoreWriter.open(tmp_path, "a", IDS[:3], (10, 4), shard_size=4)
    StoreWriter.open(tmp_path, "a", IDS[:3], (10, 4), shard_size=4, force=True)
    with pytest.raises(StoreError, match="no finished feature store"):
        FeatureStore.open(tmp_path, "a")
