"""The localization task (``avel train supervised|weak``) for ``models.training.engine``.

Unlike the release: cross-entropy on logits (``loss="release"`` reproduces its multi-label soft
margin loss on softmax outputs), shuffled batches, validation every epoch. Selection: the highest val
segment accuracy (the first epoch on ties). Final metrics: segment accuracy of train, val and test,
per-class accuracy, the test confusion (``confusion.png``), the decomposed metrics
(``models.evaluation.metrics.localization_metrics``) and the reference rows of the test split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MODES = ("supervised", "weak")


def model_for(cfg, num_classes: int, widths: dict[str, int] | None = None):
    """The network of ``cfg``; ``widths`` (store -> row width) sizes it to the stores it reads."""
    from models.data.ave import fit_widths
    from models.networks import build_model

    options = fit_widths(cfg.model_options, widths or {})
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


def training_loss(model, batch: dict, cfg, num_classes: int, device):
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


class LocalizationTask:
    """Supervised or weak training of a localization network over ``models.data.ave``."""

    columns = {"val_accuracy": "val acc", "test_accuracy": "test acc"}

    def stores(self, cfg) -> tuple[str, ...]:
        """The feature stores the network reads."""
        return tuple(model_for(cfg, 2).stores)

    def load_data(self, cfg) -> dict:
        from models.data.ave import AVEDataset

        stores = model_for(cfg, 2).stores  # which stores the network reads
        data_dir = Path(cfg.data_dir)
        weak_extra = cfg.background_videos and cfg.mode == "weak"
        return {
            "stores": stores,
            "train": AVEDataset(data_dir, "train", stores, weak_extra),
            "val": AVEDataset(data_dir, "val", stores),
        }

    def build_model(self, cfg, data: dict):
        return model_for(cfg, data["train"].num_classes, data["train"].store_widths)

    def describe(self, data: dict) -> dict:
        train, val = data["train"], data["val"]
        return {
            "train_samples": len(train),
            "val_samples": len(val),
            "stores": list(data["stores"]),
            "extra_background_videos": train.extra_videos,
            "missing_videos": {"train": len(train.missing), "val": len(val.missing)},
        }

    def scheduler(self, optimizer, cfg):
        import torch

        return torch.optim.lr_scheduler.StepLR(optimizer, cfg.decay_steps, cfg.decay_gamma)

    def batches(self, cfg, data: dict, generator):
        return data["train"].batches(cfg.batch_size, shuffle=True, generator=generator)

    def batch_loss(self, model, batch: dict, cfg, data: dict, device):
        seg = batch["segment_labels"].to(device)
        loss, logits = training_loss(model, batch, cfg, data["train"].num_classes, device)
        correct = int((logits.argmax(-1) == seg).sum())
        return loss, seg.shape[0], {"correct": correct, "seconds": seg.numel()}

    def train_figures(self, stats: dict) -> dict:
        return {"train_accuracy": stats.get("correct", 0) / max(stats.get("seconds", 0), 1)}

    def after_epoch(self, model, data: dict, device) -> None:
        pass

    def validate(self, model, data: dict, cfg, device) -> dict:
        return {"val_accuracy": evaluate(model, data["val"], cfg.batch_size, device)["accuracy"]}

    def better(self, row: dict, best: dict | None, cfg) -> bool:
        return best is None or row["val_accuracy"] > best["val_accuracy"]

    def final_metrics(self, model, data: dict, cfg, device, out: Path, best: dict) -> dict:
        from models.data.ave import AVEDataset
        from models.evaluation.metrics import reference_rows
        from models.reports.plots import plot_confusion

        data_dir, stores, batch = Path(cfg.data_dir), data["stores"], cfg.batch_size
        test = AVEDataset(data_dir, "test", stores)
        val_m = evaluate(model, data["val"], batch, device)
        test_m = evaluate(model, test, batch, device)
        train_m = evaluate(model, AVEDataset(data_dir, "train", stores), batch, device)
        plot_confusion(
            test_m["confusion"],
            test.class_names,
            out / "confusion.png",
            f"{cfg.name} seed {cfg.seed}: test {test_m['accuracy']:.3f}",
        )
        return {
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
        }

    def random_features(self, data: dict) -> bool:
        return data["train"].random_features

    def headline(self, metrics: dict) -> dict:
        return {k: metrics[k] for k in self.columns}


def format_localization_summary(summary: dict) -> list[str]:
    """Per-seed and mean ± std segment accuracy lines of a training summary."""
    lines = [
        f"  seed {s}: best epoch {r['best_epoch']}, val {r['val_accuracy']:.4f}, test {r['test_accuracy']:.4f}"
        for s, r in summary["runs"].items()
    ]
    t, v = summary["test_accuracy"], summary["val_accuracy"]
    lines.append(
        f"  segment accuracy: val {v['mean']:.4f} ± {v['std']:.4f}, test {t['mean']:.4f} ± {t['std']:.4f}"
    )
    return lines
