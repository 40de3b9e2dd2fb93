"""requirements.lock: every declared dependency pinned to a version its specifier allows, every
install of the Makefile and the image constrained by it, and this environment built from it."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.make import MAKEFILE
from tests.support.paths import REPO

LOCK = REPO / "requirements.lock"


def locked() -> dict[str, str]:
    """Canonical package name -> pinned version."""
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and version, f"{LOCK}: {line!r} is not NAME==VERSION"
        pins[canonicalize_name(name)] = version
    return pins


def declared() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        specs += extra
    return [Requirement(s) for s in specs]


def test_every_declared_dependency_is_pinned_within_its_specifier() -> None:
    pins = locked()
    for req in declared():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in requirements.lock: run make lock"
        assert req.specifier.contains(pins[name], prereleases=True), (str(req), pins[name])


def test_every_install_is_constrained_by_the_lock() -> None:
    text = MAKEFILE.read_text()
    installs = [ln for ln in text.splitlines() if re.match(r"\t.*pip install .*-e ", ln)]
    assert installs and all("-c $(LOCK)" in ln for ln in installs), installs
    assert re.search(r"^LOCK := requirements\.lock$", text, re.M)
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    assert "-c requirements.lock" in dockerfile


def test_this_environment_has_the_locked_versions() -> None:
    pins = locked()
    for req in declared():
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            installed = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            continue  # an extra this environment does not have
        public = installed.split("+")[0]
        assert public == pins[canonicalize_name(req.name)], (
            f"{req.name} {installed} installed, {pins[canonicalize_name(req.name)]} locked: "
            "reinstall (make test) or run make lock"
        )
