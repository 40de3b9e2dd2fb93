"""Training curves and confusion matrix pictures for a run directory (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.core.io import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: list[dict], path: Path, best_epoch: int | None = None) -> None:
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [h["loss"] for h in history], label="train loss")
    ax1.set_xlabel("epoch"), ax1.set_ylabel("loss"), ax1.legend()
    ax2.plot(epochs, [h["train_accuracy"] for h in history], label="train (running)")
    val = [(h["epoch"], h["val_accuracy"]) for h in history if h.get("val_accuracy") is not None]
    if val:
        ax2.plot(*zip(*val, strict=True), label="val")
    if best_epoch is not None:
        ax2.axvline(
            best_epoch, color="gray", linestyle="--", label=f"best val (epoch {best_epoch})"
        )
    ax2.set_xlabel("epoch"), ax2.set_ylabel("segment accuracy"), ax2.legend()
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
