"""The scale rehearsal, scaled down: generated AudioSet-format lists through every metadata path,
each in its own process, with the report (`make rehearsal SCALE=audioset` runs it at 2.1 M rows)."""

from __future__ import annotations

import zlib
from pathlib import Path

import pandas as pd
import pytest

from pipeline.core.layout import DataLayout
from pipeline.core.manifest import load_manifest
from pipeline.core.store import FeatureStore
from pipeline.rehearsal.audioset import AUDIOSET_LISTS, write_audioset
from pipeline.rehearsal.probes import FAIL_EVERY, STORE
from pipeline.rehearsal.scale import SEGMENT_PATHS, ScaleConfig, run_scale
from pipeline.stages.annotations.ave import parse_audioset_csv
from pipeline.stages.download import load_ledger
from pipeline.stages.download.ledger import journal_path


def test_generated_lists_have_audioset_shape(tmp_path: Path) -> None:
    paths = write_audioset(tmp_path, rows=3000, seed=1)
    tables = {name: parse_audioset_csv(paths[name]) for name in AUDIOSET_LISTS}
    assert sum(len(t) for t in tables.values()) == 3000
    assert len(tables["unbalanced_train_segments.csv"]) > 2900  # AudioSet's shares
    rows = pd.concat(tables.values())
    assert rows["youtube_id"].str.fullmatch(r"[A-Za-z0-9_-]{11}").all()
    assert rows["youtube_id"].str.startswith("-").any()
    assert 0 < rows["youtube_id"].duplicated().sum() < 100  # a few videos give two clips
    assert (rows["end_seconds"] - rows["start_seconds"] == 10).all()
    classes = pd.read_csv(paths["class_labels_indices.csv"])
    assert len(classes) == 527 and classes["display_name"].str.contains(",").any()


@pytest.mark.slow
def test_scaled_down_scale_rehearsal(tmp_path: Path) -> None:
    cfg = ScaleConfig(
        data_dir=tmp_path / "data",
        run_dir=tmp_path / "runs",
        rows=20_000,
        small=1_000,
        tried=0,
        shard_size=512,
        segment_clips=2_000,
        progress=False,
        timeout=300,
    )
    report = run_scale(cfg)
    runs = [(p["name"], p["size"]) for p in report["paths"]]
    assert runs == [
        ("annotations", "small"),
        ("download, first run", "small"),
        ("ledger updates", "small"),
        ("annotations", "full"),
        ("download, first run", "full"),
        ("download, second run", "full"),
        ("ledger updates", "full"),
        *[(f"store {s}", "full") for s in ("plan", "fill", "resume", "merge", "open")],
        ("training join", "full"),
        *[(name, size) for size in ("small", "full") for name in SEGMENT_PATHS],
    ]
    assert all(p["peak_mib"] > 0 and p["seconds"] > 0 for p in report["paths"])
    full = cfg.data_dir / "full"
    clips = load_manifest(full)["clip_id"].tolist()
    assert len(clips) > 19_000  # a few generated rows repeat a clip
    # the first runs planned every clip, stopped on the first 429: the ledger holds them all
    ledger = load_ledger(full)
    assert sorted(ledger["clip_id"]) == sorted(clips)
    assert not journal_path(DataLayout(full).ledger).exists()  # folded in at the end
    # the update streams crossed a fold of the journal at both sizes, and measured every update
    for size in ("small", "full"):
        stream = report["ledger"][size]
        assert stream["updates"] == report["updates_per_stream"] == 20_000 // 4 + 200 + 1
        assert stream["folds_during_stream"] >= 1 and stream["update_median_us"] > 0
    assert {"ratio_median", "ratio_mean"} <= set(report["ledger"])
    store = FeatureStore.open(full, STORE)
    failed = [c for c in clips if zlib.crc32(c.encode()) % FAIL_EVERY == 0]
    assert len(store) == len(clips) - len(failed) and set(store.meta["failed"]) == set(failed)
    join = next(p for p in report["paths"] if p["name"] == "training join")["detail"]
    assert join["samples"] + join["missing"] == sum(load_manifest(full)["split"] == "train")
    # segments: every receipt current, so nothing decoded; the table has ten rows a clip, and the
    # driver plans every clip of it in groups of whole clips
    by = {(p["name"], p["size"]): p for p in report["paths"]}
    for size, count in (("small", 1_000), ("full", 2_000)):
        table = by["segments table from receipts", size]["detail"]
        assert table["clips"] == table["ok"] == table["skipped"] == count
        assert table["processed"] == table["failed"] == 0 and table["table_rows"] == 10 * count
        plan = by["features plan", size]["detail"]
        assert plan["clips"] == plan["work_items"] == count and plan["segment_rows"] == 10 * count
        assert 0 < plan["groups"] <= count
    assert set(report["per_clip"]) == set(SEGMENT_PATHS)
    text = (cfg.run_dir / "report.md").read_text()
    assert "One clip's ledger update, 20,000 rows over 1,000 rows" in text
    assert "features plan: " in text and "at 20,000 clips that is" in text
