"""Cross-modality localization data and protocol: clips, training pairs, A2V/V2A, distance pictures.

Protocol (AVE reference 4): for each clip of the split whose event lasts l seconds, 1 <= l < 10
(``test_order_match``: all 402 clips have 2..9 s events), the query is the l event seconds of one
modality; it slides over the other modality of the same clip at starts n = 0..10-l with score
S(n) = sum_i D(query[s + i], other[n + i]); the prediction is argmin S (first on ties) and is correct
only if it equals the true start s. A2V queries audio against visual, V2A visual against audio.
Clips with a 10 s event (nothing to localize) or an empty event are skipped and counted.

Distance matrices are indexed ``D[v, a]`` = distance(visual second v, audio second a).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.core.manifest import CLIP_SECONDS, load_manifest
from pipeline.core.store import FeatureStore

VISUAL_STORE = "visual_vec"
AUDIO_STORE = "audio"


@dataclass
class Clips:
    """The manifest rows of one cross-modal split that have both features, with their arrays."""

    rows: pd.DataFrame  # sample, youtube_id, start, end, ...
    visual: np.ndarray  # (N, 10, 512) float32
    audio: np.ndarray  # (N, 10, 128) float32
    missing: list[str]  # YouTube IDs of split rows absent from a store
    random_features: bool = False  # a store came from a random-weight backbone (smoke run only)

    def __len__(self) -> int:
        return len(self.rows)


def load_clips(
    data_dir: str | Path,
    split: str,
    visual_store: str = VISUAL_STORE,
    audio_store: str = AUDIO_STORE,
    manifest: pd.DataFrame | None = None,
) -> Clips:
    """Rows of ``match_split == split`` with their visual-vector and audio features."""
    manifest = load_manifest(data_dir) if manifest is None else manifest
    if "match_split" not in manifest or manifest["match_split"].isna().all():
        raise ValueError(
            f"{data_dir}: the manifest has no cross-modality split (match_split is empty); rerun "
            "`make annotations` with the *_order_match split lists"
        )
    visual = FeatureStore.open(data_dir, visual_store)
    audio = FeatureStore.open(data_dir, audio_store)
    for store, shape in ((visual, (CLIP_SECONDS, 512)), (audio, (CLIP_SECONDS, 128))):
        if tuple(store.row_shape) != shape:
            raise ValueError(
                f"{store.root}: rows are {tuple(store.row_shape)}, cross-modal models need {shape}"
            )
    rows = manifest[manifest["match_split"] == split].sort_values("sample")
    have = rows["youtube_id"].map(lambda y: y in visual and y in audio).astype(bool)
    missing = rows.loc[~have, "youtube_id"].tolist()
    rows = rows[have].reset_index(drop=True)
    ids = rows["youtube_id"].tolist()
    random_features = visual.is_random or audio.is_random
    if random_features:
        print(
            f"WARNING: {data_dir}: features come from a backbone with RANDOM weights; "
            "cross-modal figures from them are a smoke test, not results"
        )
    return Clips(rows, visual.gather(ids), audio.gather(ids), missing, random_features)


def event_mask(rows: pd.DataFrame) -> np.ndarray:
    """(N, 10) bool: second t of row r is an event second (start <= t < end)."""
    t = np.arange(CLIP_SECONDS)
    return (t >= rows["start"].to_numpy()[:, None]) & (t < rows["end"].to_numpy()[:, None])


def build_pairs(
    clips: Clips, mismatched: int = 0, positives_only: bool = False, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training pairs ``(visual, audio, y)`` as in the release.

    Every second of every clip gives the pair (visual_t, audio_t): y = 1 on event seconds, y = 0 on
    background seconds of the same video. ``mismatched`` adds, per event second, that many y = 0
    pairs of its visual vector with the audio of a random second of another video.
    ``positives_only`` keeps only the y = 1 pairs (DCCA).
    """
    mask = event_mask(clips.rows).reshape(-1)
    visual = clips.visual.reshape(-1, clips.visual.shape[-1])
    audio = clips.audio.reshape(-1, clips.audio.shape[-1])
    y = mask.astype(np.float32)
    if positives_only:
        return visual[mask], audio[mask], y[mask]
    if mismatched > 0:
        rng = np.random.default_rng(seed)
        videos = clips.rows["youtube_id"].to_numpy()
        pos = np.flatnonzero(mask)
        if len(np.unique(videos)) < 2:
            raise ValueError("mismatched pairs need at least two videos")
        src = np.repeat(pos, mismatched)
        clip_of = src // CLIP_SECONDS
        other = rng.integers(0, len(videos), size=src.size)
        clash = videos[other] == videos[clip_of]
        while clash.any():
            other[clash] = rng.integers(0, len(videos), size=int(clash.sum()))
            clash = videos[other] == videos[clip_of]
        other_rows = other * CLIP_SECONDS + rng.integers(0, CLIP_SECONDS, size=src.size)
        visual = np.concatenate([visual, visual[src]])
        audio = np.concatenate([audio, audio[other_rows]])
        y = np.concatenate([y, np.zeros(src.size, np.float32)])
    return visual, audio, y


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from pipeline.core.io import atomic_path

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
    clips: Clips,
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
