"""Every path under the data folder, in one place (names from data go through ``core.paths``).

``DATA_DIR/``
  ``manifest.parquet``, ``manifest.json``, ``classes.parquet``   annotations stage
  ``own_videos.parquet``                                        ``avel.extract``'s clip list
  ``extra_background.parquet``                                  import-release (weak training)
  ``clips/<clip_id>.mp4``, ``clips/status.parquet``              download stage (clips + ledger;
  ``clips/status.journal``                                      the ledger's updates of a run)
  ``segments.parquet``, ``segments_failed.parquet``              segments stage (tables)
  ``segments/<clip_id>.json``, ``segments/<clip_id>.patches.npy`` segments stage (per clip)
  ``features/<store>/``                                         feature stores (``pipeline.core.store``)
  ``features/.ray/``                                            Ray engine's run plans
  ``weights/<backbone>/``                                       converted/cached backbone weights
  ``bench/``                                                    ``avel bench`` work files
  ``synthetic/``                                                the demo's generated source set
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.paths import child

#: File name of a clip in ``clips/`` and of its patches in ``segments/``: ``<clip_id><suffix>``.
CLIP_SUFFIX = ".mp4"
PATCHES_SUFFIX = ".patches.npy"


@dataclass(frozen=True)
class DataLayout:
    """The files of one data folder; ``DataLayout(data_dir).manifest`` and so on."""

    root: Path

    def __init__(self, root: str | os.PathLike) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.parquet"

    @property
    def manifest_meta(self) -> Path:
        return self.root / "manifest.json"

    @property
    def classes(self) -> Path:
        return self.root / "classes.parquet"

    @property
    def own_videos(self) -> Path:
        """The clip list ``avel.extract`` keeps of the videos given to it (its manifest's input)."""
        return self.root / "own_videos.parquet"

    @property
    def extra_background(self) -> Path:
        return self.root / "extra_background.parquet"

    @property
    def clips(self) -> Path:
        return self.root / "clips"

    def clips_present(self) -> set[str]:
        """IDs of the clips in ``clips/`` (files or links to files): one listing of the folder,
        not a ``stat`` per clip (IDs reach the folder only as checked names)."""
        return _listed(self.clips, CLIP_SUFFIX)

    def patches_present(self) -> set[str]:
        """IDs of the clips whose patches are in ``segments/`` (one listing)."""
        return _listed(self.segments, PATCHES_SUFFIX)

    def clip(self, clip_id: str) -> Path:
        return child(self.clips, clip_id, CLIP_SUFFIX, "clip ID")

    @property
    def ledger(self) -> Path:
        return self.clips / "status.parquet"

    @property
    def segments(self) -> Path:
        return self.root / "segments"

    @property
    def segments_table(self) -> Path:
        return self.root / "segments.parquet"

    @property
    def segments_failed(self) -> Path:
        return self.root / "segments_failed.parquet"

    def segment_receipt(self, clip_id: str) -> Path:
        return child(self.segments, clip_id, ".json", "clip ID")

    def patches(self, clip_id: str) -> Path:
        return child(self.segments, clip_id, PATCHES_SUFFIX, "clip ID")

    @property
    def features(self) -> Path:
        return self.root / "features"

    def store(self, name: str) -> Path:
        return child(self.features, name, what="store name")

    @property
    def ray_staging(self) -> Path:
        return self.features / ".ray"

    def weights(self, backbone: str) -> Path:
        return child(self.root / "weights", backbone, what="backbone name")

    @property
    def bench(self) -> Path:
        return self.root / "bench"

    @property
    def demo_source(self) -> Path:
        """The demo's generated source set (videos, annotation files) it serves on loopback."""
        return self.root / "synthetic"


def _listed(folder: Path, suffix: str) -> set[str]:
    """``<id><suffix>`` files (or links to files) in ``folder`` -> their IDs."""
    try:
        with os.scandir(folder) as entries:
            return {
                e.name[: -len(suffix)] for e in entries if e.name.endswith(suffix) and e.is_file()
            }
    except (FileNotFoundError, NotADirectoryError):
        return set()
