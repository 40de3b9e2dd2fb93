"""The one checkpoint format of every run folder's ``best.pt`` (tensors + JSON-able config).

``save_checkpoint(model, path, **extra)`` writes ``{"format", "task", "model": {"name", "options",
["num_classes"]}, "state_dict", **extra}``; ``load_checkpoint(path)`` rebuilds the network with
``models.networks.build_model`` (``torch.load(weights_only=True)``: nothing in the file is executed)
and also reads the two earlier formats: localization ``"avel-localization-checkpoint-1"`` (``model``
= the network's flat config) and the cross-modal ``{"model": NAME, "options": {...}, "state_dict"}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.core.io import atomic_path

CHECKPOINT_FORMAT = "avel-checkpoint-2"
LEGACY_LOCALIZATION_FORMAT = "avel-localization-checkpoint-1"


class CheckpointError(ValueError):
    """A file that is not an avel checkpoint of any known format."""


def model_spec(model, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"name", "options", ["num_classes"]}`` of a network built by ``build_model`` (its
    ``config``), or of another one from its ``name`` and the builder ``options``."""
    config = getattr(model, "config", None)
    if config is None:
        return {"name": model.name, "options": dict(options or {})}
    config = dict(config)
    name, num_classes = config.pop("name"), config.pop("num_classes", None)
    spec = {"name": name, "options": config}
    return spec if num_classes is None else {**spec, "num_classes": num_classes}


def save_checkpoint(model, path: str | Path, options: dict | None = None, **extra: Any) -> None:
    """Write ``model``'s checkpoint atomically (``extra``: epoch, val figures, provenance...)."""
    import torch

    from models.networks import model_task

    spec = model_spec(model, options)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "task": model_task(spec["name"]),
        "model": spec,
        **extra,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    with atomic_path(Path(path), suffix=".pt") as tmp:
        torch.save(payload, tmp)


def normalize_payload(payload: dict, path: str | Path = "") -> dict:
    """Any known format -> the current one (``task``, ``model = {name, options, [num_classes]}``)."""
    from models.networks import model_task

    fmt = payload.get("format")
    if fmt == CHECKPOINT_FORMAT:
        return payload
    if fmt == LEGACY_LOCALIZATION_FORMAT:
        config = dict(payload["model"])
        name, num_classes = config.pop("name"), config.pop("num_classes")
        spec = {"name": name, "options": config, "num_classes": num_classes}
        return {**payload, "format": CHECKPOINT_FORMAT, "task": "localization", "model": spec}
    if fmt is None and isinstance(payload.get("model"), str) and "state_dict" in payload:
        spec = {"name": payload["model"], "options": dict(payload.get("options") or {})}
        rest = {k: v for k, v in payload.items() if k not in ("model", "options")}
        return {
            **rest,
            "format": CHECKPOINT_FORMAT,
            "task": model_task(spec["name"]),
            "model": spec,
        }
    raise CheckpointError(
        f"{path}: not an avel checkpoint (format {fmt!r}); a release .pt file is imported with "
        "`avel import-checkpoint FILE`, a run is retrained with `avel train ... --force`"
    )


def read_payload(path: str | Path, device="cpu") -> dict:
    """The payload of an avel checkpoint in the current format, read with
    ``torch.load(weights_only=True)``; :class:`CheckpointError` (never torch's advice to load the
    file unsafely) when the file is corrupt or not a checkpoint."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt, truncated, or holding more than tensors
        raise CheckpointError(
            f"{path}: not a readable avel checkpoint ({type(exc).__name__}: corrupt, truncated, or "
            "not tensors only; it is never executed); retrain the run (`avel train ... --force`), "
            "or import a release .pt file with `avel import-checkpoint FILE`"
        ) from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: not an avel checkpoint (a {type(payload).__name__})")
    return normalize_payload(payload, path)


def load_checkpoint(path: str | Path, device="cpu"):
    """``(network in eval mode on device, payload)`` of an avel checkpoint of any known format."""
    from models.networks import build_model

    payload = read_payload(path, device)
    spec = payload["model"]
    if "num_classes" in spec:
        model = build_model(spec["name"], num_classes=spec["num_classes"], **spec["options"])
    else:
        model = build_model(spec["name"], **spec["options"])
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval(), payload
