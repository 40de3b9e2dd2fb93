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
  one batch.
"""

from __future__ import annotations

import json
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

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


PROBES = {"ledger": ledger, "store": store, "join": join}


def main(argv: list[str]) -> int:
    name, args = argv[0], json.loads(argv[1]) if len(argv) > 1 else {}
    print(json.dumps(PROBES[name](**args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
