"""The rehearsal, scaled down: a generated AVE-like list served on loopback with every fault kind,
each stage killed part-way and resumed, and the ledger compared with the injected faults per ID."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from pipeline.rehearsal.inputs import (
    AVE_EXTRA_ROWS,
    AVE_ROWS,
    EXPECTED,
    fault_plan,
    generated_ave,
    read_ave,
    subset,
)
from pipeline.rehearsal.run import RehearsalConfig, format_report, run_rehearsal
from tests.support.paths import shared_dir


def check_structure(ave, total: int) -> None:
    """Every row in exactly one split of each kind; repeated IDs keep both rows."""
    for suffix in ("", "_match"):
        rows = sorted(i for s in ("train", "val", "test") for i in ave.splits[f"{s}_order{suffix}"])
        assert rows == list(range(len(ave.lines)))
    counts = Counter(ave.ids)
    assert all(n in (1, 2, 3) for n in counts.values())
    assert len(ave.lines) <= total


def test_generated_list_has_ave_structure() -> None:
    ave = generated_ave(AVE_ROWS, seed=0)
    check_structure(ave, AVE_ROWS)
    assert len(ave.lines) == AVE_ROWS and len(ave.unique_ids) == AVE_ROWS - AVE_EXTRA_ROWS
    categories = [line.split("&")[0] for line in ave.lines]
    assert len(set(categories)) == 28 and categories == sorted(categories)  # contiguous blocks
    dash = sum(y.startswith("-") for y in ave.unique_ids) / len(ave.unique_ids)
    assert 0.2 < dash < 0.3
    part = subset(ave, 400)
    check_structure(part, AVE_ROWS)
    assert len(part.lines) - len(part.unique_ids) >= 1  # a repeated ID survives the subset


def test_real_ave_subset_keeps_its_structure() -> None:
    annotations = shared_dir() / "ave" / "Annotations.txt"
    if not annotations.is_file():
        pytest.skip(f"{annotations} not present (the public AVE annotation file)")
    ave = read_ave(annotations, annotations.parent / "splits")
    assert len(ave.lines) == AVE_ROWS and len(ave.unique_ids) == AVE_ROWS - AVE_EXTRA_ROWS
    part = subset(ave, 400)
    check_structure(part, AVE_ROWS)
    assert set(part.lines) <= set(ave.lines)


def test_fault_plan_mix_and_bursts() -> None:
    ids = [f"id{k:04d}" for k in range(1000)]
    plan = fault_plan(ids, seed=1)
    counts = Counter(plan.values())
    assert counts["unavailable"] == 180 and counts["short"] == 20 and counts["no_audio"] == 20
    limited = [k for k, y in enumerate(ids) if plan[y] == "rate_limited"]
    assert 40 <= len(limited) <= 42
    runs = Counter(k - i for i, k in enumerate(limited))  # consecutive runs share a key
    assert all(n % 3 == 0 for n in runs.values())  # bursts of three consecutive IDs


def test_scaled_down_rehearsal_end_to_end(tmp_path: Path) -> None:
    cfg = RehearsalConfig(
        data_dir=tmp_path / "data",
        run_dir=tmp_path / "runs",
        clips=12,
        workers=2,
        epochs=2,
        visual_sample=1,
        frame_size=32,
        precision="fp32",
        kill_at=0.3,
        mix={"unavailable": 0.2, "rate_limited": 0.2, "short": 0.1, "no_audio": 0.1},
        progress=False,
        timeout=600,
    )
    report = run_rehearsal(cfg)
    ledger = report["ledger"]
    assert ledger["exact"], ledger["misclassified"] or ledger["lost"]
    assert all(ledger["injected"][f] >= 1 for f in EXPECTED)
    assert report["rate_limited_answers_served"] == ledger["injected"]["rate_limited"]
    stages = {s["name"]: s for s in report["stages"]}
    assert list(stages) == [
        "annotations",
        "download",
        "segments",
        "features (audio)",
        "train (audio, supervised)",
    ]
    assert stages["download"]["killed_at"] is not None  # killed mid-run, then resumed to the end
    assert all(s["returncodes"][-1] == 0 for s in stages.values())
    assert all(s["peak_mib"] > 0 for s in stages.values())
    ok = ledger["expected_status_counts"]["ok"]
    assert report["visual_sample"]["clips"] == 1 and report["projection"]["cpu_hours"] > 0
    saved = json.loads((cfg.run_dir / "report.json").read_text())
    assert saved["ledger"] == ledger and "EXACT" in (cfg.run_dir / "report.md").read_text()
    assert "Projected AVE visual features" in format_report(report)
    manifest_ok = len(list((cfg.data_dir / "clips").glob("*.mp4")))
    assert manifest_ok == ok
