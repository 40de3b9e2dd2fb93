"""The bench's limits (matmul and decode probes, FLOP counts) and its training rows, small."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import torch

from pipeline.bench.peak import cores, counted_flops, decode_probe, matmul_probe, top_ops
from pipeline.bench.run import format_table, row_cells
from pipeline.bench.training import bench_crossmodal, bench_training

torch.set_num_threads(1)  # small steps: no barrier stalls on a shared machine (as tests/models)


def test_probes_and_flop_counts(tmp_path: Path, capfd) -> None:
    assert matmul_probe("cpu", "fp32", n=256, repeats=1) > 0
    clip = tmp_path / "clip.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=8:duration=2"]
        + ["-pix_fmt", "yuv420p", "-c:v", "libx264", str(clip)],
        check=True,
    )
    probe = decode_probe(clip, processes=2)
    assert probe["processes"] == 2 and probe["clips_per_s"] > 0
    layer = torch.nn.Linear(8, 4)
    x = torch.randn(2, 8)
    with torch.no_grad():
        assert counted_flops(lambda: layer(x)) == 2 * 2 * 8 * 4  # one addmm: 2 M N K
    capfd.readouterr()
    ops = top_ops(lambda: layer(x).sum(), rows=3)
    assert 1 <= len(ops) <= 3 and all(0 <= o["share"] <= 1 for o in ops)
    os.write(2, b"stderr is back\n")  # the profiler's own lines are held back, fd 2 restored
    assert capfd.readouterr().err == "stderr is back\n"


def test_training_rows_have_baseline_and_fraction_of_peak(tmp_path: Path) -> None:
    res = bench_training(
        tmp_path / "store", rows=40, model="av_att", batch_size=8, device="cpu", naive_batches=2
    )
    assert res["clips_per_second"][0] > 0 and res["naive"]["clips_per_second"] > 0
    prof = res["profile"]
    assert prof["flops_per_clip"] > prof["forward_flops_per_clip"] > 0
    assert prof["step_s"] > 0 and prof["top_ops"]
    assert (tmp_path / "store" / "release-float64" / "visual_feature.h5").is_file()
    cross = bench_crossmodal(quick=True, pairs=256)
    assert 1 <= cross["threads"] <= cores() and cross["pairs_per_second"] > 0
    assert cross["naive"]["pairs_per_second"] > 0 and cross["flops_per_pair"] > 0
    peak = {"fp32": 100.0}
    rows = [
        {"stage": n, "device": "cpu", **row_cells(n, r, peak, res)}
        for n, r in (("train", res), ("train-crossmodal", cross))
    ]
    for row in rows:
        assert row["ratio"] > 0 and "GFLOP/s" in row["peak"] and "n/a" not in row["baseline"]
    table = format_table({"machine": "test", "when": "now", "rows": rows})
    assert table.count("\n| train") == 2 and "fraction of peak" in table
