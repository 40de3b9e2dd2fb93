"""What made a result: the code's git state, library versions, the device and the ffmpeg build.

Runs and feature stores record :func:`provenance` so two results can be traced to their code and
machine. It is a record only: nothing here decides whether finished work is reused.
"""

from __future__ import annotations

import functools
import importlib
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

#: The checkout this code lives in, when it is one (``pipeline/core/`` is two levels below it).
_ROOT = Path(__file__).resolve().parents[2]
#: Distributions whose versions a result records (``python`` is added first).
LIBRARIES = ("avel", "torch", "torchvision", "numpy", "pandas", "pyarrow", "h5py", "soxr", "yt-dlp")
#: Read from the module itself: its ``__version__`` names the build (``2.14.1+cu130``).
_FROM_MODULE = ("torch", "torchvision", "numpy")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(_ROOT), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> dict[str, Any]:
    """``{"commit": full hash, "dirty": tracked files changed}``; both None outside a checkout
    (an installed wheel, or a copy inside someone else's repository)."""
    top = _git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != _ROOT:
        return {"commit": None, "dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": _git("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}


def _version(name: str) -> str | None:
    if name in _FROM_MODULE:
        try:
            return str(importlib.import_module(name).__version__)
        except ImportError:
            return None
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def library_versions() -> dict[str, str | None]:
    """Python's version, each of :data:`LIBRARIES` (None when not installed) and ``cuda``, the
    CUDA version torch was built with (None for a CPU build)."""
    out = {"python": platform.python_version(), **{name: _version(name) for name in LIBRARIES}}
    try:
        import torch

        out["cuda"] = torch.version.cuda
    except ImportError:
        out["cuda"] = None
    return out


@functools.cache
def ffmpeg_version() -> str | None:
    """The version word of ``ffmpeg -version`` (e.g. ``5.1.6-0+deb12u1``); None without ffmpeg."""
    try:
        out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    words = out.stdout.split()
    if out.returncode != 0 or len(words) < 3 or words[:2] != ["ffmpeg", "version"]:
        return None
    return words[2]


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: Any) -> str:
    """The CUDA device's name for a CUDA device (``torch.device`` or string), else the CPU model."""
    kind = getattr(device, "type", None) or str(device).split(":")[0]
    if kind == "cuda":
        import torch

        index = getattr(device, "index", None)
        if index is None and ":" in str(device):
            index = int(str(device).split(":")[1])
        return torch.cuda.get_device_name(index)
    return cpu_model()


def provenance(device: Any = "cpu", ffmpeg: bool = True) -> dict[str, Any]:
    """One record: ``git``, ``versions``, ``device`` and (with ``ffmpeg``) ``ffmpeg``."""
    record: dict[str, Any] = {
        "git": git_state(),
        "versions": library_versions(),
        "device": device_name(device),
    }
    if ffmpeg:
        record["ffmpeg"] = ffmpeg_version()
    return record
