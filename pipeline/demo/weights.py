"""Pretrained backbone weights for the demo: the local caches first, then the official files.

The demo is meant to show real accuracies, which need pretrained VGGish and VGG-19 weights. This
module looks for them in the local caches and, unless offline, fetches the official files once
into ``DATA_DIR/weights/<backbone>/`` (checked against their published checksums), converting the
VGGish TF checkpoint with the existing loader. When a file cannot be had, the demo falls back to
random weights and says so loudly; nothing here ever raises for a missing network.

The sources are :class:`WeightSource` records (URL + expected digest), so a caller (or a test on a
loopback server) can point the same code path at other files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.backbones import vgg19 as v19
from pipeline.backbones import vggish_weights as vw
from pipeline.core.fetch import SourceError, fetch, sha256_file
from pipeline.core.layout import DataLayout

#: Seconds without an answer after which the official servers count as unreachable.
FETCH_TIMEOUT = 30.0


@dataclass(frozen=True)
class WeightSource:
    """Where a weight file comes from and what it must hash to.

    ``sha256`` may be the full hex digest or a prefix of it (torchvision names its files after the
    first 8 hex digits); ``md5`` is checked when given (what some publishers record instead).
    """

    url: str
    sha256: str | None = None
    md5: str | None = None
    size_mb: int | None = None  # for the "fetching ..." line only

    @property
    def file_name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    def check(self, path: Path) -> None:
        """Raise :class:`SourceError` unless ``path`` has the expected digest(s)."""
        if self.sha256:
            actual = sha256_file(path)
            if not actual.startswith(self.sha256.lower()):
                raise SourceError(f"{path}: sha256 {actual} does not match {self.sha256}")
        if self.md5:
            actual = sha256_file(path, algorithm="md5")
            if actual != self.md5.lower():
                raise SourceError(f"{path}: md5 {actual} does not match {self.md5}")


#: The official files. VGGish: the AudioSet release publishes no checksum; the md5 is the one
#: other projects pin for this file (e.g. openmic-2018). VGG-19: torchvision's file name carries
#: the first 8 hex digits of its sha256.
OFFICIAL: dict[str, WeightSource] = {
    "vggish": WeightSource(
        vw.VGGISH_CHECKPOINT_URL, md5="d1c7011e6366aa34176bb05c705e31a8", size_mb=277
    ),
    "vgg19": WeightSource(v19.TORCHVISION_URL, sha256=v19.TORCHVISION.sha256_prefix, size_mb=548),
}


def cached_weights(data_dir: str | os.PathLike) -> dict[str, Path | None]:
    """Pretrained backbone files already on this machine (None where absent): the converted VGGish
    file of the data dir or of the data dir above it (``data/demo`` -> ``data``); VGG-19 in the
    data dir's weights folder, the torch hub cache or the Keras cache."""
    data_dir = Path(data_dir)
    vggish = [
        DataLayout(d).weights("vggish") / vw.CONVERTED_NAME for d in (data_dir, data_dir.parent)
    ]
    own = DataLayout(data_dir).weights("vgg19")
    vgg19 = [own / OFFICIAL["vgg19"].file_name] + [
        d / name
        for d in v19.default_cache_dirs()
        for name in (v19.TORCHVISION_FILE, v19.KERAS_FILE)
    ]
    return {
        "vggish": next((p for p in vggish if p.is_file()), None),
        "vgg19": next((p for p in vgg19 if p.is_file()), None),
    }


def _fetch_checked(source: WeightSource, folder: Path) -> Path:
    """``source`` fetched into ``folder`` (reused when present) and checked; a file that fails
    its check is deleted, so the next run fetches it again."""
    path = fetch(source.url, folder, timeout=FETCH_TIMEOUT)
    try:
        source.check(path)
    except SourceError:
        path.unlink(missing_ok=True)
        raise
    return path


def fetch_weights(
    data_dir: str | os.PathLike,
    sources: dict[str, WeightSource] | None = None,
    log=print,
) -> tuple[dict[str, Path | None], dict[str, str]]:
    """Fetch and prepare the backbones missing from the caches.

    Returns ``(paths, problems)``: per backbone the file the features stage should use (the
    converted VGGish ``.pt``, the VGG-19 ``.pth``/``.h5``) or None, and per backbone that could
    not be had the reason (network, checksum, TensorFlow missing ...).
    """
    sources = {**OFFICIAL, **(sources or {})}
    layout = DataLayout(data_dir)
    paths = cached_weights(data_dir)
    problems: dict[str, str] = {}
    if paths["vgg19"] is None:
        src = sources["vgg19"]
        log(f"==> fetching the pretrained VGG-19 weights {src.url} (~{src.size_mb or '?'} MB)")
        try:
            paths["vgg19"] = _fetch_checked(src, layout.weights("vgg19"))
        except SourceError as exc:
            problems["vgg19"] = str(exc)
    if paths["vggish"] is None:
        src = sources["vggish"]
        log(f"==> fetching the pretrained VGGish checkpoint {src.url} (~{src.size_mb or '?'} MB)")
        cache = layout.weights("vggish")
        try:
            checkpoint = _fetch_checked(src, cache)
            info = vw.ensure_vggish_weights(cache, checkpoint=checkpoint, allow_download=False)
            paths["vggish"] = info.path
        except (SourceError, vw.VGGishWeightsError) as exc:
            problems["vggish"] = str(exc)
    return paths, problems
