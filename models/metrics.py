"""Segment accuracy exactly as the AVE protocol (reference 4) plus per-class accuracy and confusion.

Segment accuracy: argmax over all classes (29 for AVE, background counted) for every second of every
clip of the split, compared with the per-second label; correct seconds / all seconds.
"""

from __future__ import annotations

import numpy as np


def segment_metrics(pred: np.ndarray, target: np.ndarray, class_names: list[str]) -> dict:
    """``pred``/``target``: (N, T) class indices. Returns accuracy, per-class accuracy, confusion."""
    pred, target = np.asarray(pred).reshape(-1), np.asarray(target).reshape(-1)
    n = len(class_names)
    confusion = np.zeros((n, n), np.int64)
    np.add.at(confusion, (target, pred), 1)
    support = confusion.sum(1)
    per_class = {
        name: (float(confusion[i, i] / support[i]) if support[i] else None)
        for i, name in enumerate(class_names)
    }
    return {
        "accuracy": float((pred == target).mean()) if target.size else float("nan"),
        "segments": int(target.size),
        "per_class_accuracy": per_class,
        "confusion": confusion.tolist(),
    }
