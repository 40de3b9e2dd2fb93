"""Provenance: the git state of the checkout the code runs from, versions, ffmpeg and the device."""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import numpy
import pytest
import torch

from pipeline.core import provenance
from tests.support.paths import REPO

SOURCE = REPO / "pipeline" / "core" / "provenance.py"


def _load_copy(root: Path) -> ModuleType:
    """provenance.py copied to ``root/pipeline/core/`` and imported from there."""
    target = root / "pipeline" / "core" / "provenance.py"
    target.parent.mkdir(parents=True)
    shutil.copy2(SOURCE, target)
    spec = importlib.util.spec_from_file_location(f"provenance_copy_{root.name}", target)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _git(root: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
    }
    env["GIT_COMMITTER_EMAIL"] = "t@t"
    done = subprocess.run(["git", "-C", str(root), *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_git_state_commit_and_dirty_flag(tmp_path: Path) -> None:
    repo = tmp_path / "checkout"
    module = _load_copy(repo)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "first")
    assert module.git_state() == {"commit": _git(repo, "rev-parse", "HEAD"), "dirty": False}
    (repo / "notes.txt").write_text("untracked files do not count\n")
    assert module.git_state()["dirty"] is False
    (repo / "pipeline" / "core" / "provenance.py").write_text("# changed\n")
    assert module.git_state()["dirty"] is True


def test_git_state_is_none_outside_a_checkout(tmp_path: Path) -> None:
    plain = _load_copy(tmp_path / "plain")
    assert plain.git_state() == {"commit": None, "dirty": None}
    outer = tmp_path / "outer"  # a copy inside someone else's repository is not our checkout
    outer.mkdir()
    _git(outer, "init", "-q")
    nested = _load_copy(outer / "vendor")
    assert nested.git_state() == {"commit": None, "dirty": None}


def test_library_versions_and_ffmpeg() -> None:
    versions = provenance.library_versions()
    assert versions["python"] == platform.python_version()
    assert versions["torch"] == torch.__version__ and versions["numpy"] == numpy.__version__
    assert versions["cuda"] == torch.version.cuda and set(provenance.LIBRARIES) <= set(versions)
    first_line = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout
    found = provenance.ffmpeg_version()
    assert found and first_line.splitlines()[0].startswith(f"ffmpeg version {found} ")


def test_ffmpeg_version_is_none_without_ffmpeg(monkeypatch: pytest.MonkeyPatch) -> None:
    provenance.ffmpeg_version.cache_clear()
    monkeypatch.setenv("PATH", "")
    try:
        assert provenance.ffmpeg_version() is None
    finally:
        provenance.ffmpeg_version.cache_clear()


def test_device_name_cpu_and_record() -> None:
    name = provenance.device_name("cpu")
    assert name and name == provenance.device_name(torch.device("cpu"))
    record = provenance.provenance("cpu", ffmpeg=False)
    assert set(record) == {"git", "versions", "device"} and record["device"] == name


@pytest.mark.gpu
def test_device_name_cuda() -> None:
    assert provenance.device_name("cuda:0") == torch.cuda.get_device_name(0)
    assert provenance.device_name(torch.device("cuda")) == torch.cuda.get_device_name()
