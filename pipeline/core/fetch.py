"""Public input files: resolve a local path or fetch a URL into a cache, verifying sha256."""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from pipeline.core.io import atomic_path

USER_AGENT = "avel (+https://github.com/avel)"


class SourceError(RuntimeError):
    """An input file could not be obtained or failed its checksum."""


def sha256_file(
    path: str | os.PathLike, chunk: int = 1 << 20, algorithm: str = "sha256", parts: bool = False
) -> str:
    """Hex digest (sha256 unless ``algorithm`` says otherwise) of a file, streamed.

    With ``parts``, ``path`` may also be the prefix of several files ``<path>.*`` (a TF checkpoint
    written as index + data): the digest is then taken over each part's name and digest, in name
    order. A missing file raises :class:`FileNotFoundError`.
    """
    path = Path(path)
    if parts and not path.is_file():
        found = sorted(path.parent.glob(path.name + ".*"))
        if not found:
            raise FileNotFoundError(f"{path}: no such file, nor files {path.name}.*")
        h = hashlib.new(algorithm)
        for part in found:
            h.update(part.name.encode() + b"\0" + sha256_file(part, chunk, algorithm).encode())
        return h.hexdigest()
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def fetch(
    location: str | os.PathLike,
    cache_dir: str | os.PathLike,
    sha256: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Return a local path for ``location`` (a path or an http(s) URL).

    URLs are downloaded once into ``cache_dir`` (atomically); a cached file is reused when its
    checksum still matches. When ``sha256`` is given, a downloaded file must match it. Local files
    are the user's choice and are not rejected; callers record their checksum.
    """
    location = str(location)
    if not is_url(location):
        path = Path(location).expanduser()
        if not path.is_file():
            raise SourceError(f"{path}: file not found")
        return path
    cache_dir = Path(cache_dir)
    name = location.rstrip("/").rsplit("/", 1)[-1] or "download"
    target = cache_dir / name
    if target.is_file():
        if sha256 is None or sha256_file(target) == sha256:
            return target
        target.unlink()
    request = urllib.request.Request(location, headers={"User-Agent": USER_AGENT})
    try:
        with (
            urllib.request.urlopen(request, timeout=timeout) as response,
            atomic_path(target) as tmp,
        ):
            with open(tmp, "wb") as out:
                shutil.copyfileobj(response, out, 1 << 20)
            _verify(tmp, sha256, origin=location)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise SourceError(
            f"could not download {location}: {exc}. Check the network, or download the file "
            "yourself and pass its local path instead."
        ) from exc
    return target


def _verify(path: Path, sha256: str | None, origin: str) -> None:
    if sha256 is None:
        return
    actual = sha256_file(path)
    if actual != sha256:
        raise SourceError(
            f"{origin}: sha256 {actual} does not match the expected {sha256}. The file is corrupt, "
            "truncated or a different version; fetch it again from the public source."
        )
