"""The Ray executor (``avel features --engine ray``, ``pip install avel[ray]``): the driver's work
as a Ray Data pipeline, with the same backbones, so the stores are the same as the local
executor's::

    work items (Parquet)  --read_parquet-->
    decode (CPU tasks, ``--decode-cpus`` each): every backbone's inputs of one clip (fixed shapes
        declared by the backbones: :func:`pipeline.backbones.base.input_shapes`), the clip decoded
        once (:func:`pipeline.backbones.base.decode_inputs`); fixed-size tensors, zeros + the error
        for a clip that fails
    backbones (an actor pool, ``--model-actors``, ``num_gpus=1`` per actor on CUDA): every backbone
        on batches of whole clips, exactly as the local executor runs them
    driver: results stream back to the extraction driver, which stages and writes them.

Nothing here knows a backbone by name. On a cluster, DATA_DIR (clips, segments, weights cache,
stores) must be on a shared filesystem and avel installed on every node.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.backbones.base import Backbone, Request, decode_inputs, input_request, input_shapes
from pipeline.core.device import reuse_freed_memory
from pipeline.core.io import write_parquet
from pipeline.stages.features.core import FeaturesConfig, FeaturesError


def require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise FeaturesError(
            f"--engine ray needs Ray Data ({exc}): pip install 'avel[ray]' (or use --engine local)"
        ) from exc
    return ray


def init_ray(address: str | None) -> Any:
    """Connect to ``address`` (e.g. "auto") or start a local Ray, unless already initialised."""
    ray = require_ray()
    if not ray.is_initialized():
        root = str(Path(__file__).resolve().parents[3])  # workers import this checkout's avel
        options: dict[str, Any] = {"runtime_env": {"env_vars": {"PYTHONPATH": root}}}
        if address is None:
            options["include_dashboard"] = False
        ray.init(address=address, log_to_driver=False, **options)
    ray.data.DataContext.get_current().enable_progress_bars = False
    return ray


def device(cfg: FeaturesConfig) -> str:
    """The actors' device: cfg.device, with "auto" = cuda when the cluster has GPUs."""
    ray = init_ray(cfg.ray_address)
    if cfg.device == "auto":
        return "cuda" if ray.cluster_resources().get("GPU", 0) > 0 else "cpu"
    return cfg.device


def decode_group(
    row: dict[str, Any],
    requests: dict[str, Request],
    shapes: dict[str, tuple[tuple[int, ...], type]],
    size: int,
) -> dict[str, Any]:
    """Ray map: one group of up to ``size`` clips -> their decoded inputs (``in:<key>`` columns of
    ``size`` rows, zeros past the group's end or for a clip that fails) and their errors."""
    n = len(row["clip_ids"])
    errors = [""] * size
    inputs = {k: np.zeros((size, *shape), dtype) for k, (shape, dtype) in shapes.items()}
    for j in range(n):
        asked = {
            name: (
                np.asarray(row[f"plan:{name}"][j], np.int64) if r.kind == "frames" else None,
                r,
            )
            for name, r in requests.items()
        }
        try:
            decoded = decode_inputs(row["paths"][j], row["patches"][j] or None, asked)
        except Exception as exc:  # noqa: BLE001 - one bad clip is recorded, never fatal
            errors[j] = str(exc) or type(exc).__name__
            continue
        for k in shapes:
            inputs[k][j] = decoded[k]
    return {
        "group": row["group"],
        "count": n,
        "error": np.array(errors),
        **{f"in:{k}": v for k, v in inputs.items()},
    }


class BackbonesActor:
    """Ray actor: every backbone, loaded once on the actor's device, over one group of clips."""

    def __init__(self, backbones: list[Backbone], device: str) -> None:
        reuse_freed_memory()
        self.backbones = backbones
        for b in backbones:
            b.load(device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keys = [k[3:] for k in batch if k.startswith("in:")]
        out: dict[str, Any] = {
            "group": batch["group"],
            "count": batch["count"],
            "error": batch["error"],
        }
        columns = {
            f"out:{b.network}:{name}": np.zeros(
                (len(batch["group"]), *batch["error"].shape[1:], *shape), np.float32
            )
            for b in self.backbones
            for name, shape in b.outputs().items()
        }
        for g in range(len(batch["group"])):
            errors = batch["error"][g]
            ok = [j for j in range(int(batch["count"][g])) if not errors[j]]
            clips = [{k: np.ascontiguousarray(batch[f"in:{k}"][g][j]) for k in keys} for j in ok]
            for b in self.backbones:
                for j, value in zip(ok, b.run(clips), strict=True):
                    for name in b.outputs():
                        columns[f"out:{b.network}:{name}"][g, j] = value[name]
        out.update(columns)
        return out


def plan_records(groups: list[list[Any]], frames: list[str]) -> pd.DataFrame:
    """The work items Ray reads: one row per group of clips, with each clip's path, patches and
    the frame plans of the backbones in ``frames``."""
    return pd.DataFrame(
        [
            {
                "group": k,
                "clip_ids": [it.clip_id for it in group],
                "paths": [it.path for it in group],
                "patches": [it.patches or "" for it in group],
                **{f"plan:{n}": [it.plans[n] for it in group] for n in frames},
            }
            for k, group in enumerate(groups)
        ]
    )


def write_plan(cfg: FeaturesConfig, groups: list[list[Any]], frames: list[str]) -> Path:
    """Write :func:`plan_records` where this process's Ray pipeline reads it; returns the path."""
    work = cfg.layout.ray_staging
    plan_path = work / f"plan-{cfg.shard_index}of{cfg.num_shards}-{os.getpid()}.parquet"
    write_parquet(plan_records(groups, frames), plan_path)
    return plan_path


def run(
    cfg: FeaturesConfig,
    backbones: list[Backbone],
    groups: list[list[Any]],
    device: str,
    stats: dict[str, float],
) -> Iterator[tuple[Any, dict[str, dict[str, np.ndarray]] | str]]:
    """Yield ``(item, {network: primary outputs} | error)`` for every item, as results arrive; the
    clips of one group go through each backbone in one call, as in the local executor."""
    ray = init_ray(cfg.ray_address)
    requests = {b.network: r for b in backbones if (r := input_request(b)) is not None}
    sizes = {n: r for n, r in requests.items() if r.kind == "frames"}
    first = groups[0][0]
    shapes = input_shapes(backbones, {n: len(p) for n, p in first.plans.items()})
    size = max(len(g) for g in groups)
    plan_path = write_plan(cfg, groups, list(sizes))
    cuda = device.startswith("cuda")
    actors = cfg.model_actors or (max(1, int(ray.cluster_resources().get("GPU", 0))) if cuda else 1)
    ds = ray.data.read_parquet(str(plan_path))
    ds = ds.map(
        decode_group,
        fn_kwargs={"requests": requests, "shapes": shapes, "size": size},
        num_cpus=cfg.decode_cpus,
    )
    ds = ds.map_batches(
        BackbonesActor,
        fn_constructor_kwargs={"backbones": backbones, "device": device},
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_gpus=1 if cuda else 0,
        num_cpus=0 if cuda else 1,
    )
    try:
        for row in ds.iter_rows():
            group = groups[int(row["group"])]
            for j, item in enumerate(group):
                error = str(row["error"][j])
                if error:
                    yield item, error
                    continue
                yield (
                    item,
                    {
                        b.network: {
                            name: np.asarray(row[f"out:{b.network}:{name}"][j])
                            for name in b.outputs()
                        }
                        for b in backbones
                    },
                )
    finally:
        plan_path.unlink(missing_ok=True)
