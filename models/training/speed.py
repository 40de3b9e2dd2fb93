"""CPU speed settings of the training loop that leave the arithmetic as it is.

``training_threads(device, threads)``: the localization and cross-modal networks are small (batch 64
x 10 s, or 8 pairs); with several torch threads every op, Adam's included, is a parallel region
whose threads meet at a barrier, and when another job holds a core one descheduled thread stalls
them all for milliseconds. Measured by ``make bench`` on this 2-core machine: shared (load 2-5),
av_att 17.0 clips/s with two threads and 85.4 with one, AVDLN 422 -> 5,636 pairs/s; idle (load
0.1), av_att 157.8 clips/s with two threads and 84.6 with one. So CPU training takes the cores that
are free when it starts (:func:`free_cores`: the idle share of the CPUs over 0.3 s, at least one),
unless ``TrainConfig.threads`` says otherwise; the count used is recorded in the run's
``config.json``. Thread counts change float rounding (~1e-7), not the trajectory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


def _cpu_times() -> tuple[int, int] | None:
    """(idle, total) jiffies of all CPUs from /proc/stat; None where unreadable."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return fields[3] + fields[4], sum(fields[:8])  # idle + iowait; user..steal


def free_cores(window: float = 0.3) -> int:
    """Cores other work leaves free now: the idle share of all CPUs over ``window`` seconds (this
    process waits meanwhile) times the usable cores, rounded, between 1 and the usable cores. Falls
    back to cores minus the 1-minute load average where /proc/stat is missing."""
    import os
    import time

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    first = _cpu_times()
    if first is not None:
        time.sleep(window)
        second = _cpu_times()
        if second is not None and second[1] > first[1]:
            idle = (second[0] - first[0]) / (second[1] - first[1])
            return max(1, min(cores, int(idle * cores + 0.5)))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(cores, int(cores - load + 0.5)))


def default_threads(mode: str) -> int:
    """Torch threads for CPU training of a task (``supervised``, ``weak``, ``crossmodal``): the
    free cores (:func:`free_cores`)."""
    return free_cores()


@contextlib.contextmanager
def training_threads(device: Any, threads: int | None = None) -> Iterator[int]:
    """Run the block with ``threads`` torch threads on the CPU (None: as they are); the previous
    count is restored after. Yields the count in use."""
    import torch

    if torch.device(device).type != "cpu" or not threads:
        yield torch.get_num_threads()
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def _off(module: Any, args: Any) -> None:
    import torch

    module._avel_mkldnn = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False


def _restore(module: Any, args: Any, output: Any) -> None:
    import torch

    torch.backends.mkldnn.enabled = getattr(module, "_avel_mkldnn", True)


@contextlib.contextmanager
def native_cpu_lstm(model: Any, device: Any) -> Iterator[int]:
    """Run the LSTMs of ``model`` without oneDNN while the block lasts (CPU only); yields how many
    LSTM modules were switched."""
    import torch

    lstms = [m for m in model.modules() if isinstance(m, torch.nn.LSTM)]
    if torch.device(device).type != "cpu" or not lstms:
        yield 0
        return
    handles = [m.register_forward_pre_hook(_off) for m in lstms]
    handles += [m.register_forward_hook(_restore) for m in lstms]
    try:
        yield len(lstms)
    finally:
        for h in handles:
            h.remove()
