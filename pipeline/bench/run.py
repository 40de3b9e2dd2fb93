"""``avel bench``: every stage benchmark against its naive baseline, in one process and one run.

Writes ``OUT_DIR/results.json`` (all figures) and ``OUT_DIR/results.md`` (one table: throughput,
peak memory and the ratio to the naive baseline per stage). CPU always; the same rows on CUDA when
a GPU is present.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.core.io import atomic_path, write_json
from pipeline.core.layout import DataLayout


def _machine() -> str:
    import os

    import torch

    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores{gpu}"


def _benchmarks(device: str, quick: bool, work_dir: Path) -> list[tuple[str, Callable[[], dict]]]:
    from pipeline.bench.audio import bench_audio
    from pipeline.bench.c3d import bench_c3d
    from pipeline.bench.training import bench_training
    from pipeline.bench.visual import bench_visual

    gpu = device.startswith("cuda")
    return [
        ("audio", lambda: bench_audio(n_videos=64 if gpu else (4 if quick else 8), device=device)),
        (
            "visual",
            lambda: bench_visual(
                n_clips=8 if gpu else 2,
                per_second=16 if gpu else 1,
                device=device,
                precision="fp16" if gpu else "fp32",
                batch_size=256 if gpu else 16,
                num_workers=8 if gpu else 2,
                model_frames=512 if gpu else 4,
                work_dir=work_dir / "clips",
            ),
        ),
        (
            "c3d",
            lambda: bench_c3d(
                device=device,
                precision="bf16" if gpu else "fp32",
                clips_per_pass=32 if gpu else 2,
                model_clips=256 if gpu else (2 if quick else 4),
                e2e_clips=8 if gpu else (0 if quick else 1),
                num_workers=8 if gpu else 2,
                work_dir=work_dir / "clips",
            ),
        ),
        (
            "train",
            lambda: bench_training(
                data_dir=work_dir / f"train-{4143 if gpu else (256 if quick else 1024)}",
                rows=4143 if gpu else (256 if quick else 1024),
                model="av_att",
                device=device,
            ),
        ),
    ]


def _row(name: str, res: dict[str, Any]) -> dict[str, Any]:
    """Normalise one benchmark's dict into table cells."""
    if name == "audio":
        return {
            "throughput": f"{res['batched_patches_per_s']:.1f} s-of-audio/s (VGGish), "
            f"frontend {res['frontend_seconds_per_s']:.0f} s/s",
            "baseline": f"{res['naive_patches_per_s']:.1f} s/s",
            "ratio": res["ratio_vs_naive"],
            "peak_mb": res.get("peak_rss_mb"),
        }
    if name == "visual":
        opt, nav = res["optimised"], res.get("naive", {})
        return {
            "throughput": f"{opt['clips_per_s']:.3f} clips/s end to end; decode "
            f"{opt['decode_frames_per_s']:.1f} fr/s (x{res['speedup'].get('decode_frames_per_s', 0):.2f}), "
            f"VGG-19 {opt['vgg19_frames_per_s']:.2f} fr/s (x{res['speedup'].get('vgg19_frames_per_s', 0):.2f})",
            "baseline": f"{nav.get('clips_per_s', float('nan')):.3f} clips/s",
            "ratio": res.get("speedup", {}).get("clips_per_s"),
            "peak_mb": opt.get("peak_pss_mib"),
        }
    if name == "c3d":
        e2e = (
            f", end to end {res['e2e_clips_per_s']:.3f} clips/s" if "e2e_clips_per_s" in res else ""
        )
        return {
            "throughput": f"C3D {res['optimised_frames_per_s']:.1f} fr/s "
            f"({res['optimised_gflops']:.0f} GFLOP/s, {100 * res['fraction_of_peak']:.0f}% of the "
            f"measured matmul peak {res['matmul_peak_gflops']:.0f} GFLOP/s, {res['precision']}){e2e}",
            "baseline": f"{res['naive_frames_per_s']:.1f} fr/s (one clip per pass)",
            "ratio": res["speedup"],
            "peak_mb": None,
        }
    return {
        "throughput": f"{res['clips_per_second'][-1]:.1f} clips/s training {res['model']} "
        f"({res['train_clips']} train clips, batch {res['batch_size']}, store {res['store_gib']} GiB)",
        "baseline": "n/a (no naive trainer)",
        "ratio": None,
        "peak_mb": res["peak_rss_gib"] * 1024,
    }


def run_bench(data_dir: Path, out_dir: Path, device: str = "auto", quick: bool = False) -> dict:
    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and device != "cpu" else [])
    if device not in ("auto", "cpu") and device not in devices:
        devices.append(device)
    results: dict[str, Any] = {
        "machine": _machine(),
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "rows": [],
    }
    work = DataLayout(data_dir).bench
    for dev in devices:
        for name, fn in _benchmarks(dev, quick, work):
            print(f"[bench] {name} on {dev} ...", flush=True)
            start = time.perf_counter()
            res = fn()
            row = {
                "stage": name,
                "device": dev,
                "seconds": time.perf_counter() - start,
                **_row(name, res),
            }
            results["rows"].append({**row, "raw": res})
            print(
                f"[bench] {name} on {dev}: {row['throughput']}  x{row['ratio'] or float('nan'):.2f} vs naive"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(results, out_dir / "results.json")
    with atomic_path(out_dir / "results.md") as tmp:
        tmp.write_text(format_table(results))
    return results


def format_table(results: dict) -> str:
    lines = [
        f"Machine: {results['machine']} ({results['when']})",
        "",
        "| stage | device | throughput | naive baseline | ratio | peak memory (MB) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        ratio = f"x{r['ratio']:.2f}" if r.get("ratio") else "n/a"
        peak = f"{r['peak_mb']:.0f}" if r.get("peak_mb") else "n/a"
        lines.append(
            f"| {r['stage']} | {r['device']} | {r['throughput']} | {r['baseline']} | {ratio} | {peak} |"
        )
    return "\n".join(lines) + "\n"
