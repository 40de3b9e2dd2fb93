"""The one device and seeding helper of every stage and trainer."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import random
import sys

import numpy as np


def resolve_device(name: str = "auto"):
    """``auto`` -> CUDA when available, else CPU; an explicit CUDA device without CUDA is an error."""
    import torch

    if name in ("auto", "", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return device


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch; with ``deterministic`` also pin torch's algorithms."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


#: glibc ``mallopt`` parameters and the size below which freed blocks stay in the heap.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
KEEP_FREED_BYTES = 1 << 30
_kept = False


def reuse_freed_memory() -> bool:
    """Let glibc keep freed blocks up to 1 GiB for reuse (Linux/glibc; once per process).

    By default every tensor over 32 MiB gets fresh pages from the kernel and gives them back when
    freed, so each training step and each forward batch page-faults its activations in again,
    zeroed (measured on 2 cores: av_att training 132-162 -> 199-203 clips/s, VGG-19 6.6-7.0 -> 7.9
    frames/s). With the thresholds raised the heap keeps its peak size instead: the memory of the
    largest step stays with the process. Numbers are unchanged. Returns whether it applied."""
    global _kept
    if _kept:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    _kept = bool(
        mallopt(_M_MMAP_THRESHOLD, KEEP_FREED_BYTES)
        and mallopt(_M_TRIM_THRESHOLD, KEEP_FREED_BYTES)
    )
    return _kept
