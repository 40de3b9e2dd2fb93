"""``avel train supervised|weak``: train a localization network, select on val, test once.

Release defaults (AVE reference 4): Adam lr 1e-3, batch 64, 300 epochs (250 weak), learning rate x0.1
every 15,000 iterations. Unlike the release: cross-entropy on logits (``--loss release`` reproduces its
multi-label soft margin loss on softmax outputs), shuffled batches, every RNG seeded, deterministic
algorithms, validation every epoch; the best-validation checkpoint is tested once at the end.

Layout: ``RUN_DIR/NAME/seed-K/`` with ``config.json``, ``metrics.jsonl`` (one line per epoch),
``metrics.json`` (final), ``best.pt`` (state dict + model config; loads with ``weights_only=True``),
``curves.png``, ``confusion.png``; ``RUN_DIR/NAME/summary.json`` and ``summary.md`` give mean +- std
over seeds. A seed whose finished run has the same config is reused, not retrained.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.io import atomic_path, write_json
from pipeline.core.store import StoreError

MODES = ("supervised", "weak")
DEFAULT_EPOCHS = {"supervised": 300, "weak": 250}
CHECKPOINT_FORMAT = "avel-localization-checkpoint-1"


@dataclass
class TrainConfig:
    data_dir: str
    mode: str = "supervised"
    model: str = "av_att"
    epochs: int | None = None
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 1
    run_dir: str = "runs"
    name: str | None = None
    loss: str = "ce"
    mil: str = "mean"
    device: str = "auto"
    decay_steps: int = 15000
    decay_gamma: float = 0.1
    background_videos: bool = False
    eval_every: int = 1
    model_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.loss not in ("ce", "release"):
            raise ValueError(f"loss must be 'ce' or 'release', got {self.loss!r}")
        if self.epochs is None:
            self.epochs = DEFAULT_EPOCHS[self.mode]
        if self.name is None:
            self.name = f"{self.mode}-{self.model}" + (
                f"-mil-{self.mil}" if self.mode == "weak" else ""
            )
            self.name += "-release-loss" if self.loss == "release" else ""
            self.name += "".join(
                f"-{k}-{str(v).replace(' ', '')}" for k, v in sorted(self.model_options.items())
            )

    def experiment_dir(self) -> Path:
        return Path(self.run_dir) / str(self.name)

    def seed_dir(self) -> Path:
        return self.experiment_dir() / f"seed-{self.seed}"

    def fingerprint(self) -> dict:
        """What determines the result (device and folders excluded)."""
        d = asdict(self)
        for k in ("device", "run_dir", "name", "data_dir"):
            d.pop(k)
        return d


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def model_for(cfg: TrainConfig, num_classes: int):
    from models.networks import build_model

    options = dict(cfg.model_options)
    if cfg.mode == "weak":
        options["mil"] = cfg.mil
    return build_model(cfg.model, num_classes=num_classes, **options)


def loss_fn(logits, target, kind: str, num_classes: int):
    """CE on logits (paper), or the release's multi-label soft margin loss on softmax outputs."""
    import torch.nn.functional as F

    logits = logits.reshape(-1, num_classes)
    target = target.reshape(-1)
    if kind == "ce":
        return F.cross_entropy(logits, target)
    return F.multilabel_soft_margin_loss(logits.softmax(-1), F.one_hot(target, num_classes).float())


def predict(model, dataset, batch_size: int, device) -> np.ndarray:
    """Per-second argmax (N, T) over a dataset, in its order."""
    import torch

    from models.data.ave import model_inputs

    model.eval()
    out = []
    with torch.no_grad():
        for batch in dataset.batches(batch_size):
            out.append(model(*model_inputs(batch, device)).argmax(-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 10), np.int64)


def evaluate(model, dataset, batch_size: int, device) -> dict:
    """Segment accuracy, per-class accuracy, confusion, and (``localization``) the decomposed
    metrics of ``models.evaluation.metrics.localization_metrics``."""
    from models.evaluation.metrics import localization_metrics, segment_metrics

    pred = predict(model, dataset, batch_size, device)
    m = segment_metrics(pred, dataset.segment_labels, dataset.class_names)
    m["localization"] = localization_metrics(
        pred, dataset.segment_labels, dataset.video_labels, dataset.num_classes - 1
    )
    m["samples"] = len(dataset)
    m["missing_videos"] = len(dataset.missing)
    return m


def training_loss(model, batch: dict, cfg: TrainConfig, num_classes: int, device):
    """(loss, per-second logits) of one batch: the configured loss on the per-second logits (weak:
    on their MIL pooling), plus ``model.extra_loss(outputs, labels)`` for networks that define it
    (their ``forward_outputs`` returns a dict with ``logits`` and whatever that term needs; weak
    training passes ``segment_labels=None``)."""
    from models.data.ave import model_inputs

    seg = batch["segment_labels"].to(device)
    video = batch["video_labels"].to(device)
    inputs = model_inputs(batch, device)
    extra = getattr(model, "extra_loss", None)
    outputs = model.forward_outputs(*inputs) if extra is not None else {"logits": model(*inputs)}
    logits = outputs["logits"]
    if cfg.mode == "weak":
        loss = loss_fn(model.video_logits(logits), video, cfg.loss, num_classes)
    else:
        loss = loss_fn(logits, seg, cfg.loss, num_classes)
    if extra is not None:
        labels = {
            "segment_labels": seg if cfg.mode == "supervised" else None,
            "video_labels": video,
        }
        loss = loss + extra(outputs, labels)
    return loss, logits


def save_checkpoint(model, path: Path, **extra: Any) -> None:
    import torch

    payload = {"format": CHECKPOINT_FORMAT, "model": model.config, **extra}
    payload["state_dict"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path, device="cpu"):
    """Rebuild the network of an avel checkpoint (tensors only; nothing foreign is executed)."""
    import torch

    from models.networks import build_model

    payload = torch.load(path, map_location=device, weights_only=True)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path}: not an avel localization checkpoint (format {payload.get('format')!r})"
        )
    cfg = dict(payload["model"])
    model = build_model(cfg.pop("name"), num_classes=cfg.pop("num_classes"), **cfg)
    model.load_state_dict(payload["state_dict"])
    return model.to(device), payload


def train_seed(cfg: TrainConfig, force: bool = False, progress: bool = True) -> dict:
    """Train one seed into ``cfg.seed_dir()``; returns its final metrics."""
    import torch
    from tqdm import tqdm

    from models.data.ave import AVEDataset
    from models.evaluation.metrics import reference_rows
    from models.reports.plots import plot_confusion, plot_curves

    out = cfg.seed_dir()
    config = {"train": asdict(cfg), "fingerprint": cfg.fingerprint()}
    if not force and (out / "metrics.json").is_file() and (out / "config.json").is_file():
        old = json.loads((out / "config.json").read_text())
        if old.get("fingerprint") == cfg.fingerprint():
            return {**json.loads((out / "metrics.json").read_text()), "reused": True}
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("metrics.json", "metrics.jsonl", "best.pt"):
        (out / stale).unlink(missing_ok=True)

    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    probe = model_for(cfg, 2)  # which stores the network reads
    stores = probe.stores
    train = AVEDataset(
        Path(cfg.data_dir), "train", stores, cfg.background_videos and cfg.mode == "weak"
    )
    val = AVEDataset(Path(cfg.data_dir), "val", stores)
    num_classes = train.num_classes
    seed_everything(cfg.seed)
    model = model_for(cfg, num_classes).to(device)
    config["model"] = model.config
    config["parameters"] = sum(p.numel() for p in model.parameters())
    config["data"] = {
        "train_samples": len(train),
        "val_samples": len(val),
        "stores": list(stores),
        "extra_background_videos": train.extra_videos,
        "missing_videos": {"train": len(train.missing), "val": len(val.missing)},
    }
    write_json(config, out / "config.json")

    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, cfg.decay_steps, cfg.decay_gamma)
    generator = torch.Generator().manual_seed(cfg.seed)
    history: list[dict] = []
    best = {"epoch": None, "val_accuracy": -1.0}
    started = time.time()
    bar = tqdm(
        range(1, cfg.epochs + 1),
        desc=f"{cfg.name} seed {cfg.seed}",
        disable=not progress,
        unit="epoch",
    )
    for epoch in bar:
        model.train()
        total, count, correct, seconds, t0 = 0.0, 0, 0, 0, time.time()
        for batch in train.batches(cfg.batch_size, shuffle=True, generator=generator):
            seg = batch["segment_labels"].to(device)
            loss, logits = training_loss(model, batch, cfg, num_classes, device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            n = seg.shape[0]
            total, count = total + loss.item() * n, count + n
            correct += int((logits.argmax(-1) == seg).sum())
            seconds += seg.numel()
        row = {
            "epoch": epoch,
            "loss": total / max(count, 1),
            "train_accuracy": correct / max(seconds, 1),
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.time() - t0,
            "clips_per_second": count / max(time.time() - t0, 1e-9),
        }
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            row["val_accuracy"] = evaluate(model, val, cfg.batch_size, device)["accuracy"]
            if row["val_accuracy"] > best["val_accuracy"]:
                best = {"epoch": epoch, "val_accuracy": row["val_accuracy"]}
                save_checkpoint(
                    model, out / "best.pt", epoch=epoch, val_accuracy=row["val_accuracy"]
                )
        history.append(row)
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        bar.set_postfix(
            loss=f"{row['loss']:.4f}", val=f"{row.get('val_accuracy', float('nan')):.4f}"
        )
    bar.close()

    model, _ = load_checkpoint(out / "best.pt", device)
    test = AVEDataset(Path(cfg.data_dir), "test", stores)
    val_m = evaluate(model, val, cfg.batch_size, device)
    test_m = evaluate(model, test, cfg.batch_size, device)
    train_m = evaluate(
        model, AVEDataset(Path(cfg.data_dir), "train", stores), cfg.batch_size, device
    )
    metrics = {
        "best_epoch": best["epoch"],
        "epochs": cfg.epochs,
        "seed": cfg.seed,
        "mode": cfg.mode,
        "model": cfg.model,
        "parameters": config["parameters"],
        "train_accuracy": train_m["accuracy"],
        "val_accuracy": val_m["accuracy"],
        "test_accuracy": test_m["accuracy"],
        "test_segments": test_m["segments"],
        "per_class_accuracy": {
            "val": val_m["per_class_accuracy"],
            "test": test_m["per_class_accuracy"],
        },
        "confusion_test": test_m["confusion"],
        "missing_videos": {"test": test_m["missing_videos"]},
        "localization": {"val": val_m["localization"], "test": test_m["localization"]},
        "reference_test": reference_rows(
            test.segment_labels, test.video_labels, test.num_classes - 1
        ),
        "train_seconds": time.time() - started,
        "device": str(device),
        "random_features": any(s.is_random for s in train._stores.values()),
    }
    write_json(metrics, out / "metrics.json")
    plot_curves(history, out / "curves.png", best["epoch"])
    plot_confusion(
        test_m["confusion"],
        test.class_names,
        out / "confusion.png",
        f"{cfg.name} seed {cfg.seed}: test {test_m['accuracy']:.3f}",
    )
    return metrics


def _mean_std(values: list[float]) -> dict:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def run_train(
    cfg: TrainConfig, seeds: list[int], force: bool = False, progress: bool = True
) -> dict:
    """Train every seed and write ``summary.json``/``summary.md`` (sample std over seeds)."""
    runs = {}
    for seed in seeds:
        seed_cfg = TrainConfig(**{**asdict(cfg), "seed": seed})
        runs[seed] = train_seed(seed_cfg, force=force, progress=progress)
    summary = {
        "name": cfg.name,
        "mode": cfg.mode,
        "model": cfg.model,
        "seeds": seeds,
        "experiment_dir": str(cfg.experiment_dir()),
        "runs": {
            str(s): {k: m[k] for k in ("best_epoch", "val_accuracy", "test_accuracy")}
            for s, m in runs.items()
        },
        "val_accuracy": _mean_std([m["val_accuracy"] for m in runs.values()]),
        "test_accuracy": _mean_std([m["test_accuracy"] for m in runs.values()]),
        "reused": [s for s, m in runs.items() if m.get("reused")],
        "random_features": any(m.get("random_features") for m in runs.values()),
    }
    write_json(summary, cfg.experiment_dir() / "summary.json")
    lines = [f"# {cfg.name}", "", "| seed | best epoch | val acc | test acc |", "|---|---|---|---|"]
    lines += [
        f"| {s} | {r['best_epoch']} | {r['val_accuracy']:.4f} | {r['test_accuracy']:.4f} |"
        for s, r in summary["runs"].items()
    ]
    t, v = summary["test_accuracy"], summary["val_accuracy"]
    lines += [
        f"| mean ± std | | {v['mean']:.4f} ± {v['std']:.4f} | {t['mean']:.4f} ± {t['std']:.4f} |",
        "",
    ]
    with atomic_path(cfg.experiment_dir() / "summary.md", suffix=".md") as tmp:
        tmp.write_text("\n".join(lines))
    return summary


def parse_options(items: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` model options; values parsed as JSON when possible (``num_blocks=2``, ``x=true``)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--option {item!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train a localization model (supervised or weak), select on val"
    )
    p.add_argument("mode", choices=MODES)
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument(
        "--model",
        default="av_att",
        help="a, v, v_att, av, av_att, dmrn, dmrfe, psp, cmbs, avel-net (default av_att)",
    )
    p.add_argument("--epochs", type=int, help="default 300 supervised, 250 weak")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seeds", default="1", help="comma-separated seeds, one run each (default 1)")
    p.add_argument(
        "--run-dir", type=Path, default=Path("runs"), help="runs go to RUN_DIR/NAME/seed-K"
    )
    p.add_argument(
        "--name",
        help="experiment name (default MODE-MODEL[-mil-MIL][-release-loss][-KEY-VALUE...])",
    )
    p.add_argument("--loss", choices=("ce", "release"), default="ce")
    p.add_argument(
        "--mil", choices=("mean", "max"), default="mean", help="weak: MIL pooling over seconds"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument(
        "--decay-steps", type=int, default=15000, help="lr x0.1 every this many iterations"
    )
    p.add_argument(
        "--background-videos",
        action="store_true",
        help="weak: add DATA_DIR/extra_background.parquet's background-only videos to train",
    )
    p.add_argument("--eval-every", type=int, default=1, help="validate every N epochs (default 1)")
    p.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="model option, e.g. broadcast=release, num_blocks=2, swap_residual=true",
    )
    p.add_argument("--force", action="store_true", help="retrain seeds that already finished")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    cfg = TrainConfig(
        data_dir=str(args.data_dir),
        mode=args.mode,
        model=args.model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=seeds[0],
        run_dir=str(args.run_dir),
        name=args.name,
        loss=args.loss,
        mil=args.mil,
        device=args.device,
        decay_steps=args.decay_steps,
        background_videos=args.background_videos,
        eval_every=args.eval_every,
        model_options=parse_options(args.option),
    )
    if args.mode == "weak" and args.background_videos:
        from models.data.ave import extra_background_path

        if not extra_background_path(args.data_dir).is_file():
            print(
                f"note: {extra_background_path(args.data_dir)} not found; training without extra background videos"
            )
    try:
        summary = run_train(cfg, seeds, force=args.force)
    except (FileNotFoundError, ValueError, StoreError) as exc:
        print(f"error: {exc}")
        return 2
    print(format_summary(summary))
    return 0


def format_summary(summary: dict) -> str:
    t, v = summary["test_accuracy"], summary["val_accuracy"]
    lines = [f"{summary['name']}: {len(summary['seeds'])} seed(s) in {summary['experiment_dir']}"]
    for s, r in summary["runs"].items():
        lines.append(
            f"  seed {s}: best epoch {r['best_epoch']}, val {r['val_accuracy']:.4f}, test {r['test_accuracy']:.4f}"
        )
    lines.append(
        f"  segment accuracy: val {v['mean']:.4f} ± {v['std']:.4f}, test {t['mean']:.4f} ± {t['std']:.4f}"
    )
    if summary["reused"]:
        lines.append(f"  reused finished seeds: {summary['reused']}")
    if summary["random_features"]:
        lines.append(
            "  WARNING: features come from random-weight networks; these numbers mean nothing"
        )
    return "\n".join(lines)
