"""Run the repository's Makefile from a test: the test's own interpreter, nothing reinstalled.

``make()`` passes ``VENV`` (the venv running the tests) and ``PY`` (its interpreter) and marks the
install stamps as up to date (``-o``), so a target runs its command with the code under test and
never calls pip. Variables the Makefile reads are removed from the environment (and MAKEFLAGS, so
a ``make test`` around the suite does not leak its command-line variables into these runs).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from pipeline.cli.make_help import parse_makefile
from tests.support.paths import REPO

MAKEFILE = REPO / "Makefile"
VENV = Path(sys.prefix)
TARGETS, USER_VARIABLES = parse_makefile(MAKEFILE.read_text())


def make_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in USER_VARIABLES}
    for key in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"):
        env.pop(key, None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def make(
    *args: str,
    dry_run: bool = False,
    cwd: Path = REPO,
    check: bool = True,
    timeout: float = 900,
) -> subprocess.CompletedProcess:
    """``make [-n] ARGS`` with the test venv; raises with the output when it fails and ``check``."""
    stamps = [f"-o{VENV}/.installed-{kind}" for kind in ("run", "tf", "dev", "ray")]
    cmd = ["make", "--no-print-directory", "-f", str(MAKEFILE), *stamps]
    cmd += ["-n"] if dry_run else []
    cmd += [f"VENV={VENV}", f"PY={sys.executable}", *args]
    proc = subprocess.run(
        cmd, cwd=cwd, env=make_env(), capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{shlex.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}"
            f"\n--- stderr\n{proc.stderr[-6000:]}"
        )
    return proc


def avel_commands(output: str) -> list[list[str]]:
    """The ``avel`` argument lists of the commands make printed or ran (``python -m pipeline.cli
    ARGS``), in order."""
    found = []
    for line in output.replace("\\\n", " ").splitlines():  # recipe lines continued with '\'
        if " -m pipeline.cli " not in line:
            continue
        tokens = shlex.split(line)
        found.append(tokens[tokens.index("pipeline.cli") + 1 :])
    return found
