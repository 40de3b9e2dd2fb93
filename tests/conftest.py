"""Shared pytest configuration: marker handling and the fixtures several test folders use."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.paths import REPO, shared_dir
from tests.support.release_set import (
    EMPTY_ROW,
    NOISY,
    SPLITS,
    annotation_rows,
    build_manifest,
    write_release,
)

__all__ = ["REPO", "shared_dir"]


@pytest.fixture(scope="session")
def shared() -> Path:
    path = shared_dir()
    if not (path / "ave" / "Annotations.txt").is_file():
        pytest.skip(
            f"{path} not found: the AVE annotation files under ../shared are needed for this test"
        )
    return path


@pytest.fixture(scope="session")
def small_release(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 24-row AVE-shaped set: its manifest folder and every file of its feature release.

    Keys: ``rows`` (annotation rows), ``manifest_dir``, ``release`` (folder), ``arrays`` (by file).
    """
    root = tmp_path_factory.mktemp("small_release")
    rows = annotation_rows(empty_row=EMPTY_ROW)
    manifest_dir = build_manifest(root, rows, SPLITS, root / "manifest")
    arrays = write_release(root / "release", rows, NOISY)
    return {
        "rows": rows,
        "manifest_dir": manifest_dir,
        "release": root / "release",
        "arrays": arrays,
    }


@pytest.fixture(scope="session")
def small(small_release: dict) -> dict:
    """``small_release`` under the name tests/models/test_train_from_release.py asks for."""
    return small_release


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-network", action="store_true", help="run tests that need the internet")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_network = config.getoption("--run-network") or os.environ.get("AVEL_NETWORK_TESTS") == "1"
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # torch missing or broken: no GPU tests either way
        has_cuda = False
    for item in items:
        if "network" in item.keywords and not run_network:
            item.add_marker(pytest.mark.skip(reason="needs the internet: pass --run-network"))
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray for the whole session (2 CPUs, no dashboard, a small object store); the tests
    that use it skip without Ray."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'avel[ray]')")
    started = not ray.is_initialized()
    if started:
        ray.init(
            num_cpus=2,
            num_gpus=0,
            include_dashboard=False,
            object_store_memory=100 * 2**20,
            log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}},
        )
    yield ray
    if started:
        ray.shutdown()
