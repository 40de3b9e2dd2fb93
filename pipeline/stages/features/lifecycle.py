"""The life of a feature store: reuse, resume, extend or refuse, from its one identity record.

For every store an extraction would fill, :func:`plan_stores` compares what is asked (the
backbone's identity plus dtype and frames per segment, and per clip a fingerprint of its inputs)
with the store's :mod:`identity record <pipeline.core.identity>`:

- finished, same identity, same clips and inputs: reused ("already complete"), not rewritten;
- finished or partly written with another identity (weights by sha256, random -> pretrained
  included, precision, preprocessing, dtype, frames per segment, frame size, output mode, decoder,
  ...): refused with every difference named (``--force`` rebuilds it);
- finished, same identity, other clips or inputs (new clips segmented, a clip re-downloaded, patches
  re-made with another audio recipe, a clip whose inputs were missing and are there now): extended.
  The finished store waits in ``.<name>.previous`` while a new plan is filled; every shard whose
  clips are unchanged is copied over, only new or changed clips are computed;
- partly written with the same identity: resumed (shards holding a clip whose inputs changed are
  redone).

Fingerprints are content hashes read from the segments table: the clip file's sha256 and the frame
plan (frames), the audio recipe and the patches' sha256 (patches), plus whether the input file is
there now. A segments table of an earlier version (no hashes) gives scheme-1 fingerprints (file size
and mtime); a store recorded with scheme 1 is compared in scheme 1 and then recorded anew.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.backbones.base import StoreSpec
from pipeline.core import identity as ident
from pipeline.core.clip_rows import ClipRows
from pipeline.core.layout import DataLayout
from pipeline.core.store import FeatureStore, StoreWriter, carry_over, previous_dir

SCHEME = 2
#: Per-clip columns of the segments table each input kind is made from (scheme 2: content hashes).
CONTENT_COLUMNS = {
    "patches": ("audio_recipe", "patches_sha256"),
    "frames": ("clip_sha256", "num_frames", "frame_rule", "frame_indices"),
    "waveform": ("clip_sha256",),
}
#: Scheme 1 (segments tables without hashes): the file's size and mtime.
LEGACY_COLUMNS = {
    "patches": ("clip_bytes", "clip_mtime_ns", "sample_rate", "channels", "audio_duration"),
    "frames": ("clip_bytes", "clip_mtime_ns", "num_frames", "frame_indices"),
    "waveform": ("clip_bytes", "clip_mtime_ns"),
    "c3d": ("clip_bytes", "clip_mtime_ns", "num_frames", "frame_rule", "frame_indices"),
}
LEGACY_PREFIX = "segments-v1"
#: The segments table's columns the features stage reads (the rest stay on disk).
READ_COLUMNS = tuple(
    dict.fromkeys(
        [
            "clip_id",
            "second",
            "frame_indices",
            *(c for cols in CONTENT_COLUMNS.values() for c in cols),
            *(c for cols in LEGACY_COLUMNS.values() for c in cols),
        ]
    )
)


class LifecycleError(RuntimeError):
    """A store cannot be used or extended as asked (the message names why and what to do)."""


def _plain(value: object) -> object:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _hash(parts: list[str]) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def fingerprints(
    segments: pd.DataFrame | ClipRows, inputs: str, layout: DataLayout, legacy_kind: str = ""
) -> tuple[dict[str, str], int]:
    """Clip ID -> fingerprint of what its ``inputs`` ("patches"/"frames"/"waveform") are, and the scheme:
    2 when the table has the content hashes, else 1 (``legacy_kind`` picks scheme 1's columns)."""
    rows = ClipRows.of(segments)
    columns = set(rows.table.columns)
    scheme = SCHEME if set(CONTENT_COLUMNS[inputs]) <= columns else 1
    if scheme == 1:
        return legacy_fingerprints(rows, inputs, legacy_kind), 1
    present = layout.patches_present() if inputs == "patches" else layout.clips_present()
    names = [c for c in CONTENT_COLUMNS[inputs] if c in columns]
    out = {}
    for k, clip_id in enumerate(rows.ids):
        parts = [f"scheme{SCHEME}"]
        for column in names:
            parts.append(f"{column}={json.dumps(rows.clip_values(column, k), default=_plain)}")
        parts.append(f"present={clip_id in present}")
        out[clip_id] = _hash(parts)
    return out, SCHEME


def legacy_fingerprints(
    segments: pd.DataFrame | ClipRows, inputs: str, kind: str = ""
) -> dict[str, str]:
    """Scheme-1 fingerprints, as stores of the previous version recorded them. Patches re-made with
    an audio recipe other than that version's (soxr) never match."""
    rows = ClipRows.of(segments)
    columns = LEGACY_COLUMNS.get(kind) or LEGACY_COLUMNS[inputs]
    columns = [c for c in columns if c in rows.table.columns]
    recipes = inputs == "patches" and "audio_recipe" in rows.table.columns
    out = {}
    for k, clip_id in enumerate(rows.ids):
        parts = [LEGACY_PREFIX]
        for column in columns:
            parts.append(f"{column}={json.dumps(rows.clip_values(column, k), default=_plain)}")
        fp = _hash(parts)
        if recipes:
            recipe = str(rows.clip_values("audio_recipe", k))
            if recipe not in ("soxr", "", "None", "nan"):
                fp = f"{fp}|recipe={recipe}"
        out[clip_id] = fp
    return out


class Asked:
    """What an extraction asks of one store. The scheme-1 fingerprints (``legacy``) are only
    computed when a store recorded with scheme 1 asks for them."""

    def __init__(
        self,
        spec: StoreSpec,
        identity: dict[str, Any],
        fingerprints: dict[str, str],
        scheme: int,
        legacy: dict[str, str] | Callable[[], dict[str, str]] | None = None,
    ) -> None:
        self.spec, self.identity = spec, identity
        self.fingerprints, self.scheme = fingerprints, scheme
        self._legacy = legacy if legacy is not None else {}

    @property
    def legacy(self) -> dict[str, str]:
        if callable(self._legacy):
            self._legacy = self._legacy()
        return self._legacy

    def record(self, ids: list[str]) -> dict[str, Any]:
        return ident.make_record(self.identity, ids, self.fingerprints, self.scheme)


@dataclass
class Plan:
    done: list[str]  # finished and reused as they are
    build: list[str]  # to fill (new, resumed or extended)
    order: list[str]  # the clip order of the stores to fill
    carried: dict[str, int]  # extended store -> shards copied over from its finished version
    changed: dict[str, int]  # extended store -> clips whose inputs changed or are new
    kept: dict[str, set[str]] = field(default_factory=dict)  # extended store -> unchanged clips
    refused: dict[str, str] = field(default_factory=dict)  # store -> why (other settings)


def _recorded(root: Path) -> tuple[dict[str, Any] | None, dict[str, str], int]:
    """(identity, fingerprints, scheme) a store recorded; identity None when it recorded none."""
    record = ident.read_json(root / ident.IDENTITY_FILE)
    if record is not None:
        return (
            record.get("identity"),
            record.get("fingerprints") or {},
            int(record.get("fingerprint_scheme", SCHEME)),
        )
    inputs = ident.read_json(root / "inputs.json") or {}
    return ident.legacy_identity(root), inputs.get("fingerprints") or {}, 1


def _asked_fingerprints(asked: Asked, scheme: int) -> dict[str, str]:
    return asked.legacy if scheme == 1 else asked.fingerprints


def is_complete(root: Path) -> bool:
    return (root / "meta.json").is_file() and (root / "index.parquet").is_file()


def plan_stores(
    layout: DataLayout,
    asked: dict[str, Asked],
    ids: list[str],
    force: bool,
    num_shards: int,
) -> Plan:
    """Decide, for every store in ``asked``: reuse, build, resume, extend, or refuse (in
    ``Plan.refused``, naming every difference; the other stores go on)."""
    done, build, extend = [], [], []
    order: list[str] | None = None
    refused: dict[str, str] = {}
    for name, want in asked.items():
        root = layout.store(name)
        previous = previous_dir(root)
        if force:
            build.append(name)
            continue
        if previous.is_dir() and is_complete(root):
            shutil.rmtree(previous)  # an extension that finished but was not cleaned up
        if previous.is_dir():
            extend.append(name)  # an extension in progress: resume it
            planned = (ident.read_json(root / "plan.json") or {}).get("clip_ids")
            if planned and set(planned) == set(ids):
                order = order or planned
            continue
        if not (root / "plan.json").is_file():
            build.append(name)
            continue
        old_identity, old_fps, scheme = _recorded(root)
        diffs = ident.differences(old_identity or {}, want.identity)
        if old_identity is None:
            diffs = ["it records no identity"]
        if diffs:
            state = "finished" if is_complete(root) else "partly written"
            refused[name] = (
                f"{root}: this {state} store was made with other settings: {'; '.join(diffs)}. "
                "Ask for the same settings to use it, or pass --force (FORCE=1) to rebuild it"
            )
            continue
        now = _asked_fingerprints(want, scheme)
        if not is_complete(root):
            build.append(name)  # resume; shards of clips whose inputs changed are redone
            planned = (ident.read_json(root / "plan.json") or {}).get("clip_ids")
            if planned and set(planned) == set(ids):
                order = order or planned
                _forget_changed_shards(root, planned, old_fps, now)
            continue
        planned = FeatureStore(root).planned_ids
        if set(planned) == set(ids) and all(old_fps.get(c) == now.get(c) for c in ids):
            done.append(name)
            continue
        extend.append(name)
    if (
        extend
        and num_shards > 1
        and not any(previous_dir(layout.store(n)).is_dir() for n in extend)
    ):
        raise LifecycleError(
            f"{', '.join(extend)}: finished, but made from other clips or inputs than the segments "
            "now list; extend it with one process first (`avel features` without --num-shards), "
            "or pass --force (FORCE=1) to rebuild it"
        )
    for name in done:
        planned = (ident.read_json(layout.store(name) / "plan.json") or {}).get("clip_ids")
        if order is None and planned and set(planned) == set(ids):
            order = planned
    carried, changed, kept = {}, {}, {}
    for name in extend:
        order, carried[name], kept[name] = _extend(layout, name, asked[name], ids, order)
        changed[name] = len(set(ids) - kept[name])
    for name in build:
        root = layout.store(name)
        if not force:
            root.mkdir(parents=True, exist_ok=True)
            ident.write_record(root, asked[name].record(ids))
    return Plan(done, build + extend, order or ids, carried, changed, kept, refused)


def _forget_changed_shards(
    root: Path, planned: list[str], before: dict[str, str], now: dict[str, str]
) -> None:
    """In a partly written store, drop the receipts of shards holding a clip whose inputs changed
    since the store was planned (they are computed again)."""
    size = int((ident.read_json(root / "plan.json") or {}).get("shard_size") or 256)
    for shard in range(-(-len(planned) // size)):
        if any(before.get(c) != now.get(c) for c in planned[shard * size : (shard + 1) * size]):
            (root / f"shard-{shard:05d}.index.parquet").unlink(missing_ok=True)


def _extend(
    layout: DataLayout, name: str, want: Asked, ids: list[str], order: list[str] | None
) -> tuple[list[str], int, set[str]]:
    """Plan a finished store anew over ``ids``, keeping what is unchanged; return the plan's clip
    order, the shards copied over and the unchanged clips (their rows are reused where a shard
    mixes them with new ones)."""
    root = layout.store(name)
    previous = previous_dir(root)
    if not previous.is_dir():
        os.replace(root, previous)  # atomic: the finished store is either here or there
    old_store = FeatureStore(previous)
    _, before, scheme = _recorded(previous)
    now = _asked_fingerprints(want, scheme)
    planned = old_store.planned_ids
    keep = {c for c in planned if c in now and before.get(c) == now[c]}
    if order is None:
        order = [c for c in planned if c in keep] + [c for c in ids if c not in keep]
    meta = ident.read_json(previous / "meta.json") or {}
    writer = StoreWriter.open(
        layout.root,
        name,
        order,
        want.spec.row,
        dtype=str(meta.get("dtype") or "float16"),
        shard_size=int(meta.get("shard_size") or 256),
    )
    ident.write_record(root, want.record(ids))
    return order, carry_over(writer, old_store, keep), keep


def finish_record(
    layout: DataLayout, name: str, asked: Asked, ids: list[str], reused: bool = False
) -> None:
    """Once a store is finished: its identity record matches what made it, its ``meta.json``
    carries identity and digest, and the waiting previous version is gone. A store of an earlier
    version that is ``reused`` as it is keeps the digest it had (training runs on it stay valid)."""
    root = layout.store(name)
    meta = ident.read_json(root / "meta.json")
    if meta is None or not (root / "index.parquet").is_file():
        return
    record = asked.record(ids)
    sha = ident.identity_sha256(record)
    if reused:
        sha = meta.get("identity_sha256") or ident.digest(meta)
    summary = {"identity": record["identity"], "inputs": record["inputs"], "identity_sha256": sha}
    if any(meta.get(k) != v for k, v in json.loads(json.dumps(summary, default=str)).items()):
        meta.update(summary)
        ident.write_json(meta, root / "meta.json")
    ident.write_record(root, {**record, "meta": meta})  # what a later --merge finalises with
    for stale in ("run.json", "inputs.json"):
        (root / stale).unlink(missing_ok=True)
    shutil.rmtree(previous_dir(root), ignore_errors=True)
