"""Export to the AVE release layout: stores written through the real StoreWriter, exported, read back
with h5py and imported again with import-release; small files compared with the real release."""

from __future__ import annotations

import os
import shutil
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from pipeline.cli import main as avel
from pipeline.core.store import FeatureStore, StoreWriter
from pipeline.stages.annotations.stage import AnnotationsConfig, run_annotations
from pipeline.stages.release.export_release import (
    MASK_FILE,
    ROWS_FILE,
    ExportReleaseConfig,
    ExportReleaseError,
    run_export_release,
)
from pipeline.stages.release.import_release import (
    ImportReleaseConfig,
    run_import_release,
    write_extra_background,
)
from pipeline.stages.release.layout import FEATURE_FILES, KEY, ORDER_FILES, noisy_id
from tests.support.release_set import (
    BACKGROUND,
    CATEGORIES,
    DUP_FIRST,
    DUP_SECOND,
    ROWS,
    annotation_rows,
    build_manifest,
    copy_manifest,
    first_ids,
)

NOISY = 3
SPLITS = {
    "train": [5, 0, 9, 1, 2, 3, 4, 6, 7, 8, 10, 11, 12, 13, 14, 15],
    "val": [19, 16, 17, 18],
    "test": [23, 21, 20, 22],
}  # shuffled, as the release's lists are


def _write_stores(data: Path, ids: list[str], failed: dict[str, str] | None = None) -> None:
    """audio / visual / visual_vec stores (float32) over ``ids`` + the noisy ids, random values
    (``failed`` videos recorded as failures in the visual store);
    visual_vec of the noisy videos is the 7x7 mean of their maps (as import-release computes it)."""
    rng = np.random.default_rng(13)
    failed = failed or {}
    noisy = [noisy_id(i) for i in range(NOISY)]
    all_ids = ids + noisy
    values = {
        "audio": np.maximum(rng.normal(size=(len(all_ids), 10, 128)), 0).astype(np.float32),
        "visual": rng.gamma(1.0, 2.0, size=(len(all_ids), 10, 7, 7, 512)).astype(np.float32),
    }
    values["visual_vec"] = rng.random((len(all_ids), 10, 512)).astype(np.float32)
    values["visual_vec"][len(ids) :] = values["visual"][len(ids) :].mean(axis=(2, 3))
    for name, array in values.items():
        writer = StoreWriter.open(
            data,
            name,
            all_ids,
            FEATURE_FILES[name][2],
            dtype="float32",
            shard_size=8,
            meta={"source": "test", "random_weights": False},
        )
        for shard, shard_ids in writer.pending_shards():
            writer.write_shard(
                shard,
                {
                    y: failed[y] if y in failed and name == "visual" else array[all_ids.index(y)]
                    for y in shard_ids
                },
            )
        writer.finalize()
    write_extra_background(data, NOISY, BACKGROUND, list(values))


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("export_small")
    rows = annotation_rows()
    data = build_manifest(root, rows, SPLITS, root / "data")
    manifest_only = copy_manifest(data, root / "manifest_only")
    _write_stores(data, first_ids(rows))
    return {"rows": rows, "data": data, "manifest_only": manifest_only}


def _cfg(data: Path, out: Path, **kw) -> ExportReleaseConfig:
    return ExportReleaseConfig(out_dir=out, data_dir=data, **{"progress": False, **kw})


def _read(path: Path, key: str = KEY) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f[key][...]


def _store_arrays(data: Path) -> dict[str, tuple[list[str], np.ndarray]]:
    stores = {n: FeatureStore.open(data, n) for n in FEATURE_FILES}
    return {n: (s.clip_ids, s.gather(s.clip_ids)) for n, s in stores.items()}


def test_export_layout_and_round_trip(small: dict, tmp_path: Path) -> None:
    out = tmp_path / "release"
    summary = run_export_release(_cfg(small["data"], out))
    rows = small["rows"]
    assert summary["rows"] == ROWS and not summary["missing"]

    expected = {
        "audio_feature.h5": ((ROWS, 10, 128), np.float64),
        "visual_feature.h5": ((ROWS, 10, 7, 7, 512), np.float64),
        "visual_feature_vec.h5": ((ROWS, 10, 512), np.float64),
        "labels.h5": ((ROWS, 10, BACKGROUND + 1), np.float32),
        "labels_closs.h5": ((ROWS, 10), np.float32),
        "mil_labels.h5": ((ROWS, BACKGROUND + 1), np.float32),
        "audio_feature_noisy.h5": ((NOISY, 10, 128), np.float64),
        "visual_feature_noisy.h5": ((NOISY, 10, 7, 7, 512), np.float64),
        "labels_noisy.h5": ((NOISY, BACKGROUND + 1), np.float32),
    }
    for name, (shape, dtype) in expected.items():
        with h5py.File(out / name, "r") as f:
            assert list(f.keys()) == [KEY], name
            ds = f[KEY]
            assert ds.shape == shape and ds.dtype == dtype, name
            assert ds.chunks is None and ds.compression is None, name  # contiguous, as released
    assert not (out / MASK_FILE).exists()
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "visual_feature.h5").stat().st_mode & 0o777 == 0o666 & ~umask

    # features: one row per annotation row, the repeated video twice
    visual = FeatureStore.open(small["data"], "visual")
    exported = _read(out / "visual_feature.h5")
    for r, (_, youtube_id, _, _) in enumerate(rows):
        np.testing.assert_array_equal(exported[r], visual.get(youtube_id))
    np.testing.assert_array_equal(exported[DUP_FIRST], exported[DUP_SECOND])

    labels, closs, mil = (_read(out / n) for n in ("labels.h5", "labels_closs.h5", "mil_labels.h5"))
    for r, (category, _, start, end) in enumerate(rows):
        c = CATEGORIES.index(category)
        seconds = np.array([c if start <= t < end else BACKGROUND for t in range(10)])
        assert labels[r].argmax(-1).tolist() == seconds.tolist() and labels[r].sum() == 10
        assert closs[r].tolist() == (seconds != BACKGROUND).astype(float).tolist()
        assert mil[r].argmax() == c and mil[r].sum() == 1
    assert (_read(out / "labels_noisy.h5").argmax(-1) == BACKGROUND).all()

    # order files: the split lists in the order the manifest was built from
    for split, indices in SPLITS.items():
        with h5py.File(out / f"{split}_order.h5", "r") as f:
            assert list(f.keys()) == ["order"] and f["order"].dtype == np.int64
            assert f["order"][...].tolist() == indices
    assert not (out / "train_order_match.h5").exists()  # no match lists in this manifest
    table = pd.read_csv(out / ROWS_FILE)
    assert table["sample"].tolist() == list(range(ROWS)) and (table["features"] == 1).all()

    # round trip: import-release of the export gives back the same stores: bitwise from a float32
    # export; from the default float64 one within float32 rounding (the noisy videos' visual_vec
    # is the 7x7 mean computed at the file's precision)
    out32 = tmp_path / "release32"
    run_export_release(_cfg(small["data"], out32, dtype="float32"))
    original = _store_arrays(small["data"])
    for source, exact in ((out32, True), (out, False)):
        back = tmp_path / f"back-{source.name}"
        shutil.copytree(small["manifest_only"], back)
        run_import_release(
            ImportReleaseConfig(
                source, back, dtype="float32", shard_size=8, checksum=False, progress=False
            )
        )
        returned = _store_arrays(back)
        for name in FEATURE_FILES:
            assert returned[name][0] == original[name][0], name
            if exact:
                assert returned[name][1].tobytes() == original[name][1].tobytes(), name
            else:
                np.testing.assert_allclose(returned[name][1], original[name][1], rtol=1e-6)
    pd.testing.assert_frame_equal(
        pd.read_parquet(back / "extra_background.parquet"),
        pd.read_parquet(small["data"] / "extra_background.parquet"),
    )

    # a second export writes the same bytes (idempotent)
    before = {n: (out / n).read_bytes() for n in ("audio_feature.h5", "train_order.h5")}
    run_export_release(_cfg(small["data"], out))
    assert all((out / n).read_bytes() == b for n, b in before.items())


@pytest.fixture(scope="module")
def with_failures(small: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The same manifest; videos of rows 2 and 17 failed in the visual store, noisy 1 in audio."""
    data = tmp_path_factory.mktemp("failures") / "data"
    shutil.copytree(small["manifest_only"], data)
    failed = {"vid00000002": "download failed: video unavailable", "vid00000017": "no frames"}
    _write_stores(data, first_ids(small["rows"]), failed)
    # noisy-0001 missing from the audio store only
    root = data / "features" / "audio"
    index = pd.read_parquet(root / "index.parquet")
    index[index["clip_id"] != noisy_id(1)].to_parquet(root / "index.parquet", index=False)
    return {"data": data, "failed": failed}


def test_missing_rows_dropped_and_orders_remapped(
    small: dict, with_failures: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "drop"
    assert avel(["export-release", str(out), "--data-dir", str(with_failures["data"])]) == 0
    printed = capsys.readouterr().out
    assert "2 rows without features, dropped (order files remapped)" in printed
    assert (
        "row 2 vid00000002: visual: download failed" in printed and "row 17 vid00000017" in printed
    )
    assert "1 background-only rows without features" in printed

    kept = [r for r in range(ROWS) if r not in (2, 17)]
    table = pd.read_csv(out / ROWS_FILE)
    assert table["sample"].tolist() == kept
    audio = FeatureStore.open(with_failures["data"], "audio")
    exported = _read(out / "audio_feature.h5")
    assert len(exported) == len(kept) == len(_read(out / "labels.h5"))
    for i, r in enumerate(kept):
        np.testing.assert_array_equal(exported[i], audio.get(small["rows"][r][1]))
    for split, indices in SPLITS.items():
        order = _read(out / f"{split}_order.h5", "order")
        assert [kept[i] for i in order] == [r for r in indices if r not in (2, 17)]
    assert len(_read(out / "visual_feature_noisy.h5")) == len(_read(out / "labels_noisy.h5")) == 2


def test_missing_rows_zero_filled_with_mask(with_failures: dict, tmp_path: Path) -> None:
    out = tmp_path / "zero"
    summary = run_export_release(_cfg(with_failures["data"], out, missing="zero"))
    assert [m["sample"] for m in summary["missing"]] == [2, 17]
    mask = _read(out / MASK_FILE)
    assert mask.dtype == np.uint8 and mask.tolist() == [
        0 if r in (2, 17) else 1 for r in range(ROWS)
    ]
    visual, audio = _read(out / "visual_feature.h5"), _read(out / "audio_feature.h5")
    assert len(visual) == ROWS and not visual[[2, 17]].any() and visual[[0, 16]].any()
    assert not audio[[2, 17]].any()  # a row is zero in every file when one store lacks it
    for split, indices in SPLITS.items():
        assert _read(out / f"{split}_order.h5", "order").tolist() == indices
    assert _read(out / "feature_mask_noisy.h5").tolist() == [1, 0, 1]
    # switching back to drop removes the mask files of the zero export
    again = run_export_release(_cfg(with_failures["data"], out))
    assert set(again["removed_stale"]) == {MASK_FILE, "feature_mask_noisy.h5"}
    assert not (out / MASK_FILE).exists()


def test_manifest_row_order_and_float32(small: dict, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(small["data"], data, symlinks=True)
    manifest = pd.read_parquet(data / "manifest.parquet")
    manifest.iloc[::-1].to_parquet(data / "manifest.parquet", index=False)
    out = tmp_path / "out"
    run_export_release(_cfg(data, out, rows="manifest", dtype="float32"))
    assert pd.read_csv(out / ROWS_FILE)["sample"].tolist() == list(range(ROWS))[::-1]
    audio = _read(out / "audio_feature.h5")
    assert audio.dtype == np.float32  # the option; the default is the release's float64
    store = FeatureStore.open(data, "audio")
    np.testing.assert_array_equal(
        audio[0], store.get(small["rows"][ROWS - 1][1]).astype(np.float32)
    )
    order = _read(out / "test_order.h5", "order")
    assert [ROWS - 1 - i for i in order] == SPLITS["test"]
    run_export_release(_cfg(data, out))  # default: Annotations.txt order whatever the file order
    assert pd.read_csv(out / ROWS_FILE)["sample"].tolist() == list(range(ROWS))


def test_compressed_files_are_row_chunked(small: dict, tmp_path: Path) -> None:
    plain, packed = tmp_path / "plain", tmp_path / "gzip"
    run_export_release(_cfg(small["data"], plain))
    run_export_release(_cfg(small["data"], packed, compression="gzip", block_bytes=3 << 20))
    for name in ("audio_feature.h5", "visual_feature.h5", "visual_feature_vec.h5"):
        with h5py.File(packed / name, "r") as f:
            ds = f[KEY]
            assert ds.compression == "gzip" and ds.shuffle
            assert ds.chunks[1:] == ds.shape[1:]  # whole rows per chunk
            assert ds.chunks[0] * np.prod(ds.shape[1:]) * 4 <= 1 << 20 or ds.chunks[0] == 1
            np.testing.assert_array_equal(ds[...], _read(plain / name))
            np.testing.assert_array_equal(ds[5:9], _read(plain / name)[5:9])
    assert (packed / "audio_feature.h5").stat().st_size < (
        plain / "audio_feature.h5"
    ).stat().st_size


def test_peak_memory_stays_far_below_the_file(small: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    tracemalloc.start()
    try:
        summary = run_export_release(_cfg(small["data"], out, block_bytes=2 << 20))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    size = (out / "visual_feature.h5").stat().st_size
    assert summary["files"]["visual_feature.h5"]["largest_block_bytes"] <= 2 << 20
    assert peak < size / 4, f"peak {peak / 1e6:.1f} MB for a {size / 1e6:.1f} MB file"


def test_errors(small: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ExportReleaseError, match="make annotations"):
        run_export_release(_cfg(tmp_path / "empty", tmp_path / "out"))
    with pytest.raises(ExportReleaseError, match="no finished feature store"):
        run_export_release(_cfg(small["manifest_only"], tmp_path / "out"))
    with pytest.raises(ExportReleaseError, match="--missing"):
        run_export_release(_cfg(small["data"], tmp_path / "out", missing="skip"))
    assert avel(["export-release", "--data-dir", str(small["data"])]) == 2
    assert "give the output folder" in capsys.readouterr().err
    out = tmp_path / "flag"
    assert avel(["export-release", "--out-dir", str(out), "--data-dir", str(small["data"])]) == 0
    assert "every manifest row has features" in capsys.readouterr().out
    assert (out / "mil_labels.h5").is_file()


def test_small_files_equal_the_real_release(shared: Path, tmp_path: Path) -> None:
    """Manifest from the real Annotations.txt and the release's h5 split lists; an audio store
    (values irrelevant here) with every video and the 178 background-only ones. The exported order
    files, labels_closs.h5, mil_labels.h5 and labels_noisy.h5 equal the released ones bit for bit."""
    real = shared / "ave" / "release"
    names = ["labels_closs.h5", "mil_labels.h5", "labels_noisy.h5", *ORDER_FILES]
    if not all((real / n).is_file() for n in names):
        pytest.skip(f"{real}: the small release files are not all there")
    data = tmp_path / "data"
    run_annotations(
        AnnotationsConfig(
            data_dir=data,
            ave_annotations=str(shared / "ave" / "Annotations.txt"),
            ave_splits=str(real),
            audioset_csv=["none"],
        )
    )
    manifest = pd.read_parquet(data / "manifest.parquet")
    noisy_rows = len(_read(real / "labels_noisy.h5"))
    ids = list(dict.fromkeys(manifest["youtube_id"])) + [noisy_id(i) for i in range(noisy_rows)]
    writer = StoreWriter.open(data, "audio", ids, (10, 128), shard_size=1024)
    zero = np.zeros((10, 128), np.float16)
    for shard, shard_ids in writer.pending_shards():
        writer.write_shard(shard, dict.fromkeys(shard_ids, zero))
    writer.finalize()
    write_extra_background(data, noisy_rows, len(manifest["label"].unique()), ["audio"])

    out = tmp_path / "out"
    summary = run_export_release(_cfg(data, out))
    assert summary["rows"] == len(manifest) == 4143
    for name in names:
        with h5py.File(real / name, "r") as a, h5py.File(out / name, "r") as b:
            assert list(a.keys()) == list(b.keys()), name
            key = next(iter(a.keys()))
            x, y = a[key], b[key]
            assert (x.shape, x.dtype, x.chunks) == (y.shape, y.dtype, y.chunks), name
            assert x[...].tobytes() == y[...].tobytes(), name
