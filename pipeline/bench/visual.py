"""Benchmark of the VGG-19 visual feature pipeline against a naive baseline, in one process.

Optimised: :func:`pipeline.backbones.visual.extract_visual` (decoder worker processes, one ffmpeg per
clip decoding only the planned frames straight to 224x224, cross-clip batches, channels-last,
inference mode, autocast where the precision is native). Naive, as the original release scripts did: one clip at a time,
decode every frame at full size, sample by the plan, resize each chosen frame, one frame per forward.

Figures: decode frames/s, VGG-19 frames/s, end-to-end clips/s, peak memory (RSS of this process and
its children (PSS), sampled; plus CUDA peak allocation on a GPU), GPU utilisation when NVML is available,
and optimised/naive ratios. Against the machine's limits: the decode probe (every frame of the clip to
``null``, one ffmpeg per core, :func:`pipeline.bench.peak.decode_probe`) and VGG-19's FLOPs per frame
(FlopCounterMode) for its achieved GFLOP/s; the reduced-precision probe (speed and pool5 error against
fp32) is reported beside the row, which runs at the features stage's default, fp32, on every host
(``precision="auto"`` lets the probe choose, as ``--precision auto`` does).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.backbones.base import Request
from pipeline.backbones.executor import ClipInputs, ClipWork
from pipeline.backbones.frames import count_frames
from pipeline.backbones.precision import choose_precision, native
from pipeline.backbones.vgg19 import build_vgg19_pool5, probe_vgg19_precision
from pipeline.backbones.visual import extract_visual
from pipeline.bench.peak import counted_flops, decode_probe, tree_pss_kib
from pipeline.core.manifest import CLIP_SECONDS
from pipeline.stages.segments import release_frame_indices


def make_bench_clips(
    directory: Path, count: int, size: str = "320x240", fps: int = 25
) -> list[Path]:
    """``count`` 10 s H.264 test clips at AVE-like resolution and frame rate."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(count):
        path = directory / f"bench-{k}-{size}-{fps}.mp4"
        if not path.is_file():
            subprocess.run(
                [
                    "ffmpeg",
                    "-v",
                    "error",
                    "-y",
                    "-f",
                    "lavfi",
                    "-i",
                    f"testsrc2=size={size}:rate={fps}:duration={CLIP_SECONDS}",
                    "-vf",
                    f"hue=h={37 * k}",
                    "-pix_fmt",
                    "yuv420p",
                    "-c:v",
                    "libx264",
                    str(path),
                ],
                check=True,
            )
        paths.append(path)
    return paths


class _Peak:
    """Samples the PSS of this process tree (and GPU utilisation) in a thread while a phase runs.

    Each PSS sample walks the page tables (~10 ms of kernel time for a 1.5 GB process): every
    0.25 s it costs the phase ~4% of one core, where every 0.02 s it took a quarter of VGG-19's
    speed on two cores."""

    def __init__(self, cuda: bool, interval: float = 0.25):
        self.cuda, self.interval = cuda, interval
        self.peak_kib, self.util = 0, []
        self._stop = threading.Event()

    def __enter__(self) -> _Peak:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, tree_pss_kib(os.getpid()))
            if self.cuda:
                try:
                    import torch

                    self.util.append(torch.cuda.utilization())
                except Exception:  # NVML missing: no utilisation figure
                    self.cuda_util_missing = True
            self._stop.wait(self.interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {"peak_pss_mib": round(self.peak_kib / 1024, 1)}
        if self.cuda:
            import torch

            out["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            out["gpu_busy_pct"] = round(float(np.mean(self.util)), 1) if self.util else None
        return out


def _timed(cuda: bool, fn: Callable[[], Any], sample: bool = True) -> tuple[float, dict[str, Any]]:
    """Seconds of ``fn`` and, when ``sample``, its peak memory (and GPU busy fraction)."""
    import torch

    with _Peak(cuda) if sample else nullcontext() as peak:
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return seconds, peak.result() if sample else {}


def _naive_frames(path: Path, plan: np.ndarray, size: int) -> Any:
    """Decode every frame at full size, sample by the plan, resize each chosen frame on its own."""
    import torch
    import torch.nn.functional as F

    probe = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=width,height",
            "-of",
            "csv=p=0",
            str(path),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split(",")
    w, h = int(probe[0]), int(probe[1])
    raw = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            str(path),
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "pipe:1",
        ],
        check=True,
        capture_output=True,
    ).stdout
    every = np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)
    out = []
    for index in plan.reshape(-1):
        frame = torch.from_numpy(every[index].copy()).permute(2, 0, 1)[None].float()
        out.append(F.interpolate(frame, size=(size, size), mode="bilinear", align_corners=False)[0])
    return out


def bench_visual(
    clips: Sequence[str | os.PathLike] | None = None,
    n_clips: int = 2,
    per_second: int = 1,
    size: int = 224,
    device: str = "cpu",
    precision: str = "fp32",
    batch_size: int = 32,
    num_workers: int = 2,
    model_frames: int = 4,
    weights: str = "random",
    work_dir: str | os.PathLike | None = None,
    naive: bool = True,
) -> dict[str, Any]:
    """Measure the optimised visual pipeline and the naive baseline; return figures and ratios.

    Without ``clips``, ``n_clips`` 10 s 320x240 25 fps clips are generated in ``work_dir`` (a temp
    dir by default). ``per_second`` frames per second (16 in the release; the CPU default is 1 to fit
    in two minutes). ``model_frames`` frames time the network alone. Random weights by default: the
    speed does not depend on the values. ``precision="auto"``: the probe's choice (fp32, or bf16/fp16
    where native, within the error bound and faster).
    """
    import torch

    cuda = torch.device(device).type == "cuda"
    model, record = build_vgg19_pool5(weights, allow_random=weights == "random")
    probes = {
        low: probe_vgg19_precision(model, record, device, low, size=size)
        for low in (("fp16", "bf16") if cuda else ("bf16",))
        if native(device, low)
    }
    if precision == "auto":
        chosen = [choose_precision(p) for p in probes.values()]
        precision = next((c for c in chosen if c != "fp32"), "fp32")
    one = record.preprocess(torch.zeros((1, size, size, 3), dtype=torch.uint8))
    with torch.inference_mode():
        flops_per_frame = counted_flops(lambda: model.to("cpu")(one))
    with tempfile.TemporaryDirectory() as tmp:
        paths = (
            [Path(c) for c in clips] if clips else make_bench_clips(Path(work_dir or tmp), n_clips)
        )
        items = [(p.stem, p, release_frame_indices(count_frames(p), per_second)) for p in paths]
        planned = sum(int(plan.size) for _, _, plan in items)
        res: dict[str, Any] = {
            "device": torch.cuda.get_device_name()
            if cuda
            else f"cpu ({torch.get_num_threads()} threads)",
            "clips": len(items),
            "frames_per_second_of_video": per_second,
            "planned_frames": planned,
            "size": size,
            "precision": precision,
            "precision_probes": probes,
            "flops_per_frame": flops_per_frame,
            "batch_size": batch_size,
            "num_workers": num_workers,
            "weights": record.name,
            "decode_probe": decode_probe(paths[0]),
        }
        opt: dict[str, Any] = {}
        nav: dict[str, Any] = {}

        # Decoding only.
        def decode_opt() -> None:
            work = [ClipWork(c, str(p), plans={"vgg19": f.reshape(-1)}) for c, p, f in items]
            requests = {"vgg19": Request("frames", size=(size, size))}
            loader = torch.utils.data.DataLoader(
                ClipInputs(work, requests), batch_size=None, num_workers=num_workers
            )
            for sample in loader:
                assert "error" not in sample, sample.get("error")

        sec, mem = _timed(False, decode_opt)
        opt["decode_frames_per_s"] = planned / sec
        opt["decode_peak_pss_mib"] = mem["peak_pss_mib"]
        if naive:
            sec, mem = _timed(False, lambda: [_naive_frames(p, plan, size) for _, p, plan in items])
            nav["decode_frames_per_s"] = planned / sec
            nav["decode_peak_pss_mib"] = mem["peak_pss_mib"]

        # The network only, on random frames.
        frames = torch.randint(0, 256, (model_frames, size, size, 3), dtype=torch.uint8)
        dev = torch.device(device)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        fast = model.to(dev, memory_format=torch.channels_last).eval()

        def model_opt() -> None:
            with (
                torch.inference_mode(),
                torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None),
            ):
                for k in range(0, model_frames, batch_size):
                    x = record.preprocess(frames[k : k + batch_size].to(dev, non_blocking=cuda))
                    fast(x.contiguous(memory_format=torch.channels_last))

        model_opt()  # warm-up: cudnn autotune / oneDNN primitives and weight layouts
        sec, _ = _timed(cuda, model_opt, sample=False)
        opt["vgg19_frames_per_s"] = model_frames / sec
        if naive:
            slow = model.to(dev, memory_format=torch.contiguous_format)

            def model_naive(count: int = model_frames) -> None:
                with torch.no_grad():
                    for k in range(count):
                        x = record.preprocess(frames[k : k + 1]).contiguous().to(dev)
                        slow(x).cpu()

            model_naive(1)  # the same warm-up
            sec, _ = _timed(cuda, model_naive, sample=False)
            nav["vgg19_frames_per_s"] = model_frames / sec

        # End to end.
        def e2e_opt() -> None:
            for clip_id, maps in extract_visual(
                items,
                model,
                record,
                device=device,
                precision=precision,
                batch_size=batch_size,
                num_workers=num_workers,
                size=size,
            ):
                assert not isinstance(maps, str), f"{clip_id}: {maps}"

        sec, mem = _timed(cuda, e2e_opt)
        opt.update(clips_per_s=len(items) / sec, frames_per_s=planned / sec, seconds=sec, **mem)
        if naive:
            slow = model.to(dev, memory_format=torch.contiguous_format)

            def e2e_naive() -> None:
                with torch.no_grad():
                    for _, path, plan in items:
                        maps = []
                        for frame in _naive_frames(path, plan, size):
                            x = frame.permute(1, 2, 0) * record.scale - torch.tensor(record.mean)
                            x = (x / torch.tensor(record.std)).permute(2, 0, 1)[None]
                            maps.append(slow(x.to(dev)).cpu())
                        torch.stack(maps).reshape(
                            CLIP_SECONDS, per_second, *maps[0].shape[1:]
                        ).mean(1)

            sec, mem = _timed(cuda, e2e_naive)
            nav.update(clips_per_s=len(items) / sec, frames_per_s=planned / sec, seconds=sec, **mem)

    res["optimised"] = {k: round(v, 3) if isinstance(v, float) else v for k, v in opt.items()}
    res["naive"] = {k: round(v, 3) if isinstance(v, float) else v for k, v in nav.items()}
    if naive:
        res["speedup"] = {
            k: round(opt[k] / nav[k], 2)
            for k in ("decode_frames_per_s", "vgg19_frames_per_s", "clips_per_s")
            if nav.get(k)
        }
    return res


def format_bench(res: dict[str, Any]) -> str:
    """Human summary of :func:`bench_visual`."""
    lines = [
        f"visual features on {res['device']}: {res['clips']} clips x {res['planned_frames'] // max(res['clips'], 1)}"
        f" planned frames at {res['size']}px, {res['precision']}, batch {res['batch_size']},"
        f" {res['num_workers']} decoder workers, weights {res['weights']}"
    ]
    for key, label in (
        ("decode_frames_per_s", "decode frames/s"),
        ("vgg19_frames_per_s", "VGG-19 frames/s"),
        ("clips_per_s", "end-to-end clips/s"),
        ("peak_pss_mib", "peak PSS MiB (e2e)"),
    ):
        o, n = res["optimised"].get(key), res["naive"].get(key)
        ratio = res.get("speedup", {}).get(key)
        lines.append(f"  {label:22s} optimised {o}   naive {n}" + (f"   x{ratio}" if ratio else ""))
    for key in ("peak_cuda_mib", "gpu_busy_pct"):
        if key in res["optimised"]:
            lines.append(
                f"  {key:22s} optimised {res['optimised'][key]}   naive {res['naive'].get(key)}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    import json
    import sys

    result = bench_visual(**json.loads(sys.argv[1]) if len(sys.argv) > 1 else {})
    print(format_bench(result))
    print(json.dumps(result))
