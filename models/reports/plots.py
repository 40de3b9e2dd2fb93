"""Every picture of a run folder (matplotlib, Agg backend): training curves, confusion matrix,
cross-modal distance matrices."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.core.io import atomic_path
from pipeline.core.manifest import CLIP_SECONDS


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(
    history: list[dict], path: Path, best_epoch: int | None = None, title: str = ""
) -> None:
    """Losses (every ``*loss`` column) left, accuracies (every ``*accuracy`` column) right, per epoch;
    a dashed line at the best-on-val epoch."""
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, suffix, ylabel in ((ax1, "loss", "loss"), (ax2, "accuracy", "accuracy")):
        keys = sorted({k for h in history for k in h if k.endswith(suffix)})
        for key in keys:
            points = [(h["epoch"], h[key]) for h in history if h.get(key) is not None]
            if points:
                ax.plot(*zip(*points, strict=True), label=key.replace("_", " "))
        if best_epoch is not None and suffix == "accuracy":
            ax.axvline(
                best_epoch, color="gray", linestyle="--", label=f"best val (epoch {best_epoch})"
            )
        ax.set_xlabel("epoch"), ax.set_ylabel(ylabel)
        if keys:
            ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def plot_confusion(
    confusion: list[list[int]], class_names: list[str], path: Path, title: str
) -> None:
    plt = _pyplot()
    m = np.asarray(confusion, float)
    m = m / np.maximum(m.sum(1, keepdims=True), 1)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(4 + 0.3 * n, 3.5 + 0.3 * n))
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=90, fontsize=7)
    ax.set_yticks(range(n), class_names, fontsize=7)
    ax.set_xlabel("predicted"), ax.set_ylabel("true"), ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def plot_distance_matrix(
    dist: np.ndarray,
    start: int,
    end: int,
    pred_a2v: int,
    pred_v2a: int,
    path: str | Path,
    title: str = "",
) -> Path:
    """PNG of one clip's 10x10 matrix (rows visual, columns audio) with true and predicted windows.

    The true event is the green square; the A2V prediction (audio query placed on visual rows n..)
    is drawn in red, the V2A prediction (visual query placed on audio columns n..) in blue.
    """
    from matplotlib.patches import Rectangle

    plt = _pyplot()

    length = end - start
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    im = ax.imshow(dist, cmap="viridis_r", origin="upper")
    fig.colorbar(im, ax=ax, label="distance")
    ax.set_xlabel("audio second")
    ax.set_ylabel("visual second")
    ax.set_xticks(range(CLIP_SECONDS))
    ax.set_yticks(range(CLIP_SECONDS))
    ax.add_patch(
        Rectangle(
            (start - 0.5, start - 0.5), length, length, fill=False, ec="lime", lw=2.5, label="true"
        )
    )
    if 0 < length < CLIP_SECONDS:
        ax.add_patch(
            Rectangle(
                (start - 0.5, pred_a2v - 0.5),
                length,
                length,
                fill=False,
                ec="red",
                lw=1.5,
                ls="--",
                label="A2V",
            )
        )
        ax.add_patch(
            Rectangle(
                (pred_v2a - 0.5, start - 0.5),
                length,
                length,
                fill=False,
                ec="blue",
                lw=1.5,
                ls=":",
                label="V2A",
            )
        )
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def plot_clips(
    dist: np.ndarray,
    clips,
    metrics: dict,
    out_dir: str | Path,
    samples: list[int] | None,
    count: int,
) -> list[Path]:
    """Pictures for the requested samples (manifest ``sample`` ids), else the first ``count`` evaluated clips."""
    rows = clips.rows
    if samples:
        where = {int(s): k for k, s in enumerate(rows["sample"])}
        unknown = [s for s in samples if s not in where]
        if unknown:
            raise ValueError(f"samples {unknown} are not in this split (or lack features)")
        picks = [where[s] for s in samples]
    else:
        picks = [int(k) for k in np.flatnonzero(np.asarray(metrics["pred_a2v"]) >= 0)[:count]]
    paths = []
    for k in picks:
        r = rows.iloc[k]
        if int(metrics["pred_a2v"][k]) >= 0:
            preds = (
                f"A2V start {int(metrics['pred_a2v'][k])}, V2A start {int(metrics['pred_v2a'][k])}"
            )
        else:
            preds = "not evaluated (event is empty or 10 s long)"
        title = f"sample {int(r['sample'])} {r['youtube_id']}  event {int(r['start'])}-{int(r['end'])} s\n{preds}"
        paths.append(
            plot_distance_matrix(
                dist[k],
                int(r["start"]),
                int(r["end"]),
                int(metrics["pred_a2v"][k]),
                int(metrics["pred_v2a"][k]),
                Path(out_dir) / f"distance-{int(r['sample']):04d}.png",
                title,
            )
        )
    return paths
