"""Metadata paths the scale rehearsal runs in a process of their own, so each has its own peak
memory: ``python -m pipeline.rehearsal.probes NAME 'ARGS_JSON'`` prints the probe's result as JSON
on its last line of output.

- ``ledger``: a stream of clip updates (outcomes injected, no network) on the ledger of a data
  folder, each one timed, then the journal folded in;
- ``store``: one step of a feature store over every clip of the manifest (``plan``; ``fill`` the
  even shards, as one of two processes would; ``resume`` the shards still without a receipt;
  ``merge``: write the index from the receipts; ``open`` the finished store). Rows are one float16
  value: the path is the metadata's, not the arrays';
- ``join``: training's join of the manifest with a store (``models.data.ave.AVEDataset``) and
  one batch;
- ``receipts``: a data folder of the first clips of another one's manifest, as the segments stage
  leaves it (an empty clip file, an empty patches file and a receipt made by the stage's own
  functions from a 25 fps, 10 s clip's frame times), without media;
- ``segments``: the segments stage on such a folder (every receipt current: nothing decoded, the
  tables rebuilt from the receipts, as every run and every resume does);
- ``features_plan``: the features driver's planning of the visual store on such a folder, without
  a network or a Ray cluster: the segments table read, fingerprints, the store's plan and writer,
  the work items with their frame plans, groups of whole clips, and the Ray engine's work table.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from pipeline.core.layout import DataLayout
from pipeline.core.manifest import clip_ids, load_manifest
from pipeline.core.store import FeatureStore, StoreWriter

#: The store the probes write (a name no stage uses) and its row.
STORE, ROW = "scale", (1,)
#: Injected outcomes of the ledger stream, in turn: (status, kind, reason, bytes, duration).
OUTCOMES = (
    ("ok", "ok", "", 812_345, 10.0),
    ("unavailable", "http_404", "ERROR: unable to download video data: HTTP Error 404", None, None),
    ("transient", "timeout", "the attempt took longer than 300 s", None, None),
)
#: One clip in this many fails its store row (a recorded failure, as a bad video's).
FAIL_EVERY = 97


def ledger(data_dir: str, updates: int) -> dict[str, Any]:
    """Open the ledger, time ``updates`` clip updates (clips in turn, outcomes in turn), fold."""
    from pipeline.stages.download.ledger import Ledger, read_table

    path = DataLayout(data_dir).ledger
    began = time.perf_counter()
    book = Ledger(path)
    opened = time.perf_counter() - began
    ids = read_table(path)["clip_id"].head(updates).tolist()
    times = np.empty(updates)
    for i in range(updates):
        status, kind, reason, nbytes, duration = OUTCOMES[i % len(OUTCOMES)]
        start = time.perf_counter()
        book.update(
            ids[i % len(ids)],
            status,
            kind,
            reason,
            attempts=1,
            bytes=nbytes,
            duration=duration,
            source="download",
        )
        times[i] = time.perf_counter() - start
    folds = book.folds
    began = time.perf_counter()
    book.close()
    median = float(np.median(times))
    return {
        "rows": len(read_table(path)),
        "updates": updates,
        "open_s": round(opened, 2),
        "update_median_us": round(median * 1e6, 1),
        "update_mean_us": round(float(times.mean()) * 1e6, 1),
        "update_p99_us": round(float(np.percentile(times, 99)) * 1e6, 1),
        "update_max_ms": round(float(times.max()) * 1e3, 1),
        "folds_during_stream": folds,
        "fold_at_close_s": round(time.perf_counter() - began, 2),
    }


def store(data_dir: str, step: str, shard_size: int) -> dict[str, Any]:
    """One step of the ``scale`` store over the manifest's clips (see the module's docstring)."""
    began = time.perf_counter()
    if step == "open":
        opened = FeatureStore.open(data_dir, STORE)
        some = opened.clip_ids[:: max(1, len(opened) // 1000)]
        opened.gather(some)
        return {"clips": len(opened), "rows_read": len(some), "seconds": _since(began)}
    ids = list(dict.fromkeys(clip_ids(load_manifest(data_dir, columns=["clip_id", "youtube_id"]))))
    writer = StoreWriter.open(data_dir, STORE, ids, ROW, "float16", shard_size, {"probe": True})
    out: dict[str, Any] = {"clips": len(ids), "shards": writer.num_shards}
    if step in ("fill", "resume"):
        part = (0, 2) if step == "fill" else (0, 1)
        written = 0
        for shard, shard_ids in writer.pending_shards(*part):
            row = np.full(ROW, shard % 100, np.float16)
            results: dict[str, np.ndarray | str] = {
                c: "decode error (injected)" if zlib.crc32(c.encode()) % FAIL_EVERY == 0 else row
                for c in shard_ids
            }
            writer.write_shard(shard, results)
            written += 1
        out["shards_written"] = written
    if step in ("resume", "merge"):
        meta = writer.finalize()
        out["complete"] = meta is not None
        out["failed"] = len(meta["failed"]) if meta else None
    out["seconds"] = _since(began)
    return out


def join(data_dir: str, batch: int = 256) -> dict[str, Any]:
    """Training's join: the train split of the manifest against the store, then one batch."""
    from models.data.ave import AVEDataset

    began = time.perf_counter()
    data = AVEDataset(Path(data_dir), "train", (STORE,), in_memory=False)
    joined = _since(began)
    first = data.batch(list(range(min(batch, len(data)))))
    return {
        "samples": len(data),
        "missing": len(data.missing),
        "join_s": joined,
        "batch_rows": int(first[STORE].shape[0]),
        "seconds": _since(began),
    }


def _since(began: float) -> float:
    return round(time.perf_counter() - began, 2)


#: The stages' settings the segment receipts are made with.
FRAMES_PER_SEGMENT, AUDIO_RECIPE = 16, "release"


def receipts(source_dir: str, data_dir: str, clips: int) -> dict[str, Any]:
    """A folder of ``clips`` segmented clips (see the module's docstring), receipts in the stage's
    format; the manifest is the first rows of ``source_dir``'s holding those clips."""
    from pipeline.core.io import write_json, write_parquet
    from pipeline.stages.segment_audio import ClipAudio
    from pipeline.stages.segments import (
        audio_part,
        merge_parts,
        patches_sha256,
        receipt_head,
        video_part,
    )

    began = time.perf_counter()
    rows = pq.ParquetFile(DataLayout(source_dir).manifest).iter_batches(2 * clips + 1000)
    manifest = next(rows).to_pandas()  # the first rows only: a few clips repeat
    ids = list(dict.fromkeys(clip_ids(manifest)))[:clips]
    layout = DataLayout(data_dir)
    write_parquet(manifest[clip_ids(manifest).isin(set(ids)).to_numpy()], layout.manifest)
    layout.clips.mkdir(parents=True, exist_ok=True)
    layout.segments.mkdir(parents=True, exist_ok=True)
    fps, seconds = 25, 10
    video = {"avg_frame_rate": f"{fps}/1", "width": 640, "height": 360, "codec_name": "h264"}
    plan = video_part(np.arange(fps * seconds) / fps, video, "", FRAMES_PER_SEGMENT)
    patches = np.zeros((seconds, 96, 64), np.float32)
    info = {"sample_rate": 44100, "channels": 2, "audio_duration": float(seconds)}
    sound = audio_part(ClipAudio(patches, np.full(seconds, 16000), info), {"codec_name": "aac"})
    parts, digest = merge_parts(plan, sound), patches_sha256(patches)
    for clip_id in ids:
        clip = layout.clip(clip_id)
        clip.touch()
        layout.patches(clip_id).touch()
        receipt = receipt_head(clip_id, clip, FRAMES_PER_SEGMENT, AUDIO_RECIPE)
        receipt.update(parts, clip_sha256=digest, patches_sha256=digest, status="ok", reason="")
        write_json(receipt, layout.segment_receipt(clip_id))
    size = layout.segment_receipt(ids[-1]).stat().st_size if ids else 0
    disk = sum(_disk_bytes(folder) for folder in (layout.clips, layout.segments))
    return {
        "clips": len(ids),
        "receipt_bytes": size,
        "disk_mib": round(disk / 2**20, 1),
        "seconds": _since(began),
    }


def _disk_bytes(folder: Path) -> int:
    """Bytes the files directly in ``folder`` take on disk (allocated blocks)."""
    with os.scandir(folder) as entries:
        return sum(e.stat().st_blocks * 512 for e in entries if e.is_file())


def segments(data_dir: str) -> dict[str, Any]:
    """The segments stage (``run_segments``) on a folder of current receipts."""
    from pipeline.stages.segments import SegmentsConfig, run_segments

    began = time.perf_counter()
    cfg = SegmentsConfig(
        Path(data_dir), FRAMES_PER_SEGMENT, AUDIO_RECIPE, workers=1, progress=False
    )
    summary = run_segments(cfg)
    rows = pq.ParquetFile(DataLayout(data_dir).segments_table).metadata.num_rows
    keys = ("clips", "processed", "skipped", "ok", "failed")
    return {**{k: summary[k] for k in keys}, "table_rows": rows, "seconds": _since(began)}


def features_plan(data_dir: str, shard_size: int) -> dict[str, Any]:
    """The features driver's planning of the visual store, step by step (see the docstring)."""
    from pipeline.backbones.base import backbone_class
    from pipeline.backbones.executor import group_items
    from pipeline.core.clip_rows import ClipRows
    from pipeline.stages.features import lifecycle
    from pipeline.stages.features.core import FeaturesConfig
    from pipeline.stages.features.ray_engine import write_plan
    from pipeline.stages.features.stage import Shards, work_items
    from pipeline.stages.segments import load_segments

    steps: dict[str, float] = {}
    began = last = time.perf_counter()

    def step(name: str) -> None:
        nonlocal last
        now = time.perf_counter()
        steps[f"{name}_s"] = round(now - last, 2)
        last = now

    cfg = FeaturesConfig(data_dir=Path(data_dir), features=["visual"], shard_size=shard_size)
    segs = load_segments(data_dir, lifecycle.READ_COLUMNS)
    ids = list(dict.fromkeys(segs["clip_id"]))
    step("read_segments")
    cls = backbone_class("visual")
    backbone = cls(cfg, cfg.layout.weights(cls.network), FRAMES_PER_SEGMENT)
    rows = ClipRows(segs)
    step("group_by_clip")
    scheme_fps, scheme = lifecycle.fingerprints(rows, "frames", cfg.layout, backbone.kind)
    step("fingerprints")
    # as the driver: scheme-1 fingerprints only if a store of the previous version asks for them
    legacy = functools.partial(lifecycle.legacy_fingerprints, rows, "frames", backbone.kind)
    identity = {"probe": True}
    asked = {
        name: lifecycle.Asked(spec, identity, scheme_fps, scheme, legacy)
        for name, spec in backbone.stores().items()
    }
    plan = lifecycle.plan_stores(cfg.layout, asked, ids, False, 1)
    writers = {
        name: StoreWriter.open(
            data_dir, name, plan.order, asked[name].spec.row, "float16", shard_size, identity
        )
        for name in plan.build
    }
    todo = sorted({s for w in writers.values() for s, _ in w.pending_shards(0, 1)})
    work = Shards(writers, todo).to_compute()
    step("store_plan")
    items = work_items(cfg, [backbone], work, rows)
    step("work_items")
    groups = group_items(items, [backbone])
    step("groups")
    path = write_plan(cfg, groups, [backbone.network])
    step("ray_work_table")
    out = {
        "clips": len(ids),
        "segment_rows": len(segs),
        "work_items": len(items),
        "groups": len(groups),
        "ray_table_mib": round(path.stat().st_size / 2**20, 1),
        **steps,
        "seconds": _since(began),
    }
    path.unlink()
    return out


PROBES = {
    "ledger": ledger,
    "store": store,
    "join": join,
    "receipts": receipts,
    "segments": segments,
    "features_plan": features_plan,
}


def main(argv: list[str]) -> int:
    name, args = argv[0], json.loads(argv[1]) if len(argv) > 1 else {}
    print(json.dumps(PROBES[name](**args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
