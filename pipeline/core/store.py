"""Feature store: dense per-clip arrays in NPY shards, a Parquet index and a metadata JSON.

Layout of ``DATA_DIR/features/<name>/``::

    shard-00000.npy          (rows, *row_shape) in the storage dtype, memory-mappable
    shard-00000.index.parquet  clip_id, row (-1 for a failed video), error   [the shard's receipt]
    index.parquet            clip_id -> (shard, row), written when the store is finalised
    meta.json                backbone, weights identity, preprocessing, precision, dtype, ...

The list of videos is fixed when a store is planned and cut into shards of ``shard_size`` videos, so
an interrupted extraction resumes at the first shard without a receipt, independent processes can
fill disjoint shards (``shard_index`` / ``num_shards``), and the last one to finish builds the index.
A shard's array is written before its receipt, both atomically: a receipt means the shard is done.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.io import read_parquet, short_reason, write_json, write_npy, write_parquet
from pipeline.core.layout import DataLayout
from pipeline.core.manifest import keyed_by_clip_id
from pipeline.core.text import shell_word

STORE_VERSION = 2  # 2: keyed by ``clip_id`` (1 called the same key ``youtube_id``)
#: Row shape of each store the stages write: one row per clip, one entry per second.
ROW_SHAPES = {
    "audio": (10, 128),
    "audio_maps": (10, 6, 4, 512),
    "visual": (10, 7, 7, 512),
    "visual_vec": (10, 512),
    "c3d": (10, 512),
    "c3d_maps": (10, 4, 4, 512),
    "clap": (10, 512),
}
DTYPES = {"float16": np.float16, "float32": np.float32}


def _current_plan(plan: dict[str, Any]) -> dict[str, Any]:
    """A plan written by store version 1 (key ``youtube_ids``) in today's terms."""
    if plan.get("version") == 1 and "youtube_ids" in plan:
        plan = {**plan, "version": STORE_VERSION, "clip_ids": plan["youtube_ids"]}
        del plan["youtube_ids"]
    return plan


class StoreError(RuntimeError):
    """The store is missing, incomplete, corrupt, or does not match what was asked."""


def rebuild_advice(root: Path) -> str:
    """How to rebuild the store at ``root`` (its data folder is two levels up)."""
    data_dir = root.parent.parent
    return (
        f"rebuild the store: `make features DATA_DIR={shell_word(data_dir)} FORCE=1` (an imported store: "
        f"`make import-release DATA_DIR={shell_word(data_dir)} FORCE=1`)"
    )


def store_dir(data_dir: str | Path, name: str) -> Path:
    return DataLayout(data_dir).store(name)


def _shard_name(i: int) -> str:
    return f"shard-{i:05d}"


@dataclass
class StoreWriter:
    """Plans a store over a fixed list of videos and writes it shard by shard.

    ``meta`` is free-form provenance (backbone, weights, preprocessing, precision, ...); the writer
    adds name, row shape, dtype, shard plan and counts. Planning again with a different video list,
    row shape or dtype on an unfinished store raises; use ``force`` to start over.
    """

    root: Path
    clip_ids: list[str]
    row_shape: tuple[int, ...]
    dtype: str = "float16"
    shard_size: int = 256
    meta: dict[str, Any] | None = None

    @classmethod
    def open(
        cls,
        data_dir: str | Path,
        name: str,
        clip_ids: Sequence[str],
        row_shape: Sequence[int],
        dtype: str = "float16",
        shard_size: int = 256,
        meta: dict[str, Any] | None = None,
        force: bool = False,
    ) -> StoreWriter:
        if dtype not in DTYPES:
            raise StoreError(f"storage dtype {dtype!r} not supported; use one of {sorted(DTYPES)}")
        root = store_dir(data_dir, name)
        writer = cls(
            root, list(clip_ids), tuple(int(s) for s in row_shape), dtype, shard_size, meta or {}
        )
        if force and root.exists():
            for f in root.iterdir():
                if f.is_file():
                    f.unlink()
        root.mkdir(parents=True, exist_ok=True)
        plan_path = root / "plan.json"
        plan = writer._plan()
        if plan_path.is_file():
            old = _current_plan(json.loads(plan_path.read_text()))
            if old != plan:
                raise StoreError(
                    f"{root}: an unfinished or finished store with a different plan exists "
                    f"({plan_difference(old, plan)}); pass --force to rebuild it"
                )
        else:
            write_json(plan, plan_path)
        return writer

    def _plan(self) -> dict[str, Any]:
        return {
            "version": STORE_VERSION,
            "clip_ids": self.clip_ids,
            "row_shape": list(self.row_shape),
            "dtype": self.dtype,
            "shard_size": self.shard_size,
        }

    @property
    def num_shards(self) -> int:
        return max(1, -(-len(self.clip_ids) // self.shard_size))

    def shard_ids(self, shard: int) -> list[str]:
        return self.clip_ids[shard * self.shard_size : (shard + 1) * self.shard_size]

    def is_done(self, shard: int) -> bool:
        return (self.root / f"{_shard_name(shard)}.index.parquet").is_file()

    @property
    def complete(self) -> bool:
        return (self.root / "meta.json").is_file() and (self.root / "index.parquet").is_file()

    def pending_shards(
        self, shard_index: int = 0, num_shards: int = 1
    ) -> Iterator[tuple[int, list[str]]]:
        """Shards this process still has to write: those with ``shard % num_shards == shard_index``."""
        if not 0 <= shard_index < num_shards:
            raise StoreError(f"shard index {shard_index} outside 0..{num_shards - 1}")
        for shard in range(self.num_shards):
            if shard % num_shards == shard_index and not self.is_done(shard):
                yield shard, self.shard_ids(shard)

    def write_shard(self, shard: int, results: dict[str, np.ndarray | str]) -> None:
        """Write one shard: ``results`` maps each of the shard's ids to its array or an error string."""
        ids = self.shard_ids(shard)
        unknown = set(results) - set(ids)
        if unknown:
            raise StoreError(f"shard {shard}: ids not planned for it: {sorted(unknown)[:3]}")
        rows, table = [], []
        for clip_id in ids:
            value = results.get(clip_id, "not processed")
            if isinstance(value, str):
                table.append((clip_id, -1, value))
                continue
            array = np.asarray(value)
            if array.shape != self.row_shape:
                raise StoreError(
                    f"{clip_id}: feature shape {array.shape} does not match the store's {self.row_shape}"
                )
            table.append((clip_id, len(rows), ""))
            rows.append(array.astype(DTYPES[self.dtype]))
        data = np.stack(rows) if rows else np.zeros((0, *self.row_shape), DTYPES[self.dtype])
        write_npy(data, self.root / f"{_shard_name(shard)}.npy")
        write_parquet(
            pd.DataFrame(table, columns=["clip_id", "row", "error"]),
            self.root / f"{_shard_name(shard)}.index.parquet",
        )

    def finalize(self) -> dict[str, Any] | None:
        """Build ``index.parquet`` and ``meta.json`` once every shard has its receipt.

        Returns the metadata, or None when shards are still missing (another process's part).
        """
        if not all(self.is_done(s) for s in range(self.num_shards)):
            return None
        parts = []
        for shard in range(self.num_shards):
            receipt = self.root / f"{_shard_name(shard)}.index.parquet"
            part = keyed_by_clip_id(read_parquet(receipt, rebuild_advice(self.root)))
            part.insert(1, "shard", shard)
            parts.append(part)
        table = pd.concat(parts, ignore_index=True)
        ok = table[table["row"] >= 0][["clip_id", "shard", "row"]].reset_index(drop=True)
        failed = table[table["row"] < 0]
        meta = dict(self.meta or {})
        meta.update(
            {
                "version": STORE_VERSION,
                "name": self.root.name,
                "row_shape": list(self.row_shape),
                "dtype": self.dtype,
                "shard_size": self.shard_size,
                "num_shards": self.num_shards,
                "videos": int(len(ok)),
                "failed": {
                    str(k): str(v) for k, v in zip(failed["clip_id"], failed["error"], strict=True)
                },
            }
        )
        write_parquet(ok, self.root / "index.parquet")
        write_json(meta, self.root / "meta.json")
        return meta


def plan_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """What changed between two store plans, in words."""
    parts = []
    before, after = list(old.get("clip_ids") or []), list(new.get("clip_ids") or [])
    if before != after:
        added, gone = len(set(after) - set(before)), len(set(before) - set(after))
        what = f"{added} new, {gone} gone" if added or gone else "same clips, another order"
        parts.append(f"clips: {len(before)} planned, {len(after)} asked ({what})")
    for key in ("row_shape", "dtype", "shard_size", "version"):
        if old.get(key) != new.get(key):
            parts.append(f"{key}: {old.get(key)} -> {new.get(key)}")
    return "; ".join(parts) or "plan changed"


def previous_dir(root: str | Path) -> Path:
    """Where a finished store waits while a new plan of it is filled (``.<name>.previous``)."""
    root = Path(root)
    return root.parent / f".{root.name}.previous"


def carry_over(writer: StoreWriter, previous: FeatureStore, keep: set[str]) -> int:
    """Fill every pending shard of ``writer`` whose clips are all in ``keep`` from the finished
    store ``previous`` (rows and recorded failures as they were); return the shards written."""
    written = 0
    failed = previous.meta.get("failed") or {}
    for shard, ids in writer.pending_shards():
        if not ids or not set(ids) <= keep:
            continue
        results: dict[str, np.ndarray | str] = {
            c: np.asarray(previous.get(c)) if c in previous else str(failed[c]) for c in ids
        }
        writer.write_shard(shard, results)
        written += 1
    return written


class FeatureStore:
    """Read side: memory-mapped shards, lookup by clip ID, float32 on the way out."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        meta_path, index_path = self.root / "meta.json", self.root / "index.parquet"
        if not meta_path.is_file() or not index_path.is_file():
            raise StoreError(
                f"{self.root}: no finished feature store here (meta.json/index.parquet missing); "
                "run `make features` (or `avel import-release`) first, or finish the interrupted run"
            )
        try:
            self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StoreError(
                f"{meta_path}: not a readable store record ({short_reason(exc)}); "
                f"{rebuild_advice(self.root)}"
            ) from None
        self.index = keyed_by_clip_id(read_parquet(index_path, rebuild_advice(self.root)))
        self._where = {
            y: (int(s), int(r))
            for y, s, r in zip(
                self.index["clip_id"], self.index["shard"], self.index["row"], strict=True
            )
        }
        self._shards: dict[int, np.ndarray] = {}
        self._rows_needed: dict[int, int] = {}
        for shard, row in self._where.values():
            self._rows_needed[shard] = max(self._rows_needed.get(shard, 0), row + 1)

    @classmethod
    def open(cls, data_dir: str | Path, name: str) -> FeatureStore:
        return cls(store_dir(data_dir, name))

    @property
    def row_shape(self) -> tuple[int, ...]:
        return tuple(self.meta["row_shape"])

    @property
    def clip_ids(self) -> list[str]:
        return list(self._where)

    @property
    def planned_ids(self) -> list[str]:
        """Every clip the store was planned for, in plan order (rows and recorded failures)."""
        plan_path = self.root / "plan.json"
        if plan_path.is_file():
            return list(_current_plan(json.loads(plan_path.read_text()))["clip_ids"])
        return [*self._where, *(self.meta.get("failed") or {})]

    @property
    def is_random(self) -> bool:
        """True when the features came from a network with random weights (a smoke run)."""
        weights = self.meta.get("weights") or {}
        return bool(self.meta.get("random_weights")) or weights.get("sha256") == "random"

    def __contains__(self, clip_id: str) -> bool:
        return clip_id in self._where

    def __len__(self) -> int:
        return len(self._where)

    def _shard(self, shard: int) -> np.ndarray:
        if shard not in self._shards:
            self._shards[shard] = self._load_shard(shard)
        return self._shards[shard]

    def _load_shard(self, shard: int) -> np.ndarray:
        """Map one shard, checked against the store's row shape and its index (never unpickled)."""
        path = self.root / f"{_shard_name(shard)}.npy"
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
            problem = None
        except FileNotFoundError:
            problem = "missing"
        except (ValueError, OSError, EOFError) as exc:  # truncated, overwritten, not an NPY file
            pickled = "pickled" in str(exc)  # numpy's advice to load it unsafely is not repeated
            problem = "holds pickled objects, not numbers" if pickled else short_reason(exc)
            problem = f"unreadable ({problem})"
        if problem is None:
            rows = self._rows_needed.get(shard, 0)
            if array.dtype.kind != "f" or tuple(array.shape[1:]) != self.row_shape:
                problem = f"holds {array.dtype} {array.shape}, not rows of {self.row_shape}"
            elif len(array) < rows:
                problem = f"holds {len(array)} rows, its index needs {rows}"
        if problem is not None:
            raise StoreError(
                f"{path}: shard {problem}: the store is damaged; {rebuild_advice(self.root)}"
            )
        return array

    def get(self, clip_id: str) -> np.ndarray:
        """The stored row for one video (a read-only view in the storage dtype)."""
        try:
            shard, row = self._where[clip_id]
        except KeyError:
            raise KeyError(f"{clip_id}: not in feature store {self.root}") from None
        return self._shard(shard)[row]

    def close(self) -> None:
        """Drop the memory-mapped shards (a long streaming read stays bounded by what it holds)."""
        self._shards.clear()

    def gather(self, clip_ids: Sequence[str], dtype: Any = np.float32) -> np.ndarray:
        """Stack rows for several videos (repeats allowed) and convert to ``dtype``."""
        out = np.empty((len(clip_ids), *self.row_shape), dtype=dtype)
        for i, clip_id in enumerate(clip_ids):
            out[i] = self.get(clip_id)
        return out
