"""The cross-modality localization protocol: A2V / V2A accuracy from audio-visual distances.

Protocol (AVE reference 4): for each clip of the split whose event lasts l seconds, 1 <= l < 10
(``test_order_match``: all 402 clips have 2..9 s events), the query is the l event seconds of one
modality; it slides over the other modality of the same clip at starts n = 0..10-l with score
S(n) = sum_i D(query[s + i], other[n + i]); the prediction is argmin S (first on ties) and is correct
only if it equals the true start s. A2V queries audio against visual, V2A visual against audio.
Clips with a 10 s event (nothing to localize) or an empty event are skipped and counted.

The clips come from ``models.data.crossmodal``; the pictures from ``models.reports.plots``.
Distance matrices are indexed ``D[v, a]`` = distance(visual second v, audio second a).
"""

from __future__ import annotations

import numpy as np
import torch

from models.data.crossmodal import Clips
from pipeline.core.manifest import CLIP_SECONDS


@torch.no_grad()
def distance_matrices(
    model: torch.nn.Module, visual: np.ndarray, audio: np.ndarray, device: str = "cpu"
) -> np.ndarray:
    """(N, 10, 10) distances ``D[n, v, a]`` between visual second v and audio second a of clip n."""
    model.eval()
    v = model.embed_visual(torch.as_tensor(visual, dtype=torch.float32, device=device))
    a = model.embed_audio(torch.as_tensor(audio, dtype=torch.float32, device=device))
    diff = v[:, :, None, :] - a[:, None, :, :]
    return torch.sqrt(torch.clamp((diff**2).sum(-1), min=1e-7)).double().cpu().numpy()


def window_scores(dist: np.ndarray, start: int, length: int, query: str) -> np.ndarray:
    """S(n), n = 0..10-length, for one clip's (10, 10) matrix ``D[v, a]``.

    ``query="audio"`` (A2V): S(n) = sum_i D[n + i, start + i]; ``query="visual"`` (V2A):
    S(n) = sum_i D[start + i, n + i].
    """
    i = np.arange(length)
    n = np.arange(CLIP_SECONDS - length + 1)[:, None]
    if query == "audio":
        return dist[n + i, start + i].sum(1)
    if query == "visual":
        return dist[start + i, n + i].sum(1)
    raise ValueError(f"query must be 'audio' or 'visual', not {query!r}")


def localize(dist: np.ndarray, start: int, length: int, query: str) -> int:
    """Predicted start: the argmin of the window scores (the first one on ties)."""
    return int(np.argmin(window_scores(dist, start, length, query)))


def chance_accuracy(lengths: np.ndarray) -> float:
    """Exact-start accuracy of a random ranking: mean over clips of 1 / (10 - l + 1)."""
    lengths = np.asarray(lengths)
    return float(np.mean(1.0 / (CLIP_SECONDS - lengths + 1))) if lengths.size else float("nan")


def evaluate_matrices(dist: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> dict:
    """A2V / V2A accuracy, mean absolute start error and chance for a stack of (10, 10) matrices."""
    starts, ends = np.asarray(starts, int), np.asarray(ends, int)
    lengths = ends - starts
    valid = (lengths > 0) & (lengths < CLIP_SECONDS)
    pred_a2v = np.full(len(starts), -1)
    pred_v2a = np.full(len(starts), -1)
    for k in np.flatnonzero(valid):
        pred_a2v[k] = localize(dist[k], starts[k], lengths[k], "audio")
        pred_v2a[k] = localize(dist[k], starts[k], lengths[k], "visual")
    n = int(valid.sum())
    s = starts[valid]
    result = {
        "clips": n,
        "skipped_full_length": int((lengths >= CLIP_SECONDS).sum()),
        "skipped_empty": int((lengths <= 0).sum()),
        "a2v_accuracy": float(np.mean(pred_a2v[valid] == s)) if n else float("nan"),
        "v2a_accuracy": float(np.mean(pred_v2a[valid] == s)) if n else float("nan"),
        "a2v_start_mae": float(np.mean(np.abs(pred_a2v[valid] - s))) if n else float("nan"),
        "v2a_start_mae": float(np.mean(np.abs(pred_v2a[valid] - s))) if n else float("nan"),
        "chance_accuracy": chance_accuracy(lengths[valid]),
    }
    result["pred_a2v"], result["pred_v2a"] = pred_a2v, pred_v2a
    return result


def evaluate_model(
    model: torch.nn.Module, clips: Clips, device: str = "cpu"
) -> tuple[dict, np.ndarray]:
    """Run the protocol on ``clips``; returns (metrics incl. per-clip predictions, distance matrices)."""
    dist = distance_matrices(model, clips.visual, clips.audio, device)
    return evaluate_matrices(
        dist, clips.rows["start"].to_numpy(), clips.rows["end"].to_numpy()
    ), dist


def format_metrics(m: dict) -> str:
    return (
        f"A2V {100 * m['a2v_accuracy']:.1f}%  V2A {100 * m['v2a_accuracy']:.1f}%  "
        f"(chance {100 * m['chance_accuracy']:.1f}%; mean |start error| A2V {m['a2v_start_mae']:.2f} s, "
        f"V2A {m['v2a_start_mae']:.2f} s; {m['clips']} clips, skipped {m['skipped_full_length']} "
        f"full-length + {m['skipped_empty']} empty)"
    )


def public_metrics(metrics: dict) -> dict:
    """The metrics without the per-clip predictions (``pred_*``), for JSON."""
    return {k: v for k, v in metrics.items() if not k.startswith("pred_")}
