"""AudioSet-size clip lists generated offline, in AudioSet's own CSV format, for the scale rehearsal.

:func:`write_audioset` writes the three segment lists (``unbalanced_train_segments.csv``,
``balanced_train_segments.csv``, ``eval_segments.csv``, with AudioSet's comment header and quoting)
and ``class_labels_indices.csv`` (527 classes; some display names hold commas, as AudioSet's do).
At full size the lists hold AudioSet's 2,041,789 + 22,176 + 20,383 rows; ``rows`` scales all three.
IDs are 11 characters of YouTube's alphabet (some start with ``-``); 1% of the rows are a second
segment of an earlier video (one video, two clips); each row has 1 to 6 labels, skewed towards
the first classes, as AudioSet's are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.core.io import atomic_path
from pipeline.demo.synth import ID_ALPHABET

#: AudioSet's lists: file name -> rows.
AUDIOSET_LISTS = {
    "unbalanced_train_segments.csv": 2_041_789,
    "balanced_train_segments.csv": 22_176,
    "eval_segments.csv": 20_383,
}
AUDIOSET_ROWS = sum(AUDIOSET_LISTS.values())
AUDIOSET_CLASSES = 527
REPEATED_SHARE = 0.01  # rows that are a second clip of an earlier video
CHUNK = 100_000  # rows formatted at a time


def class_mids(count: int = AUDIOSET_CLASSES) -> list[str]:
    """``/m/0xxxx``-style machine IDs, one per class."""
    return [f"/m/0{i:05x}" for i in range(count)]


def write_class_labels(path: Path, count: int = AUDIOSET_CLASSES) -> Path:
    """``class_labels_indices.csv``: ``index,mid,display_name`` (every 7th name holds a comma)."""
    lines = ["index,mid,display_name"]
    for i, mid in enumerate(class_mids(count)):
        name = f'"Sound {i}, variant"' if i % 7 == 3 else f"Sound {i}"
        lines.append(f"{i},{mid},{name}")
    with atomic_path(path, suffix=".csv") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return path


def _ids(rng: np.random.Generator, n: int) -> np.ndarray:
    alphabet = np.frombuffer(ID_ALPHABET.encode(), dtype="S1")
    return rng.choice(alphabet, (n, 11)).view("S11").ravel()


def write_audioset(folder: Path, rows: int = AUDIOSET_ROWS, seed: int = 0) -> dict[str, Path]:
    """The three segment lists and the class list under ``folder``, ``rows`` rows in all, split
    as AudioSet's are; returns ``{"lists": [...], "class_labels": path}`` style paths by name."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shares = np.array(list(AUDIOSET_LISTS.values()), float) / AUDIOSET_ROWS
    sizes = np.maximum(1, np.floor(shares * rows).astype(int))
    sizes[0] += rows - sizes.sum()
    ids = _ids(rng, rows)
    repeated = rng.random(rows) < REPEATED_SHARE
    repeated[0] = False
    earlier = (rng.random(rows) * np.arange(rows)).astype(np.int64)
    ids[repeated] = ids[earlier[repeated]]
    starts = rng.integers(0, 30, rows).astype(float)
    starts[repeated] = starts[earlier[repeated]] + 10.0 + rng.integers(0, 20, int(repeated.sum()))
    mids = class_mids()
    weights = 1.0 / np.arange(1, AUDIOSET_CLASSES + 1) ** 0.9
    weights /= weights.sum()
    paths: dict[str, Path] = {}
    offset = 0
    for (name, _), size in zip(AUDIOSET_LISTS.items(), sizes, strict=True):
        path = folder / name
        with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w") as out:
            out.write(
                "# Segments csv created offline by avel's scale rehearsal\n"
                f"# num_ytids={size}, num_segs={size}, num_unique_labels={AUDIOSET_CLASSES}\n"
                "# YTID, start_seconds, end_seconds, positive_labels\n"
            )
            for first in range(offset, offset + size, CHUNK):
                last = min(first + CHUNK, offset + size)
                counts = rng.integers(1, 7, last - first)
                picks = rng.choice(AUDIOSET_CLASSES, (last - first, 6), p=weights)
                lines = []
                for i, k, labels in zip(range(first, last), counts, picks, strict=True):
                    chosen = ",".join(mids[j] for j in dict.fromkeys(labels[:k].tolist()))
                    start = starts[i]
                    lines.append(
                        f'{ids[i].decode()}, {start:.3f}, {start + 10.0:.3f}, "{chosen}"\n'
                    )
                out.write("".join(lines))
        paths[name] = path
        offset += size
    paths["class_labels_indices.csv"] = write_class_labels(folder / "class_labels_indices.csv")
    return paths
