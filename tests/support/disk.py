"""Real file-system faults for tests: a small tmpfs mounted on a test folder (disk full), and a
read-only folder.

Mounting needs root or passwordless sudo; without either a disk-full test is skipped with the
reason. A read-only folder is a read-only bind mount as root (permissions do not stop root), else
the folder with its write permission taken away.
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


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """``folder`` (created, contents kept) read-only for the block."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folders = [folder, *(p for p in folder.rglob("*") if p.is_dir())]
        modes = {p: p.stat().st_mode for p in folders}
        for p in folders:
            p.chmod(modes[p] & ~0o222)
        try:
            yield folder
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    bind = ["mount", "--bind", str(folder), str(folder)]
    if subprocess.run(bind, capture_output=True).returncode != 0:
        pytest.skip("a read-only folder as root needs a bind mount, and mounting failed")
    try:
        remount = ["mount", "-o", "remount,ro,bind", str(folder)]
        subprocess.run(remount, capture_output=True, check=True)
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


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
