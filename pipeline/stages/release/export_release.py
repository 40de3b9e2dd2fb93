"""Export stage: feature stores + manifest -> the AVE release layout (HDF5), so that every model
repository that reads the release (AVEL, PSP, CPSP, CMRAN, CMBS, CACE-Net, ...) reads avel features
unchanged.

Files (dataset ``avadataset``; the order files ``order``; layout in ``pipeline.stages.release.layout``):
``audio_feature.h5`` (N, 10, 128), ``visual_feature.h5`` (N, 10, 7, 7, 512) NHWC,
``visual_feature_vec.h5`` (N, 10, 512), and not in the release ``visual_feature_c3d.h5`` (N, 10, 512,
the ``c3d`` store), ``visual_feature_clip.h5`` (N, 10, D, ``clip``) and ``audio_feature_clap.h5``
(N, 10, 512, ``clap``) (each only when its store exists), ``labels.h5`` (N, 10, C),
``labels_closs.h5`` (N, 10), ``mil_labels.h5`` (N, C), the six ``*_order*.h5`` (int64 row indices)
and ``audio_feature_noisy.h5``, ``visual_feature_noisy.h5`` and ``labels_noisy.h5``: the
background-only videos the stores hold (``DATA_DIR/extra_background.parquet``), 0 rows when none
(weakly supervised scripts open them unconditionally).

Rows follow Annotations.txt (``--rows annotations-order``: manifest sorted by ``sample``) or the
manifest file's own row order (``--rows manifest``, for a hand-edited manifest); repeated YouTube IDs
get one row per annotation row, as in the release. Rows are looked up in the stores by ``clip_id``
(the YouTube ID for AVE; ``<youtube_id>_<start_ms>`` for a data folder built from a clip list).
A file of the layout already in ``OUT_DIR`` that an earlier export did not write (the downloaded
release, say) is never overwritten without ``--force``. A row whose video is missing from an exported
store is dropped and the order files remapped (``--missing drop``), or kept with zero features and
marked 0 in ``feature_mask.h5`` (``--missing zero``). ``avel_rows.csv`` maps every written row back
to its annotation row and video, ``avel_export.json`` holds the summary.

Layout: contiguous datasets without compression by default, as in the release: a whole-array read
(``f['avadataset'][:]``, what the loaders do) and any row slice are single reads with no chunk index
and no decompression. ``--compression gzip|lzf`` chunks whole rows (about 1 MiB per chunk, so a row
slice decompresses only its own chunks) with the byte shuffle filter. Writes stream in blocks of at
most ``block_bytes`` of output, so peak memory stays far below the files.

Measured (busy 2-core machine, synthetic stores of the real manifest: 4,143 rows, 4,097 videos,
float16 stores through StoreWriter): the full export (visual_feature.h5 4.16 GB float32) took
24-39 s at 0.28 GB peak RSS. Reading back, contiguous: visual_feature.h5 whole 14.6 s, 64 rows
as a slice 0.08 s; visual_feature_vec.h5 whole 0.18 s vs 1.1 s (gzip) / 0.9 s (lzf), 64 single
rows 0.006 s vs 0.66 s / 0.39 s. Hence no compression by default.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.fetch import sha256_file
from pipeline.core.io import atomic_path, read_parquet, write_json
from pipeline.core.layout import DataLayout
from pipeline.core.manifest import clip_ids, load_classes, load_manifest
from pipeline.core.store import FeatureStore, StoreError, store_dir
from pipeline.core.text import shell_word
from pipeline.stages.annotations.ave import read_split
from pipeline.stages.release.layout import (
    EXPORT_FILES,
    KEY,
    LABEL_FILES,
    ORDER_FILES,
    ORDER_KEY,
    SEGMENTS,
    order_file_column,
)

ROWS = ("annotations-order", "manifest")
DTYPES = {"float32": np.float32, "float64": np.float64}
MISSING = ("drop", "zero")
COMPRESSION = ("none", "gzip", "lzf")
LABEL_DTYPE = (
    np.float32
)  # labels_closs.h5, mil_labels.h5 and labels_noisy.h5 are float32 as released
ORDER_DTYPE = np.int64
MASK_FILE, MASK_NOISY_FILE = "feature_mask.h5", "feature_mask_noisy.h5"
ROWS_FILE, SUMMARY_FILE = "avel_rows.csv", "avel_export.json"
CHUNK_BYTES = 1 << 20


class ExportReleaseError(RuntimeError):
    """The manifest or the stores cannot be exported as asked."""


@dataclass
class ExportReleaseConfig:
    out_dir: Path
    data_dir: Path = Path("data")
    rows: str = "annotations-order"
    dtype: str = "float64"  # the release's; consumers that call model.double() need it
    missing: str = "drop"
    compression: str = "none"
    block_bytes: int = 64 << 20  # largest block of output rows held in memory
    progress: bool = True
    force: bool = False  # overwrite layout files in out_dir that no earlier export wrote


# --------------------------------------------------------------------------- inputs


def _open_stores(data_dir: Path) -> dict[str, FeatureStore]:
    stores = {}
    for name, (_, _, tail) in EXPORT_FILES.items():
        if not store_dir(data_dir, name).exists():
            continue
        try:
            store = FeatureStore.open(data_dir, name)
        except StoreError as exc:
            raise ExportReleaseError(
                f"{exc}\n(the {name} store is unfinished: finish it, or move it away to export "
                "the others)"
            ) from exc
        fits = len(store.row_shape) == len(tail) and all(
            want is None or got == want for got, want in zip(store.row_shape, tail, strict=True)
        )
        if not fits:
            raise ExportReleaseError(
                f"{store.root}: rows of shape {store.row_shape}, the release layout needs {tail}"
            )
        stores[name] = store
    if not stores:
        raise ExportReleaseError(
            f"{DataLayout(data_dir).features}: no finished feature store ({', '.join(EXPORT_FILES)}); "
            "run `make features` or `make import-release` first"
        )
    return stores


def _rows(manifest: pd.DataFrame, rows: str) -> pd.DataFrame:
    if manifest["sample"].duplicated().any():
        dup = int(manifest.loc[manifest["sample"].duplicated(), "sample"].iloc[0])
        raise ExportReleaseError(f"manifest: sample {dup} appears twice; rebuild the manifest")
    if rows == "annotations-order":
        manifest = manifest.sort_values("sample", kind="stable")
    return manifest.reset_index(drop=True)


def _missing_from(ids: pd.Series, stores: dict[str, FeatureStore]) -> list[list[str]]:
    """For each row, the stores that lack its clip."""
    return [[name for name, s in stores.items() if y not in s] for y in ids]


def _failure(stores: dict[str, FeatureStore], clip_id: str, names: list[str]) -> str:
    for name in names:
        reason = (stores[name].meta.get("failed") or {}).get(clip_id)
        if reason:
            return f"{name}: {reason}"
    return "not in " + ", ".join(names)


def split_lists(data_dir: Path, manifest: pd.DataFrame) -> tuple[dict[str, np.ndarray], list[str]]:
    """Annotation rows (``sample``) of each order file, in the order of the split list the manifest
    was built from when it is still there unchanged (the release's lists are shuffled), else
    ascending. Returns the lists and notes."""
    inputs, checksums = {}, {}
    meta_path = DataLayout(data_dir).manifest_meta
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        inputs, checksums = meta.get("inputs", {}), meta.get("sha256", {})
    lists: dict[str, np.ndarray] = {}
    notes: list[str] = []
    sources: dict[str, str] = {}
    for name in ORDER_FILES:
        split, column = order_file_column(name)
        values = manifest[column]
        if values.isna().all():
            if split == "train":
                notes.append(f"*_order{name[len('train_order') :]} not written: no {column} values")
            continue
        samples = manifest.loc[values == split, "sample"].to_numpy(np.int64)
        key = name[: -len(".h5")]
        path = Path(inputs.get(key, ""))
        if key in inputs and path.is_file() and sha256_file(path) == checksums.get(key):
            listed = read_split(path)
            if len(listed) == len(samples) and set(listed.tolist()) == set(samples.tolist()):
                lists[name] = listed
                sources[name] = str(path)
                continue
        lists[name] = np.sort(samples)
        sources[name] = "ascending"
    ascending = [n for n, s in sources.items() if s == "ascending"]
    if ascending:
        notes.append(
            f"{', '.join(ascending)}: the split lists the manifest was built from are gone or "
            "changed; rows listed in ascending order (same sets)"
        )
    return lists, notes


# --------------------------------------------------------------------------- writing


def _create(h5: Any, shape: tuple[int, ...], dtype: Any, compression: str, key: str = KEY) -> Any:
    """A dataset laid out for whole-array reads and row slices (see the module docstring)."""
    if compression == "none" or len(shape) == 1 or shape[0] == 0:
        return h5.create_dataset(key, shape=shape, dtype=dtype)
    row_bytes = int(np.prod(shape[1:])) * np.dtype(dtype).itemsize
    rows = int(max(1, min(shape[0], CHUNK_BYTES // row_bytes)))
    return h5.create_dataset(
        key,
        shape=shape,
        dtype=dtype,
        chunks=(rows, *shape[1:]),
        compression=compression,
        shuffle=True,
    )


def _readable(path: Path) -> None:
    """Temp files are created 0600; exported files are for other programs and users (umask)."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


def _write_array(path: Path, array: np.ndarray, key: str = KEY) -> None:
    import h5py

    with atomic_path(path, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset(key, data=array)
    _readable(path)


def _block_rows(row_bytes: int, block_bytes: int, compression: str, rows: int) -> int:
    block = max(1, block_bytes // row_bytes)
    if compression != "none":  # whole chunks per write
        chunk = max(1, CHUNK_BYTES // row_bytes)
        block = max(chunk, block // chunk * chunk)
    return min(block, max(rows, 1))


def write_features(
    path: Path,
    store: FeatureStore,
    ids: list[str],
    dtype: str,
    compression: str,
    block_bytes: int,
    progress: bool,
) -> dict[str, Any]:
    """Stream the store's rows for ``ids`` (None: zeros) into ``path``; returns timings and sizes."""
    import h5py
    from tqdm import tqdm

    tail = store.row_shape
    np_dtype = DTYPES[dtype]
    row_bytes = int(np.prod(tail)) * np.dtype(np_dtype).itemsize
    step = _block_rows(row_bytes, block_bytes, compression, len(ids))
    start = time.perf_counter()
    largest = 0
    with atomic_path(path, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
        ds = _create(f, (len(ids), *tail), np_dtype, compression)
        for lo in tqdm(
            range(0, len(ids), step), desc=f"export {path.name}", unit="block", disable=not progress
        ):
            chunk = ids[lo : lo + step]
            block = np.zeros((len(chunk), *tail), np_dtype)
            for i, clip_id in enumerate(chunk):
                if clip_id is not None:
                    block[i] = store.get(clip_id)
            ds[lo : lo + len(chunk)] = block
            largest = max(largest, block.nbytes)
            del block
            store.close()  # unmap the shards read so far: resident memory stays one block
    _readable(path)
    return {
        "rows": len(ids),
        "bytes": path.stat().st_size,
        "seconds": round(time.perf_counter() - start, 2),
        "largest_block_bytes": largest,
    }


def label_arrays(table: pd.DataFrame, num_classes: int) -> dict[str, np.ndarray]:
    """``labels.h5`` (one-hot per second), ``labels_closs.h5`` (1 on event seconds) and
    ``mil_labels.h5`` (one-hot video class) for the rows of ``table``."""
    background = num_classes - 1
    n = len(table)
    seg = (
        np.stack([np.asarray(s, np.int64) for s in table["segment_labels"]])
        if n
        else (np.zeros((0, SEGMENTS), np.int64))
    )
    label = table["label"].to_numpy(np.int64)
    eye = np.eye(num_classes, dtype=LABEL_DTYPE)
    return {
        "labels.h5": eye[seg],
        "labels_closs.h5": (seg != background).astype(LABEL_DTYPE),
        "mil_labels.h5": eye[label],
    }


# --------------------------------------------------------------------------- the stage


def _check_cfg(cfg: ExportReleaseConfig) -> None:
    for value, allowed, flag in (
        (cfg.rows, ROWS, "--rows"),
        (cfg.dtype, tuple(DTYPES), "--dtype"),
        (cfg.missing, MISSING, "--missing"),
        (cfg.compression, COMPRESSION, "--compression"),
    ):
        if value not in allowed:
            raise ExportReleaseError(f"{flag} {value!r}: use one of {', '.join(allowed)}")


def _plan(
    table: pd.DataFrame, stores: dict[str, FeatureStore], missing: str
) -> tuple[pd.DataFrame, list[dict[str, Any]], np.ndarray]:
    """Rows to write, the missing rows (sample, clip_id, youtube_id, why) and the presence mask."""
    keys = clip_ids(table)
    lacking = _missing_from(keys, stores)
    present = np.array([not names for names in lacking], dtype=bool)
    report = [
        {
            "sample": int(table["sample"].iat[i]),
            "clip_id": str(keys.iat[i]),
            "youtube_id": str(table["youtube_id"].iat[i]),
            "why": _failure(stores, str(keys.iat[i]), lacking[i]),
        }
        for i in np.nonzero(~present)[0]
    ]
    out = table[present].reset_index(drop=True) if missing == "drop" else table
    return out, report, (present[present] if missing == "drop" else present)


def run_export_release(cfg: ExportReleaseConfig) -> dict[str, Any]:
    """Write the manifest's rows and the stores' features in the AVE release layout."""
    cfg.data_dir, cfg.out_dir = Path(cfg.data_dir), Path(cfg.out_dir)
    _check_cfg(cfg)
    if not DataLayout(cfg.data_dir).manifest.is_file():
        raise ExportReleaseError(
            f"{DataLayout(cfg.data_dir).manifest} not found: the export takes its rows and labels from the "
            f"manifest; run `make annotations DATA_DIR={shell_word(cfg.data_dir)}` first"
        )
    if cfg.out_dir.resolve() == cfg.data_dir.resolve():
        raise ExportReleaseError("OUT_DIR must not be DATA_DIR; give a separate folder")
    manifest = _rows(load_manifest(cfg.data_dir), cfg.rows)
    num_classes = len(load_classes(cfg.data_dir))
    stores = _open_stores(cfg.data_dir)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    previous = _previous_files(cfg.out_dir)
    if not cfg.force:
        _refuse_foreign_files(cfg.out_dir, previous)

    table, missing, mask = _plan(manifest, stores, cfg.missing)
    if table.empty:
        raise ExportReleaseError(
            f"none of the {len(manifest)} manifest rows has features in every store "
            f"({', '.join(stores)}); nothing to export"
        )
    summary: dict[str, Any] = {
        "out_dir": str(cfg.out_dir),
        "data_dir": str(cfg.data_dir),
        "rows_order": cfg.rows,
        "dtype": cfg.dtype,
        "compression": cfg.compression,
        "missing_mode": cfg.missing,
        "manifest_rows": len(manifest),
        "rows": len(table),
        "stores": {
            n: {"random_weights": s.is_random, "source": s.meta.get("source")}
            for n, s in stores.items()
        },
        "missing": missing,
        "files": {},
        "notes": [],
    }
    start = time.perf_counter()
    written = _write_feature_files(cfg, stores, table, mask, 0, summary)
    for file, array in label_arrays(table, num_classes).items():
        _write_array(cfg.out_dir / file, array)
        summary["files"][file] = {"rows": len(array)}
        written.append(file)
    if cfg.missing == "zero":
        _write_array(cfg.out_dir / MASK_FILE, mask.astype(np.uint8))
        summary["files"][MASK_FILE] = {"rows": len(mask), "zero_rows": int((~mask).sum())}
        written.append(MASK_FILE)

    lists, notes = split_lists(cfg.data_dir, manifest)
    summary["notes"] += notes
    position = {int(s): i for i, s in enumerate(table["sample"])}
    for file, samples in lists.items():
        order = np.array([position[s] for s in samples.tolist() if s in position], ORDER_DTYPE)
        _write_array(cfg.out_dir / file, order, key=ORDER_KEY)
        summary["files"][file] = {"rows": len(order), "dropped": len(samples) - len(order)}
        written.append(file)

    written += _export_noisy(cfg, stores, num_classes, summary)
    summary["seconds"] = round(time.perf_counter() - start, 2)
    if any(s.is_random for s in stores.values()):
        summary["notes"].append(
            "WARNING: features from a network with RANDOM weights (smoke run), not real features"
        )
    rows = pd.DataFrame(
        {
            "row": np.arange(len(table)),
            "sample": table["sample"].to_numpy(np.int64),
            "youtube_id": table["youtube_id"].to_numpy(),
            "clip_id": clip_ids(table).to_numpy(),
            "features": mask.astype(np.uint8),
        }
    )
    with atomic_path(cfg.out_dir / ROWS_FILE, suffix=".csv") as tmp:
        rows.to_csv(tmp, index=False)
    _readable(cfg.out_dir / ROWS_FILE)
    written += [ROWS_FILE, SUMMARY_FILE]
    stale = sorted(set(previous) - set(written))
    for file in stale:
        (cfg.out_dir / file).unlink(missing_ok=True)
    summary["removed_stale"] = stale
    summary["written"] = written
    write_json(summary, cfg.out_dir / SUMMARY_FILE)
    _readable(cfg.out_dir / SUMMARY_FILE)
    return summary


def _layout_files() -> list[str]:
    """Every file name an export may write."""
    names = [f for files in EXPORT_FILES.values() for f in files[:2] if f is not None]
    names += [*LABEL_FILES, *ORDER_FILES, MASK_FILE, MASK_NOISY_FILE, ROWS_FILE, SUMMARY_FILE]
    return names


def _refuse_foreign_files(out_dir: Path, previous: list[str]) -> None:
    """Stop before writing when ``out_dir`` holds layout files no earlier export wrote there."""
    foreign = [f for f in _layout_files() if (out_dir / f).exists() and f not in previous]
    if foreign:
        shown = ", ".join(foreign[:4]) + (
            f" and {len(foreign) - 4} more" if len(foreign) > 4 else ""
        )
        raise ExportReleaseError(
            f"{out_dir} already holds {shown}, not written by an earlier export (the downloaded "
            "release?); give another OUT_DIR, or pass --force (make FORCE=1) to overwrite them"
        )


def _previous_files(out_dir: Path) -> list[str]:
    """Files a previous export wrote here (removed when this export does not write them)."""
    path = out_dir / SUMMARY_FILE
    if not path.is_file():
        return []
    try:
        return [f for f in json.loads(path.read_text()).get("written", []) if "/" not in f]
    except (json.JSONDecodeError, AttributeError):
        return []


def _write_feature_files(
    cfg: ExportReleaseConfig,
    stores: dict[str, FeatureStore],
    table: pd.DataFrame,
    mask: np.ndarray,
    which: int,
    summary: dict,
) -> list[str]:
    """One feature file per store for ``table``'s rows (zeros where ``mask`` is False):
    ``which`` 0 = the main release file name, 1 = the noisy one; sizes go to ``summary``."""
    ids = [y if ok else None for y, ok in zip(clip_ids(table), mask, strict=True)]
    written = []
    for name, store in stores.items():
        file = EXPORT_FILES[name][which]
        summary["files"][file] = write_features(
            cfg.out_dir / file,
            store,
            ids,
            cfg.dtype,
            cfg.compression,
            cfg.block_bytes,
            cfg.progress,
        )
        written.append(file)
    return written


def _export_noisy(
    cfg: ExportReleaseConfig, stores: dict[str, FeatureStore], num_classes: int, summary: dict
) -> list[str]:
    """The background-only videos: ``*_noisy.h5`` for every store with a noisy file, with the rows
    of the videos the stores hold (0 rows when they hold none), and ``labels_noisy.h5``."""
    path = DataLayout(cfg.data_dir).extra_background
    noisy_stores = {n: s for n, s in stores.items() if EXPORT_FILES[n][1] is not None}
    if not noisy_stores:
        return []
    extra = pd.DataFrame({"sample": [], "youtube_id": [], "label": []})
    if path.is_file():
        remedy = (
            f"rebuild it with `make import-release DATA_DIR={shell_word(cfg.data_dir)} FORCE=1`"
        )
        extra = read_parquet(path, remedy).sort_values("sample", kind="stable")
        extra = extra.reset_index(drop=True)
    keys = clip_ids(extra)
    held = {n: s for n, s in noisy_stores.items() if any(y in s for y in keys)}
    if held:
        table, missing, mask = _plan(extra, held, cfg.missing)
    else:
        if len(extra):
            summary["notes"].append(
                f"{path.name}: none of its videos is in the stores; noisy files have 0 rows"
            )
        held, table, missing, mask = noisy_stores, extra.iloc[:0], [], np.zeros(0, bool)
    summary["noisy"] = {"rows": len(table), "missing": missing, "stores": list(held)}
    written = _write_feature_files(cfg, held, table, mask, 1, summary)
    labels = np.eye(num_classes, dtype=LABEL_DTYPE)[table["label"].to_numpy(np.int64)]
    _write_array(cfg.out_dir / "labels_noisy.h5", labels)
    summary["files"]["labels_noisy.h5"] = {"rows": len(labels)}
    written.append("labels_noisy.h5")
    if cfg.missing == "zero":
        _write_array(cfg.out_dir / MASK_NOISY_FILE, mask.astype(np.uint8))
        written.append(MASK_NOISY_FILE)
    return written


# --------------------------------------------------------------------------- CLI


def format_summary(summary: dict) -> str:
    lines = [
        f"exported {summary['rows']} of {summary['manifest_rows']} manifest rows "
        f"({summary['rows_order']}, {summary['dtype']}, compression {summary['compression']}) "
        f"-> {summary['out_dir']} in {summary['seconds']:.1f} s"
    ]
    for file, info in summary["files"].items():
        extra = ""
        if "seconds" in info:
            extra = f", {info['bytes'] / 2**20:.1f} MiB in {info['seconds']:.1f} s"
        if info.get("dropped"):
            extra += f", {info['dropped']} dropped rows left out"
        lines.append(f"  {file}: {info['rows']} rows{extra}")
    for label, missing in (
        ("", summary["missing"]),
        ("background-only ", summary.get("noisy", {}).get("missing", [])),
    ):
        if not missing:
            continue
        how = (
            "dropped (order files remapped)"
            if summary["missing_mode"] == "drop"
            else ("zero-filled (0 in the mask file)")
        )
        lines.append(f"  {len(missing)} {label}rows without features, {how}:")
        lines += [f"    row {m['sample']} {m['youtube_id']}: {m['why']}" for m in missing[:20]]
        if len(missing) > 20:
            lines.append(f"    ... {len(missing) - 20} more in {SUMMARY_FILE}")
    if not summary["missing"]:
        lines.append("  every manifest row has features")
    if summary["removed_stale"]:
        lines.append(f"  removed files of a previous export: {', '.join(summary['removed_stale'])}")
    lines += [f"  note: {n}" for n in summary["notes"]]
    return "\n".join(lines)
