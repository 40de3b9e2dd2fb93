"""This machine's measured limits, for the bench's "fraction of peak" columns.

- :func:`matmul_probe`: dense matmul GFLOP/s (fp32 and bf16/fp16) with torch's threads: the compute
  limit every network row is compared with (achieved FLOP/s = FLOPs counted per example x
  examples/s).
- :func:`decode_probe`: ffmpeg decoding a clip as fast as it can (every frame, to ``null``, one
  process per core): the decoding limit of the visual rows, in clips/s.
- :func:`counted_flops`: FLOPs of one call of a function (torch's ``FlopCounterMode``).
- :func:`top_ops`: where the time of one call goes (``torch.profiler``).
- :func:`tree_pss_kib`: memory of a process and its descendants (PSS, shared pages once).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def cores() -> int:
    """CPU cores this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def matmul_probe(
    device: str = "cpu", dtype: str = "fp32", n: int = 2048, repeats: int = 5
) -> float:
    """Best GFLOP/s of an ``n`` x ``n`` matmul in ``dtype`` on ``device`` (all torch threads); best
    of ``repeats`` timings of several products each, since a shared VM's rate moves by 20%."""
    import torch

    dt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(dev, dt)
    b = torch.randn(n, n, generator=gen).to(dev, dt)
    inner = 20 if dev.type == "cuda" else 3
    best = float("inf")
    with torch.inference_mode():
        a @ b  # warm-up
        for _ in range(repeats):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(inner):
                a @ b
            if dev.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, (time.perf_counter() - start) / inner)
    return 2 * n**3 / best / 1e9


def decode_probe(clip: str | Path, processes: int | None = None) -> dict[str, float]:
    """Decode every frame of ``clip`` to ``null`` (no scaling, no output), ``processes`` copies at
    once (default: the cores), one ffmpeg thread each: the machine's decoding limit in clips/s."""
    processes = processes or cores()
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-threads", "1", "-i", str(clip)]
    cmd += ["-an", "-f", "null", "-"]

    def one(_: int) -> None:
        subprocess.run(cmd, check=True, capture_output=True)

    one(0)  # warm the page cache
    start = time.perf_counter()
    with ThreadPoolExecutor(processes) as pool:
        list(pool.map(one, range(processes)))
    seconds = time.perf_counter() - start
    return {"clips_per_s": processes / seconds, "processes": processes}


def counted_flops(fn: Callable[[], Any]) -> float:
    """FLOPs of one call of ``fn``: matmuls and convolutions, backward included (torch's
    ``FlopCounterMode``, the same count as the profiler's ``with_flops`` without starting it)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return float(counter.get_total_flops())


@contextmanager
def _profiler_chatter_held() -> Iterator[None]:
    """The profiler's library writes start/stop lines and, on a CUDA build without a GPU, an
    alarming "gpuGetDeviceCount failed" to file descriptor 2: keep them off the terminal."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def top_ops(fn: Callable[[], Any], rows: int = 8) -> list[dict[str, Any]]:
    """Where the time of one call of ``fn`` goes: the ``rows`` ops with the most self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    with _profiler_chatter_held():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        averages = prof.key_averages()
    events = sorted(averages, key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return [
        {
            "op": e.key,
            "self_ms": round(e.self_cpu_time_total / 1e3, 1),
            "share": round(e.self_cpu_time_total / total, 3),
            "calls": e.count,
        }
        for e in events[:rows]
    ]


def tree_pss_kib(pid: int) -> int:
    """Proportional set size of ``pid`` and all its descendants (KiB), from /proc: pages shared
    with forked decoder workers count once, unlike RSS."""
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                total += sum(tree_pss_kib(int(c)) for c in f.read().split())
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return total
