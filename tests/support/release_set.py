"""A small AVE-shaped set for the release tests: annotation rows, their manifest, release h5 files.

Two categories of 12 rows; row ``DUP_SECOND`` repeats the video of row ``DUP_FIRST`` (one video
annotated twice). ``write_release`` writes every file of the feature release in its exact layout
(dataset ``avadataset``, order files ``order``).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np

from pipeline.stages.annotations.stage import AnnotationsConfig, run_annotations

CATEGORIES = ("Church bell", "Male speech, man speaking")
ROWS = 24  # 2 categories x 12 rows; visual file 24 x 2 MB float64
BACKGROUND = len(CATEGORIES)
DUP_FIRST, DUP_SECOND = 3, 15  # the same video labelled twice
NOISY = 5  # background-only videos of the ``*_noisy.h5`` files
EMPTY_ROW = 5  # in ``annotation_rows(empty_row=EMPTY_ROW)``: start == end, all background
#: Split lists in annotation order (the import tests); the release's own lists are shuffled.
SPLITS = {"train": range(0, 16), "val": range(16, 20), "test": range(20, 24)}

Row = tuple[str, str, int, int]


def annotation_rows(empty_row: int | None = None) -> list[Row]:
    """``(category, youtube_id, start, end)`` of the ``ROWS`` annotation lines."""
    rows = []
    for i in range(ROWS):
        youtube_id = f"vid{(DUP_FIRST if i == DUP_SECOND else i):08d}"
        start, end = (0, 0) if i == empty_row else (i % 4, 10 - i % 3)
        rows.append((CATEGORIES[i // 12], youtube_id, start, end))
    return rows


def first_ids(rows: Sequence[Row]) -> list[str]:
    """The video IDs of ``rows`` in first-seen order (one per video)."""
    return list(dict.fromkeys(y for _, y, _, _ in rows))


def write_annotation_inputs(
    root: Path, rows: Sequence[Row], splits: Mapping[str, Sequence[int]]
) -> tuple[Path, Path]:
    """``root/Annotations.txt`` and ``root/splits/{split}_order.txt``; returns both paths."""
    root.mkdir(parents=True, exist_ok=True)
    ann = root / "Annotations.txt"
    ann.write_text("".join(f"{c}&{y}&good&{s}&{e}\n" for c, y, s, e in rows))
    split_dir = root / "splits"
    split_dir.mkdir(exist_ok=True)
    for split, indices in splits.items():
        (split_dir / f"{split}_order.txt").write_text("".join(f"{i}\n" for i in indices))
    return ann, split_dir


def build_manifest(
    root: Path, rows: Sequence[Row], splits: Mapping[str, Sequence[int]], data_dir: Path
) -> Path:
    """Write the annotation inputs under ``root`` and run the annotations stage into ``data_dir``
    (no AudioSet offsets); return ``data_dir``."""
    ann, split_dir = write_annotation_inputs(root, rows, splits)
    run_annotations(
        AnnotationsConfig(
            data_dir=data_dir,
            ave_annotations=str(ann),
            ave_splits=str(split_dir),
            audioset_csv=["none"],
        )
    )
    return data_dir


def copy_manifest(manifest_dir: Path, dest: Path) -> Path:
    """A fresh data folder at ``dest`` holding only the manifest files of ``manifest_dir``."""
    shutil.copytree(manifest_dir, dest, ignore=shutil.ignore_patterns("sources"))
    return dest


def write_h5(path: Path, array: np.ndarray, key: str = "avadataset") -> None:
    with h5py.File(path, "w") as f:
        f[key] = array


def write_release(
    folder: Path, rows: Sequence[Row], noisy: int, splits: Mapping[str, Sequence[int]] = SPLITS
) -> dict[str, np.ndarray]:
    """Every file of the feature release for ``rows`` (float64 features, ``noisy`` background-only
    videos); returns the arrays written, by file name."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(6)
    classes = len(CATEGORIES) + 1
    audio = np.maximum(rng.normal(size=(len(rows), 10, 128)), 0)
    audio[DUP_SECOND] = audio[DUP_FIRST]  # identical duplicate in audio, different in visual
    visual = rng.gamma(1.0, 2.0, size=(len(rows), 10, 7, 7, 512))
    labels = np.zeros((len(rows), 10, classes))
    mil = np.zeros((len(rows), classes))
    for r, (category, _, start, end) in enumerate(rows):
        c = CATEGORIES.index(category)
        for t in range(10):
            labels[r, t, c if start <= t < end else BACKGROUND] = 1
        mil[r, c] = 1
    noisy_labels = np.zeros((noisy, classes), np.float32)
    noisy_labels[:, BACKGROUND] = 1
    arrays = {
        "audio_feature.h5": audio,
        "visual_feature.h5": visual,
        "labels.h5": labels,
        "labels_closs.h5": (labels.argmax(-1) != BACKGROUND).astype(np.float32),
        "mil_labels.h5": mil.astype(np.float32),
        "audio_feature_noisy.h5": np.maximum(rng.normal(size=(noisy, 10, 128)), 0),
        "visual_feature_noisy.h5": rng.gamma(1.0, 2.0, size=(noisy, 10, 7, 7, 512)),
        "labels_noisy.h5": noisy_labels,
    }
    for name, array in arrays.items():
        write_h5(folder / name, array)
    for split, indices in splits.items():
        write_h5(folder / f"{split}_order.h5", np.array(list(indices), np.int64), key="order")
    return arrays


def release_data_dir(release_set: Mapping, tmp_path: Path) -> Path:
    """A fresh ``tmp_path/data`` holding the manifest of a ``small_release`` set."""
    return copy_manifest(Path(release_set["manifest_dir"]), tmp_path / "data")
