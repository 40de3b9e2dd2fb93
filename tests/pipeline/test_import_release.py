"""Import of the AVE feature release: small files written in exactly the release layout (dataset
``avadataset``, order files ``order``), and the real small release files from ../shared."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from pipeline.cli import main as avel
from pipeline.core.fetch import sha256_file
from pipeline.core.store import FeatureStore, StoreError
from pipeline.stages.annotations.stage import AnnotationsConfig, run_annotations
from pipeline.stages.release.import_release import (
    ImportReleaseConfig,
    ImportReleaseError,
    iter_blocks,
    noisy_id,
    run_import_release,
)
from tests.support.release_set import (
    CATEGORIES,
    DUP_FIRST,
    DUP_SECOND,
    NOISY,
    ROWS,
    SPLITS,
    release_data_dir,
    write_h5,
)


def _release_copy(small_release: dict, tmp_path: Path, keep: set[str] | None = None) -> Path:
    """A release folder of links to the small release's files (only ``keep`` when given)."""
    folder = tmp_path / "release"
    folder.mkdir()
    for f in small_release["release"].iterdir():
        if keep is None or f.name in keep:
            (folder / f.name).symlink_to(f)
    return folder


def _cfg(release: Path, data: Path, **kw) -> ImportReleaseConfig:
    kw = {"shard_size": 8, "block_bytes": 4 << 20, "progress": False, **kw}
    return ImportReleaseConfig(release_dir=release, data_dir=data, **kw)


def _first_rows(rows: list) -> dict[str, int]:
    first: dict[str, int] = {}
    for r, (_, youtube_id, _, _) in enumerate(rows):
        first.setdefault(youtube_id, r)
    return first


def test_iter_blocks_bounds_each_slice() -> None:
    rows = np.array([0, 1, 2, 5, 6, 9, 10, 11, 30])
    blocks = list(iter_blocks(rows, 4))
    assert all(hi - lo <= 4 for lo, hi, _ in blocks)
    assert np.concatenate([w for *_, w in blocks]).tolist() == rows.tolist()
    assert all(lo == w[0] and hi == w[-1] + 1 for lo, hi, w in blocks)
    assert [len(w) for *_, w in iter_blocks(rows, 1)] == [1] * len(rows)


def test_import_small_release(small_release: dict, tmp_path: Path) -> None:
    data = release_data_dir(small_release, tmp_path)
    release = _release_copy(
        small_release, tmp_path
    )  # no visual_feature_vec.h5: computed from the maps
    summary = run_import_release(_cfg(release, data))
    arrays, first = small_release["arrays"], _first_rows(small_release["rows"])
    ids = list(first) + [noisy_id(i) for i in range(NOISY)]

    audio, visual, vec = (FeatureStore.open(data, n) for n in ("audio", "visual", "visual_vec"))
    for store in (audio, visual, vec):
        assert store.clip_ids == ids
        assert store.meta["source"] == "AVE feature release" and store.meta["dtype"] == "float16"
        assert store.meta["original_dtype"] == "float64" and store.meta["frames_per_segment"] == 16
    assert audio.meta["files"]["audio_feature.h5"]["sha256"] == sha256_file(
        release / "audio_feature.h5"
    )
    assert "VGGish" in audio.meta["backbone"] and "VGG-19 pool5" in visual.meta["backbone"]
    assert "computed_from" in vec.meta

    ref_vec = arrays["visual_feature.h5"].mean(axis=(2, 3))
    noisy_vec = arrays["visual_feature_noisy.h5"].mean(axis=(2, 3))
    for youtube_id, r in first.items():
        np.testing.assert_allclose(
            audio.get(youtube_id), arrays["audio_feature.h5"][r], rtol=1e-3, atol=1e-3
        )
        np.testing.assert_allclose(
            visual.get(youtube_id), arrays["visual_feature.h5"][r], rtol=1e-3, atol=1e-2
        )
        np.testing.assert_allclose(vec.get(youtube_id), ref_vec[r], rtol=1e-3, atol=1e-3)
    for i in range(NOISY):
        np.testing.assert_allclose(
            audio.get(noisy_id(i)), arrays["audio_feature_noisy.h5"][i], rtol=1e-3, atol=1e-3
        )
        np.testing.assert_allclose(
            visual.get(noisy_id(i)), arrays["visual_feature_noisy.h5"][i], rtol=1e-3, atol=1e-2
        )
        np.testing.assert_allclose(vec.get(noisy_id(i)), noisy_vec[i], rtol=1e-3, atol=1e-3)

    dup = summary["duplicates"]
    assert dup["audio"]["pairs"] == 1 and dup["audio"]["identical"] == 1
    expected = np.abs(
        arrays["visual_feature.h5"][DUP_SECOND] - arrays["visual_feature.h5"][DUP_FIRST]
    ).max()
    assert dup["visual"]["max_abs_diff"] == pytest.approx(expected)
    assert dup["visual"]["largest"][0]["rows"] == [DUP_FIRST, DUP_SECOND]

    assert any(c.startswith("labels.h5: all 24 rows agree") for c in summary["checks"])
    assert any(c.startswith("test_order.h5: 4 rows") for c in summary["checks"])
    assert summary["max_block_bytes"] <= 4 << 20

    extra = pd.read_parquet(data / "extra_background.parquet")
    assert extra["youtube_id"].tolist() == [noisy_id(i) for i in range(NOISY)]
    assert (extra["split"] == "train").all()
    assert all(list(s) == [len(CATEGORIES)] * 10 for s in extra["segment_labels"])
    assert set(summary["extra_background"]["stores"]) == {"audio", "visual", "visual_vec"}

    # idempotent: a second run keeps the finished stores untouched
    shard = data / "features" / "visual" / "shard-00000.npy"
    before = shard.stat().st_mtime_ns
    again = run_import_release(_cfg(release, data))
    assert all(info["status"].startswith("up to date") for info in again["stores"].values())
    assert again["rows_read"] == 0 and shard.stat().st_mtime_ns == before
    # a different dtype on a finished store needs --force, which rebuilds it
    with pytest.raises(ImportReleaseError, match="--force"):
        run_import_release(_cfg(release, data, dtype="float32"))
    forced = run_import_release(_cfg(release, data, dtype="float32", force=True))
    assert forced["stores"]["audio"]["status"] == "imported"
    audio32 = FeatureStore.open(data, "audio")
    r = first["vid00000007"]
    np.testing.assert_allclose(audio32.get("vid00000007"), arrays["audio_feature.h5"][r], rtol=1e-6)


def test_resumes_after_interruption(small_release: dict, tmp_path: Path) -> None:
    data = release_data_dir(small_release, tmp_path)
    release = _release_copy(
        small_release, tmp_path, keep={"audio_feature.h5", "audio_feature_noisy.h5"}
    )
    run_import_release(_cfg(release, data))
    root = data / "features" / "audio"
    for name in ("meta.json", "index.parquet", "shard-00001.npy", "shard-00001.index.parquet"):
        (root / name).unlink()  # as if killed while writing shard 1 of 4
    summary = run_import_release(_cfg(release, data))
    assert summary["stores"]["audio"]["status"] == "resumed"
    assert summary["stores"]["audio"]["shards_written"] == 1
    store = FeatureStore.open(data, "audio")
    assert len(store) == len(_first_rows(small_release["rows"])) + NOISY


def test_vec_file_used_when_present(small_release: dict, tmp_path: Path) -> None:
    data = release_data_dir(small_release, tmp_path)
    release = _release_copy(small_release, tmp_path, keep={"audio_feature.h5"})
    vec = np.random.default_rng(1).random((ROWS, 10, 512))
    write_h5(release / "visual_feature_vec.h5", vec)
    summary = run_import_release(_cfg(release, data))
    store = FeatureStore.open(data, "visual_vec")
    assert "computed_from" not in store.meta and "visual" not in summary["stores"]
    for youtube_id, r in _first_rows(small_release["rows"]).items():
        np.testing.assert_allclose(store.get(youtube_id), vec[r], rtol=1e-3, atol=1e-3)
    assert any(
        "visual_feature_noisy.h5" in n or "audio_feature_noisy" in n for n in summary["notes"]
    )


def test_rows_larger_than_the_block_are_read_one_at_a_time(
    small_release: dict, tmp_path: Path
) -> None:
    data = release_data_dir(small_release, tmp_path)
    release = _release_copy(small_release, tmp_path, keep={"visual_feature.h5"})
    summary = run_import_release(_cfg(release, data, block_bytes=1 << 20))
    row_bytes = 10 * 7 * 7 * 512 * 8
    assert summary["max_block_bytes"] == row_bytes  # one row, never more
    assert summary["reads"] == summary["rows_read"] == len(_first_rows(small_release["rows"]))


def test_peak_memory_stays_far_below_the_file(small_release: dict, tmp_path: Path) -> None:
    data = release_data_dir(small_release, tmp_path)
    release = _release_copy(small_release, tmp_path, keep={"visual_feature.h5"})
    file_bytes = (release / "visual_feature.h5").stat().st_size
    assert file_bytes > 45e6
    tracemalloc.start()
    try:
        run_import_release(_cfg(release, data, shard_size=2, block_bytes=2 << 20, checksum=False))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert FeatureStore.open(data, "visual").row_shape == (10, 7, 7, 512)
    print(f"tracemalloc peak {peak / 1e6:.1f} MB, file {file_bytes / 1e6:.1f} MB")
    assert peak < file_bytes / 4, f"peak {peak / 1e6:.1f} MB for a {file_bytes / 1e6:.1f} MB file"


def test_truncated_file_gives_a_clear_error_and_no_store(
    small_release: dict, tmp_path: Path
) -> None:
    data = release_data_dir(small_release, tmp_path)
    release = _release_copy(small_release, tmp_path, keep={"audio_feature.h5"})
    source = small_release["release"] / "visual_feature.h5"
    with open(source, "rb") as f:
        (release / "visual_feature.h5").write_bytes(f.read(source.stat().st_size // 2))
    with pytest.raises(
        ImportReleaseError, match=r"visual_feature\.h5.*truncated.*download it again"
    ):
        run_import_release(_cfg(release, data))
    for name in ("audio", "visual", "visual_vec"):
        with pytest.raises(StoreError):
            FeatureStore.open(data, name)


@pytest.mark.parametrize(
    ("name", "array", "key", "message"),
    [
        ("audio_feature.h5", np.zeros((ROWS, 10, 128)), "features", "no dataset 'avadataset'"),
        ("audio_feature.h5", np.zeros((ROWS, 10, 64)), "avadataset", r"shape \(24, 10, 64\)"),
        (
            "audio_feature.h5",
            np.zeros((ROWS - 1, 10, 128)),
            "avadataset",
            "23 rows, but the manifest has 24",
        ),
        (
            "visual_feature.h5",
            np.zeros((ROWS, 10, 512, 7, 7)),
            "avadataset",
            r"expected \(rows, 10, 7, 7, 512\)",
        ),
        ("labels_noisy.h5", np.zeros((NOISY, 10)), "avadataset", r"labels_noisy\.h5.*shape"),
    ],
)
def test_wrong_key_or_shape(
    small_release: dict, tmp_path: Path, name: str, array: np.ndarray, key: str, message: str
) -> None:
    data = release_data_dir(small_release, tmp_path)
    release = _release_copy(small_release, tmp_path, keep={"audio_feature.h5"} - {name})
    write_h5(release / name, array, key=key)
    with pytest.raises(ImportReleaseError, match=message):
        run_import_release(_cfg(release, data))


def test_nan_row_is_named(small_release: dict, tmp_path: Path) -> None:
    data = release_data_dir(small_release, tmp_path)
    release = _release_copy(small_release, tmp_path)
    audio = small_release["arrays"]["audio_feature.h5"].copy()
    audio[9, 4, 7] = np.nan
    (release / "audio_feature.h5").unlink()
    write_h5(release / "audio_feature.h5", audio)
    with pytest.raises(
        ImportReleaseError, match=r"audio_feature\.h5: row 9 \(vid00000009\) holds NaN"
    ):
        run_import_release(_cfg(release, data))
    with pytest.raises(StoreError):
        FeatureStore.open(data, "audio")


def test_labels_and_orders_must_match_the_manifest(small_release: dict, tmp_path: Path) -> None:
    data = release_data_dir(small_release, tmp_path)
    release = _release_copy(small_release, tmp_path, keep={"audio_feature.h5", "mil_labels.h5"})
    closs = small_release["arrays"]["labels_closs.h5"].copy()
    closs[7] = 1 - closs[7]
    write_h5(release / "labels_closs.h5", closs)
    train, val = list(SPLITS["train"]), list(SPLITS["val"])
    train[0], val[0] = val[0], train[0]
    write_h5(release / "train_order.h5", np.array(train, np.int64), key="order")
    write_h5(release / "val_order.h5", np.array(val, np.int64), key="order")
    with pytest.raises(ImportReleaseError) as info:
        run_import_release(_cfg(release, data))
    text = str(info.value)
    assert "labels_closs.h5: 1 rows disagree" in text and "row 7 (vid00000007)" in text
    assert "train_order.h5: differs" in text and "val_order.h5: differs" in text
    assert "mil_labels.h5" not in text  # the unchanged file agrees
    assert not (data / "features").exists()


def test_manifest_is_required(
    small_release: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    release = _release_copy(small_release, tmp_path, keep={"audio_feature.h5"})
    with pytest.raises(ImportReleaseError, match="make annotations"):
        run_import_release(_cfg(release, tmp_path / "empty"))
    assert avel(["import-release", str(release), "--data-dir", str(tmp_path / "empty")]) == 1
    assert "make annotations" in capsys.readouterr().err


def test_cli_imports(small_release: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = release_data_dir(small_release, tmp_path)
    release = _release_copy(small_release, tmp_path, keep={"audio_feature.h5", "labels.h5"})
    assert (
        avel(
            [
                "import-release",
                "--release-dir",
                str(release),
                "--data-dir",
                str(data),
                "--no-checksum",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "store audio: imported" in out and "labels.h5: all 24 rows agree" in out
    assert FeatureStore.open(data, "audio").meta["files"]["audio_feature.h5"]["sha256"] is None


def test_real_release_files(shared: Path, tmp_path: Path) -> None:
    """The real order, label and noisy-audio files against the manifest of the real annotations."""
    real = shared / "ave" / "release"
    needed = ["labels_closs.h5", "mil_labels.h5", "labels_noisy.h5", "audio_feature_noisy.h5"]
    needed += [f"{s}_order{m}.h5" for s in SPLITS for m in ("", "_match")]
    if not all((real / n).is_file() for n in needed):
        pytest.skip(f"{real}: the small release files are not all there")
    data = tmp_path / "data"
    run_annotations(
        AnnotationsConfig(
            data_dir=data,
            ave_annotations=str(shared / "ave" / "Annotations.txt"),
            ave_splits=str(
                shared / "ave" / "splits"
            ),  # the txt lists: the h5 ones are cross-checked
            audioset_csv=["none"],
        )
    )
    release = tmp_path / "release"
    release.mkdir()
    for n in needed:
        (release / n).symlink_to(real / n)
    manifest = pd.read_parquet(data / "manifest.parquet")
    rows = len(manifest)
    audio = np.maximum(
        np.random.default_rng(4).normal(size=(rows, 10, 128)), 0
    )  # stand-in, not released here
    write_h5(release / "audio_feature.h5", audio)

    summary = run_import_release(ImportReleaseConfig(release, data, progress=False))
    checked = {c.split(":")[0] for c in summary["checks"]}
    assert checked == {"labels_closs.h5", "mil_labels.h5", "labels_noisy.h5"} | {
        f"{s}_order{m}.h5" for s in SPLITS for m in ("", "_match")
    }
    with h5py.File(real / "audio_feature_noisy.h5") as f:
        noisy = f["avadataset"][...]
    store = FeatureStore.open(data, "audio")
    assert len(store) == manifest["youtube_id"].nunique() + len(noisy)
    np.testing.assert_allclose(
        store.gather([noisy_id(i) for i in range(len(noisy))]), noisy, rtol=1e-3, atol=1e-3
    )
    assert (
        len(pd.read_parquet(data / "extra_background.parquet"))
        == len(noisy)
        == summary["extra_background"]["rows"]
    )
    repeated = rows - manifest["youtube_id"].nunique()
    assert summary["duplicates"]["audio"]["pairs"] == repeated
    assert "visual_feature.h5" in summary["files_missing"]


def test_disk_full_one_line_then_a_rerun_imports(
    small_release: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from tests.support.disk import error_lines, fill, small_disk

    data = release_data_dir(small_release, tmp_path)
    release = _release_copy(small_release, tmp_path, keep={"audio_feature.h5", "labels.h5"})
    args = ["import-release", str(release), "--data-dir", str(data), "--no-checksum"]
    with small_disk(data / "features", "2m") as folder:
        filler = fill(folder, leave=24 * 1024)  # the plan fits, the shard does not
        assert avel(args) != 0  # no traceback: one line
        (err,) = error_lines(capsys.readouterr().err)  # one line, no traceback
        assert err.startswith("error: disk full: "), err
        assert str(folder / "audio") in err and "free" in err
        assert not any((folder / "audio").glob("shard-*")), "nothing half-written is kept"
        assert not any((folder / "audio").glob(".*"))

        filler.unlink()
        assert avel(args) == 0
        assert "store audio: imported" in capsys.readouterr().out
        assert len(FeatureStore.open(data, "audio")) == len(_first_rows(small_release["rows"]))


def test_a_release_file_of_the_same_size_with_other_values_is_noticed(
    small_release: dict, tmp_path: Path
) -> None:
    """The finished store records its release files by content: a file replaced by one of the same
    size with other values stops the import naming it (never "up to date"); --force re-imports."""
    data = release_data_dir(small_release, tmp_path)
    release = _release_copy(small_release, tmp_path, keep={"audio_feature.h5"})
    first = run_import_release(_cfg(release, data))
    assert first["stores"]["audio"]["status"] == "imported"
    before = FeatureStore.open(data, "audio")
    digest = before.meta["identity_sha256"]
    path = release / "audio_feature.h5"
    original = path.resolve()
    path.unlink()
    path.write_bytes(original.read_bytes())
    with h5py.File(path, "r+") as f:
        dataset = f[next(iter(f.keys()))]
        dataset[0] = dataset[0] + 1.0  # other values, same size
    assert path.stat().st_size == original.stat().st_size
    with pytest.raises(ImportReleaseError, match="audio_feature.h5"):
        run_import_release(_cfg(release, data))
    again = run_import_release(_cfg(release, data, force=True))
    assert again["stores"]["audio"]["status"] == "imported"
    after = FeatureStore.open(data, "audio")
    assert after.meta["identity_sha256"] != digest
    assert run_import_release(_cfg(release, data))["stores"]["audio"]["status"].startswith("up to")
