"""``avel bench``: every stage against its naive baseline and this machine's measured limits.

Writes ``OUT_DIR/results.json`` (all figures) and ``OUT_DIR/results.md`` (one table). Every row gives
its throughput, the naive baseline measured in the same run, their ratio, and the fraction of this
machine's peak: achieved GFLOP/s (FLOPs counted by torch's FlopCounterMode x examples/s) over the matmul
probe measured just before the row (same load, same torch threads) in the precision the row ran in, and for decoding the clips/s over the ffmpeg decode probe
(:mod:`pipeline.bench.peak`). CPU always; on a machine with CUDA the same rows again on the GPU with
the machine's default decoder workers and batch (the features stage's defaults), the GPU busy
fraction and the fp16/bf16 error against fp32::

    make bench                 # CPU rows (+ GPU rows when CUDA is present)
    make bench DEVICE=cuda     # a GPU machine: the same, failing loudly without CUDA
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

    from pipeline.backbones.precision import CPU_BF16_FLAGS, cpu_flags

    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    bf16 = ", ".join(sorted(set(CPU_BF16_FLAGS) & cpu_flags())) or "no native bf16"
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores ({bf16}), "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads{gpu}{load}"
    )


def probes(device: str, threads: int | None = None) -> dict[str, float]:
    """Matmul GFLOP/s on ``device`` in fp32 and the reduced precisions it has natively, with
    ``threads`` torch threads (None: as they are)."""
    from models.training.speed import training_threads
    from pipeline.backbones.precision import native
    from pipeline.bench.peak import matmul_probe

    with training_threads(device, threads):
        out = {"fp32": matmul_probe(device, "fp32")}
        for low in ("bf16", "fp16"):
            if native(device, low):
                out[low] = matmul_probe(device, low)
    return {k: round(v, 1) for k, v in out.items()}


def _benchmarks(
    device: str, quick: bool, work_dir: Path
) -> list[tuple[str, Callable[[], dict], int | str | None]]:
    """(row name, benchmark, torch threads it runs with: a count, None (torch's) or "free" (the
    trainer's choice, :func:`models.training.speed.default_threads`)) per row."""
    from pipeline.backbones.vgg19_backbone import default_batch
    from pipeline.bench.audio import bench_audio
    from pipeline.bench.c3d import bench_c3d
    from pipeline.bench.peak import cores
    from pipeline.bench.training import bench_crossmodal, bench_training
    from pipeline.bench.visual import bench_visual
    from pipeline.stages.features.core import default_workers

    gpu = device.startswith("cuda")
    rows = 4143 if gpu else (256 if quick else 1024)
    train_dir = work_dir / f"train-{rows}"
    return [
        (
            "audio",
            lambda: bench_audio(n_videos=64 if gpu else (4 if quick else 8), device=device),
            None,
        ),
        (
            "visual",
            lambda: bench_visual(
                n_clips=16 if gpu else 2,
                per_second=16 if gpu else (1 if quick else 4),
                device=device,
                precision="fp32",  # the stage's default: rows comparable across hosts
                batch_size=default_batch(device) if gpu else 16,
                num_workers=default_workers(device) if gpu else 2,
                model_frames=512 if gpu else (8 if quick else 16),
                work_dir=work_dir / "clips",
            ),
            None,
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
            None,
        ),
        *_foundation_rows(device, gpu, quick),
        (
            "train",
            lambda: bench_training(train_dir, rows=rows, model="av_att", device=device),
            None if gpu else "free",
        ),
        *(
            (
                f"train ({n} thread{'s' if n > 1 else ''})",
                lambda n=n: bench_training(
                    train_dir, rows, "av_att", device=device, threads=n, naive=False, profile=False
                ),
                n,
            )
            for n in ([] if gpu else sorted({1, cores()}))
        ),
        (
            "train-crossmodal",
            lambda: bench_crossmodal(device=device, quick=quick),
            None if gpu else "free",
        ),
    ]


def _foundation_rows(
    device: str, gpu: bool, quick: bool
) -> list[tuple[str, Callable[[], dict], int | str | None]]:
    """The CLIP and CLAP rows, when the foundation extra is installed (not in ``--quick`` on the
    CPU: a ViT-B/16 frame alone takes seconds there)."""
    import importlib.util

    if importlib.util.find_spec("transformers") is None or (quick and not gpu):
        return []
    from pipeline.bench.foundation import bench_clap, bench_clip

    precision = "bf16" if gpu else "fp32"
    return [
        (
            "clip",
            lambda: bench_clip(
                device,
                precision,
                model="vit-l/14" if gpu else "vit-b/16",
                frames=1280 if gpu else 20,
                batch=256 if gpu else 10,
                naive_frames=64 if gpu else 2,
            ),
            None,
        ),
        (
            "clap",
            lambda: bench_clap(
                device,
                precision,
                seconds=640 if gpu else 10,
                batch=128 if gpu else 10,
                naive_seconds=32 if gpu else 2,
            ),
            None,
        ),
    ]


def _fraction(gflops: float | None, peak: float | None) -> str:
    if not gflops or not peak:
        return "n/a"
    return f"{100 * gflops / peak:.0f}% ({gflops:.1f} of {peak:.0f} GFLOP/s)"


def row_cells(
    name: str, res: dict[str, Any], peak: dict[str, float], base: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Normalise one benchmark's dict into table cells (``base``: the raw result of the main
    training row, whose naive baseline and profile a second training row shares)."""
    base = base or {}
    if name == "audio":
        prec = res.get("precision", "fp32")
        gflops = res["batched_patches_per_s"] * res.get("flops_per_patch", 0) / 1e9
        probe = res.get("precision_probe") or {}
        err = (
            f"; bf16 error {probe['relative_error']:.1e}, x{probe['speedup']:.2f}"
            if "relative_error" in probe
            else ""
        )
        return {
            "throughput": f"{res['batched_patches_per_s']:.1f} s-of-audio/s (VGGish {prec}{err}), "
            f"frontend {res['frontend_seconds_per_s']:.0f} s/s",
            "baseline": f"{res['naive_patches_per_s']:.1f} s/s (one call per video, fp32)",
            "ratio": res["ratio_vs_naive"],
            "peak": "VGGish " + _fraction(gflops, peak.get(prec)),
            "peak_mb": res.get("peak_rss_mb"),
        }
    if name == "visual":
        opt, nav = res["optimised"], res.get("naive", {})
        prec = res["precision"]
        gflops = opt["vgg19_frames_per_s"] * res.get("flops_per_frame", 0) / 1e9
        probe = res.get("decode_probe") or {}
        decode_clips = opt["decode_frames_per_s"] * res["clips"] / max(res["planned_frames"], 1)
        decode = (
            f"; decode {100 * decode_clips / probe['clips_per_s']:.0f}% of the decode probe "
            f"({probe['clips_per_s']:.2f} clips/s, {probe['processes']} ffmpeg)"
            if probe
            else ""
        )
        errors = ", ".join(
            f"{k} error {p['relative_error']:.1e} x{p['speedup']:.2f}"
            for k, p in res.get("precision_probes", {}).items()
            if "relative_error" in p
        )
        busy = opt.get("gpu_busy_pct")
        return {
            "throughput": f"{opt['clips_per_s']:.3f} clips/s end to end; decode "
            f"{opt['decode_frames_per_s']:.1f} fr/s (x{res['speedup'].get('decode_frames_per_s', 0):.2f}), "
            f"VGG-19 {prec} {opt['vgg19_frames_per_s']:.2f} fr/s (x{res['speedup'].get('vgg19_frames_per_s', 0):.2f})"
            + (f"; {errors}" if errors else "")
            + (f"; GPU busy {busy:.0f}%" if busy is not None else ""),
            "baseline": f"{nav.get('clips_per_s', float('nan')):.3f} clips/s (per-frame loop)",
            "ratio": res.get("speedup", {}).get("clips_per_s"),
            "peak": "VGG-19 " + _fraction(gflops, peak.get(prec)) + decode,
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
            "peak": f"C3D {100 * res['fraction_of_peak']:.0f}% ({res['optimised_gflops']:.0f} of "
            f"{res['matmul_peak_gflops']:.0f} GFLOP/s)",
            "peak_mb": None,
        }
    if name in ("clip", "clap"):
        unit = "fr/s" if name == "clip" else "s-of-audio/s"
        key = "frames" if name == "clip" else "seconds"
        return {
            "throughput": f"{name.upper()} {res['model']} {res[f'optimised_{key}_per_s']:.1f} {unit} "
            f"(batch {res['batch']}, {res['precision']})",
            "baseline": f"{res[f'naive_{key}_per_s']:.1f} {unit} (one per forward pass, fp32)",
            "ratio": res["speedup"],
            "peak": f"{name.upper()} {100 * res['fraction_of_peak']:.0f}% "
            f"({res['optimised_gflops']:.0f} of {res['matmul_peak_gflops']:.0f} GFLOP/s)",
            "peak_mb": None,
        }
    if name == "train-crossmodal":
        return {
            "throughput": f"{res['pairs_per_second']:.0f} pairs/s training {res['model']} "
            f"(batch {res['batch_size']}, {res['threads']} thread(s))",
            "baseline": f"{res['naive']['pairs_per_second']:.0f} pairs/s "
            f"(float64 arrays per batch, {res['naive']['threads']} threads)",
            "ratio": res["pairs_per_second"] / max(res["naive"]["pairs_per_second"], 1e-9),
            "peak": _fraction(res["pairs_per_second"] * res["flops_per_pair"] / 1e9, peak["fp32"]),
            "peak_mb": None,
        }
    clips = res["clips_per_second"][-1]
    prof = res.get("profile") or base.get("profile") or {}
    naive = res.get("naive") or base.get("naive") or {}
    return {
        "throughput": f"{clips:.1f} clips/s training {res['model']} "
        f"({res['train_clips']} train clips, batch {res['batch_size']}, {res['torch_threads']} "
        f"thread(s), store {res['store_gib']} GiB in memory)",
        "baseline": f"{naive['clips_per_second']:.1f} clips/s (release loop: float64 h5 per batch)"
        if naive
        else "n/a",
        "ratio": clips / naive["clips_per_second"] if naive else None,
        "peak": _fraction(clips * prof.get("flops_per_clip", 0) / 1e9, peak["fp32"])
        if prof
        else "n/a",
        "peak_mb": res["peak_rss_gib"] * 1024,
    }


def run_bench(data_dir: Path, out_dir: Path, device: str = "auto", quick: bool = False) -> dict:
    import torch

    from models.training.speed import default_threads
    from pipeline.core.device import reuse_freed_memory

    reuse_freed_memory()  # as the stages and the trainer run
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and device != "cpu" else [])
    if device not in ("auto", "cpu") and device not in devices:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise OSError(f"--device {device}: CUDA is not available on this machine")
        devices.append(device)
    results: dict[str, Any] = {
        "machine": _machine(),
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "peak_gflops": {},
        "rows": [],
    }
    work = DataLayout(data_dir).bench
    for dev in devices:
        base: dict[str, Any] = {}
        for name, fn, threads in _benchmarks(dev, quick, work):
            if threads == "free":  # as the trainer will choose: the cores free just now
                threads = default_threads("supervised")
            peak = probes(dev, threads)  # just before the row: the same load as the row
            results["peak_gflops"].setdefault(dev, peak)
            print(f"[bench] {name} on {dev} (matmul probe {peak} GFLOP/s) ...", flush=True)
            start = time.perf_counter()
            res = fn()
            if name == "train":
                base = res
            used = res.get("torch_threads") or res.get("threads")
            if dev == "cpu" and used and used != threads:  # the trainer chose another count
                peak = probes(dev, used)
            row = {
                "stage": name,
                "device": dev,
                "seconds": time.perf_counter() - start,
                "peak_gflops": peak,
                **row_cells(name, res, peak, base),
            }
            results["rows"].append({**row, "raw": res})
            print(
                f"[bench] {name} on {dev}: {row['throughput']}  x{row['ratio'] or float('nan'):.2f} "
                f"vs naive; peak: {row['peak']}",
                flush=True,
            )
    results["machine_after"] = _machine()
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(results, out_dir / "results.json")
    with atomic_path(out_dir / "results.md") as tmp:
        tmp.write_text(format_table(results))
    return results


def format_table(results: dict) -> str:
    peaks = "; ".join(
        f"{dev}: " + ", ".join(f"{k} {v:.0f}" for k, v in p.items())
        for dev, p in results.get("peak_gflops", {}).items()
    )
    lines = [
        f"Machine: {results['machine']} ({results['when']})",
        f"Matmul probe (GFLOP/s): {peaks}" if peaks else "",
        "",
        "| stage | device | throughput | naive baseline (same run) | ratio | fraction of peak | peak memory (MB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        ratio = f"x{r['ratio']:.2f}" if r.get("ratio") else "n/a"
        peak = f"{r['peak_mb']:.0f}" if r.get("peak_mb") else "n/a"
        lines.append(
            f"| {r['stage']} | {r['device']} | {r['throughput']} | {r['baseline']} | {ratio} | "
            f"{r.get('peak', 'n/a')} | {peak} |"
        )
    return "\n".join(lines) + "\n"
