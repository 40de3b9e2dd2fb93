"""One identity record per feature store: what its rows are made of, deciding reuse.

``DATA_DIR/features/<name>/identity.json`` (written before any shard, kept up to date)::

    {"version": 1,
     "identity": {backbone, weights {source, sha256}, preprocessing, precision, dtype,
                  frames_per_segment, frame_size, decoder, ffmpeg, ...},   # compared on reuse
     "fingerprints": {clip_id: hash of what its row is made from},        # decides extension
     "fingerprint_scheme": 2,
     "inputs": {clips, clips_sha256, inputs_sha256}}

Extracted and imported stores write the same record (an import's identity names the release files by
their sha256). A finished store's ``meta.json`` carries the identity and ``identity_sha256``, the
digest of identity and inputs that training runs put in their fingerprint. Stores written before
this record existed are read through :func:`legacy_identity` (their ``meta.json`` / ``run.json``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pipeline.core.io import write_json

IDENTITY_FILE = "identity.json"
IDENTITY_VERSION = 1
#: Identity keys that only describe (shown, never compared): where the weights were read from.
DESCRIPTIVE = ("source",)


def digest(value: Any) -> str:
    """sha256 of a JSON-able value (sorted keys)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def inputs_summary(ids: list[str], fingerprints: dict[str, str]) -> dict[str, Any]:
    """Clip count and digests of the clip set and of every clip's fingerprint."""
    ordered = sorted(ids)
    return {
        "clips": len(ids),
        "clips_sha256": digest(ordered),
        "inputs_sha256": digest([fingerprints.get(c) for c in ordered]),
    }


def make_record(
    identity: dict[str, Any], ids: list[str], fingerprints: dict[str, str], scheme: int
) -> dict[str, Any]:
    return {
        "version": IDENTITY_VERSION,
        "identity": identity,
        "inputs": inputs_summary(ids, fingerprints),
        "fingerprint_scheme": scheme,
        "fingerprints": {c: fingerprints[c] for c in ids if c in fingerprints},
    }


def identity_sha256(record: dict[str, Any]) -> str:
    """The digest training runs fingerprint a store by: its identity and its inputs."""
    return digest({"identity": record["identity"], "inputs": record["inputs"]})


def write_record(root: Path, record: dict[str, Any]) -> None:
    """Write ``record`` as the store's identity record (unless it already says exactly that)."""
    if read_json(root / IDENTITY_FILE) != json.loads(json.dumps(record, default=str)):
        write_json(record, root / IDENTITY_FILE)


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _weights_sha(value: Any) -> Any:
    return value.get("sha256") if isinstance(value, dict) else value


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """How identity ``new`` differs from ``old``, in words (empty: the same). Keys the old record
    lacks (written by an earlier version) are not held against it; weights compare by sha256."""
    old, new = _plain(old), _plain(new)
    out = []
    for key, now in new.items():
        if key in DESCRIPTIVE or key not in old:
            continue
        before = old[key]
        if key == "weights":
            if _weights_sha(before) != _weights_sha(now):
                out.append(f"weights {_weights_text(before)} -> {_weights_text(now)}")
            continue
        out += _leaf_differences(key, before, now)
    return out


def _leaf_differences(path: str, before: Any, now: Any) -> list[str]:
    """``path.to.leaf before -> now`` for every value that differs; in records of two versions a
    key only one side has was added or retired, and is not a difference."""
    if isinstance(before, dict) and isinstance(now, dict):
        out = []
        for key in sorted(set(before) & set(now)):
            out += _leaf_differences(f"{path}.{key}", before[key], now[key])
        return out
    return [] if before == now else [f"{path} {_short(before)} -> {_short(now)}"]


def _weights_text(value: Any) -> str:
    if not isinstance(value, dict):
        return str(value)
    sha = str(value.get("sha256"))
    if sha == "random":
        return "RANDOM"
    label = f"sha256 {sha[:12]}"
    return f"{label} ({value.get('source')})" if value.get("source") else label


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 70 else text[:67] + "..."


def legacy_identity(root: Path) -> dict[str, Any] | None:
    """The identity of a store written before ``identity.json`` existed, from its ``meta.json``
    (finished) or ``run.json`` (partly written); None when neither is there."""
    meta = read_json(root / "meta.json")
    if meta is None:
        meta = read_json(root / "run.json")
        if meta is None:
            return None
    out: dict[str, Any] = {}
    if meta.get("backbone") is not None:
        out["backbone"] = meta["backbone"]
    weights = meta.get("weights")
    if isinstance(weights, dict) and "sha256" in weights:
        out["weights"] = {"source": weights.get("source"), "sha256": weights.get("sha256")}
    for key in ("preprocessing", "precision", "frame_size", "frames_per_segment", "output"):
        if meta.get(key) is not None:
            out[key] = meta[key]
    if meta.get("dtype") is not None:
        out["dtype"] = meta["dtype"]
    return out


def store_identity_sha256(root: str | Path) -> str | None:
    """A finished store's identity digest (``meta.json``), or for a store written before it was
    recorded, the digest of its ``meta.json``; None when the store is not finished."""
    root = Path(root)
    meta = read_json(root / "meta.json")
    if meta is None:
        return None
    return meta.get("identity_sha256") or digest(meta)
