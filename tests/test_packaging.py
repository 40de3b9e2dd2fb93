"""The wheel: built from the checkout, installed into a folder, run from outside the checkout.

It must carry every package and the package data (``sources.json``: the annotation stage's default
URLs and checksums), so an installed ``avel`` works without the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO
from tests.support.release_set import SPLITS, annotation_rows, write_annotation_inputs

SOURCES = REPO / "pipeline" / "stages" / "annotations" / "sources.json"


def _pip(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of a copy of the checkout, installed with ``pip install --target``."""
    for module in ("setuptools", "wheel"):
        try:
            __import__(module)
        except ImportError:
            pytest.skip(f"{module} not installed: run `make setup` (the dev extra brings it)")
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src"  # a copy, so the build leaves no build/ or egg-info in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for pkg in ("avel", "pipeline", "models"):
        shutil.copytree(REPO / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp / "wheels"
    built = _pip(
        "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), ".", cwd=src
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = wheels.glob("avel-*.whl")
    target = tmp / "site"
    installed = _pip("install", "--no-deps", "-q", "--target", str(target), str(wheel), cwd=tmp)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return target


def _run(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow  # about 20 s: a wheel build and an install
def test_installed_wheel_runs_outside_the_checkout(site: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    probe = (
        "import json, avel, pipeline; from pipeline.stages.annotations.ave import load_sources; "
        "print(json.dumps({'file': pipeline.__file__, 'api': avel.__file__, "
        "'sources': load_sources()}))"
    )
    out = _run(site, outside, "-c", probe)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert Path(seen["file"]).resolve().is_relative_to(site.resolve())
    assert Path(seen["api"]).resolve().is_relative_to(site.resolve())  # `import avel` installed
    assert seen["sources"] == json.loads(SOURCES.read_text())  # the packaged sources.json
    # the default annotation URL comes from it (the stage reads no other copy)
    assert seen["sources"]["ave"]["base_url"].startswith("https://")

    help_out = _run(site, outside, "-m", "pipeline.cli", "--help")
    assert help_out.returncode == 0, help_out.stderr
    for command in ("annotations", "download", "segments", "import-release", "demo"):
        assert command in help_out.stdout

    ann, splits = write_annotation_inputs(tmp_path / "inputs", annotation_rows(), SPLITS)
    data = tmp_path / "data"
    args = ["--ave-annotations", str(ann), "--ave-splits", str(splits), "--audioset-csv", "none"]
    run = _run(site, outside, "-m", "pipeline.cli", "annotations", *args, "--data-dir", str(data))
    assert run.returncode == 0, run.stdout + run.stderr
    assert (data / "manifest.parquet").is_file()
