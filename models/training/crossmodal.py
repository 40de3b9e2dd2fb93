"""The cross-modality task (``avel train crossmodal --model avdln|dcca``) for ``models.training.engine``.

Data: the cross-modal split (``match_split``) of ``models.data.crossmodal``; training pairs as in
the release (DCCA: positive pairs only). Selection uses the cross-modal val split:
``select="accuracy"`` (default) keeps the epoch with the highest val A2V + V2A accuracy under the
evaluation protocol (ties broken by lower val loss), ``select="loss"`` the lowest val loss; the test
split is never used for selection. Final metrics: test A2V / V2A accuracy, chance, mean start error
(``models.evaluation.crossmodal``) and ``distance-<sample>.png`` pictures of test clips.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")
#: Test figures averaged over seeds (key -> column title of summary.md).
COLUMNS = {
    "a2v_accuracy": "test A2V",
    "v2a_accuracy": "test V2A",
    "chance_accuracy": "chance",
    "a2v_start_mae": "A2V start error (s)",
    "v2a_start_mae": "V2A start error (s)",
}


def pair_tensors(cfg, clips, seed: int):
    """``(visual, audio, y)`` training pairs of ``clips`` as tensors."""
    import torch

    from models.data.crossmodal import build_pairs

    v, a, y = build_pairs(
        clips, mismatched=cfg.mismatched, positives_only=cfg.model == "dcca", seed=seed
    )
    return (
        torch.from_numpy(np.ascontiguousarray(v)),
        torch.from_numpy(np.ascontiguousarray(a)),
        torch.from_numpy(y),
    )


def mean_loss(model, visual, audio, y, batch: int, device) -> float:
    """Mean loss over ``batch``-sized chunks (whole set for DCCA, whose loss is not additive)."""
    import torch

    model.eval()
    with torch.no_grad():
        if model.name == "dcca":
            return float(model.loss(visual.to(device), audio.to(device), y.to(device)))
        total = 0.0
        for i in range(0, len(y), batch):
            sl = slice(i, i + batch)
            total += float(
                model.loss(visual[sl].to(device), audio[sl].to(device), y[sl].to(device))
            ) * len(y[sl])
        return total / max(len(y), 1)


def better(row: dict, best: dict | None, select: str) -> bool:
    """Is ``row`` a better val epoch than ``best`` under ``select`` (accuracy or loss)?"""
    if best is None:
        return True
    if select == "loss":
        return row["val_loss"] < best["val_loss"]
    score = row["val_a2v_accuracy"] + row["val_v2a_accuracy"]
    best_score = best["val_a2v_accuracy"] + best["val_v2a_accuracy"]
    return score > best_score or (score == best_score and row["val_loss"] < best["val_loss"])


class CrossmodalTask:
    """AVDLN or DCCA on audio-visual pairs, evaluated with the A2V / V2A protocol."""

    columns = COLUMNS

    def stores(self, cfg) -> tuple[str, ...]:
        """The feature stores the pairs are made of."""
        return (cfg.visual_store, cfg.audio_store)

    def load_data(self, cfg) -> dict:
        from models.data.crossmodal import load_clips

        clips = {s: load_clips(cfg.data_dir, s, cfg.visual_store, cfg.audio_store) for s in SPLITS}
        for split, c in clips.items():
            if len(c) == 0:
                raise ValueError(
                    f"{cfg.data_dir}: no {split} clips of the cross-modal split have both features"
                )
        return {
            "clips": clips,
            "train": pair_tensors(cfg, clips["train"], cfg.seed),
            "val": pair_tensors(cfg, clips["val"], cfg.seed + 1),
        }

    def build_model(self, cfg, data: dict):
        from models.networks import build_model

        return build_model(cfg.model, **cfg.model_options)

    def describe(self, data: dict) -> dict:
        return {
            "clips": {s: len(c) for s, c in data["clips"].items()},
            "missing_features": {s: len(c.missing) for s, c in data["clips"].items()},
            "train_pairs": len(data["train"][2]),
            "val_pairs": len(data["val"][2]),
        }

    def scheduler(self, optimizer, cfg):
        return None

    def batches(self, cfg, data: dict, generator):
        import torch

        order = torch.randperm(len(data["train"][2]), generator=generator)
        for i in range(0, len(order), cfg.batch_size):
            yield order[i : i + cfg.batch_size]

    def batch_loss(self, model, idx, cfg, data: dict, device):
        if cfg.model == "dcca" and len(idx) < 2:
            return None
        v, a, y = data["train"]
        return model.loss(v[idx].to(device), a[idx].to(device), y[idx].to(device)), len(idx), {}

    def train_figures(self, stats: dict) -> dict:
        return {}

    def after_epoch(self, model, data: dict, device) -> None:
        if model.name == "dcca":
            v, a, _ = data["train"]
            model.fit_projection(v.to(device), a.to(device))

    def validate(self, model, data: dict, cfg, device) -> dict:
        from models.evaluation.crossmodal import evaluate_model

        v, a, y = data["val"]
        val_metrics, _ = evaluate_model(model, data["clips"]["val"], device)
        return {
            "val_loss": mean_loss(model, v, a, y, max(cfg.batch_size, 1024), device),
            "val_a2v_accuracy": val_metrics["a2v_accuracy"],
            "val_v2a_accuracy": val_metrics["v2a_accuracy"],
        }

    def better(self, row: dict, best: dict | None, cfg) -> bool:
        return better(row, best, cfg.select)

    def final_metrics(self, model, data: dict, cfg, device, out: Path, best: dict) -> dict:
        from models.evaluation.crossmodal import evaluate_model, public_metrics
        from models.reports.plots import plot_clips

        test = data["clips"]["test"]
        metrics, dist = evaluate_model(model, test, device)
        pictures = plot_clips(dist, test, metrics, out, cfg.plot_samples, cfg.plots)
        return {
            "val": {k: v for k, v in best.items() if k == "epoch" or k.startswith("val_")},
            "test": public_metrics(metrics),
            "pictures": [p.name for p in pictures],
            "clips": {s: len(c) for s, c in data["clips"].items()},
        }

    def random_features(self, data: dict) -> bool:
        return any(c.random_features for c in data["clips"].values())

    def headline(self, metrics: dict) -> dict:
        return {k: metrics["test"][k] for k in self.columns}


def format_crossmodal_summary(summary: dict) -> list[str]:
    """Per-seed and mean ± std A2V / V2A lines of a training summary."""
    from models.reports.paper import crossmodal_reference

    def pct(k: str) -> str:
        m = summary[k]
        return f"{100 * m['mean']:.1f} ± {100 * m['std']:.1f}%"

    lines = [
        f"  seed {s} (best epoch {r['best_epoch']}): A2V {100 * r['a2v_accuracy']:.1f}%  "
        f"V2A {100 * r['v2a_accuracy']:.1f}%  (chance {100 * r['chance_accuracy']:.1f}%)"
        for s, r in summary["runs"].items()
    ]
    lines.append(
        f"  test A2V {pct('a2v_accuracy')}  V2A {pct('v2a_accuracy')}  "
        f"chance {100 * summary['chance_accuracy']['mean']:.1f}%  ({crossmodal_reference()})"
    )
    return lines
