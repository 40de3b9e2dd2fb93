"""Train and evaluate cross-modality models (AVDLN, DCCA); one run directory per run, per seed.

Layout of ``RUN_DIR``::

    config.json                the exact configuration
    metrics.json               per-seed test metrics and their mean +- std
    seed-<S>/config.json       the configuration of this seed
    seed-<S>/metrics.jsonl     one line per epoch: train loss, val loss, val A2V / V2A accuracy
    seed-<S>/metrics.json      best epoch, its val figures, test A2V / V2A (+ chance, start error)
    seed-<S>/best.pt           {"model", "options", "state_dict", "epoch", ...} of the best epoch
    seed-<S>/curves.png        losses and val accuracies per epoch
    seed-<S>/distance-*.png    10x10 audio-visual distance matrices of test clips

Model selection ("best on val") uses the cross-modal validation split (``match_split == val``):
``select="accuracy"`` (default) keeps the epoch with the highest mean of val A2V and V2A accuracy
under the evaluation protocol (ties broken by lower val loss); ``select="loss"`` keeps the lowest val
loss. The test split is never used for selection. A finished seed (its metrics.json written with the
same configuration) is not retrained.

Release defaults for AVDLN: Adam lr 1e-3, 20 epochs, batch 8, shuffled pairs. DCCA uses batch 256
by default because the CCA objective needs batches much larger than its output size.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from models.evaluation.crossmodal import (
    AUDIO_STORE,
    VISUAL_STORE,
    Clips,
    build_pairs,
    evaluate_model,
    format_metrics,
    load_clips,
    plot_clips,
)
from pipeline.core.io import atomic_path, write_json

DEFAULT_BATCH = {"avdln": 8, "dcca": 256}


@dataclass
class CrossmodalConfig:
    data_dir: str = "data"
    run_dir: str = "runs/avdln"
    model: str = "avdln"
    options: dict = field(default_factory=dict)  # builder options (e.g. DCCA out_dim, top_k)
    epochs: int = 20
    batch_size: int | None = None  # None: 8 for AVDLN (release), 256 for DCCA
    lr: float = 1e-3
    seeds: list[int] = field(default_factory=lambda: [0])
    mismatched: int = 0  # extra y=0 pairs per event second, with audio from other videos
    select: str = "accuracy"  # "accuracy" (val A2V+V2A) or "loss" (val loss)
    device: str = "auto"
    plots: int = 3  # distance pictures of the first N test clips
    plot_samples: list[int] = field(default_factory=list)  # or these manifest sample ids
    visual_store: str = VISUAL_STORE
    audio_store: str = AUDIO_STORE

    def resolved_batch(self) -> int:
        return int(self.batch_size or DEFAULT_BATCH.get(self.model, 8))


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {device!r} requested but CUDA is not available; use --device cpu"
        )
    return device


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _loss_on(model, visual, audio, y, batch: int, device: str) -> float:
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


def _pairs(cfg: CrossmodalConfig, clips: Clips, seed: int):
    import torch

    v, a, y = build_pairs(
        clips, mismatched=cfg.mismatched, positives_only=cfg.model == "dcca", seed=seed
    )
    return (
        torch.from_numpy(np.ascontiguousarray(v)),
        torch.from_numpy(np.ascontiguousarray(a)),
        torch.from_numpy(y),
    )


def train_seed(cfg: CrossmodalConfig, seed: int, data: dict[str, Clips], out: Path) -> dict:
    """Train one seed into ``out``; return its metrics (also written to ``out/metrics.json``)."""
    import torch
    from tqdm import tqdm

    from models.networks import build_model

    seed_config = {**asdict(cfg), "seed": seed, "batch_size": cfg.resolved_batch()}
    done = out / "metrics.json"
    if done.is_file() and (out / "config.json").is_file():
        if _training_keys(json.loads((out / "config.json").read_text())) == _training_keys(
            json.loads(json.dumps(seed_config))
        ):
            print(f"seed {seed}: already trained in {out}, reusing it")
            return json.loads(done.read_text())
    out.mkdir(parents=True, exist_ok=True)
    write_json(seed_config, out / "config.json")
    device = resolve_device(cfg.device)
    seed_everything(seed)
    model = build_model(cfg.model, **cfg.options).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    train_v, train_a, train_y = _pairs(cfg, data["train"], seed)
    val_v, val_a, val_y = _pairs(cfg, data["val"], seed + 1)
    batch = cfg.resolved_batch()
    generator = torch.Generator().manual_seed(seed)
    history: list[dict] = []
    best: dict | None = None
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = torch.randperm(len(train_y), generator=generator)
        total, seen = 0.0, 0
        steps = range(0, len(order), batch)
        for i in tqdm(
            steps, desc=f"seed {seed} epoch {epoch}/{cfg.epochs}", leave=False, mininterval=2
        ):
            idx = order[i : i + batch]
            if cfg.model == "dcca" and len(idx) < 2:
                continue
            loss = model.loss(
                train_v[idx].to(device), train_a[idx].to(device), train_y[idx].to(device)
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        if cfg.model == "dcca":
            model.fit_projection(train_v.to(device), train_a.to(device))
        val_loss = _loss_on(model, val_v, val_a, val_y, max(batch, 1024), device)
        val_metrics, _ = evaluate_model(model, data["val"], device)
        row = {
            "epoch": epoch,
            "train_loss": total / max(seen, 1),
            "val_loss": val_loss,
            "val_a2v_accuracy": val_metrics["a2v_accuracy"],
            "val_v2a_accuracy": val_metrics["v2a_accuracy"],
        }
        history.append(row)
        with atomic_path(out / "metrics.jsonl", suffix=".jsonl") as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in history))
        if _better(row, best, cfg.select):
            best = row
            with atomic_path(out / "best.pt", suffix=".pt") as tmp:
                torch.save(
                    {
                        "model": cfg.model,
                        "options": cfg.options,
                        "state_dict": model.state_dict(),
                        "epoch": epoch,
                        "seed": seed,
                        "val": row,
                    },
                    tmp,
                )
        print(
            f"seed {seed} epoch {epoch}: train loss {row['train_loss']:.4f}  val loss {val_loss:.4f}  "
            f"val A2V {100 * row['val_a2v_accuracy']:.1f}%  V2A {100 * row['val_v2a_accuracy']:.1f}%"
        )
    plot_curves(history, out / "curves.png", f"{cfg.model} seed {seed}")
    model = load_checkpoint(out / "best.pt", device)
    test_metrics, dist = evaluate_model(model, data["test"], device)
    pictures = plot_clips(dist, data["test"], test_metrics, out, cfg.plot_samples, cfg.plots)
    result = {
        "seed": seed,
        "best_epoch": best["epoch"] if best else None,
        "val": best,
        "test": _public(test_metrics),
        "pictures": [p.name for p in pictures],
    }
    write_json(result, done)
    return result


#: Settings that do not change what is trained (a finished seed is reused when only these differ).
_NOT_TRAINING = ("run_dir", "seeds", "device", "plots", "plot_samples")


def _training_keys(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in _NOT_TRAINING}


def _better(row: dict, best: dict | None, select: str) -> bool:
    if best is None:
        return True
    if select == "loss":
        return row["val_loss"] < best["val_loss"]
    if select != "accuracy":
        raise ValueError(f"select must be 'accuracy' or 'loss', not {select!r}")
    score = row["val_a2v_accuracy"] + row["val_v2a_accuracy"]
    best_score = best["val_a2v_accuracy"] + best["val_v2a_accuracy"]
    return score > best_score or (score == best_score and row["val_loss"] < best["val_loss"])


def _public(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not k.startswith("pred_")}


def load_checkpoint(path: str | Path, device: str = "cpu"):
    """Rebuild a trained cross-modal model from its ``best.pt``."""
    import torch

    from models.networks import build_model

    ckpt = torch.load(path, map_location=device, weights_only=True)
    model = build_model(ckpt["model"], **ckpt.get("options", {})).to(device)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def plot_curves(history: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(epochs, [r["train_loss"] for r in history], label="train")
    left.plot(epochs, [r["val_loss"] for r in history], label="val")
    left.set_xlabel("epoch")
    left.set_ylabel("loss")
    left.legend()
    right.plot(epochs, [100 * r["val_a2v_accuracy"] for r in history], label="val A2V")
    right.plot(epochs, [100 * r["val_v2a_accuracy"] for r in history], label="val V2A")
    right.set_xlabel("epoch")
    right.set_ylabel("accuracy %")
    right.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def mean_std(values: list[float]) -> dict:
    arr = np.asarray(values, dtype=float)
    return {
        "mean": float(arr.mean()),
        "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        "n": int(arr.size),
    }


def run_train_crossmodal(cfg: CrossmodalConfig) -> dict:
    """Train every seed; write ``RUN_DIR/metrics.json`` with per-seed results and mean +- std."""
    if cfg.model not in DEFAULT_BATCH:
        raise ValueError(
            f"unknown cross-modal model {cfg.model!r}; choose one of {sorted(DEFAULT_BATCH)}"
        )
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(asdict(cfg), run_dir / "config.json")
    data = {
        s: load_clips(cfg.data_dir, s, cfg.visual_store, cfg.audio_store)
        for s in ("train", "val", "test")
    }
    for split, clips in data.items():
        if len(clips) == 0:
            raise ValueError(
                f"{cfg.data_dir}: no {split} clips of the cross-modal split have both features"
            )
    per_seed = [train_seed(cfg, seed, data, run_dir / f"seed-{seed}") for seed in cfg.seeds]
    summary = {
        "model": cfg.model,
        "run_dir": str(run_dir),
        "seeds": per_seed,
        "clips": {s: len(c) for s, c in data.items()},
        "missing_features": {s: len(c.missing) for s, c in data.items()},
        "random_features": any(c.random_features for c in data.values()),
    }
    for key in (
        "a2v_accuracy",
        "v2a_accuracy",
        "a2v_start_mae",
        "v2a_start_mae",
        "chance_accuracy",
    ):
        summary[key] = mean_std([r["test"][key] for r in per_seed])
    write_json(summary, run_dir / "metrics.json")
    return summary


def format_summary(summary: dict) -> str:
    def pct(k: str) -> str:
        m = summary[k]
        return f"{100 * m['mean']:.1f} +- {100 * m['std']:.1f}%"

    lines = [
        f"{summary['model']}: {len(summary['seeds'])} seed(s) in {summary['run_dir']}",
        f"  clips train/val/test {summary['clips']}  (missing features: {summary['missing_features']})",
    ]
    for r in summary["seeds"]:
        lines.append(
            f"  seed {r['seed']} (best epoch {r['best_epoch']}): {format_metrics(r['test'])}"
        )
    lines.append(
        f"  test A2V {pct('a2v_accuracy')}  V2A {pct('v2a_accuracy')}  "
        f"chance {100 * summary['chance_accuracy']['mean']:.1f}%  (paper AVDLN 44.8 / 35.6, DCCA 34.8 / 34.1)"
    )
    return "\n".join(lines)


def run_evaluate_crossmodal(
    data_dir: str,
    out_dir: str | Path,
    run: str | Path | None = None,
    weights: str | Path | None = None,
    split: str = "test",
    device: str = "auto",
    plots: int = 3,
    plot_samples: list[int] | None = None,
    visual_store: str = VISUAL_STORE,
    audio_store: str = AUDIO_STORE,
) -> dict:
    """Evaluate a run directory (every ``seed-*/best.pt``, or its own best.pt) or Keras release weights."""
    if (run is None) == (weights is None):
        raise ValueError("give exactly one of --run RUN_DIR or --weights cmm_model_weights.h5")
    device = resolve_device(device)
    models: list[tuple[str, object]] = []
    if weights is not None:
        from models.release.keras_avdln import load_keras_avdln

        models.append(("release", load_keras_avdln(weights).to(device)))
        source = str(weights)
    else:
        run = Path(run)
        checkpoints = sorted(run.glob("seed-*/best.pt")) or sorted(run.glob("best.pt"))
        if not checkpoints:
            raise FileNotFoundError(
                f"{run}: no best.pt (nor seed-*/best.pt); train with `avel train-crossmodal` first"
            )
        models = [
            (p.parent.name if p.parent != run else "run", load_checkpoint(p, device))
            for p in checkpoints
        ]
        source = str(run)
    clips = load_clips(data_dir, split, visual_store, audio_store)
    if len(clips) == 0:
        raise ValueError(
            f"{data_dir}: no {split} clips of the cross-modal split have both features"
        )
    out_dir = Path(out_dir)
    results = {}
    for name, model in models:
        metrics, dist = evaluate_model(model, clips, device)
        target = out_dir / name if len(models) > 1 else out_dir
        pictures = plot_clips(dist, clips, metrics, target, plot_samples, plots)
        results[name] = {**_public(metrics), "pictures": [str(p) for p in pictures]}
    summary = {
        "source": source,
        "split": split,
        "results": results,
        "missing_features": len(clips.missing),
        "random_features": clips.random_features,
    }
    for key in (
        "a2v_accuracy",
        "v2a_accuracy",
        "a2v_start_mae",
        "v2a_start_mae",
        "chance_accuracy",
    ):
        summary[key] = mean_std([r[key] for r in results.values()])
    if any(math.isnan(summary[k]["mean"]) for k in ("a2v_accuracy", "v2a_accuracy")):
        print("warning: no clip with an event of 1..9 s in this split; accuracies are undefined")
    write_json(summary, out_dir / f"metrics-{split}.json")
    return summary
