"""Models from Python: build one, train and evaluate runs, load a run's network and predict.

A run folder is what ``avel train`` writes (``RUN_DIR/NAME/seed-K/``: ``config.json``, ``best.pt``,
metrics); every function here takes a seed folder or the experiment folder above it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models import build_model, model_names
from models.data.ave import model_inputs
from models.evaluation.evaluate_run import checkpoints_of, evaluate_run
from models.training.checkpoint import load_checkpoint
from models.training.engine import TrainConfig, run_train
from pipeline.core.device import resolve_device
from pipeline.core.store import ROW_SHAPES

__all__ = ["build_model", "evaluate", "load_model", "model_names", "predict", "train"]


def train(
    data_dir: str | Path,
    model: str | None = None,
    mode: str = "supervised",
    seeds: Sequence[int] | None = None,
    run_dir: str | Path = "runs",
    force: bool = False,
    progress: bool = True,
    **settings: Any,
) -> dict:
    """Train ``model`` (default ``av_att``; ``avdln`` for ``mode="crossmodal"``) on the stores of
    ``data_dir``, one run per seed; ``settings`` are ``TrainConfig`` fields (``epochs``,
    ``batch_size``, ``lr``, ``device``, ``model_options``, ...). Finished seeds with the same
    settings are reused (``force`` retrains). Returns the summary (``experiment_dir``, per-seed
    and mean ± std figures), as ``avel train`` prints it."""
    cfg = TrainConfig(str(data_dir), mode=mode, model=model, run_dir=str(run_dir), **settings)
    return run_train(cfg, list(seeds) if seeds else None, force=force, progress=progress)


def evaluate(
    run: str | Path,
    split: str = "test",
    data_dir: str | Path | None = None,
    device: str = "auto",
) -> dict:
    """Re-evaluate a run on ``split`` of its own data folder (or ``data_dir``); localization
    runs give ``accuracy`` (mean ± std over seeds) and per-seed ``results``, cross-modal runs
    A2V / V2A. Also written into the run folder, as ``avel evaluate`` does."""
    return evaluate_run(run=run, split=split, data_dir=data_dir, device=device)


def load_model(run: str | Path, device: str = "cpu"):
    """The trained network of a run (its best checkpoint, in eval mode on ``device``); an
    experiment folder gives its first seed. ``model.stores`` names the stores it reads."""
    seed_dir = checkpoints_of(run)[0]
    model, _ = load_checkpoint(seed_dir / "best.pt", resolve_device(device))
    return model


def predict(model, features: Mapping[str, Any], device: str | None = None) -> np.ndarray:
    """Per-second class indices, (N, 10), or (10,) for one clip, of a localization network.

    ``features`` maps store names to rows: a batch of ``AVEDataset`` or a ``DataLoader``, the
    arrays of ``avel.extract``, or ``FeatureStore.gather`` results (NumPy or torch, one clip or
    a batch). Only the stores the network reads (``model.stores``) are used."""
    import torch

    from models.networks import model_task

    name = (getattr(model, "config", None) or {}).get("name")
    if name is not None and model_task(name) != "localization":
        raise ValueError(f"{name}: a {model_task(name)} network; predict takes localization ones")
    target = next(model.parameters()).device if device is None else resolve_device(device)
    missing = [name for name in model.stores if name not in features]
    if missing:
        raise KeyError(f"the network reads the stores {list(model.stores)}; missing {missing}")
    batch, single = {}, False
    for name in model.stores:
        rows = torch.as_tensor(np.asarray(features[name], dtype=np.float32))
        if rows.dim() == len(ROW_SHAPES.get(name, ())):  # one clip: no batch axis
            rows, single = rows.unsqueeze(0), True
        batch[name] = rows
    model.eval()
    with torch.no_grad():
        labels = model(*model_inputs(batch, target)).argmax(-1).cpu().numpy()
    return labels[0] if single else labels
