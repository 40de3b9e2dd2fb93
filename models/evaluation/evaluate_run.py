"""Re-evaluate any finished run from its folder alone, or the release's cross-modal weights.

``evaluate_run(run=...)`` takes a seed folder (``config.json`` + ``best.pt``) or an experiment
folder with ``seed-*`` folders, of any kind: supervised, weak, AVDLN, DCCA, a folder written by
``avel import-checkpoint``, or a run of the previous version (``models.training.checkpoint`` reads
the earlier checkpoint formats). The checkpoint's task picks the protocol:

- localization (``run_evaluate``): segment accuracy, per-class accuracy, confusion, the decomposed
  metrics (video-class accuracy, event precision/recall/F1, boundary error, full vs short clips) and
  the reference rows of the same clips, written to ``SEED_DIR/eval-<split>.json``;
- cross-modal (``run_evaluate_crossmodal``): A2V / V2A accuracy, chance and start error, with
  distance pictures, written to ``OUT_DIR/metrics-<split>.json`` (default ``RUN/evaluate``).

``evaluate_run(weights=cmm_model_weights.h5)`` evaluates the release's Keras AVDLN the same way.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from models.data.crossmodal import AUDIO_STORE, VISUAL_STORE
from models.training import runs
from pipeline.core.io import write_json


def _train_config(seed_dir: Path) -> dict:
    """The training settings of a seed folder (current ``{"train": ...}`` or the old flat config)."""
    config = runs.read_config(seed_dir)
    return config.get("train", config)


def _data_dir(seed_dir: Path, data_dir: str | Path | None) -> Path:
    if data_dir is not None:
        return Path(data_dir)
    found = _train_config(seed_dir).get("data_dir")
    if not found:
        raise FileNotFoundError(f"{seed_dir}: config.json names no data folder; pass --data-dir")
    return Path(found)


RANDOM_WARNING = (
    "!!! RANDOM WEIGHTS: the feature stores read come from random-weight networks; "
    "these numbers mean nothing !!!"
)


def checkpoints_of(run: str | Path) -> list[Path]:
    """The seed folders of ``run`` (itself, or its ``seed-*``), or an error saying how to make one."""
    found = runs.seed_dirs(run)
    if not found:
        raise FileNotFoundError(
            f"{run}: no best.pt (nor seed-*/best.pt); train with `avel train ...` or import a "
            "release model with `avel import-checkpoint FILE`"
        )
    return found


def run_evaluate(
    run: str | Path,
    split: str = "test",
    data_dir: str | Path | None = None,
    device: str = "auto",
    batch_size: int | None = None,
) -> dict:
    """Evaluate one localization seed folder; writes and returns ``eval-<split>.json``."""
    from models.data.ave import AVEDataset
    from models.evaluation.metrics import reference_rows
    from models.training.checkpoint import load_checkpoint
    from models.training.localization import evaluate
    from pipeline.core.device import resolve_device

    run = Path(run)
    if not (run / runs.BEST).is_file():
        raise FileNotFoundError(f"{run}: not a finished run folder (best.pt needed)")
    data_dir = _data_dir(run, data_dir)
    dev = resolve_device(device)
    model, payload = load_checkpoint(run / runs.BEST, dev)
    if payload["task"] != "localization":
        raise ValueError(f"{run}: a {payload['task']} run; evaluate it with `avel evaluate --run`")
    dataset = AVEDataset(data_dir, split, model.stores)
    batch = batch_size or _train_config(run).get("batch_size") or 64
    m = evaluate(model, dataset, batch, dev)
    result = {
        "task": "localization",
        "run": str(run),
        "split": split,
        "data_dir": str(data_dir),
        "epoch": payload.get("epoch"),
        "accuracy": m["accuracy"],
        "segments": m["segments"],
        "samples": m["samples"],
        "missing_videos": m["missing_videos"],
        "per_class_accuracy": m["per_class_accuracy"],
        "confusion": m["confusion"],
        "localization": m["localization"],
        "reference": reference_rows(
            dataset.segment_labels, dataset.video_labels, dataset.num_classes - 1
        ),
        "random_features": dataset.random_features,
    }
    write_json(result, run / f"eval-{split}.json")
    return result


def run_evaluate_crossmodal(
    data_dir: str | Path | None,
    out_dir: str | Path | None = None,
    run: str | Path | None = None,
    weights: str | Path | None = None,
    split: str = "test",
    device: str = "auto",
    plots: int = 3,
    plot_samples: list[int] | None = None,
    visual_store: str = VISUAL_STORE,
    audio_store: str = AUDIO_STORE,
) -> dict:
    """A2V / V2A of every seed of a cross-modal run, or of Keras release weights (``weights``)."""
    from models.data.crossmodal import load_clips
    from models.evaluation.crossmodal import evaluate_model, public_metrics
    from models.reports.plots import plot_clips
    from models.training.checkpoint import load_checkpoint
    from pipeline.core.device import resolve_device

    if (run is None) == (weights is None):
        raise ValueError("give exactly one of --run RUN_DIR or --weights cmm_model_weights.h5")
    dev = resolve_device(device)
    models: list[tuple[str, object]] = []
    if weights is not None:
        from models.release.keras_avdln import load_keras_avdln

        models.append(("release", load_keras_avdln(weights).to(dev)))
        source = str(weights)
        data_dir = Path(data_dir or "data")
        out_dir = Path(out_dir or Path("runs") / "avdln-release")
    else:
        run = Path(run)
        seeds = checkpoints_of(run)
        for seed_dir in seeds:
            model, payload = load_checkpoint(seed_dir / runs.BEST, dev)
            if payload["task"] != "crossmodal":
                raise ValueError(f"{seed_dir}: a {payload['task']} run, not a cross-modal one")
            models.append((seed_dir.name if seed_dir != run else "run", model))
        source = str(run)
        data_dir = _data_dir(seeds[0], data_dir)
        out_dir = Path(out_dir or run / "evaluate")
    clips = load_clips(data_dir, split, visual_store, audio_store)
    if len(clips) == 0:
        raise ValueError(
            f"{data_dir}: no {split} clips of the cross-modal split have both features"
        )
    results = {}
    for name, model in models:
        metrics, dist = evaluate_model(model, clips, dev)
        target = out_dir / name if len(models) > 1 else out_dir
        pictures = plot_clips(dist, clips, metrics, target, plot_samples, plots)
        results[name] = {**public_metrics(metrics), "pictures": [str(p) for p in pictures]}
    summary = {
        "task": "crossmodal",
        "source": source,
        "split": split,
        "data_dir": str(data_dir),
        "out_dir": str(out_dir),
        "results": results,
        "missing_features": len(clips.missing),
        "random_features": clips.random_features,
    }
    for key in ("a2v_accuracy", "v2a_accuracy", "a2v_start_mae", "v2a_start_mae"):
        summary[key] = runs.mean_std([r[key] for r in results.values()])
    summary["chance_accuracy"] = runs.mean_std([r["chance_accuracy"] for r in results.values()])
    if any(math.isnan(summary[k]["mean"]) for k in ("a2v_accuracy", "v2a_accuracy")):
        print(
            "warning: no clip with an event of 1..9 s in this split; accuracies are undefined",
            file=sys.stderr,
        )
    write_json(summary, out_dir / f"metrics-{split}.json")
    return summary


def run_task(run: str | Path) -> str:
    """``localization`` or ``crossmodal``: the task of a run's (first) checkpoint."""
    from models.training.checkpoint import read_payload

    return read_payload(checkpoints_of(run)[0] / runs.BEST)["task"]


def evaluate_run(
    run: str | Path | None = None,
    weights: str | Path | None = None,
    split: str = "test",
    data_dir: str | Path | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    out_dir: str | Path | None = None,
    plots: int = 3,
    plot_samples: list[int] | None = None,
    visual_store: str = VISUAL_STORE,
    audio_store: str = AUDIO_STORE,
) -> dict:
    """Evaluate a run folder of any kind (or release cross-modal ``weights``); see the module doc.

    Localization: ``{"task", "run", "split", "results": {seed folder: run_evaluate(...)},
    "accuracy": mean_std}``; cross-modal: ``run_evaluate_crossmodal``'s summary.
    """
    if weights is not None or (run is not None and run_task(run) == "crossmodal"):
        return run_evaluate_crossmodal(
            data_dir,
            out_dir,
            run=run,
            weights=weights,
            split=split,
            device=device,
            plots=plots,
            plot_samples=plot_samples,
            visual_store=visual_store,
            audio_store=audio_store,
        )
    if run is None:
        raise ValueError("give --run RUN_DIR or --weights cmm_model_weights.h5")
    results = {
        seed_dir.name: run_evaluate(seed_dir, split, data_dir, device, batch_size)
        for seed_dir in checkpoints_of(run)
    }
    return {
        "task": "localization",
        "run": str(run),
        "split": split,
        "results": results,
        "accuracy": runs.mean_std([r["accuracy"] for r in results.values()]),
    }


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def format_localization(loc: dict, reference: dict | None = None) -> str:
    """A small text table: the decomposed metrics of a run, and the reference rows under it."""
    from models.evaluation.metrics import REFERENCE_LABELS

    head = f"  {'':36s} seg acc  video acc  ev P   ev R   ev F1  bound.err(s)  full   short"
    rows = [("this model", loc)] + [(REFERENCE_LABELS[k], v) for k, v in (reference or {}).items()]
    lines = [head]
    for label, m in rows:
        b = "–" if m["boundary_error_s"] is None else f"{m['boundary_error_s']:.2f}"
        lines.append(
            f"  {label:36s} {_pct(m['accuracy']):>6s}  {_pct(m['video_class_accuracy']):>8s}  "
            f"{_pct(m['event_precision']):>5s}  {_pct(m['event_recall']):>5s}  {_pct(m['event_f1']):>5s}  "
            f"{b:>12s}  {_pct(m['accuracy_full']):>5s}  {_pct(m['accuracy_short']):>5s}"
        )
    return "\n".join(lines)


def format_evaluation(summary: dict) -> str:
    """What ``avel evaluate`` prints: the metrics the run's kind has."""
    from models.evaluation.crossmodal import format_metrics
    from models.reports.paper import crossmodal_reference

    lines = []
    if summary["task"] == "localization":
        for r in summary["results"].values():
            lines.append(
                f"{r['run']}: {r['split']} segment accuracy {r['accuracy']:.4f} over "
                f"{r['segments']} seconds ({r['samples']} clips, {r['missing_videos']} missing) "
                f"-> {Path(r['run']) / ('eval-' + r['split'] + '.json')}"
            )
            lines.append(format_localization(r["localization"], r["reference"]))
        if len(summary["results"]) > 1:
            a = summary["accuracy"]
            lines.append(f"mean over seeds: {a['mean']:.4f} ± {a['std']:.4f}")
        if any(r.get("random_features") for r in summary["results"].values()):
            lines.append(RANDOM_WARNING)
        return "\n".join(lines)
    lines.append(f"cross-modal {summary['split']} split, {summary['source']}:")
    for name, m in summary["results"].items():
        lines.append(f"  {name}: {format_metrics(m)}")
    if len(summary["results"]) > 1:
        a, v = summary["a2v_accuracy"], summary["v2a_accuracy"]
        lines.append(
            f"  mean: A2V {100 * a['mean']:.1f} ± {100 * a['std']:.1f}%  "
            f"V2A {100 * v['mean']:.1f} ± {100 * v['std']:.1f}%"
        )
    lines.append(f"  metrics and pictures in {summary['out_dir']}  ({crossmodal_reference()})")
    if summary.get("random_features"):
        lines.append(RANDOM_WARNING)
    return "\n".join(lines)
