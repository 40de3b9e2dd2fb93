"""docker/Dockerfile: its structure, read statically, and the Makefile under the image's environment
(simulated: the same working folder layout, environment and install stamps), so no daemon is
needed; the image itself is built only where a Docker daemon answers."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support.make import MAKEFILE, avel_commands, make_env
from tests.support.paths import REPO

DOCKERFILE = REPO / "docker" / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; continuation lines joined, comments left out."""
    lines = [ln for ln in DOCKERFILE.read_text().splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def index(kind: str, contains: str = "") -> int:
    found = [i for i, (k, a) in enumerate(instructions()) if k == kind and contains in a]
    assert found, f"no {kind} {contains!r} in {DOCKERFILE}"
    return found[0]


def image_env() -> dict[str, str]:
    """The ENV of the image (``ENV K=V ...`` or ``ENV K V``)."""
    env: dict[str, str] = {}
    for kind, args in instructions():
        if kind != "ENV":
            continue
        if "=" in args.split()[0]:
            env.update(pair.split("=", 1) for pair in args.split())
        else:
            key, _, value = args.partition(" ")
            env[key] = value.strip()
    return env


def test_no_data_dir_in_the_environment_and_both_volumes() -> None:
    env = image_env()
    assert not {"DATA_DIR", "RUN_DIR"} & set(env), env
    (workdir,) = {a for k, a in instructions() if k == "WORKDIR"}
    volumes = set(json.loads(instructions()[index("VOLUME")][1]))
    # the Makefile's defaults (data, runs) resolved in the working folder are the volumes
    assert volumes == {f"{workdir}/data", f"{workdir}/runs"}


def test_dependencies_are_installed_before_the_code_is_copied() -> None:
    deps = index("RUN", "requirements")
    copies = [a for k, a in instructions()[:deps] if k == "COPY"]
    assert copies == ["pyproject.toml requirements.lock ./"]  # nothing that changes with the code
    assert "-c requirements.lock" in instructions()[deps][1]  # the tested versions
    code = [index("COPY", f"{pkg}/") for pkg in ("pipeline", "models")]
    assert deps < min(code) < index("RUN", "--no-deps -e .")


def test_torch_is_the_newest_minor_that_pyproject_allows() -> None:
    """The image runs the torch the tests run on: pyproject caps torch/torchvision at a minor
    version (``<2.15``) and the image pins the minor below the cap (``2.14.*``)."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    install = instructions()[index("RUN", "requirements")][1]
    for name in ("torch", "torchvision"):
        (spec,) = [d for d in deps if re.match(rf"{name}\s*[<>=]", d)]
        major, minor = re.search(r"<\s*(\d+)\.(\d+)\b", spec).groups()
        assert f'"{name}=={major}.{int(minor) - 1}.*"' in install, (spec, install)


def test_runs_as_a_user_with_a_configurable_uid() -> None:
    args = {a.split("=")[0] for k, a in instructions() if k == "ARG"}
    assert {"UID", "GID"} <= args
    adduser = index("RUN", "useradd")
    assert '--uid "$UID"' in instructions()[adduser][1]
    assert index("ARG", "UID") < adduser < index("USER")
    user = instructions()[index("USER")][1]
    assert user not in ("root", "0") and index("USER") > index("RUN", "--no-deps -e .")


@pytest.fixture
def container(tmp_path: Path) -> Path:
    """A working folder like the image's: pyproject.toml and the lock, the venv's interpreter, and
    the stamps the Dockerfile touches (after those two files, as in the build)."""
    shutil.copy2(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copy2(REPO / "requirements.lock", tmp_path / "requirements.lock")
    venv = tmp_path / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    build = instructions()[index("RUN", "--no-deps -e .")][1]
    stamps = re.findall(r"\.venv/(\.installed-[a-z]+)", build)
    assert stamps
    later = (
        max(os.stat(tmp_path / f).st_mtime for f in ("pyproject.toml", "requirements.lock")) + 10
    )
    for name in stamps:
        (venv / name).touch()
        os.utime(venv / name, (later, later))
    return tmp_path


def _make(folder: Path, *args: str, env: dict[str, str] | None = None):
    full = {**make_env(), **image_env(), **(env or {})}
    cmd = ["make", "--no-print-directory", "-n", "-f", str(MAKEFILE), *args]
    return subprocess.run(cmd, cwd=folder, env=full, capture_output=True, text=True, timeout=120)


def test_make_in_the_container_names_no_data_folder_and_installs_nothing(container: Path) -> None:
    refused = _make(container, "delete-data")
    assert refused.returncode != 0 and "name it" in refused.stderr
    named = _make(container, "delete-data", "DATA_DIR=data")
    assert named.returncode == 0 and "rm -rf -- 'data'" in named.stdout
    # the simulation is sensitive: the old image's ENV DATA_DIR made delete-data go ahead
    assert _make(container, "delete-data", env={"DATA_DIR": "/avel/data"}).returncode == 0

    demo = _make(container, "demo")
    assert demo.returncode == 0, demo.stderr
    (argv,) = avel_commands(demo.stdout)
    assert argv[0] == "demo" and not any(a.startswith("--data-dir") for a in argv)
    for target in ("features", "train-supervised", "demo"):
        plan = _make(container, target)
        assert plan.returncode == 0 and "pip install" not in plan.stdout, (target, plan.stdout)
    chain = avel_commands(_make(container, "features").stdout)  # annotations .. features
    assert chain[-1][0] == "features" and all("--data-dir=data" in argv for argv in chain)


@pytest.mark.slow  # a full image build: minutes, and the dependencies' downloads
def test_image_builds_where_a_docker_daemon_answers() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker command: the image build is checked where Docker is installed")
    info = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        pytest.skip("no Docker daemon answers (`docker info` failed): the image is not built here")
    build = [docker, "build", "-f", str(DOCKERFILE), "-t", "avel-test", str(REPO)]
    built = subprocess.run(build, capture_output=True, text=True, timeout=3600)
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    run = [docker, "run", "--rm", "avel-test", "make", "-n", "delete-data"]
    refused = subprocess.run(run, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "name it" in refused.stderr
