"""A small real file system for disk-full tests: a tmpfs mounted on a test folder.

Mounting needs root or passwordless sudo; without either the test is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _mount_cmds(folder: Path, size: str) -> list[list[str]]:
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(folder)]
    cmds = [mount] if os.geteuid() == 0 else []
    if shutil.which("sudo"):
        cmds.append(["sudo", "-n", *mount])
    return cmds


@contextlib.contextmanager
def small_disk(folder: Path, size: str = "4m") -> Iterator[Path]:
    """Mount a tmpfs of ``size`` on ``folder`` (created) for the block; unmount it after."""
    folder.mkdir(parents=True, exist_ok=True)
    used = None
    for cmd in _mount_cmds(folder, size):
        if subprocess.run(cmd, capture_output=True).returncode == 0:
            used = ["sudo", "-n"] if cmd[0] == "sudo" else []
            break
    if used is None:
        pytest.skip("a full disk needs a small tmpfs: mounting one needs root or passwordless sudo")
    try:
        yield folder
    finally:
        subprocess.run([*used, "umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path, leave: int) -> Path:
    """Write a filler file in ``folder`` so that about ``leave`` bytes stay free; return it."""
    filler = folder / "filler.bin"
    free = shutil.disk_usage(folder).free
    with open(filler, "wb") as f:
        block = b"\0" * (1 << 16)
        todo = max(0, free - leave)
        while todo > 0:
            todo -= f.write(block[: min(len(block), todo)])
    return filler


def error_lines(stderr: str) -> list[str]:
    """The lines of a command's stderr that report a problem (progress bars left out)."""
    lines = [part for line in stderr.splitlines() for part in line.split("\r")]
    return [line for line in lines if "error" in line.lower() or "Traceback" in line]
