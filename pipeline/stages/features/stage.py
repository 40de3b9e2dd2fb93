"""Features stage: per-clip audio (VGGish) and visual (VGG-19) stores from the segments.

Stores (``pipeline.core.store``, one row per clip, clips = the segmented ok clips in manifest order):

- ``audio`` (10, 128): VGGish on the segments stage's log-mel patches, ``--vggish-output`` mode;
- ``audio_maps`` (10, 6, 4, 512): the VGGish pool5 map (``--audio-maps``);
- ``visual`` (10, 7, 7, 512) and ``visual_vec`` (10, 512, the 7x7 mean of the same maps): from the
  visual extractor (``FeaturesConfig.visual_backend``, VGG-19 by default);
- ``c3d`` (10, 512) and ``c3d_maps`` (10, 4, 4, 512, ``--c3d-maps``): C3D pool5 of each second's 16-frame
  clip (``pipeline.backbones.c3d``); with ``--features visual,c3d`` every clip is decoded once for both.

Each store is filled shard by shard (resumable; ``--num-shards K --shard-index i`` lets K processes
fill disjoint shards; the last to finish, or ``--merge``, writes the index). A finished store is not
rewritten without ``--force``. A store records which weights made it; a partly written store is only
resumed with the same weights and settings. Without pretrained weights the stage refuses to run
unless ``--allow-random-weights``, and then marks the store ``random_weights`` and says so loudly.

Two engines fill the same stores: :mod:`.local` (this process) and :mod:`.ray_engine` (a Ray Data
pipeline, ``--engine ray``); what they share is :mod:`.core`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.core.layout import DataLayout
from pipeline.core.store import DTYPES, StoreError, StoreWriter
from pipeline.stages.features.core import (
    KINDS,
    RANDOM_BANNER,
    FeaturesConfig,
    FeaturesError,
    store_report,
    store_rows,
    weights_line,
)
from pipeline.stages.features.local import run_audio, run_visual, run_visual_c3d
from pipeline.stages.segments import load_segments

ENGINES = ("local", "ray")


def merge_store(
    cfg: FeaturesConfig, name: str, ids: list[str], row: tuple[int, ...]
) -> dict[str, Any]:
    """Write the index of a store whose shards other processes filled (``--merge``)."""
    root = cfg.layout.store(name)
    if not (root / "plan.json").is_file():
        raise FeaturesError(f"{root}: no store to merge (run `avel features` first)")
    writer = StoreWriter.open(
        cfg.data_dir, name, ids, row, dtype=cfg.dtype, shard_size=cfg.shard_size
    )
    meta_path = root / "meta.json"
    writer.meta = (
        json.loads(meta_path.read_text())
        if meta_path.is_file()
        else json.loads((root / "run.json").read_text())
    )
    report = store_report(writer, 0, writer.finalize())
    report["random_weights"] = bool(writer.meta.get("random_weights"))
    return report


def is_complete(cfg: FeaturesConfig, name: str) -> bool:
    root = cfg.layout.store(name)
    return (root / "meta.json").is_file() and (root / "index.parquet").is_file()


def existing_report(cfg: FeaturesConfig, name: str) -> dict[str, Any]:
    """The report of a finished store that this run leaves as it is."""
    root = cfg.layout.store(name)
    meta = json.loads((root / "meta.json").read_text())
    return {
        "path": str(root),
        "shards_written": 0,
        "shards_pending": 0,
        "complete": True,
        "already_complete": True,
        "videos": meta["videos"],
        "failed": len(meta["failed"]),
        "random_weights": bool(meta.get("random_weights")),
        "weights": weights_line(meta),
    }


def _check(cfg: FeaturesConfig) -> None:
    unknown = set(cfg.features) - set(KINDS)
    if unknown or not cfg.features:
        raise FeaturesError(
            f"--features takes a comma list of {KINDS}, got {','.join(cfg.features)}"
        )
    if cfg.dtype not in DTYPES:
        raise FeaturesError(f"--dtype must be one of {sorted(DTYPES)}, got {cfg.dtype}")
    if not 0 <= cfg.shard_index < cfg.num_shards:
        raise FeaturesError(f"--shard-index {cfg.shard_index} outside 0..{cfg.num_shards - 1}")
    if (cfg.batch_size is not None and cfg.batch_size < 1) or cfg.shard_size < 1:
        raise FeaturesError("--batch-size and --shard-size must be positive")
    if cfg.engine not in ENGINES:
        raise FeaturesError(f"--engine must be local or ray, got {cfg.engine!r}")


def run_features(cfg: FeaturesConfig) -> dict[str, Any]:
    """Build (or resume, or merge) the requested feature stores; return the summary."""
    cfg.data_dir = Path(cfg.data_dir)
    _check(cfg)
    segments = load_segments(cfg.data_dir)
    # segments.parquet calls the clip ID ``youtube_id``
    ids = list(dict.fromkeys(segments["youtube_id"]))
    if not ids:
        raise FeaturesError(
            f"{DataLayout(cfg.data_dir).segments_table} lists no segmented clip: nothing to extract"
        )
    fps = int(len(segments["frame_indices"].iloc[0]))
    summary: dict[str, Any] = {
        "clips": len(ids),
        "frames_per_segment": fps,
        "stores": {},
        "errors": {},
    }
    runners: dict[str, Callable[[list[str]], dict[str, Any]]] = {
        "audio": lambda names: run_audio(cfg, ids, fps, names),
        "visual": lambda names: run_visual(cfg, ids, segments, fps),
        "c3d": lambda names: run_visual_c3d(cfg, ids, segments, fps, names),
    }
    if cfg.engine == "ray" and not cfg.merge:
        from pipeline.stages.features.ray_engine import (
            run_audio_ray,
            run_c3d_ray,
            run_visual_ray,
        )

        runners = {
            "audio": lambda names: run_audio_ray(cfg, ids, fps, names),
            "visual": lambda names: run_visual_ray(cfg, ids, segments, fps),
            "c3d": lambda names: run_c3d_ray(cfg, ids, segments, fps, names),
        }
    for kind in cfg.features:
        if kind == "c3d" and "visual" in cfg.features:
            continue  # filled together with the visual stores: each clip is decoded once
        rows = store_rows(cfg, kind)
        if kind == "visual" and "c3d" in cfg.features:
            rows = {**rows, **store_rows(cfg, "c3d")}
            runners["visual"] = runners["c3d"]
        try:
            if cfg.merge:
                summary["stores"].update(
                    {n: merge_store(cfg, n, ids, row) for n, row in rows.items()}
                )
                continue
            done = {
                n: existing_report(cfg, n) for n in rows if not cfg.force and is_complete(cfg, n)
            }
            summary["stores"].update(done)
            if len(done) < len(rows):
                summary["stores"].update(runners[kind]([n for n in rows if n not in done]))
        except (FeaturesError, StoreError) as exc:
            summary["errors"][kind] = str(exc)
    return summary


def format_summary(summary: dict[str, Any], errors: bool = True) -> str:
    """The summary for people; ``errors=False`` leaves out the kinds that failed (the command
    prints those to stderr)."""
    lines = [
        f"features: {summary['clips']} segmented clips, {summary['frames_per_segment']} frames per segment"
    ]
    for name, r in summary["stores"].items():
        state = "complete" if r["complete"] else f"{r['shards_pending']} shard(s) still pending"
        if r.get("already_complete"):
            state = "already complete (not rewritten; --force to rebuild)"
        counts = f", {r['videos']} videos, {r['failed']} failed" if "videos" in r else ""
        lines.append(
            f"  {name}: {state}; wrote {r['shards_written']} shard(s){counts} -> {r['path']}"
        )
        if r.get("weights"):
            lines.append(f"    weights: {r['weights']}")
    random = [n for n, r in summary["stores"].items() if r.get("random_weights")]
    if random:
        lines.append(RANDOM_BANNER.format(what=", ".join(random)))
    if errors:
        lines.extend(f"  {line}" for line in format_errors(summary))
    return "\n".join(lines)


def format_errors(summary: dict[str, Any]) -> list[str]:
    """One line per kind that was not extracted."""
    return [f"{kind}: NOT extracted: {message}" for kind, message in summary["errors"].items()]
