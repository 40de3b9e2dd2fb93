"""Features stage: the one extraction driver.

Stores (``pipeline.core.store``; one row per clip, clips = the segmented ok clips in manifest
order) come from the registered backbones (``pipeline.backbones.base``): ``audio`` (+
``audio_maps``) from VGGish on the segments' log-mel patches, ``visual`` + ``visual_vec`` from
VGG-19, ``c3d`` (+ ``c3d_maps``) from C3D.

The driver, written once for every backbone and executor:

1. builds the backbones asked for (weights by sha256, precision: fp32 unless asked otherwise);
2. per store, decides reuse / resume / extend / refuse from its identity record
   (:mod:`.lifecycle`), "already complete" only when everything matches;
3. plans the pending shards' clips and hands them to an executor, :mod:`.local` (processes on this
   machine) or :mod:`.ray_engine` (Ray Data): each clip is decoded once for every backbone that
   needs frames, batched, run; the executors know no backbone by name;
4. derives the derived stores (spatial means), stages each clip's rows as they arrive
   (``<store>/.staging``: a killed run redoes only the clips in flight) and writes a shard once
   all its clips are in; finalises the stores and records their identity.

``--num-shards K --shard-index i`` lets K processes fill disjoint shards; the last to finish, or
``--merge``, writes the index. A clip that fails is recorded with its reason, never fatal. Without
pretrained weights the stage refuses to run unless ``--allow-random-weights``, and then marks the
store ``random_weights`` and says so loudly.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.backbones.base import Backbone, BackboneError, backbone_class, derive
from pipeline.backbones.executor import ClipWork, group_items
from pipeline.backbones.waveform import WAVEFORM_RECIPE
from pipeline.core.clip_rows import ClipRows
from pipeline.core.device import reuse_freed_memory
from pipeline.core.identity import IDENTITY_FILE, read_json
from pipeline.core.io import write_json, write_npy
from pipeline.core.layout import DataLayout
from pipeline.core.provenance import device_name, ffmpeg_version, git_state, library_versions
from pipeline.core.store import DTYPES, FeatureStore, StoreError, StoreWriter, previous_dir
from pipeline.stages.features import lifecycle
from pipeline.stages.features.core import (
    KINDS,
    RANDOM_BANNER,
    FeaturesConfig,
    FeaturesError,
    progress,
)
from pipeline.stages.segments import load_segments

DECODER = "ffmpeg select of the planned frames, swscale bilinear, rgb24"


def _check(cfg: FeaturesConfig) -> None:
    from pipeline.stages.features.core import ENGINES

    unknown = set(cfg.features) - set(KINDS)
    if unknown or not cfg.features:
        raise FeaturesError(
            f"--features takes a comma list of {', '.join(KINDS)}, got {','.join(cfg.features)}"
        )
    if cfg.dtype not in DTYPES:
        raise FeaturesError(f"--dtype must be one of {sorted(DTYPES)}, got {cfg.dtype}")
    if not 0 <= cfg.shard_index < cfg.num_shards:
        raise FeaturesError(f"--shard-index {cfg.shard_index} outside 0..{cfg.num_shards - 1}")
    if (cfg.batch_size is not None and cfg.batch_size < 1) or cfg.shard_size < 1:
        raise FeaturesError("--batch-size and --shard-size must be positive")
    if cfg.engine not in ENGINES:
        raise FeaturesError(f"--engine must be local or ray, got {cfg.engine!r}")


# ----------------------------------------------------------------------------- staging


def staging_path(writer: StoreWriter, clip_id: str, error: bool = False) -> Path:
    """Where one clip's row waits for its shard: ``<store>/.staging/<clip_id>.npy|.json``."""
    return writer.root / ".staging" / f"{clip_id}.{'json' if error else 'npy'}"


def _stage(writer: StoreWriter, clip_id: str, value: np.ndarray | str) -> None:
    if isinstance(value, str):
        write_json({"error": value}, staging_path(writer, clip_id, error=True))
    else:
        write_npy(np.asarray(value).astype(DTYPES[writer.dtype]), staging_path(writer, clip_id))


def _staged(writer: StoreWriter, clip_id: str) -> np.ndarray | str | None:
    """A staged row, or None when there is none (or it is unreadable: the clip is redone)."""
    try:
        if staging_path(writer, clip_id, error=True).is_file():
            return str(json.loads(staging_path(writer, clip_id, error=True).read_text())["error"])
        if staging_path(writer, clip_id).is_file():
            value = np.load(staging_path(writer, clip_id))
            return value if value.shape == writer.row_shape else None
    except (OSError, ValueError, KeyError):
        return None
    return None


def _kept(kept: tuple[FeatureStore, set[str]] | None, clip_id: str) -> np.ndarray | str | None:
    """An unchanged clip's row (or recorded failure) in the finished version of a store."""
    if kept is None or clip_id not in kept[1]:
        return None
    store, _ = kept
    if clip_id in store:
        return np.asarray(store.get(clip_id))
    return (store.meta.get("failed") or {}).get(clip_id)


def _reused(
    kept: tuple[FeatureStore, set[str]] | None, writer: StoreWriter, clip_id: str
) -> np.ndarray | str | None:
    row = _kept(kept, clip_id)
    return row if row is not None else _staged(writer, clip_id)


class Shards:
    """Rows per pending shard (staged ones preloaded); writes a shard once all its clips are in."""

    def __init__(
        self,
        writers: dict[str, StoreWriter],
        todo: list[int],
        kept: dict[str, tuple[FeatureStore, set[str]]] | None = None,
    ) -> None:
        """``kept``: per extended store, its finished version and the clips whose rows are
        unchanged (taken from there, not computed)."""
        self.writers = writers
        first = next(iter(writers.values()))
        self.expected = {s: first.shard_ids(s) for s in todo}
        self.got: dict[int, dict[str, dict[str, Any]]] = {s: {} for s in todo}
        self.written = dict.fromkeys(writers, 0)
        kept = kept or {}
        for shard, ids in self.expected.items():
            need = {n: w for n, w in writers.items() if not w.is_done(shard)}
            for clip in ids:
                values = {n: _reused(kept.get(n), w, clip) for n, w in need.items()}
                if values and all(v is not None for v in values.values()):
                    self.got[shard][clip] = values
        for shard in list(self.got):
            self._flush(shard)

    def to_compute(self) -> list[tuple[int, str]]:
        return [(s, c) for s in self.got for c in self.expected[s] if c not in self.got[s]]

    def add(self, shard: int, clip: str, values: dict[str, np.ndarray | str]) -> None:
        """Take one clip's rows: its shard is written when this completes it, else the rows are
        staged (a killed run keeps them)."""
        self.got[shard][clip] = values
        if len(self.got[shard]) < len(self.expected[shard]):
            for name, value in values.items():
                if not self.writers[name].is_done(shard):
                    _stage(self.writers[name], clip, value)
        self._flush(shard)

    def _flush(self, shard: int) -> None:
        if len(self.got[shard]) < len(self.expected[shard]):
            return
        results = self.got.pop(shard)
        for name, writer in self.writers.items():
            if not writer.is_done(shard):
                writer.write_shard(shard, {c: v[name] for c, v in results.items()})
                self.written[name] += 1
            for clip in self.expected[shard]:
                staging_path(writer, clip).unlink(missing_ok=True)
                staging_path(writer, clip, error=True).unlink(missing_ok=True)


# ----------------------------------------------------------------------------- backbones


def _precision_cache(cfg: FeaturesConfig) -> tuple[Path, dict[str, Any]]:
    path = cfg.layout.features / "precision.json"
    try:
        return path, json.loads(path.read_text())
    except (OSError, ValueError):
        return path, {}


def build_backbones(
    cfg: FeaturesConfig, fps: int, device: str, errors: dict[str, str]
) -> list[Backbone]:
    """Every backbone asked for, prepared on ``device`` (weights and precision); a backbone that
    cannot run is an entry of ``errors`` and left out. Measured precision figures are kept in
    ``DATA_DIR/features/precision.json`` (a repeated ``auto`` run takes the same decision)."""
    path, known = _precision_cache(cfg)
    out = []
    for kind in cfg.features:
        backbone = backbone_class(kind)(cfg, cfg.layout.weights(backbone_class(kind).network), fps)
        key = f"{backbone.probe_key()}|{device}"
        try:
            backbone.prepare(
                device, None if cfg.force and cfg.precision == "auto" else known.get(key)
            )
        except BackboneError as exc:
            errors[kind] = str(exc)
            continue
        if backbone.probe is not None and known.get(key) != backbone.probe:
            known[key] = backbone.probe
            write_json(known, path)
        out.append(backbone)
    return out


def store_identity(backbone: Backbone, cfg: FeaturesConfig, fps: int, ffmpeg: str | None) -> dict:
    """A store's identity: its backbone's, plus storage dtype and, for frames, the segment plan's
    frames per second and the decoder (for a waveform, how it is decoded)."""
    identity = {**backbone.identity(), "dtype": cfg.dtype}
    if backbone.inputs == "frames":
        identity.update(frames_per_segment=fps, decoder=DECODER, ffmpeg=ffmpeg)
    elif backbone.inputs == "waveform":
        identity.update(decoder=WAVEFORM_RECIPE, ffmpeg=ffmpeg)
    return identity


@functools.lru_cache(maxsize=4)
def _provenance(device: str) -> dict[str, Any]:
    """Device name, git state and library versions: asked once per run, not once per store."""
    return {"device_name": device_name(device), "code": git_state(), "versions": library_versions()}


def store_meta(
    backbone: Backbone,
    name: str,
    identity: dict,
    cfg: FeaturesConfig,
    fps: int,
    device: str,
    segments: pd.DataFrame,
) -> dict[str, Any]:
    spec = backbone.stores()[name]
    extra = {}
    if backbone.inputs == "patches" and "audio_recipe" in segments.columns:
        extra["audio_recipe"] = sorted({str(r) for r in segments["audio_recipe"]})
    return {
        **extra,
        **backbone.describe(),
        **identity,
        "feature": name,
        **spec.meta,
        "source": "avel features (self-extracted)",
        "storage_dtype": cfg.dtype,
        "random_weights": backbone.random,
        "frames_per_segment": fps,
        "device": str(device),
        "engine": cfg.engine,
        **_provenance(str(device)),
    }


# ----------------------------------------------------------------------------- driver


def run_features(cfg: FeaturesConfig) -> dict[str, Any]:
    """Build (or reuse, resume, extend, merge) the asked feature stores; return the summary."""
    cfg.data_dir = Path(cfg.data_dir)
    _check(cfg)
    reuse_freed_memory()
    segments = load_segments(cfg.data_dir, lifecycle.READ_COLUMNS)
    rows = ClipRows(segments)  # grouped by clip once for every per-clip pass below
    ids = rows.ids
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
        "advice": [],
    }
    executor = _executor(cfg)
    device = executor.device(cfg)
    backbones = build_backbones(cfg, fps, device, summary["errors"])
    summary["advice"] = [f"{b.network}: {b.advice}" for b in backbones if b.advice]
    ffmpeg = ffmpeg_version() if any(b.inputs != "patches" for b in backbones) else None
    # backbones that read the same inputs run in one pass (frames: each clip decoded once)
    groups: dict[str, list[Backbone]] = {}
    for backbone in backbones:
        groups.setdefault(backbone.inputs, []).append(backbone)
    for inputs, group in groups.items():
        kinds = "+".join(b.kind for b in group)
        try:
            asked, owner = {}, {}
            for b in group:
                scheme_fps, scheme = lifecycle.fingerprints(rows, inputs, cfg.layout, b.kind)
                identity = store_identity(b, cfg, fps, ffmpeg)
                legacy = functools.partial(
                    lifecycle.legacy_fingerprints, rows, inputs, b.kind
                )  # if asked
                for name, spec in b.stores().items():
                    asked[name] = lifecycle.Asked(spec, identity, scheme_fps, scheme, legacy)
                    owner[name] = b
            if cfg.merge:
                for name, want in asked.items():
                    summary["stores"][name] = merge_store(cfg, name, ids, want)
                continue
            plan = lifecycle.plan_stores(cfg.layout, asked, ids, cfg.force, cfg.num_shards)
            summary["errors"].update(plan.refused)
            for name in plan.done:
                lifecycle.finish_record(cfg.layout, name, asked[name], ids, reused=True)
                summary["stores"][name] = existing_report(cfg, name)
            if plan.build:
                reports = extract(
                    cfg, group, owner, asked, plan, rows, fps, device, executor, kinds
                )
                for name, report in reports.items():
                    lifecycle.finish_record(cfg.layout, name, asked[name], ids)
                    if name in plan.carried:
                        report["carried_over"] = plan.carried[name]
                        report["recomputed"] = plan.changed[name]
                summary["stores"].update(reports)
        except (lifecycle.LifecycleError, FeaturesError, StoreError, BackboneError) as exc:
            summary["errors"][kinds] = str(exc)
    return summary


def _executor(cfg: FeaturesConfig):
    if cfg.engine == "ray" and not cfg.merge:
        from pipeline.stages.features import ray_engine

        return ray_engine
    from pipeline.stages.features import local

    return local


def extract(
    cfg: FeaturesConfig,
    group: list[Backbone],
    owner: dict[str, Backbone],
    asked: dict[str, lifecycle.Asked],
    plan: lifecycle.Plan,
    rows: ClipRows,
    fps: int,
    device: str,
    executor: Any,
    desc: str,
) -> dict[str, dict[str, Any]]:
    """Fill the stores ``plan.build`` with the backbones of ``group`` through ``executor``."""
    writers = {}
    for name in plan.build:
        b = owner[name]
        meta = store_meta(b, name, asked[name].identity, cfg, fps, device, rows.table)
        writers[name] = StoreWriter.open(
            cfg.data_dir,
            name,
            plan.order,
            asked[name].spec.row,
            dtype=cfg.dtype,
            shard_size=cfg.shard_size,
            meta=meta,
            force=cfg.force,
        )
        if cfg.force:
            from pipeline.core.identity import write_record

            write_record(writers[name].root, asked[name].record(plan.order))
    todo = sorted(
        {s for w in writers.values() for s, _ in w.pending_shards(cfg.shard_index, cfg.num_shards)}
    )
    kept = {
        n: (FeatureStore(previous_dir(w.root)), plan.kept[n])
        for n, w in writers.items()
        if plan.kept.get(n) and previous_dir(w.root).is_dir()
    }
    shards = Shards(writers, todo, kept)
    work = shards.to_compute()
    running = [b for b in group if set(b.stores()) & set(writers)]
    stats: dict[str, float] = {}
    if work:
        items = work_items(cfg, running, work, rows)
        groups = group_items(items, running)  # the same groups in every executor: equal stores
        with progress(len(items), cfg.progress, desc) as bar:
            for item, outputs in executor.run(cfg, running, groups, device, stats):
                values = clip_rows(running, writers, outputs)
                shards.add(item.shard, item.clip_id, values)
                bar.update(1)
        if shards.got:
            raise FeaturesError(
                f"the executor ended without results for shard(s) {sorted(shards.got)[:5]}"
            )
    reports = {}
    for name, writer in writers.items():
        b = owner[name]
        meta_out = writer.finalize()
        pending = sum(not writer.is_done(s) for s in range(writer.num_shards))
        report: dict[str, Any] = {
            "path": str(writer.root),
            "shards_written": shards.written[name],
            "shards_pending": pending,
            "complete": writer.complete,
            "random_weights": b.random,
            "weights": b.weights_line,
            "precision": b.precision,
            "clips_computed": len(work),
        }
        if meta_out is not None:
            report.update(videos=meta_out["videos"], failed=len(meta_out["failed"]))
        if stats.get("total_s") and b.inputs != "patches":
            report["speed"] = speed_line(stats, len(work))
        reports[name] = report
    return reports


def work_items(
    cfg: FeaturesConfig,
    backbones: list[Backbone],
    work: list[tuple[int, str]],
    segments: pd.DataFrame | ClipRows,
) -> list[ClipWork]:
    plans = {b.network: b.frame_plans(segments) for b in backbones if b.inputs == "frames"}
    patches = any(b.inputs == "patches" for b in backbones)
    return [
        ClipWork(
            clip_id=c,
            shard=s,
            path=str(cfg.layout.clip(c)),
            patches=str(cfg.layout.patches(c)) if patches else None,
            plans={n: np.asarray(p[c], dtype=np.int64).reshape(-1) for n, p in plans.items()},
        )
        for s, c in work
    ]


def clip_rows(
    backbones: list[Backbone],
    writers: dict[str, StoreWriter],
    outputs: dict[str, dict[str, np.ndarray]] | str,
) -> dict[str, np.ndarray | str]:
    """One clip's row for every store being written (derived ones computed here), or its error."""
    if isinstance(outputs, str):
        return dict.fromkeys(writers, outputs)
    values: dict[str, np.ndarray | str] = {}
    for b in backbones:
        stores = {n: s for n, s in b.stores().items() if n in writers}
        values.update(derive(stores, outputs[b.network]))
    return values


def speed_line(stats: dict[str, float], clips: int) -> str:
    """One line: clips/s and whether decoding or the network bound the extraction."""
    wait = stats.get("wait_s", 0.0) / stats["total_s"]
    rate = f"{clips / stats['total_s']:.2f} clips/s" if clips else "no clip extracted"
    if wait > 0.5:
        return (
            f"{rate}; waited for decoded frames {100 * wait:.0f}% of the time: decoding, not the "
            "network, bounds this run (more --workers, or fewer frames per segment)"
        )
    return f"{rate}; waited for decoded frames {100 * wait:.0f}% of the time: the network bounds it"


def merge_store(
    cfg: FeaturesConfig, name: str, ids: list[str], want: lifecycle.Asked
) -> dict[str, Any]:
    """Write the index of a store whose shards other processes filled (``--merge``)."""
    root = cfg.layout.store(name)
    if not (root / "plan.json").is_file():
        raise FeaturesError(f"{root}: no store to merge (run `avel features` first)")
    plan = json.loads((root / "plan.json").read_text())
    planned = plan.get("clip_ids") or []
    order = planned if set(planned) == set(ids) else ids
    writer = StoreWriter.open(
        cfg.data_dir,
        name,
        order,
        want.spec.row,
        dtype=plan.get("dtype", cfg.dtype),
        shard_size=int(plan.get("shard_size", cfg.shard_size)),
    )
    meta_path = root / "meta.json"
    record = read_json(root / IDENTITY_FILE) or {}
    if meta_path.is_file():
        writer.meta = json.loads(meta_path.read_text())
    elif record.get("meta"):
        writer.meta = record["meta"]
    else:
        raise FeaturesError(f"{root}: no record of how this store was made; rebuild it (--force)")
    meta_out = writer.finalize()
    report: dict[str, Any] = {
        "path": str(root),
        "shards_written": 0,
        "shards_pending": sum(not writer.is_done(s) for s in range(writer.num_shards)),
        "complete": writer.complete,
        "random_weights": bool(writer.meta.get("random_weights")),
    }
    if meta_out is not None:
        report.update(videos=meta_out["videos"], failed=len(meta_out["failed"]))
        lifecycle.finish_record(cfg.layout, name, want, ids)
    return report


def existing_report(cfg: FeaturesConfig, name: str) -> dict[str, Any]:
    """The report of a finished store that this run leaves as it is."""
    root = cfg.layout.store(name)
    meta = json.loads((root / "meta.json").read_text())
    weights = meta.get("weights") or {}
    return {
        "path": str(root),
        "shards_written": 0,
        "shards_pending": 0,
        "complete": True,
        "already_complete": True,
        "videos": meta["videos"],
        "failed": len(meta["failed"]),
        "random_weights": bool(meta.get("random_weights")),
        "weights": f"{meta.get('backbone')} {weights.get('source')} sha256 {str(weights.get('sha256'))[:12]}",
        "precision": meta.get("precision"),
    }


# ----------------------------------------------------------------------------- summary


def format_summary(summary: dict[str, Any], errors: bool = True) -> str:
    """The summary for people; ``errors=False`` leaves out the kinds that failed (the command
    prints those to stderr)."""
    lines = [
        f"features: {summary['clips']} segmented clips, {summary['frames_per_segment']} frames per segment"
    ]
    for name, r in summary["stores"].items():
        state = "complete" if r["complete"] else f"{r['shards_pending']} shard(s) still pending"
        if r.get("already_complete"):
            state = "already complete (same weights, settings and inputs; --force to rebuild)"
        elif r.get("carried_over") is not None and "recomputed" in r:
            state += (
                f", extended: {r['recomputed']} new or changed clip(s) computed, "
                f"{r['carried_over']} unchanged shard(s) kept"
            )
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
    for line in summary.get("advice") or []:
        lines.append(f"  advice: {line}")
    random = [n for n, r in summary["stores"].items() if r.get("random_weights")]
    if random:
        lines.append(RANDOM_BANNER.format(what=", ".join(random)))
    if errors:
        lines.extend(f"  {line}" for line in format_errors(summary))
    return "\n".join(lines)


def format_errors(summary: dict[str, Any]) -> list[str]:
    """One line per kind that was not extracted."""
    return [f"{kind}: NOT extracted: {message}" for kind, message in summary["errors"].items()]
