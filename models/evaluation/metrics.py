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


def _first_last(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a (N, T) bool mask: first True index and last True index + 1 (-1 where none)."""
    t = mask.shape[1]
    has = mask.any(1)
    first = np.where(has, mask.argmax(1), -1)
    last = np.where(has, t - mask[:, ::-1].argmax(1), -1)
    return first, last


def localization_metrics(pred, target, video_labels, background: int) -> dict:
    """What a segment accuracy is made of, for (N, T) predicted and true per-second classes.

    - ``accuracy``: the AVE segment accuracy (all seconds, background a class).
    - ``video_class_accuracy``: a clip's predicted class is its most frequent non-background
      predicted class (background when it predicts no event); compared with the video label.
    - ``event_precision`` / ``event_recall`` / ``event_f1``: event-vs-background detection per
      second (an event second predicted as any event class counts as detected).
    - ``boundary_error_s``: mean absolute error in seconds of the predicted event's start and end
      (first predicted event second, last + 1) over clips where both truth and prediction have an
      event; ``boundary_clips`` counts them, ``missed_event_clips`` counts clips with a true event
      and no predicted event second.
    - ``accuracy_full`` / ``accuracy_short``: segment accuracy on clips whose event spans every
      second vs the others (shorter or no event); ``clips_full`` / ``clips_short`` count them.

    A value that is undefined (no predicted event second for precision, no clip for a group) is None.
    """
    pred, target = np.asarray(pred, np.int64), np.asarray(target, np.int64)
    video_labels = np.asarray(video_labels, np.int64)
    if pred.shape != target.shape or pred.ndim != 2 or len(video_labels) != len(target):
        raise ValueError(
            f"pred {pred.shape}, target {target.shape} must be equal (N, T); "
            f"video labels {video_labels.shape} must be (N,)"
        )
    n, _ = target.shape
    correct = pred == target
    pred_event, true_event = pred != background, target != background
    video_pred = np.full(n, background, np.int64)
    for i in np.flatnonzero(pred_event.any(1)):
        video_pred[i] = np.bincount(pred[i][pred_event[i]]).argmax()
    tp = int((pred_event & true_event).sum())
    n_pred, n_true = int(pred_event.sum()), int(true_event.sum())
    precision = tp / n_pred if n_pred else float("nan")
    recall = tp / n_true if n_true else float("nan")
    f1 = 2 * tp / (n_pred + n_true) if (n_pred + n_true) else float("nan")
    ps, pe = _first_last(pred_event)
    ts, te = _first_last(true_event)
    both = (ps >= 0) & (ts >= 0)
    errors = np.concatenate([np.abs(ps - ts)[both], np.abs(pe - te)[both]])
    full = true_event.all(1)

    def acc(rows: np.ndarray) -> float:
        return float(correct[rows].mean()) if rows.any() else float("nan")

    out = {
        "accuracy": float(correct.mean()) if correct.size else float("nan"),
        "video_class_accuracy": float((video_pred == video_labels).mean()) if n else float("nan"),
        "event_precision": precision,
        "event_recall": recall,
        "event_f1": f1,
        "boundary_error_s": float(errors.mean()) if errors.size else float("nan"),
        "boundary_clips": int(both.sum()),
        "missed_event_clips": int(((ts >= 0) & (ps < 0)).sum()),
        "accuracy_full": acc(full),
        "accuracy_short": acc(~full),
        "clips_full": int(full.sum()),
        "clips_short": int((~full).sum()),
        "clips": n,
    }
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in out.items()}


REFERENCE_ROWS = ("all_background", "oracle_video_class", "best_single_label")
REFERENCE_LABELS = {
    "all_background": "all background (no model)",
    "oracle_video_class": "oracle video class on every second",
    "best_single_label": "best single label per video (oracle)",
}


def reference_predictions(target, video_labels, background: int) -> dict[str, np.ndarray]:
    """Predictions that need no model (or cheat with the truth), for the same clips.

    ``all_background``: background everywhere. ``oracle_video_class``: the true video class on every
    second (perfect classification, no localization). ``best_single_label``: per clip, the one
    label (video class or background) that scores best on that clip, i.e. the ceiling of any
    predictor that gives a clip one label for all its seconds.
    """
    target = np.asarray(target, np.int64)
    video_labels = np.asarray(video_labels, np.int64)
    n, t = target.shape
    oracle = np.repeat(video_labels[:, None], t, 1)
    events = (target != background).sum(1)
    best = np.where(events * 2 >= t, video_labels, background)
    return {
        "all_background": np.full((n, t), background, np.int64),
        "oracle_video_class": oracle,
        "best_single_label": np.repeat(best[:, None], t, 1),
    }


def reference_rows(target, video_labels, background: int) -> dict[str, dict]:
    """``localization_metrics`` of every reference predictor on the same clips."""
    return {
        name: localization_metrics(p, target, video_labels, background)
        for name, p in reference_predictions(target, video_labels, background).items()
    }


def split_reference(data_dir, split: str = "test") -> dict:
    """Reference rows computed from the manifest for every row of ``split`` (no features needed)."""
    from pipeline.core.manifest import load_classes, load_manifest

    manifest = load_manifest(data_dir)
    rows = manifest[manifest["split"] == split]
    if rows.empty:
        raise ValueError(f"{data_dir}/manifest.parquet: no rows in split {split!r}")
    background = len(load_classes(data_dir)) - 1
    target = np.stack([np.asarray(s, np.int64) for s in rows["segment_labels"]])
    out = reference_rows(target, rows["label"].to_numpy(np.int64), background)
    return {"split": split, "clips": len(rows), "segments": int(target.size), "rows": out}
