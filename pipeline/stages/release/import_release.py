"""Import stage: the published AVE feature release (HDF5 files) -> feature stores, checked against
the manifest.

Release rows follow Annotations.txt (one per sample); stores are keyed by YouTube ID, so the first
row of each video is imported and the other rows of the 45 repeated IDs are compared with it. The
178 background-only videos of the release (``*_noisy.h5``) become ids ``noisy-0000``.. in the same
stores and rows of ``DATA_DIR/extra_background.parquet``.

Streaming: a store shard is filled from HDF5 slices of at most ``block_bytes`` (float64 as
released), converted to the storage dtype as they arrive, so peak memory is bounded by the shard
size and the block size, never by the file (the visual file is 7.7 GiB). Defaults (shards of 256
videos, 64 MiB slices): a 2.2 GB float64 visual file imported into ``visual`` + ``visual_vec``
peaked at 0.54 GB RSS (float16) and 0.92 GB (float32), the same for any number of rows.

Checksums: the sha256 of every feature file read is recorded in the store's ``meta.json``
(``--no-checksum`` skips it: hashing the 7.7 GiB file reads it once more). A finished store is
never rewritten without ``--force``; a rerun only compares the recorded file sizes.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.fetch import sha256_file
from pipeline.core.identity import (
    IDENTITY_FILE,
    differences,
    digest,
    identity_sha256,
    make_record,
    read_json,
    write_record,
)
from pipeline.core.io import write_json, write_parquet
from pipeline.core.layout import DataLayout
from pipeline.core.manifest import AnnotationError, load_classes, load_manifest
from pipeline.core.store import DTYPES, StoreError, StoreWriter
from pipeline.core.text import shell_word
from pipeline.stages.annotations.ave import read_split
from pipeline.stages.release.layout import (
    FEATURE_FILES,
    KEY,
    LABEL_FILES,
    ORDER_FILES,
    SEGMENTS,
    noisy_id,
    order_file_column,
)

SOURCE = "AVE feature release"
FRAMES_PER_SEGMENT = 16

VISUAL_META = {
    "backbone": "VGG-19 pool5, Keras/Caffe weights",
    "weights": {
        "name": "Keras VGG19 ImageNet (vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5)",
        "sha256": None,
        "origin": SOURCE,
    },
    "preprocessing": "16 frames per second resized to 224x224, RGB->BGR, Caffe means subtracted; "
    "pool5 maps averaged over the 16 frames",
    "layout": "NHWC (segment, 7, 7, 512)",
}
STORE_META = {
    "audio": {
        "backbone": "VGGish, fc2+ReLU (release)",
        "weights": {
            "name": "vggish_model.ckpt (2017-2018 graph, ReLU on fc2)",
            "sha256": None,
            "origin": SOURCE,
        },
        "preprocessing": "16 kHz log-mel, one 96x64 patch per exact 1 s chunk; no PCA",
        "layout": "(segment, 128)",
    },
    "visual": VISUAL_META,
    "visual_vec": dict(VISUAL_META, layout="(segment, 512): pool5 averaged over the 7x7 grid"),
}


class ImportReleaseError(RuntimeError):
    """A release file is missing, malformed, damaged or disagrees with the manifest."""


@dataclass
class ImportReleaseConfig:
    release_dir: Path
    data_dir: Path = Path("data")
    dtype: str = "float16"
    force: bool = False
    checksum: bool = True  # sha256 of the feature files (label/order files are always hashed)
    shard_size: int = 256
    block_bytes: int = 64 << 20  # largest HDF5 slice read at once (bytes as stored, float64)
    progress: bool = True


@dataclass
class ReadStats:
    reads: int = 0
    max_block_bytes: int = 0
    rows_read: int = 0


@dataclass
class Source:
    """One HDF5 dataset of the release."""

    path: Path
    dataset: Any  # h5py.Dataset

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.dataset.shape[1:])) * self.dataset.dtype.itemsize


# --------------------------------------------------------------------------- opening files


def open_dataset(
    path: Path, stack: contextlib.ExitStack, tail: tuple[int, ...] | None = None, key: str = KEY
) -> Any:
    """Open ``path`` and return its dataset ``key``, checking the per-row shape when given."""
    import h5py

    try:
        handle = stack.enter_context(h5py.File(path, "r"))
    except OSError as exc:
        raise ImportReleaseError(
            f"{path}: cannot be opened as HDF5 ({exc}). The file is truncated, damaged or not an "
            "HDF5 file: download it again from the AVE release and rerun."
        ) from exc
    if key not in handle:
        raise ImportReleaseError(
            f"{path}: no dataset {key!r} (found {sorted(handle.keys())}); this is not a release file "
            "in the published layout, or the wrong file was put under this name"
        )
    dataset = handle[key]
    if not hasattr(dataset, "shape"):
        raise ImportReleaseError(f"{path}: {key!r} is a group, not a dataset")
    if tail is not None and tuple(dataset.shape[1:]) != tail:
        raise ImportReleaseError(
            f"{path}: dataset {key!r} has shape {tuple(dataset.shape)}, expected (rows, "
            f"{', '.join(map(str, tail))}) as in the release"
        )
    if dataset.dtype.kind not in "fiu":
        raise ImportReleaseError(f"{path}: dataset {key!r} has non-numeric dtype {dataset.dtype}")
    return dataset


def _read(source: Source, lo: int, hi: int, stats: ReadStats) -> np.ndarray:
    try:
        block = np.asarray(source.dataset[lo:hi])
    except OSError as exc:
        raise ImportReleaseError(
            f"{source.path}: reading rows {lo}..{hi - 1} failed ({exc}); the file is damaged or "
            "truncated: download it again and rerun (finished shards are kept)"
        ) from exc
    stats.reads += 1
    stats.rows_read += hi - lo
    stats.max_block_bytes = max(stats.max_block_bytes, block.nbytes)
    return block


def iter_blocks(rows: np.ndarray, block_rows: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """Cut strictly increasing file rows into slices ``[lo, hi)`` of at most ``block_rows`` rows.

    Yields ``lo``, ``hi`` and the wanted rows inside the slice (gaps are read and dropped).
    """
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size > 1 and np.any(np.diff(rows) <= 0):
        raise ValueError("rows must be strictly increasing")
    block_rows = max(1, int(block_rows))
    i = 0
    while i < rows.size:
        lo = int(rows[i])
        j = int(np.searchsorted(rows, lo + block_rows, side="left"))
        yield lo, int(rows[j - 1]) + 1, rows[i:j]
        i = j


# --------------------------------------------------------------------------- checks


def _mismatch(
    name: str, rows: np.ndarray, manifest: pd.DataFrame, what: str, found: Any, expected: Any
) -> str:
    examples = ", ".join(
        f"row {int(r)} ({manifest['youtube_id'].iat[int(r)]}): {what} {found[i]} vs manifest {expected[i]}"
        for i, r in enumerate(rows[:3])
    )
    return f"{name}: {rows.size} rows disagree with the manifest, e.g. {examples}"


def check_labels(
    files: dict[str, Path], manifest: pd.DataFrame, num_classes: int, stack: contextlib.ExitStack
) -> tuple[list[str], list[str], int | None]:
    """Compare the release's label files with the manifest.

    Returns (agreements, mismatches, rows of labels_noisy.h5 or None).
    """
    background = num_classes - 1
    seg = np.stack(manifest["segment_labels"].map(np.asarray).to_list()).astype(np.int64)
    label = manifest["label"].to_numpy(np.int64)
    n = len(manifest)
    ok: list[str] = []
    bad: list[str] = []
    noisy_rows = None
    specs = {
        "labels.h5": (SEGMENTS, num_classes),
        "labels_closs.h5": (SEGMENTS,),
        "mil_labels.h5": (num_classes,),
        "labels_noisy.h5": (num_classes,),
    }
    for name, tail in specs.items():
        if name not in files:
            continue
        data = np.asarray(open_dataset(files[name], stack, tail)[...])
        if name == "labels_noisy.h5":
            noisy_rows = len(data)
            wrong = np.nonzero(data.argmax(-1) != background)[0]
            if wrong.size:
                bad.append(
                    f"{name}: {wrong.size} of {len(data)} rows are not background, e.g. row {int(wrong[0])}"
                )
            else:
                ok.append(f"{name}: all {len(data)} background-only videos labelled background")
            continue
        if len(data) != n:
            bad.append(f"{name}: {len(data)} rows, the manifest has {n} (one per annotation row)")
            continue
        if name == "labels.h5":
            found, expected = data.argmax(-1), seg
            what = "per-second argmax"
        elif name == "labels_closs.h5":
            found, expected = (data > 0.5).astype(np.int64), (seg != background).astype(np.int64)
            what = "event seconds"
        else:
            found, expected = data.argmax(-1), label
            what = "video class"
        wrong = np.nonzero((found != expected).reshape(n, -1).any(1))[0]
        if wrong.size:
            bad.append(_mismatch(name, wrong, manifest, what, found[wrong], expected[wrong]))
        else:
            ok.append(f"{name}: all {n} rows agree with the manifest ({what})")
    return ok, bad, noisy_rows


def check_orders(files: dict[str, Path], manifest: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Each ``{split}_order[_match].h5`` must hold exactly the manifest's rows of that split."""
    ok: list[str] = []
    bad: list[str] = []
    for name in ORDER_FILES:
        if name not in files:
            continue
        split, column = order_file_column(name)
        values = manifest[column]
        if values.isna().all():
            ok.append(f"{name}: not compared (the manifest has no {column} column values)")
            continue
        try:
            order = read_split(files[name])
        except AnnotationError as exc:
            raise ImportReleaseError(str(exc)) from exc
        expected = set(manifest.loc[values == split, "sample"].astype(int))
        found = set(order.tolist())
        if found == expected and len(order) == len(found):
            ok.append(f"{name}: {len(order)} rows = the manifest's {column} '{split}'")
            continue
        extra, missing = sorted(found - expected), sorted(expected - found)
        bad.append(
            f"{name}: differs from the manifest's {column} '{split}': {len(extra)} rows only in the "
            f"file (e.g. {extra[:3]}), {len(missing)} only in the manifest (e.g. {missing[:3]}), "
            f"{len(order) - len(found)} repeated"
        )
    return ok, bad


def duplicate_diffs(source: Source, manifest: pd.DataFrame) -> dict[str, Any]:
    """Max abs difference between each repeated row of a video and its first row (as released)."""
    first: dict[str, int] = {}
    results = []
    for row, youtube_id in enumerate(manifest["youtube_id"]):
        if youtube_id not in first:
            first[youtube_id] = row
            continue
        a, b = first[youtube_id], row
        try:
            diff = float(
                np.max(np.abs(np.asarray(source.dataset[b]) - np.asarray(source.dataset[a])))
            )
        except OSError as exc:
            raise ImportReleaseError(f"{source.path}: reading rows {a}/{b} failed ({exc})") from exc
        results.append((youtube_id, a, b, diff))
    diffs = [d for *_, d in results]
    return {
        "file": source.path.name,
        "pairs": len(results),
        "identical": sum(d == 0 for d in diffs),
        "max_abs_diff": max(diffs, default=0.0),
        "largest": [
            {"youtube_id": y, "rows": [a, b], "max_abs_diff": d}
            for y, a, b, d in sorted(results, key=lambda r: -r[3])[:5]
        ],
    }


# --------------------------------------------------------------------------- streaming


def _fill_shard(
    ids: list[str],
    where: dict[str, tuple[str, int]],
    sources: dict[str, Source],
    transforms: dict[str, dict[str, Callable[[np.ndarray], np.ndarray]]],
    outputs: dict[str, np.ndarray],
    block_bytes: int,
    stats: ReadStats,
    ranges: dict[str, list[float]],
) -> None:
    """Fill ``outputs[store][i]`` for the shard's ids from the sources, slice by slice.

    ``where`` maps an id to (source kind, file row); ``transforms[kind][store]`` turns a block of
    file rows into store rows (identity, or the 7x7 mean for a computed ``visual_vec``).
    """
    pos = 0
    while pos < len(ids):
        kind = where[ids[pos]][0]
        end = pos
        while end < len(ids) and where[ids[end]][0] == kind:
            end += 1
        rows = np.array([where[y][1] for y in ids[pos:end]], dtype=np.int64)
        source = sources[kind]
        block_rows = max(1, block_bytes // source.row_bytes)
        at = pos
        for lo, hi, wanted in iter_blocks(rows, block_rows):
            block = _read(source, lo, hi, stats)
            if wanted.size != hi - lo:
                block = block[wanted - lo]
            _check_finite(block, source, wanted, ids[at : at + wanted.size])
            ranges.setdefault(source.path.name, [np.inf, -np.inf])
            r = ranges[source.path.name]
            r[0], r[1] = min(r[0], float(block.min())), max(r[1], float(block.max()))
            for store, out in outputs.items():
                out[at : at + wanted.size] = transforms[kind][store](block)
            at += wanted.size
        pos = end


def _check_finite(block: np.ndarray, source: Source, rows: np.ndarray, ids: list[str]) -> None:
    finite = np.isfinite(block).reshape(len(block), -1).all(1)
    if not finite.all():
        i = int(np.nonzero(~finite)[0][0])
        raise ImportReleaseError(
            f"{source.path}: row {int(rows[i])} ({ids[i]}) holds NaN or infinite values "
            f"({int((~finite).sum())} such rows in this block); the file is corrupt: download it again"
        )


def _check_storable(out: np.ndarray, store: str, shard: int) -> None:
    if not np.isfinite(out).all():
        raise ImportReleaseError(
            f"store {store}, shard {shard}: values overflow the storage dtype {out.dtype} "
            "(float16 holds at most 65504); rerun with --dtype float32 --force"
        )


# --------------------------------------------------------------------------- the stage


def _store_plan(
    manifest: pd.DataFrame, noisy_rows: int | None
) -> tuple[list[str], dict[str, tuple[str, int]]]:
    """Planned ids (first appearance order, then noisy ids) and where each comes from."""
    where: dict[str, tuple[str, int]] = {}
    for row, youtube_id in enumerate(manifest["youtube_id"]):
        where.setdefault(youtube_id, ("main", row))
    for i in range(noisy_rows or 0):
        where[noisy_id(i)] = ("noisy", i)
    return list(where), where


def _file_info(path: Path, dataset: Any, checksum: bool) -> dict[str, Any]:
    return {
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path) if checksum else None,
        "dataset": KEY,
        "shape": list(dataset.shape),
        "dtype": str(dataset.dtype),
    }


def _find_files(release_dir: Path) -> dict[str, Path]:
    if not release_dir.is_dir():
        raise ImportReleaseError(f"{release_dir}: release folder not found")
    names = (
        [f for spec in FEATURE_FILES.values() for f in spec[:2] if f]
        + list(LABEL_FILES)
        + list(ORDER_FILES)
    )
    return {n: release_dir / n for n in names if (release_dir / n).is_file()}


def run_import_release(cfg: ImportReleaseConfig) -> dict[str, Any]:
    """Check the release against the manifest, then stream its features into the stores."""
    cfg.data_dir, cfg.release_dir = Path(cfg.data_dir), Path(cfg.release_dir)
    if cfg.dtype not in DTYPES:
        raise ImportReleaseError(
            f"storage dtype {cfg.dtype!r} not supported; use one of {sorted(DTYPES)}"
        )
    if not DataLayout(cfg.data_dir).manifest.is_file():
        raise ImportReleaseError(
            f"{DataLayout(cfg.data_dir).manifest} not found: the import checks the release against the "
            f"manifest; run `make annotations DATA_DIR={shell_word(cfg.data_dir)}` first"
        )
    manifest = load_manifest(cfg.data_dir).sort_values("sample").reset_index(drop=True)
    num_classes = len(load_classes(cfg.data_dir))
    files = _find_files(cfg.release_dir)
    mains = [spec[0] for spec in FEATURE_FILES.values()]
    if not any(m in files for m in mains):
        raise ImportReleaseError(
            f"{cfg.release_dir}: none of the release feature files ({', '.join(mains)}) is here"
        )
    summary: dict[str, Any] = {
        "release_dir": str(cfg.release_dir),
        "rows": len(manifest),
        "videos": int(manifest["youtube_id"].nunique()),
        "files_found": sorted(files),
        "files_missing": sorted(
            (
                {f for spec in FEATURE_FILES.values() for f in spec[:2] if f}
                | set(LABEL_FILES)
                | set(ORDER_FILES)
            )
            - set(files)
        ),
        "stores": {},
        "duplicates": {},
        "notes": [],
    }
    stats = ReadStats()
    with contextlib.ExitStack() as stack:
        sources, noisy_rows = _open_features(files, manifest, stack, summary)
        ok, bad, labels_noisy_rows = check_labels(files, manifest, num_classes, stack)
        ok_o, bad_o = check_orders(files, manifest)
        if (
            labels_noisy_rows is not None
            and noisy_rows is not None
            and labels_noisy_rows != noisy_rows
        ):
            bad.append(
                f"labels_noisy.h5: {labels_noisy_rows} rows, the noisy feature files have {noisy_rows}"
            )
        if bad or bad_o:
            raise ImportReleaseError(
                "the release does not match the manifest (features would be keyed to the wrong "
                "rows or splits); rebuild the manifest from the release's annotation and order files "
                f"(make annotations AVE_SPLITS={cfg.release_dir}) or check the files:\n  "
                + "\n  ".join(bad + bad_o)
            )
        summary["checks"] = ok + ok_o
        small = [n for n in files if n in LABEL_FILES or n in ORDER_FILES]
        summary["label_file_sha256"] = {n: sha256_file(files[n]) for n in sorted(small)}
        _import_stores(cfg, files, manifest, sources, noisy_rows, stats, summary)
        for store in ("audio", "visual"):
            if (store, "main") in sources:
                summary["duplicates"][store] = duplicate_diffs(sources[store, "main"], manifest)
    summary["reads"] = stats.reads
    summary["max_block_bytes"] = stats.max_block_bytes
    summary["rows_read"] = stats.rows_read
    noisy_stores = [s for s, info in summary["stores"].items() if info.get("extra_background")]
    if noisy_stores:
        write_extra_background(cfg.data_dir, noisy_rows or 0, num_classes - 1, noisy_stores)
        summary["extra_background"] = {
            "rows": noisy_rows,
            "stores": noisy_stores,
            "path": str(DataLayout(cfg.data_dir).extra_background),
        }
    return summary


def _open_features(
    files: dict[str, Path], manifest: pd.DataFrame, stack: contextlib.ExitStack, summary: dict
) -> tuple[dict[tuple[str, str], Source], int | None]:
    """Open and shape-check every feature file; sources keyed by (store, 'main'|'noisy')."""
    n = len(manifest)
    sources: dict[tuple[str, str], Source] = {}
    noisy_rows: set[int] = set()
    for store, (main, noisy, tail) in FEATURE_FILES.items():
        for kind, name in (("main", main), ("noisy", noisy)):
            if name is None or name not in files:
                continue
            ds = open_dataset(files[name], stack, tail)
            if ds.dtype.kind != "f":
                raise ImportReleaseError(
                    f"{files[name]}: features must be floating point, found {ds.dtype}"
                )
            if kind == "main" and ds.shape[0] != n:
                raise ImportReleaseError(
                    f"{files[name]}: {ds.shape[0]} rows, but the manifest has {n} (one per "
                    "Annotations.txt row); the file is cut short or belongs to another annotation set"
                )
            if kind == "noisy":
                noisy_rows.add(ds.shape[0])
            sources[store, kind] = Source(files[name], ds)
    if len(noisy_rows) > 1:
        raise ImportReleaseError(
            f"the *_noisy.h5 feature files disagree on their row count: {sorted(noisy_rows)}"
        )
    for store in ("audio", "visual"):
        main, noisy, _ = FEATURE_FILES[store]
        if (store, "noisy") in sources and (store, "main") not in sources:
            summary["notes"].append(
                f"{noisy} found without {main}: its background rows are not imported"
            )
            del sources[store, "noisy"]
        elif (store, "main") in sources and (store, "noisy") not in sources:
            summary["notes"].append(
                f"{noisy} absent: the {store} store has no background-only rows"
            )
    if ("visual_vec", "main") not in sources and ("visual", "main") in sources:
        summary["notes"].append(
            "visual_feature_vec.h5 absent: visual_vec computed from visual_feature.h5 (mean over 7x7)"
        )
    elif ("visual_vec", "main") in sources and ("visual", "main") in sources:
        vec, maps = sources["visual_vec", "main"], sources["visual", "main"]
        k = min(4, n)
        diff = float(
            np.max(
                np.abs(np.asarray(vec.dataset[:k]) - np.asarray(maps.dataset[:k]).mean(axis=(2, 3)))
            )
        )
        summary["notes"].append(
            f"visual_feature_vec.h5 vs the 7x7 mean of visual_feature.h5, rows 0..{k - 1}: max abs diff {diff:.3g}"
        )
    return sources, (noisy_rows.pop() if noisy_rows else None)


def _vec(block: np.ndarray) -> np.ndarray:
    return block.mean(axis=(2, 3))


def _identity(block: np.ndarray) -> np.ndarray:
    return block


def _import_stores(
    cfg: ImportReleaseConfig,
    files: dict[str, Path],
    manifest: pd.DataFrame,
    sources: dict[tuple[str, str], Source],
    noisy_rows: int | None,
    stats: ReadStats,
    summary: dict,
) -> None:
    """Plan the stores, group those read from the same files, and stream each group once."""
    # store -> {kind: (source, transform)}
    feeds: dict[str, dict[str, tuple[Source, Callable]]] = {}
    for store in ("audio", "visual"):
        feeds[store] = {
            k: (sources[store, k], _identity) for k in ("main", "noisy") if (store, k) in sources
        }
    if ("visual_vec", "main") in sources:
        feeds["visual_vec"] = {"main": (sources["visual_vec", "main"], _identity)}
    elif ("visual", "main") in sources:
        feeds["visual_vec"] = {"main": (sources["visual", "main"], _vec)}
    if ("visual", "noisy") in sources and "visual_vec" in feeds:
        feeds["visual_vec"]["noisy"] = (sources["visual", "noisy"], _vec)
    feeds = {s: f for s, f in feeds.items() if "main" in f}

    groups: dict[tuple, list[str]] = {}
    for store, feed in feeds.items():
        key = tuple((k, str(feed[k][0].path)) for k in sorted(feed))
        groups.setdefault(key, []).append(store)

    for stores in groups.values():
        feed = feeds[stores[0]]
        with_noisy = "noisy" in feed
        ids, where = _store_plan(manifest, noisy_rows if with_noisy else None)
        writers: dict[str, StoreWriter] = {}
        for store in stores:
            info: dict[str, Any] = {
                "videos": len(ids),
                "extra_background": noisy_rows if with_noisy else 0,
            }
            summary["stores"][store] = info
            writer = _open_writer(cfg, store, ids, feeds[store], info)
            if writer is not None:
                writers[store] = writer
        if not writers:
            continue
        _stream(cfg, writers, feeds, where, stats, summary)


def _open_writer(
    cfg: ImportReleaseConfig, store: str, ids: list[str], feed: dict, info: dict
) -> StoreWriter | None:
    tail = FEATURE_FILES[store][2]
    meta = {
        "source": SOURCE,
        **STORE_META[store],
        "frames_per_segment": FRAMES_PER_SEGMENT,
        "original_dtype": str(feed["main"][0].dataset.dtype),
        "storage_dtype": cfg.dtype,
        "random_weights": False,
        "key": "youtube_id: first annotation row of each video; noisy-NNNN: row NNNN of the *_noisy.h5 files",
        "extra_background": info["extra_background"],
    }
    computed = feed["main"][1] is _vec
    if computed:
        names = " + ".join(source.path.name for source, _ in feed.values())
        meta["computed_from"] = f"{names}: mean over the 7x7 grid, by avel"
    try:
        writer = StoreWriter.open(
            cfg.data_dir,
            store,
            ids,
            tail,
            dtype=cfg.dtype,
            shard_size=cfg.shard_size,
            meta=meta,
            force=cfg.force,
        )
    except StoreError as exc:
        raise ImportReleaseError(str(exc)) from exc
    identity = _release_identity(cfg, store, feed)
    recorded = read_json(writer.root / IDENTITY_FILE)
    if recorded is None and writer.complete:  # imported before identity records: by its files
        files = _read_meta(writer).get("files") or {}
        shas = {n: f.get("sha256") for n, f in files.items()}
        recorded = {"identity": {"files": shas} if all(shas.values()) else {}}
    if recorded is not None and any(writer.is_done(s) for s in range(writer.num_shards)):
        diffs = differences(recorded.get("identity") or {}, identity)
        if diffs:
            state = "finished" if writer.complete else "partly imported"
            raise ImportReleaseError(
                f"{writer.root}: this {state} store was imported from other files or settings: "
                f"{'; '.join(diffs)}; pass --force (FORCE=1) to import again"
            )
    record = make_record(identity, ids, {}, 0)
    write_record(writer.root, record)
    if writer.complete:
        meta = _read_meta(writer)
        if meta.get("identity_sha256") is None:
            meta.update(identity=identity, identity_sha256=digest(meta))
            write_json(meta, writer.root / "meta.json")
        info["status"] = "up to date (finished store kept; --force rebuilds it)"
        return None
    info["status"] = (
        "resumed" if any(writer.is_done(s) for s in range(writer.num_shards)) else "imported"
    )
    writer.meta = dict(meta)
    writer.meta["files"] = {
        source.path.name: _file_info(source.path, source.dataset, cfg.checksum)
        for source, _ in feed.values()
    }
    if computed:
        info["computed_from"] = meta["computed_from"]
    return writer


def _release_identity(cfg: ImportReleaseConfig, store: str, feed: dict) -> dict[str, Any]:
    """What an imported store is made of: the release files by content (sha256; their size and
    mtime with ``--no-checksum``), the storage dtype and the reduction."""
    files = {}
    for source, _ in feed.values():
        path = source.path
        if cfg.checksum:
            files[path.name] = sha256_file(path)
        else:
            st = path.stat()
            files[path.name] = f"{st.st_size} bytes, mtime_ns {st.st_mtime_ns}"
    return {
        "backbone": f"release import ({SOURCE})",
        "files": files,
        "dtype": cfg.dtype,
        "computed_from": "mean over the 7x7 grid" if feed["main"][1] is _vec else None,
    }


def _read_meta(writer: StoreWriter) -> dict:
    return json.loads((writer.root / "meta.json").read_text())


def _stream(
    cfg: ImportReleaseConfig,
    writers: dict[str, StoreWriter],
    feeds: dict,
    where: dict[str, tuple[str, int]],
    stats: ReadStats,
    summary: dict,
) -> None:
    from tqdm import tqdm

    first = next(iter(writers.values()))
    todo_by_store = {s: [shard for shard, _ in w.pending_shards()] for s, w in writers.items()}
    pending = sorted({shard for shards in todo_by_store.values() for shard in shards})
    kinds = feeds[next(iter(writers))]
    sources = {k: src for k, (src, _) in kinds.items()}
    transforms = {k: {s: feeds[s][k][1] for s in writers} for k in kinds}
    ranges: dict[str, list[float]] = {}
    label = "+".join(writers)
    for shard in tqdm(pending, desc=f"import {label}", unit="shard", disable=not cfg.progress):
        ids = first.shard_ids(shard)
        todo = {s: w for s, w in writers.items() if not w.is_done(shard)}
        outputs = {
            s: np.empty((len(ids), *w.row_shape), DTYPES[cfg.dtype]) for s, w in todo.items()
        }
        _fill_shard(ids, where, sources, transforms, outputs, cfg.block_bytes, stats, ranges)
        for store, out in outputs.items():
            _check_storable(out, store, shard)
            todo[store].write_shard(shard, dict(zip(ids, out, strict=True)))
        del outputs
    for store, writer in writers.items():
        summary["stores"][store]["shards_written"] = len(todo_by_store[store])
        meta = writer.finalize()
        if meta is None:
            raise ImportReleaseError(f"{writer.root}: shards still missing after the import")
        record = read_json(writer.root / IDENTITY_FILE)
        if record is not None:
            meta.update(identity=record["identity"], identity_sha256=identity_sha256(record))
            write_json(meta, writer.root / "meta.json")
        summary["stores"][store]["value_range"] = ranges


def write_extra_background(data_dir: Path, rows: int, background: int, stores: list[str]) -> None:
    """``DATA_DIR/extra_background.parquet``: ``rows`` background-only videos in ``stores``."""
    table = pd.DataFrame(
        {
            "sample": np.arange(rows, dtype=np.int64),
            "youtube_id": [noisy_id(i) for i in range(rows)],
            "category": "background",
            "label": np.full(rows, background, dtype=np.int16),
            "start": 0,
            "end": 0,
            "split": pd.array(["train"] * rows, dtype="string"),
            "segment_labels": [[background] * SEGMENTS for _ in range(rows)],
            "stores": [list(stores) for _ in range(rows)],
        }
    )
    write_parquet(table, DataLayout(data_dir).extra_background)


# --------------------------------------------------------------------------- CLI


def format_summary(summary: dict) -> str:
    lines = [
        f"AVE feature release {summary['release_dir']}: {summary['rows']} rows, {summary['videos']} videos"
    ]
    for store, info in summary["stores"].items():
        extra = (
            f" + {info['extra_background']} background-only" if info.get("extra_background") else ""
        )
        lines.append(
            f"  store {store}: {info['status']}; {info['videos'] - (info.get('extra_background') or 0)} videos{extra}"
        )
        if info.get("computed_from"):
            lines.append(f"    computed from {info['computed_from']}")
    for d in summary["duplicates"].values():
        lines.append(
            f"  repeated YouTube IDs ({d['file']}): {d['pairs']} extra rows, {d['identical']} identical to the "
            f"video's first row, max abs diff {d['max_abs_diff']:.4g} (first row imported)"
        )
    lines += [f"  ok: {c}" for c in summary.get("checks", [])]
    if summary.get("extra_background"):
        eb = summary["extra_background"]
        lines.append(
            f"  {eb['rows']} background-only videos ({', '.join(eb['stores'])}) -> {eb['path']}"
        )
    lines.append(f"  not in the release folder: {', '.join(summary['files_missing']) or 'none'}")
    lines += [f"  note: {n}" for n in summary["notes"]]
    lines.append(
        f"  read {summary['rows_read']} rows in {summary['reads']} slices, largest {summary['max_block_bytes'] / 2**20:.1f} MiB"
    )
    return "\n".join(lines)
