"""Audio feature stores: golden-matching patches -> VGGish (real loaders) -> store; resume; refusals."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.backbones.vggish import load_vggish, random_vggish
from pipeline.cli import main as avel
from pipeline.core.store import FeatureStore, store_dir
from pipeline.stages.features.core import FeaturesConfig
from pipeline.stages.features.stage import format_summary, run_features
from pipeline.stages.segments import SegmentsConfig, load_patches, patches_path, run_segments
from tests.support.media import make_clip

GOLDEN_ID = "golden_wave"
IDS = [GOLDEN_ID, "tone440____", "tone880____", "corrupt____"]


def make_golden_clip(path: Path, waveform: np.ndarray, workdir: Path) -> Path:
    """A clip whose audio is the golden 16 kHz waveform, stored losslessly (float32 PCM, mov)."""
    raw = workdir / "golden.f32"
    waveform.astype("<f4").tofile(raw)
    cmd = [
        "ffmpeg",
        "-nostdin",
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=32x24:rate=5:duration=10",
        "-f",
        "f32le",
        "-ar",
        "16000",
        "-ac",
        "1",
        "-i",
        str(raw),
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "pcm_f32le",
        "-f",
        "mov",
        str(path),
    ]
    subprocess.run(cmd, check=True)
    return path


@pytest.fixture(scope="module")
def golden(shared) -> dict[str, np.ndarray]:
    path = shared / "reference" / "vggish_frontend_golden.npz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    with np.load(path) as d:
        return {k: d[k] for k in d.files}


@pytest.fixture(scope="module")
def data(tmp_path_factory, golden) -> Path:
    d = tmp_path_factory.mktemp("featdata")
    clips = d / "clips"
    clips.mkdir()
    make_golden_clip(clips / f"{GOLDEN_ID}.mp4", golden["waveform_16k"], d)
    make_clip(clips / "tone440____.mp4", duration=10, fps=5, size=(32, 24), frequency=440)
    make_clip(
        clips / "tone880____.mp4",
        duration=10,
        fps=5,
        size=(32, 24),
        frequency=880,
        sample_rate=22050,
        channels=2,
    )
    (clips / "corrupt____.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(2000))
    pd.DataFrame({"sample": range(len(IDS)), "youtube_id": IDS}).to_parquet(d / "manifest.parquet")
    # soxr: float32 PCM end to end, so the golden clip's (not int16-exact) waveform stays exact
    run_segments(SegmentsConfig(d, frames_per_segment=2, audio_recipe="soxr", progress=False))
    return d


def features(data: Path, **kw) -> dict:
    kw.setdefault("allow_download", False)
    kw.setdefault("shard_size", 1)
    return run_features(FeaturesConfig(data, features=("audio",), progress=False, **kw))


def test_segments_patches_match_golden(data, golden):
    np.testing.assert_allclose(
        load_patches(data, GOLDEN_ID), golden["patches_per_second"], atol=1e-4
    )


def test_refuses_without_weights(data, capsys):
    code = avel(["features", "--data-dir", str(data), "--features", "audio", "--no-download"])
    captured = capsys.readouterr()
    err = captured.err
    assert code == 1 and "--allow-random-weights" in err and "NOT extracted" in err
    assert "error" not in captured.out and "NOT extracted" not in captured.out
    assert not (store_dir(data, "audio") / "meta.json").exists()


def test_random_weights_store_equals_vggish_on_golden_patches(data, golden):
    summary = features(
        data, allow_random_weights=True, dtype="float32", audio_maps=True, force=True
    )
    assert not summary["errors"], summary["errors"]
    assert "RANDOM WEIGHTS" in format_summary(summary)
    store = FeatureStore.open(data, "audio")
    assert (
        store.is_random
        and store.meta["random_weights"]
        and store.meta["weights"]["sha256"] == "random"
    )
    assert store.meta["frames_per_segment"] == 2 and store.meta["output"] == "ave"
    assert store.meta["preprocessing"]["framing"] == "ave" and store.meta["dtype"] == "float32"
    assert (
        len(store) == 3 and set(store.meta["failed"]) == set()
    )  # corrupt clip: failed in segments
    model = random_vggish(seed=0).eval()
    with torch.inference_mode():
        golden_emb = model(torch.from_numpy(golden["patches_per_second"])).numpy()
        for clip_id in IDS[:3]:
            patches = torch.from_numpy(load_patches(data, clip_id))
            # the stage runs the clips of a batch together: the kernels round a few 1e-6 apart
            emb = model(patches).numpy()
            np.testing.assert_allclose(store.get(clip_id), emb, atol=5e-6 * np.abs(emb).max())
            maps = FeatureStore.open(data, "audio_maps").get(clip_id)
            ref = model.pool5(patches).numpy()
            np.testing.assert_allclose(maps, ref, atol=5e-6 * np.abs(ref).max())
    scale = np.abs(golden_emb).max()
    np.testing.assert_allclose(store.get(GOLDEN_ID), golden_emb, atol=1e-3 * scale)


def test_converted_checkpoint_and_float16_error(data, tmp_path):
    pt = tmp_path / "vggish_random.pt"
    torch.save(random_vggish(seed=3).state_dict(), pt)
    summary = features(data, vggish_checkpoint=str(pt), dtype="float32", force=True)
    assert not summary["errors"], summary["errors"]
    exact = FeatureStore.open(data, "audio")
    assert not exact.is_random and exact.meta["weights"]["source"] == str(pt.resolve())
    model = load_vggish(pt).eval()
    with torch.inference_mode():
        ref = np.stack([model(torch.from_numpy(load_patches(data, y))).numpy() for y in IDS[:3]])
    np.testing.assert_allclose(exact.gather(IDS[:3]), ref, atol=5e-6 * np.abs(ref).max())
    # the same file by another path string (and a copy of it): the same weights, by content
    same = features(data, vggish_checkpoint=f"{pt.parent}//{pt.name}", dtype="float32")
    assert same["stores"]["audio"].get("already_complete"), same
    copy = tmp_path / "copy" / "weights.pt"
    copy.parent.mkdir()
    copy.write_bytes(pt.read_bytes())
    assert features(data, vggish_checkpoint=str(copy), dtype="float32")["stores"]["audio"].get(
        "already_complete"
    )
    features(data, vggish_checkpoint=str(pt), dtype="float16", force=True)
    half = FeatureStore.open(data, "audio")
    assert half.meta["dtype"] == "float16"
    err = np.abs(half.gather(IDS[:3]) - ref)
    rel = err.max() / np.abs(ref).max()
    print(
        f"float16 storage vs float32: max abs {err.max():.3g}, max/|max| {rel:.3g}, mean abs {err.mean():.3g}"
    )
    assert rel <= 2.0**-11  # half an ulp of float16 at the largest value


def test_killed_run_resumes_and_refuses_other_weights(data):
    # a run that got through shard 0 only (what a killed run leaves: shard 0's receipt, no index)
    features(data, allow_random_weights=True, num_shards=3, shard_index=0, force=True)
    root = store_dir(data, "audio")
    assert (root / "shard-00000.index.parquet").is_file() and not (root / "index.parquet").exists()
    stamp = (root / "shard-00000.npy").stat().st_mtime_ns
    # resuming with other weights (a converted file of other values) would mix two networks
    other = data / "other-vggish.pt"
    torch.save(random_vggish(seed=5).state_dict(), other)
    refused = features(data, vggish_checkpoint=str(other))
    assert "partly written" in refused["errors"]["audio"], refused
    assert "weights RANDOM -> sha256" in refused["errors"]["audio"] and not refused["stores"]
    resumed = features(data, allow_random_weights=True)
    assert (
        resumed["stores"]["audio"]["shards_written"] == 2 and resumed["stores"]["audio"]["complete"]
    )
    assert (root / "shard-00000.npy").stat().st_mtime_ns == stamp
    again = features(data, allow_random_weights=True)  # finished store: not rewritten
    assert again["stores"]["audio"].get("already_complete")
    assert json.loads((root / "meta.json").read_text())["videos"] == 3


def test_maps_added_to_a_finished_audio_store(data):
    """A finished `audio` store is left as it is when `audio_maps` is asked for later."""
    shutil.rmtree(store_dir(data, "audio_maps"), ignore_errors=True)
    features(data, allow_random_weights=True)  # `audio` complete (resumed or already)
    stamp = (store_dir(data, "audio") / "meta.json").stat().st_mtime_ns
    summary = features(data, allow_random_weights=True, audio_maps=True)
    assert not summary["errors"], summary["errors"]
    assert summary["stores"]["audio"].get("already_complete")
    assert summary["stores"]["audio_maps"]["complete"]
    assert (store_dir(data, "audio") / "meta.json").stat().st_mtime_ns == stamp
    assert FeatureStore.open(data, "audio_maps").row_shape == (10, 6, 4, 512)


# ----------------------------------------------------------------------------- stale stores

STALE_IDS = ["stale_a____", "stale_b____", "stale_c____"]


def _stale_data(root: Path) -> Path:
    for i, clip_id in enumerate(STALE_IDS):
        make_clip(root / "clips" / f"{clip_id}.mp4", duration=10, fps=4, size=(32, 24),
                  frequency=300 + 200 * i)  # fmt: skip
    pd.DataFrame({"sample": range(3), "youtube_id": STALE_IDS}).to_parquet(
        root / "manifest.parquet"
    )
    return root


def _expected_embeddings(data: Path, clip_id: str) -> np.ndarray:
    model = random_vggish(seed=0).eval()
    with torch.inference_mode():
        return model(torch.from_numpy(load_patches(data, clip_id))).numpy()


def test_store_follows_the_segments_and_refuses_other_settings(tmp_path, capsys):
    data = _stale_data(tmp_path / "data")
    run_segments(SegmentsConfig(data, frames_per_segment=2, limit=1, workers=1, progress=False))
    first = features(data, allow_random_weights=True)
    assert not first["errors"] and len(FeatureStore.open(data, "audio")) == 1
    kept = FeatureStore.open(data, "audio").get(STALE_IDS[0]).copy()

    # more clips segmented: the store is extended, not "already complete"
    run_segments(SegmentsConfig(data, frames_per_segment=2, workers=1, progress=False))
    second = features(data, allow_random_weights=True)
    report = second["stores"]["audio"]
    assert not second["errors"] and not report.get("already_complete"), format_summary(second)
    assert report["carried_over"] == 1 and report["shards_written"] == 2  # only the new clips
    store = FeatureStore.open(data, "audio")
    assert sorted(store.clip_ids) == sorted(STALE_IDS)
    assert np.array_equal(store.get(STALE_IDS[0]), kept)  # the finished row, carried over as is
    for clip_id in STALE_IDS[1:]:
        np.testing.assert_allclose(
            store.get(clip_id), _expected_embeddings(data, clip_id), rtol=2**-10, atol=1e-3
        )
    assert store.meta["inputs"]["clips"] == 3 and store.meta["identity"]["dtype"] == "float16"
    assert not list((data / "features").glob(".audio.previous"))
    assert features(data, allow_random_weights=True)["stores"]["audio"].get("already_complete")

    # another dtype on the float16 store: a clear refusal naming the difference and the flag
    code = avel(
        ["features", "--data-dir", str(data), "--features", "audio", "--dtype", "float32"]
        + ["--allow-random-weights", "--no-download", "--shard-size", "1"]
    )
    err = capsys.readouterr().err
    assert code == 1 and "dtype float16 -> float32" in err and "--force" in err, err
    assert FeatureStore.open(data, "audio").meta["dtype"] == "float16"
    # pretrained weights asked over a random-weights store: refused the same way
    converted = tmp_path / "converted.pt"
    torch.save(random_vggish(seed=5).state_dict(), converted)
    refused = features(data, vggish_checkpoint=str(converted))
    assert "weights RANDOM -> sha256" in refused["errors"]["audio"], refused

    # a re-downloaded clip (a new file): its features are computed again, the others kept
    make_clip(data / "clips" / f"{STALE_IDS[1]}.mp4", duration=10, fps=4, size=(32, 24),
              frequency=1000)  # fmt: skip
    run_segments(SegmentsConfig(data, frames_per_segment=2, workers=1, progress=False))
    third = features(data, allow_random_weights=True)
    assert third["stores"]["audio"]["carried_over"] == 2, format_summary(third)
    assert third["stores"]["audio"]["shards_written"] == 1
    store = FeatureStore.open(data, "audio")
    np.testing.assert_allclose(
        store.get(STALE_IDS[1]), _expected_embeddings(data, STALE_IDS[1]), rtol=2**-10, atol=1e-3
    )
    assert np.array_equal(store.get(STALE_IDS[0]), kept)


def test_segments_table_of_the_previous_version_feeds_the_stores(tmp_path):
    """A ``segments.parquet`` keyed ``youtube_id`` (previous version): features are extracted from
    it, and its rewrite in today's naming leaves the store complete (nothing computed again)."""
    from tests.support.previous_version import key_columns, write_previous_version

    data = _stale_data(tmp_path / "data")
    run_segments(SegmentsConfig(data, frames_per_segment=2, workers=1, progress=False))
    write_previous_version(data)
    assert key_columns(data / "segments.parquet") == {"youtube_id"}
    first = features(data, allow_random_weights=True, dtype="float32")
    assert not first["errors"] and first["stores"]["audio"]["complete"], format_summary(first)
    store = FeatureStore.open(data, "audio")
    assert sorted(store.clip_ids) == sorted(STALE_IDS)
    for clip_id in STALE_IDS:
        expected = _expected_embeddings(data, clip_id)  # one clip alone: rounding 1e-6 apart
        np.testing.assert_allclose(store.get(clip_id), expected, atol=5e-6 * np.abs(expected).max())
    stamp = (store_dir(data, "audio") / "meta.json").stat().st_mtime_ns
    assert run_segments(SegmentsConfig(data, frames_per_segment=2, progress=False))["skipped"] == 3
    assert key_columns(data / "segments.parquet") == {"clip_id"}
    again = features(data, allow_random_weights=True, dtype="float32")
    assert again["stores"]["audio"].get("already_complete"), format_summary(again)
    assert (store_dir(data, "audio") / "meta.json").stat().st_mtime_ns == stamp


def test_disk_full_one_line_nothing_half_written_and_a_rerun_finishes(tmp_path, capsys):
    from tests.support.disk import error_lines, fill, small_disk

    data = _stale_data(tmp_path / "data")
    run_segments(SegmentsConfig(data, frames_per_segment=2, workers=1, progress=False))
    args = ["features", "--data-dir", str(data), "--features", "audio", "--audio-maps"]
    args += ["--dtype", "float32", "--allow-random-weights", "--no-download", "--shard-size", "1"]
    with small_disk(data / "features", "2m") as folder:
        filler = fill(folder, leave=600 * 1024)  # one shard of audio_maps (480 KiB) fits
        assert avel(args) != 0
        (err,) = error_lines(capsys.readouterr().err)  # one line, no traceback
        assert err.startswith("error: disk full: "), err
        assert str(folder) in err and "free" in err
        maps = folder / "audio_maps"
        assert not (maps / "index.parquet").exists() and not (maps / "meta.json").exists()
        temps = [p for p in maps.rglob(".*") if p.name != ".staging"]  # staged rows are kept
        assert not temps, "a half-written temp file was left behind"
        done = sorted(maps.glob("shard-*.index.parquet"))
        assert 1 <= len(done) < 3  # each receipt beside a complete shard array
        assert all(p.with_name(p.name.replace(".index.parquet", ".npy")).is_file() for p in done)
        stamp = done[0].stat().st_mtime_ns

        filler.unlink()
        assert avel(args) == 0
        assert done[0].stat().st_mtime_ns == stamp  # finished shards are not redone
        store = FeatureStore.open(data, "audio_maps")
        assert sorted(store.clip_ids) == sorted(STALE_IDS)
        model = random_vggish(seed=0).eval()
        with torch.inference_mode():
            for clip_id in STALE_IDS:
                patches = torch.from_numpy(load_patches(data, clip_id))
                np.testing.assert_allclose(
                    store.get(clip_id), model.pool5(patches).numpy(), atol=1e-5
                )


def test_a_clip_whose_patches_were_missing_is_computed_once_they_are_made(tmp_path):
    """Patches deleted after segmenting: the clip is recorded failed; `avel segments` makes them
    again, and the next run computes that clip (never "already complete ... 1 failed"), reusing
    the other clips' rows as they were."""
    data = _stale_data(tmp_path / "data")
    run_segments(SegmentsConfig(data, frames_per_segment=2, workers=1, progress=False))
    patches_path(data, STALE_IDS[1]).unlink()
    first = features(data, allow_random_weights=True, shard_size=256)
    assert first["stores"]["audio"]["failed"] == 1
    assert "patches" in FeatureStore.open(data, "audio").meta["failed"][STALE_IDS[1]]
    kept = FeatureStore.open(data, "audio").get(STALE_IDS[0]).copy()
    assert run_segments(SegmentsConfig(data, frames_per_segment=2, workers=1, progress=False))
    second = features(data, allow_random_weights=True, shard_size=256)
    report = second["stores"]["audio"]
    assert not report.get("already_complete") and report["failed"] == 0, format_summary(second)
    assert report["recomputed"] == 1 and report["clips_computed"] == 1
    store = FeatureStore.open(data, "audio")
    assert np.array_equal(store.get(STALE_IDS[0]), kept)
    np.testing.assert_allclose(
        store.get(STALE_IDS[1]), _expected_embeddings(data, STALE_IDS[1]), rtol=2**-10, atol=1e-3
    )
    assert features(data, allow_random_weights=True, shard_size=256)["stores"]["audio"].get(
        "already_complete"
    )


def test_two_processes_fill_disjoint_shards_and_merge_writes_the_index(tmp_path):
    data = _stale_data(tmp_path / "data")
    run_segments(SegmentsConfig(data, frames_per_segment=2, workers=1, progress=False))
    part0 = features(data, allow_random_weights=True, num_shards=2, shard_index=0)
    assert not part0["stores"]["audio"]["complete"]
    part1 = features(data, allow_random_weights=True, num_shards=2, shard_index=1)
    assert part1["stores"]["audio"]["complete"]  # the last process to finish writes the index
    (store_dir(data, "audio") / "index.parquet").unlink()
    (store_dir(data, "audio") / "meta.json").unlink()
    merged = features(data, allow_random_weights=True, merge=True)
    assert merged["stores"]["audio"]["complete"] and merged["stores"]["audio"]["random_weights"]
    store = FeatureStore.open(data, "audio")
    assert sorted(store.clip_ids) == sorted(STALE_IDS) and store.meta["identity_sha256"]
    assert store.meta["weights"]["sha256"] == "random" and store.meta["precision"] == "fp32"
    assert features(data, allow_random_weights=True)["stores"]["audio"].get("already_complete")
