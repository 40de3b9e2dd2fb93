"""The run folder of every training task.

``RUN_DIR/NAME/seed-K/``: ``config.json`` (the configuration, its ``fingerprint`` and the
``provenance`` of ``pipeline.core.provenance``: git commit and dirty flag, versions, device),
``metrics.jsonl`` (one line per epoch), ``metrics.json`` (final metrics, written last), ``best.pt``
(``models.training.checkpoint``), ``curves.png`` and the task's pictures.
``RUN_DIR/NAME/summary.json`` and ``summary.md``: mean ± sample std over seeds (``mean_std``).
A seed whose ``metrics.json`` exists and whose config has the same fingerprint is finished.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.io import CorruptFileError, atomic_path, short_reason, write_json

CONFIG, METRICS, HISTORY, BEST = "config.json", "metrics.json", "metrics.jsonl", "best.pt"
SUMMARY, SUMMARY_MD = "summary.json", "summary.md"


def mean_std(values: list[float]) -> dict[str, float]:
    """``{"mean", "std", "n"}``: the mean and the sample standard deviation (0 for one value)."""
    arr = np.asarray(values, dtype=float)
    return {
        "mean": float(arr.mean()) if arr.size else float("nan"),
        "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        "n": int(arr.size),
    }


def seed_dirs(run: str | Path) -> list[Path]:
    """``run`` itself when it holds a ``best.pt``, else its ``seed-*`` folders that do (by seed)."""
    run = Path(run)
    if (run / BEST).is_file():
        return [run]

    def key(p: Path) -> tuple[int, str]:
        tail = p.name.removeprefix("seed-")
        return (int(tail), "") if tail.lstrip("-").isdigit() else (math.inf, p.name)  # type: ignore[return-value]

    return sorted((p.parent for p in run.glob(f"seed-*/{BEST}")), key=key)


def read_config(seed_dir: str | Path) -> dict[str, Any]:
    """A run's ``config.json`` ({} when there is none); a corrupt one is one clear error."""
    path = Path(seed_dir) / CONFIG
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_bytes())
    except ValueError as exc:  # not JSON, not UTF-8
        config, reason = None, short_reason(exc)
    else:
        reason = f"a JSON {type(config).__name__}, not an object"
    if not isinstance(config, dict):
        raise CorruptFileError(
            f"{path}: not a run configuration ({reason}); retrain the run (`avel train ... "
            "--force`) or import it again (`avel import-checkpoint ... --force`)"
        )
    return config


def finished(seed_dir: Path, fingerprint: dict) -> dict | None:
    """The metrics of a finished seed trained with the same fingerprint, else None."""
    if not (seed_dir / METRICS).is_file() or not (seed_dir / CONFIG).is_file():
        return None
    if read_config(seed_dir).get("fingerprint") != json.loads(json.dumps(fingerprint)):
        return None
    return json.loads((seed_dir / METRICS).read_text())


def start_seed(seed_dir: Path, config: dict) -> None:
    """Make the folder fresh for training: stale results removed, ``config.json`` written."""
    seed_dir.mkdir(parents=True, exist_ok=True)
    for stale in (METRICS, HISTORY, BEST):
        (seed_dir / stale).unlink(missing_ok=True)
    write_json(config, seed_dir / CONFIG)


def append_history(seed_dir: Path, row: dict) -> None:
    with open(seed_dir / HISTORY, "a") as f:
        f.write(json.dumps(row) + "\n")


def write_summary(experiment_dir: Path, summary: dict, columns: dict[str, str]) -> None:
    """``summary.json`` and ``summary.md`` (one row per seed, then mean ± std of ``columns``:
    metric key -> column title; values under ``summary["runs"][seed]`` and ``summary[key]``)."""
    write_json(summary, experiment_dir / SUMMARY)
    keys = list(columns)
    lines = [
        f"# {summary['name']}",
        "",
        "| seed | best epoch | " + " | ".join(columns.values()) + " |",
        "|---|---|" + "---|" * len(keys),
    ]
    for seed, r in summary["runs"].items():
        cells = " | ".join(f"{r[k]:.4f}" for k in keys)
        lines.append(f"| {seed} | {r['best_epoch']} | {cells} |")
    cells = " | ".join(f"{summary[k]['mean']:.4f} ± {summary[k]['std']:.4f}" for k in keys)
    lines += [f"| mean ± std | | {cells} |", ""]
    with atomic_path(experiment_dir / SUMMARY_MD, suffix=".md") as tmp:
        tmp.write_text("\n".join(lines))
