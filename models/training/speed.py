"""CPU speed settings of the training loop that leave the arithmetic as it is.

``training_threads(device, threads)``: the localization and cross-modal networks are small (batch 64
x 10 s, or 8 pairs); with several torch threads every op, Adam's included, is a parallel region
whose threads meet at a barrier, and on a busy machine one descheduled thread stalls them all for
milliseconds. Measured in one ``make bench`` run on this 2-core machine (shared, load 2-5): av_att
17.0 clips/s with two threads, 85.4 with one; AVDLN 422 -> 5,636 pairs/s. CPU training therefore uses
:data:`CPU_TRAINING_THREADS` (one) unless ``TrainConfig.threads`` says otherwise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

#: Torch threads of CPU training when ``TrainConfig.threads`` is not given.
CPU_TRAINING_THREADS = 1


def default_threads(mode: str) -> int | None:
    """Torch threads for CPU training of a task (``supervised``, ``weak``, ``crossmodal``)."""
    return CPU_TRAINING_THREADS


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
