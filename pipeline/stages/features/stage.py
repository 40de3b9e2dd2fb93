"""Features stage: per-clip audio (VGGish) and visual (VGG-19) stores from the segments.

Stores (``pipeline.core.store``, one row per clip, clips = the segmented ok clips in manifest order):

- ``audio`` (10, 128): VGGish on the segments stage's log-mel patches, ``--vggish-output`` mode;
- ``audio_maps`` (10, 6, 4, 512): the VGGish pool5 map (``--audio-maps``);
- ``visual`` (10, 7, 7, 512) and ``visual_vec`` (10, 512, the 7x7 mean of the same maps): from the
  visual extractor (``FeaturesConfig.visual_backend``, VGG-19 by default);
- ``c3d`` (10, 512) and ``c3d_maps`` (10, 4, 4, 512, ``--c3d-maps``): C3D pool5 of each second's 16-frame
  clip (``pipeline.backbones.c3d``); with ``--features visual,c3d`` every clip is decoded once for both.

Each store is filled shard by shard (resumable; ``--num-shards K --shard-index i`` lets K processes
fill disjoint shards; the last to finish, or ``--merge``, writes the index). A store records which
weights made it; a partly written store is only resumed with the same weights and settings.

A store is reused only when it matches what is asked. Its ``inputs.json`` (written before any shard)
records the settings asked (dtype, weights, precision, output mode, ...) and, per clip, a hash of
what its features are made from (the clip file and, for visual, the frame plan: see
:func:`pipeline.stages.segments.clip_fingerprints`); ``meta.json`` repeats the settings and the
hashes of the clip list and of the inputs. On a later run:

- same clips, same inputs, same settings: "already complete", not rewritten;
- other settings (``--dtype``, weights, ``--precision``, ``--vggish-output``, ...): the stage stops
  with a message naming each difference and ``--force`` (it never mixes two settings in one store);
- other clips or inputs (new clips segmented, a clip re-downloaded, another frames per segment): the
  store is extended. The finished store waits in ``.<name>.previous`` while a new plan is filled:
  every shard whose clips are unchanged is copied over, only new or changed clips are computed.

Without pretrained weights the stage refuses to run unless ``--allow-random-weights``, and then
marks the store ``random_weights`` and says so loudly.

Two engines fill the same stores: :mod:`.local` (this process) and :mod:`.ray_engine` (a Ray Data
pipeline, ``--engine ray``); what they share is :mod:`.core`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.core.device import reuse_freed_memory
from pipeline.core.io import write_json
from pipeline.core.layout import DataLayout
from pipeline.core.store import (
    DTYPES,
    FeatureStore,
    StoreError,
    StoreWriter,
    carry_over,
    previous_dir,
)
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
from pipeline.stages.segments import clip_fingerprints, load_segments

ENGINES = ("local", "ray")


def merge_store(
    cfg: FeaturesConfig, name: str, ids: list[str], row: tuple[int, ...]
) -> dict[str, Any]:
    """Write the index of a store whose shards other processes filled (``--merge``)."""
    root = cfg.layout.store(name)
    if not (root / "plan.json").is_file():
        raise FeaturesError(f"{root}: no store to merge (run `avel features` first)")
    planned = json.loads((root / "plan.json").read_text()).get("clip_ids") or []
    order = planned if set(planned) == set(ids) else ids  # an extended store has its own order
    writer = StoreWriter.open(
        cfg.data_dir, name, order, row, dtype=cfg.dtype, shard_size=cfg.shard_size
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


# ----------------------------------------------------------------------------- reuse


INPUTS_FILE = "inputs.json"


def requested(cfg: FeaturesConfig, kind: str) -> dict[str, Any]:
    """The settings of ``cfg`` that make the ``kind`` features what they are (compared on reuse)."""
    if kind == "audio":
        return {
            "dtype": cfg.dtype,
            "vggish_output": cfg.vggish_output,
            "vggish_checkpoint": cfg.vggish_checkpoint,
            "vggish_pca_params": cfg.vggish_pca_params,
        }
    if kind == "c3d":
        return {
            "dtype": cfg.dtype,
            "c3d_weights": cfg.c3d_weights,
            "precision": cfg.precision,
            "c3d_crop": cfg.c3d_crop,
        }
    backend = cfg.visual_backend
    return {
        "dtype": cfg.dtype,
        "vgg19_weights": cfg.vgg19_weights,
        "precision": cfg.precision,
        "frame_size": cfg.frame_size,
        "visual_backend": None
        if backend is None
        else f"{getattr(backend, '__module__', '')}.{getattr(backend, '__qualname__', type(backend).__name__)}",
    }


def _digest(values: Any) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def inputs_record(
    cfg: FeaturesConfig, kind: str, ids: list[str], fingerprints: dict[str, str], fps: int
) -> dict[str, Any]:
    """What a store of ``kind`` over ``ids`` is made from (``inputs.json``; meta.json without the
    per-clip hashes)."""
    ordered = sorted(ids)
    return {
        "kind": kind,
        "request": requested(cfg, kind),
        "frames_per_segment": fps,
        "clips": len(ids),
        "clips_sha256": _digest(ordered),
        "inputs_sha256": _digest([fingerprints[c] for c in ordered]),
        "fingerprints": {c: fingerprints[c] for c in ids},
    }


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def settings_difference(
    cfg: FeaturesConfig, meta: dict[str, Any], old: dict[str, Any] | None, record: dict[str, Any]
) -> list[str]:
    """How the settings of a finished store differ from this run's, in words (empty: the same)."""
    diffs = []
    if meta.get("dtype") != cfg.dtype:
        diffs.append(f"dtype {meta.get('dtype')} (asked {cfg.dtype})")
    before = (old or {}).get("request") or meta.get("request")
    if before is not None:
        for key, now in record["request"].items():
            if key != "dtype" and before.get(key) != now:
                diffs.append(f"{key} {before.get(key)} (asked {now})")
    if meta.get("random_weights") and not cfg.allow_random_weights:
        diffs.append("random weights (asked: pretrained; --allow-random-weights keeps this store)")
    return diffs


def plan_kind(
    cfg: FeaturesConfig,
    rows: dict[str, tuple[int, ...]],
    ids: list[str],
    records: dict[str, dict[str, Any]],
) -> tuple[dict[str, dict[str, Any]], list[str], list[str], dict[str, int]]:
    """Decide, for every store in ``rows`` (those one engine call fills): reuse it (its report),
    or build it. ``records``: each store's :func:`inputs_record`.

    Returns the reports of stores left as they are, the stores to build, the clip order their plan
    uses, and per extended store the shards carried over from its finished version. Raises
    :class:`FeaturesError` when a finished store was made with other settings.
    """
    done: dict[str, dict[str, Any]] = {}
    build: list[str] = []
    extend: list[str] = []
    order: list[str] | None = None
    for name in rows:
        root = cfg.layout.store(name)
        previous = previous_dir(root)
        record = records[name]
        if cfg.force:
            build.append(name)  # the engine starts it over once its weights are loaded
            continue
        if previous.is_dir() and is_complete(cfg, name):
            shutil.rmtree(previous)  # an extension that finished but was not cleaned up
        if previous.is_dir():
            extend.append(name)  # an extension in progress: resume it
            planned = (_read_json(root / "plan.json") or {}).get("clip_ids")
            if planned and set(planned) == set(ids):
                order = order or planned
            continue
        if not (root / "plan.json").is_file():
            build.append(name)
            continue
        old = _read_json(root / INPUTS_FILE)
        if not is_complete(cfg, name):
            build.append(name)  # resume; shards of clips whose inputs changed are redone
            planned = (_read_json(root / "plan.json") or {}).get("clip_ids")
            if planned and set(planned) == set(ids):
                order = order or planned
                _forget_changed_shards(root, planned, old, record, cfg.shard_size)
            continue
        meta = _read_json(root / "meta.json") or {}
        diffs = settings_difference(cfg, meta, old, record)
        if diffs:
            raise FeaturesError(
                f"{root}: this finished store was made with other settings: {'; '.join(diffs)}. "
                "Ask for the same settings to use it, or pass --force (FORCE=1) to rebuild it"
            )
        if old is None:  # made before stores recorded their inputs
            planned = FeatureStore(root).planned_ids
            same_fps = (
                record["kind"] == "audio"
                or meta.get("frames_per_segment") == record["frames_per_segment"]
            )
            if set(planned) == set(ids) and same_fps:
                done[name] = existing_report(cfg, name)
                continue
            raise FeaturesError(
                f"{root}: this store ({meta.get('source', 'unknown source')}) does not record what "
                f"it was made from, and it does not match the segments ({len(planned)} clips, "
                f"{meta.get('frames_per_segment')} frames per segment; the segments have {len(ids)} "
                f"clips, {record['frames_per_segment']}); pass --force (FORCE=1) to rebuild it"
            )
        same = all(old.get(k) == record[k] for k in ("clips_sha256", "inputs_sha256"))
        if same:
            done[name] = existing_report(cfg, name)
            continue
        extend.append(name)
    if (
        extend
        and cfg.num_shards > 1
        and not any(previous_dir(cfg.layout.store(n)).is_dir() for n in extend)
    ):
        raise FeaturesError(
            f"{', '.join(extend)}: finished, but made from other clips than the segments now "
            "list; extend it with one process first (`avel features` without --num-shards), or "
            "pass --force (FORCE=1) to rebuild it"
        )
    for name in done:  # an engine may open a finished store beside the ones it builds
        planned = (_read_json(cfg.layout.store(name) / "plan.json") or {}).get("clip_ids")
        if order is None and planned and set(planned) == set(ids):
            order = planned
    carried: dict[str, int] = {}
    for name in extend:
        order, carried[name] = _extend(cfg, name, rows[name], ids, records[name], order)
    for name in build:
        root = cfg.layout.store(name)
        if cfg.force:
            continue  # --force clears the folder when the engine opens it: recorded once finished
        root.mkdir(parents=True, exist_ok=True)
        if not (root / "plan.json").is_file() or not (root / INPUTS_FILE).is_file():
            write_json(records[name], root / INPUTS_FILE)
    return done, build + extend, order or ids, carried


def _forget_changed_shards(
    root: Path, planned: list[str], old: dict[str, Any] | None, record: dict[str, Any], size: int
) -> None:
    """In a partly written store, drop the receipts of shards holding a clip whose inputs changed
    since the store was planned (they are computed again), and record the current inputs."""
    if old is None or old.get("inputs_sha256") == record["inputs_sha256"]:
        return
    before, now = old.get("fingerprints") or {}, record["fingerprints"]
    for shard in range(-(-len(planned) // size)):
        if any(before.get(c) != now[c] for c in planned[shard * size : (shard + 1) * size]):
            (root / f"shard-{shard:05d}.index.parquet").unlink(missing_ok=True)
    write_json(record, root / INPUTS_FILE)


def _extend(
    cfg: FeaturesConfig,
    name: str,
    row: tuple[int, ...],
    ids: list[str],
    record: dict[str, Any],
    order: list[str] | None,
) -> tuple[list[str], int]:
    """Plan a finished store anew over ``ids``, keeping what is unchanged; return the plan's clip
    order and the shards copied over from the finished version."""
    root = cfg.layout.store(name)
    previous = previous_dir(root)
    if not previous.is_dir():
        os.replace(root, previous)  # atomic: the finished store is either here or there
    old_store = FeatureStore(previous)
    before = (_read_json(previous / INPUTS_FILE) or {}).get("fingerprints") or {}
    now = record["fingerprints"]
    planned = old_store.planned_ids
    keep = {c for c in planned if c in now and before.get(c) == now[c]}
    if order is None:
        order = [c for c in planned if c in keep] + [c for c in ids if c not in keep]
    writer = StoreWriter.open(
        cfg.data_dir, name, order, row, dtype=cfg.dtype, shard_size=cfg.shard_size
    )
    identity = _read_json(previous / "run.json")
    if keep and identity is not None and not (root / "run.json").is_file():
        # rows are carried over: the same weights and settings must fill the rest (the engines
        # check run.json); the kept clips' inputs, frames included, are unchanged by construction
        identity["frames_per_segment"] = record["frames_per_segment"]
        write_json(identity, root / "run.json")
    write_json(record, root / INPUTS_FILE)
    return order, carry_over(writer, old_store, keep)


def record_inputs(cfg: FeaturesConfig, name: str, record: dict[str, Any]) -> None:
    """Once a store is finished: its meta.json gets the request and input hashes, and the
    finished version an extension started from goes."""
    root = cfg.layout.store(name)
    meta = _read_json(root / "meta.json")
    if meta is None or not (root / "index.parquet").is_file():
        return
    if _read_json(root / INPUTS_FILE) != record:
        write_json(record, root / INPUTS_FILE)
    summary = {k: v for k, v in record.items() if k not in ("fingerprints", "request")}
    if meta.get("inputs") != summary or meta.get("request") != record["request"]:
        meta.update(inputs=summary, request=record["request"])
        write_json(meta, root / "meta.json")
    shutil.rmtree(previous_dir(root), ignore_errors=True)


def run_features(cfg: FeaturesConfig) -> dict[str, Any]:
    """Build (or resume, or merge) the requested feature stores; return the summary."""
    cfg.data_dir = Path(cfg.data_dir)
    _check(cfg)
    reuse_freed_memory()
    segments = load_segments(cfg.data_dir)
    ids = list(dict.fromkeys(segments["clip_id"]))
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
    Runner = Callable[[list[str], list[str]], dict[str, Any]]
    runners: dict[str, Runner] = {
        "audio": lambda order, names: run_audio(cfg, order, fps, names),
        "visual": lambda order, names: run_visual(cfg, order, segments, fps),
        "c3d": lambda order, names: run_visual_c3d(cfg, order, segments, fps, names),
    }
    if cfg.engine == "ray" and not cfg.merge:
        from pipeline.stages.features.ray_engine import (
            run_audio_ray,
            run_c3d_ray,
            run_visual_ray,
        )

        runners = {
            "audio": lambda order, names: run_audio_ray(cfg, order, fps, names),
            "visual": lambda order, names: run_visual_ray(cfg, order, segments, fps),
            "c3d": lambda order, names: run_c3d_ray(cfg, order, segments, fps, names),
        }
    for kind in cfg.features:
        if kind == "c3d" and "visual" in cfg.features:
            continue  # filled together with the visual stores: each clip is decoded once
        rows = store_rows(cfg, kind)
        kinds = {n: kind for n in rows}
        if kind == "visual" and "c3d" in cfg.features:
            rows = {**rows, **store_rows(cfg, "c3d")}
            kinds.update({n: "c3d" for n in store_rows(cfg, "c3d")})
            runners["visual"] = runners["c3d"]
        records = {
            k: inputs_record(cfg, k, ids, clip_fingerprints(segments, k), fps)
            for k in set(kinds.values())
        }
        record = {n: records[k] for n, k in kinds.items()}
        try:
            if cfg.merge:
                for n, row in rows.items():
                    summary["stores"][n] = merge_store(cfg, n, ids, row)
                    record_inputs(cfg, n, record[n])
                continue
            done, build, order, carried = plan_kind(cfg, rows, ids, record)
            summary["stores"].update(done)
            if build:
                reports = runners[kind](order, build)
                for n, report in reports.items():
                    if n in carried:
                        report["carried_over"] = carried[n]
                    record_inputs(cfg, n, record[n])
                summary["stores"].update(reports)
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
        elif r.get("carried_over"):
            state += f", extended ({r['carried_over']} unchanged shard(s) kept)"
        counts = f", {r['videos']} videos, {r['failed']} failed" if "videos" in r else ""
        lines.append(
            f"  {name}: {state}; wrote {r['shards_written']} shard(s){counts} -> {r['path']}"
        )
        if r.get("weights"):
            lines.append(f"    weights: {r['weights']}")
        if r.get("precision"):
            lines.append(f"    precision: {r['precision']}")
        if r.get("speed"):
            lines.append(f"    speed: {r['speed']}")
    random = [n for n, r in summary["stores"].items() if r.get("random_weights")]
    if random:
        lines.append(RANDOM_BANNER.format(what=", ".join(random)))
    if errors:
        lines.extend(f"  {line}" for line in format_errors(summary))
    return "\n".join(lines)


def format_errors(summary: dict[str, Any]) -> list[str]:
    """One line per kind that was not extracted."""
    return [f"{kind}: NOT extracted: {message}" for kind, message in summary["errors"].items()]
