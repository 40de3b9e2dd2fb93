"""``avel train supervised|weak|crossmodal``: the one training loop, for every task.

One configuration (``TrainConfig``), one loop: Adam, seeded shuffles, every RNG seeded with
deterministic algorithms (``pipeline.core.device``), validation every ``eval_every`` epochs, the
best-on-val checkpoint kept (``models.training.checkpoint``), the test split evaluated once on it at
the end. The task modules say what differs: ``models.training.localization`` (supervised, weak) and
``models.training.crossmodal`` (AVDLN, DCCA): data, batch loss, val selection score, final metrics
and pictures. Results go to the run folder of ``models.training.runs``; a seed that finished with the
same fingerprint is reused, not retrained.

Release defaults: localization batch 64, 300 epochs supervised / 250 weak, lr x0.1 every 15,000
iterations; cross-modal 20 epochs, batch 8 for AVDLN and 256 for DCCA (the CCA objective needs
batches much larger than its output size); lr 1e-3 everywhere; seed 1.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from models.training import runs
from pipeline.core.paths import child, safe_name

MODES = ("supervised", "weak", "crossmodal")
DEFAULT_EPOCHS = {"supervised": 300, "weak": 250, "crossmodal": 20}
DEFAULT_MODEL = {"supervised": "av_att", "weak": "av_att", "crossmodal": "avdln"}
DEFAULT_BATCH = {"avdln": 8, "dcca": 256}  # cross-modal; localization networks: 64
LOCALIZATION_BATCH = 64
#: Settings of one task only (left out of the other task's fingerprint).
LOCALIZATION_ONLY = ("loss", "mil", "decay_steps", "decay_gamma", "background_videos")
CROSSMODAL_ONLY = ("mismatched", "select", "plots", "plot_samples", "visual_store", "audio_store")
#: Settings that never change what is trained.
NOT_TRAINING = ("device", "run_dir", "name", "data_dir", "plots", "plot_samples", "threads")


#: Registered networks that are built, not trained: model -> how to make its run instead.
UNTRAINED = {
    "zero_shot": "it has no weights to learn; `avel zero-shot` (make zero-shot) writes its run"
}


@dataclass
class TrainConfig:
    data_dir: str
    mode: str = "supervised"  # supervised | weak | crossmodal
    model: str | None = None  # default av_att (localization) / avdln (crossmodal)
    epochs: int | None = None  # default 300 supervised, 250 weak, 20 crossmodal
    batch_size: int | None = None  # default 64; AVDLN 8, DCCA 256
    lr: float = 1e-3
    seed: int = 1
    run_dir: str = "runs"
    name: str | None = None
    device: str = "auto"
    eval_every: int = 1
    threads: int | None = None  # CPU torch threads (default: models.training.speed.default_threads)
    model_options: dict[str, Any] = field(default_factory=dict)
    # localization
    loss: str = "ce"  # "ce" on logits, or "release": multi-label soft margin on softmax outputs
    mil: str = "mean"  # weak: MIL pooling over seconds
    decay_steps: int = 15000
    decay_gamma: float = 0.1
    background_videos: bool = False  # weak: add the extra background-only videos to train
    # crossmodal
    mismatched: int = 0  # extra y=0 pairs per event second, audio from other videos
    select: str = "accuracy"  # best on val: "accuracy" (A2V + V2A) or "loss"
    plots: int = 3  # distance pictures of the first N test clips
    plot_samples: list[int] = field(default_factory=list)  # or of these manifest sample ids
    visual_store: str = "visual_vec"
    audio_store: str = "audio"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.loss not in ("ce", "release"):
            raise ValueError(f"loss must be 'ce' or 'release', got {self.loss!r}")
        if self.select not in ("accuracy", "loss"):
            raise ValueError(f"select must be 'accuracy' or 'loss', got {self.select!r}")
        if self.model is None:
            self.model = DEFAULT_MODEL[self.mode]
        if self.crossmodal != (self.model in DEFAULT_BATCH):
            kind = "cross-modal" if self.crossmodal else "localization"
            raise ValueError(
                f"{self.model!r} is not a {kind} model"
                + (f"; choose one of {sorted(DEFAULT_BATCH)}" if self.crossmodal else "")
            )
        if self.model in UNTRAINED:
            raise ValueError(f"{self.model!r} is not trained: {UNTRAINED[self.model]}")
        if self.epochs is None:
            self.epochs = DEFAULT_EPOCHS[self.mode]
        if self.batch_size is None:
            self.batch_size = DEFAULT_BATCH.get(str(self.model), LOCALIZATION_BATCH)
        if self.name is None:
            self.name = default_name(self)
        safe_name(self.name, "run name (--name)")

    @property
    def crossmodal(self) -> bool:
        return self.mode == "crossmodal"

    def experiment_dir(self) -> Path:
        return child(self.run_dir, self.name, what="run name (--name)")

    def seed_dir(self) -> Path:
        return self.experiment_dir() / f"seed-{self.seed}"

    def fingerprint(self) -> dict:
        """What determines the result (device, folders and the other task's settings excluded)."""
        other = LOCALIZATION_ONLY if self.crossmodal else CROSSMODAL_ONLY
        return {k: v for k, v in asdict(self).items() if k not in NOT_TRAINING + other}


def default_name(cfg: TrainConfig) -> str:
    """MODE-MODEL[-mil-MIL][-release-loss][-KEY-VALUE...]."""
    name = f"{cfg.mode}-{cfg.model}" + (f"-mil-{cfg.mil}" if cfg.mode == "weak" else "")
    name += "-release-loss" if cfg.loss == "release" and not cfg.crossmodal else ""
    return name + "".join(
        f"-{k}-{str(v).replace(' ', '')}" for k, v in sorted(cfg.model_options.items())
    )


def run_fingerprint(cfg: TrainConfig, task) -> dict:
    """:meth:`TrainConfig.fingerprint` plus the identity digest of every feature store the task
    reads: a seed trained on stores that were rebuilt since (other weights, other inputs) is not
    reused."""
    from pipeline.core.identity import store_identity_sha256
    from pipeline.core.layout import DataLayout

    layout = DataLayout(cfg.data_dir)
    stores = {name: store_identity_sha256(layout.store(name)) for name in task.stores(cfg)}
    return {**cfg.fingerprint(), "stores": stores}


def task_for(cfg: TrainConfig):
    """The task module's object for ``cfg.mode``."""
    if cfg.crossmodal:
        from models.training.crossmodal import CrossmodalTask

        return CrossmodalTask()
    from models.training.localization import LocalizationTask

    return LocalizationTask()


def train_seed(cfg: TrainConfig, force: bool = False, progress: bool = True) -> dict:
    """Train one seed into ``cfg.seed_dir()``; returns its final metrics."""
    from models.training.speed import default_threads, training_threads
    from pipeline.core.device import resolve_device, reuse_freed_memory

    task = task_for(cfg)
    out = cfg.seed_dir()
    if not force and (done := runs.finished(out, run_fingerprint(cfg, task))) is not None:
        return {**done, "reused": True}

    device = resolve_device(cfg.device)
    if device.type == "cpu":
        reuse_freed_memory()
    with training_threads(device, cfg.threads or default_threads(cfg.mode)) as threads:
        return _train(cfg, task, out, device, progress, threads)


def _train(cfg: TrainConfig, task, out: Path, device, progress: bool, threads: int) -> dict:
    """The body of :func:`train_seed` (threads set)."""
    import torch
    from tqdm import tqdm

    from models.networks import count_parameters
    from models.reports.plots import plot_curves
    from models.training.checkpoint import load_checkpoint, save_checkpoint
    from models.training.speed import native_cpu_lstm
    from pipeline.core.device import seed_everything
    from pipeline.core.io import write_json
    from pipeline.core.provenance import provenance

    seed_everything(cfg.seed)
    data = task.load_data(cfg)
    seed_everything(cfg.seed)
    model = task.build_model(cfg, data).to(device)
    config = {
        "train": asdict(cfg),
        "fingerprint": run_fingerprint(cfg, task),
        "model": model.config,
        "parameters": count_parameters(model),
        "data": task.describe(data),
        "torch_threads": threads,
        "provenance": provenance(device, ffmpeg=False),  # a record: not in the fingerprint
    }
    runs.start_seed(out, config)

    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scheduler = task.scheduler(optimizer, cfg)
    generator = torch.Generator().manual_seed(cfg.seed)
    history: list[dict] = []
    best: dict | None = None
    started = time.time()
    title = f"{cfg.name} seed {cfg.seed}"
    bar = tqdm(range(1, cfg.epochs + 1), desc=title, disable=not progress, unit="epoch")
    with native_cpu_lstm(model, device):  # the plain ATen LSTM on the CPU (models.training.speed)
        for epoch in bar:
            model.train()
            total, count, stats, t0 = 0.0, 0, {}, time.time()
            for batch in task.batches(cfg, data, generator):
                step = task.batch_loss(model, batch, cfg, data, device)
                if step is None:
                    continue
                loss, n, batch_stats = step
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                total, count = total + loss.item() * n, count + n
                for k, v in batch_stats.items():
                    stats[k] = stats.get(k, 0) + v
            task.after_epoch(model, data, device)
            seconds = time.time() - t0
            row = {
                "epoch": epoch,
                "loss": total / max(count, 1),
                **task.train_figures(stats),
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": seconds,
                "clips_per_second": count / max(seconds, 1e-9),
            }
            if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                row.update(task.validate(model, data, cfg, device))
                if task.better(row, best, cfg):
                    best = row
                    val = {k: v for k, v in row.items() if k.startswith("val_")}
                    save_checkpoint(
                        model, out / runs.BEST, cfg.model_options, epoch=epoch, seed=cfg.seed, **val
                    )
            history.append(row)
            runs.append_history(out, row)
            bar.set_postfix(
                {"loss": f"{row['loss']:.4f}"}
                | {k: f"{v:.4f}" for k, v in row.items() if k.startswith("val_")}
            )
    bar.close()
    if best is None:
        raise RuntimeError(f"{out}: no epoch was validated (epochs {cfg.epochs})")

    model, _ = load_checkpoint(out / runs.BEST, device)
    final = task.final_metrics(model, data, cfg, device, out, best)
    metrics = {
        "best_epoch": best["epoch"],
        "epochs": cfg.epochs,
        "seed": cfg.seed,
        "mode": cfg.mode,
        "model": cfg.model,
        "parameters": config["parameters"],
        **final,
        "train_seconds": time.time() - started,
        "device": str(device),
        "random_features": task.random_features(data),
    }
    plot_curves(history, out / "curves.png", best["epoch"], title)
    write_json(metrics, out / runs.METRICS)  # written last: a folder with metrics.json is finished
    return metrics


def run_train(
    cfg: TrainConfig, seeds: list[int] | None = None, force: bool = False, progress: bool = True
) -> dict:
    """Train every seed (default ``cfg.seed``); write ``summary.json``/``summary.md``."""
    seeds = list(seeds) if seeds else [cfg.seed]
    task = task_for(cfg)
    results = {s: train_seed(replace(cfg, seed=s), force=force, progress=progress) for s in seeds}
    headline = {s: task.headline(m) for s, m in results.items()}
    summary = {
        "name": cfg.name,
        "mode": cfg.mode,
        "model": cfg.model,
        "seeds": seeds,
        "experiment_dir": str(cfg.experiment_dir()),
        "runs": {
            str(s): {"best_epoch": results[s]["best_epoch"], **h} for s, h in headline.items()
        },
        **{k: runs.mean_std([h[k] for h in headline.values()]) for k in task.columns},
        "reused": [s for s, m in results.items() if m.get("reused")],
        "random_features": any(m.get("random_features") for m in results.values()),
    }
    runs.write_summary(cfg.experiment_dir(), summary, task.columns)
    return summary


def format_summary(summary: dict) -> str:
    """The summary of ``run_train`` as a few lines of text."""
    from models.training.crossmodal import format_crossmodal_summary
    from models.training.localization import format_localization_summary

    lines = [f"{summary['name']}: {len(summary['seeds'])} seed(s) in {summary['experiment_dir']}"]
    if summary["mode"] == "crossmodal":
        lines += format_crossmodal_summary(summary)
    else:
        lines += format_localization_summary(summary)
    if summary["reused"]:
        lines.append(f"  reused finished seeds: {summary['reused']}")
    if summary["random_features"]:
        lines.append(
            "  WARNING: features come from random-weight networks; these numbers mean nothing"
        )
    return "\n".join(lines)


def parse_options(items: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` model options; values parsed as JSON when possible (``num_blocks=2``, ``x=true``)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--option {item!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out
