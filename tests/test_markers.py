"""Marker gates behave as docs/testing.md says: `--run-network` alone runs the network tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.paths import REPO

NETWORK_TEST = "tests/pipeline/test_vggish.py::test_official_weights_smoke_statistics"


def _run(tmp_path: Path, *options: str) -> str:
    """Run the network test with TensorFlow made unimportable (a stand-in package that raises),
    so it stops at its first line if it runs at all: the skip reason tells which gate stopped it."""
    fake = tmp_path / "no_tf" / "tensorflow"
    fake.mkdir(parents=True, exist_ok=True)
    (fake / "__init__.py").write_text("raise ImportError('tensorflow hidden by the test')\n")
    env = {k: v for k, v in os.environ.items() if k != "AVEL_NETWORK_TESTS"}
    env["PYTHONPATH"] = os.pathsep.join([str(fake.parent), str(REPO)])
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", NETWORK_TEST, *options]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    return proc.stdout + proc.stderr


def test_run_network_alone_runs_the_network_test(tmp_path: Path) -> None:
    gated = _run(tmp_path)
    assert "1 skipped" in gated and "needs the internet: pass --run-network" in gated
    opened = _run(tmp_path, "--run-network")
    assert "needs the internet" not in opened and "downloads the official" not in opened
    assert "tensorflow hidden by the test" in opened  # it ran, up to its import of TensorFlow
