"""Segments stage on real ffmpeg-made clips: frame counting, the release rule, edge cases, resume."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.cli import main as avel
from pipeline.core.layout import DataLayout
from pipeline.stages.download.ledger import Ledger
from pipeline.stages.segments import (
    SegmentsConfig,
    load_patches,
    load_segment_failures,
    load_segments,
    run_segments,
)
from tests.support.media import make_clip

F = 4  # frames per segment: cheap


def write_manifest(data_dir: Path, ids: list[str]) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"sample": range(len(ids)), "youtube_id": ids}).to_parquet(
        data_dir / "manifest.parquet"
    )


def make_vfr_clip(path: Path) -> Path:
    """150 frames: 10 fps for 5 s (frames 0..49), then 20 fps for 5 s (frames 50..149)."""
    expr = "if(lt(N,50),N*0.1,5+(N-50)*0.05)/TB"
    cmd = [
        "ffmpeg",
        "-nostdin",
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=32x24:rate=10:duration=15",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=300:sample_rate=16000:duration=10",
        "-vf",
        f"setpts='{expr}'",
        "-fps_mode",
        "passthrough",
        "-video_track_timescale",
        "1000",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-t",
        "10",
        str(path),
    ]
    subprocess.run(cmd, check=True)
    return path


def rows(table: pd.DataFrame, clip_id: str) -> pd.DataFrame:
    return table[table["clip_id"] == clip_id].sort_values("second").reset_index(drop=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A data dir with one clip per edge case (no ledger: the folder scan finds them)."""
    d = tmp_path_factory.mktemp("segdata")
    clips = d / "clips"
    make_clip(clips / "cfr7fps____.mp4", duration=10, fps=7, size=(34, 26))  # 70 frames, odd size
    make_clip(clips / "short______.mp4", duration=4, fps=10, size=(32, 24))
    make_clip(clips / "noaudio____.mp4", duration=10, fps=10, size=(32, 24), audio=False)
    make_clip(
        clips / "surround51_.mp4", duration=10, fps=10, size=(32, 24), sample_rate=44100, channels=6
    )
    make_vfr_clip(clips / "vfr________.mp4")
    good = make_clip(d / "whole.mp4", duration=10, fps=10, size=(32, 24), faststart=False)
    (clips / "truncated__.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    make_clip(
        clips / "notinmanif.mp4", duration=1, fps=10, size=(32, 24)
    )  # ignored: not in manifest
    write_manifest(
        d,
        [
            "cfr7fps____",
            "short______",
            "noaudio____",
            "surround51_",
            "vfr________",
            "truncated__",
            "cfr7fps____",
        ],
    )
    return d


@pytest.fixture(scope="module")
def result(data) -> tuple[dict, pd.DataFrame]:
    summary = run_segments(SegmentsConfig(data, frames_per_segment=F, workers=2, progress=False))
    return summary, load_segments(data)


def test_counts_frames_and_applies_release_rule(data, result):
    summary, table = result
    assert summary["clips"] == 6 and summary["ok"] == 5 and summary["failed"] == 1
    r = rows(table, "cfr7fps____")
    assert len(r) == 10 and (r["num_frames"] == 70).all() and (r["frame_rule"] == "release").all()
    interval = 70 // 10
    expected = [
        [math.floor(sec * interval + i * interval / F) for i in range(F)] for sec in range(10)
    ]
    assert [list(v) for v in r["frame_indices"]] == expected
    np.testing.assert_allclose(np.stack(r["timestamps"]), np.array(expected) / 7, atol=1e-3)
    assert list(r["audio_start"]) == [16000 * s for s in range(10)]
    assert list(r["audio_end"]) == [16000 * (s + 1) for s in range(10)]
    assert r.loc[0, "width"] == 34 and r.loc[0, "height"] == 26
    flags = ["short_clip", "vfr", "missing_audio", "padded_video", "padded_audio"]
    assert not r[flags].to_numpy().any()
    assert load_patches(data, "cfr7fps____").shape == (10, 96, 64)


def test_short_clip_is_padded_and_flagged(data, result):
    r = rows(result[1], "short______")
    assert (
        r["short_clip"].all()
        and (r["num_frames"] == 40).all()
        and (r["frame_rule"] == "time").all()
    )
    assert not r.loc[:3, "padded_video"].any() and r.loc[4:, "padded_video"].all()
    assert list(r.loc[4:, "real_frames"]) == [0] * 6
    assert all(list(v) == [39] * F for v in r.loc[4:, "frame_indices"])  # last frame repeated
    assert list(r.loc[1, "frame_indices"]) == [10, 12, 15, 17]  # t = 1, 1.25, 1.5, 1.75 s at 10 fps
    assert (r.loc[4:, "audio_real_samples"] < 15600).all() and r.loc[4:, "padded_audio"].all()
    assert (r.loc[:3, "audio_real_samples"] == 16000).all() and not r.loc[:3, "padded_audio"].any()
    patches = load_patches(data, "short______")
    np.testing.assert_allclose(patches[5], np.log(0.01), atol=1e-6)  # zero padding = silence


def test_missing_audio(data, result):
    r = rows(result[1], "noaudio____")
    assert r["missing_audio"].all() and r["padded_audio"].all() and not r["padded_video"].any()
    np.testing.assert_allclose(load_patches(data, "noaudio____"), np.log(0.01), atol=1e-6)


def test_surround_44k_matches_the_release_recipe_on_an_independent_decode(data, result, tmp_path):
    from tests.support.release_audio import release_patches

    r = rows(result[1], "surround51_")
    assert (r["channels"] == 6).all() and (r["sample_rate"] == 44100).all()
    assert not r["padded_audio"].any() and (r["audio_recipe"] == "release").all()
    expected = release_patches(data / "clips" / "surround51_.mp4", tmp_path)
    np.testing.assert_allclose(load_patches(data, "surround51_"), expected, atol=1e-4)


def test_vfr_clip_uses_time_rule(result):
    r = rows(result[1], "vfr________")
    assert r["vfr"].all() and (r["frame_rule"] == "time").all() and (r["num_frames"] == 150).all()
    # frame on screen at t: t*10 below 5 s, 50 + (t-5)*20 after
    assert list(r.loc[2, "frame_indices"]) == [20, 22, 25, 27]
    assert list(r.loc[7, "frame_indices"]) == [90, 95, 100, 105]
    np.testing.assert_allclose(
        r.loc[7, "timestamps"], [7.0, 7.25, 7.5, 7.75], atol=0.051
    )  # within one frame
    assert not r["padded_video"].any()


def test_corrupt_clip_recorded_and_skipped(data, result):
    summary, table = result
    assert "truncated__" not in set(table["clip_id"])
    failed = load_segment_failures(data)
    assert list(failed["clip_id"]) == ["truncated__"]
    assert "moov atom not found" in failed.loc[0, "reason"] or failed.loc[0, "reason"]
    assert "notinmanif" not in set(table["clip_id"])


def test_idempotent_rerun(data, result):
    before = {
        y: DataLayout(data).segment_receipt(y).stat().st_mtime_ns
        for y in result[1]["clip_id"].unique()
    }
    summary = run_segments(SegmentsConfig(data, frames_per_segment=F, workers=1, progress=False))
    assert summary["processed"] == 0 and summary["skipped"] == 6  # the failed clip is not retried
    after = {y: DataLayout(data).segment_receipt(y).stat().st_mtime_ns for y in before}
    assert after == before
    pd.testing.assert_frame_equal(load_segments(data), result[1])


def test_interrupted_run_resumes_and_ledger(tmp_path):
    clips = tmp_path / "clips"
    ids = [f"clip{i}______"[:11] for i in range(4)]
    for clip_id in ids[:3]:
        make_clip(clips / f"{clip_id}.mp4", duration=10, fps=5, size=(32, 24))
    write_manifest(tmp_path, ids)
    ledger = Ledger(clips / "status.parquet")
    for clip_id, status in zip(ids, ["ok", "ok", "unavailable", "ok"], strict=True):
        ledger.update(clip_id, status, status)
    # the "killed" run: it got through one clip only
    first = run_segments(SegmentsConfig(tmp_path, frames_per_segment=F, limit=1, progress=False))
    assert first["processed"] == 1 and first["remaining"] == 1 and first["ok"] == 1
    done = DataLayout(tmp_path).segment_receipt(ids[0]).stat().st_mtime_ns
    code = avel(
        ["segments", "--data-dir", str(tmp_path), "--frames-per-segment", str(F), "--workers", "1"]
    )
    assert code == 0
    assert DataLayout(tmp_path).segment_receipt(ids[0]).stat().st_mtime_ns == done  # not redone
    table = load_segments(tmp_path)
    assert sorted(table["clip_id"].unique()) == ids[:2]  # clip 2 is unavailable in the ledger
    failed = load_segment_failures(tmp_path)
    assert list(failed["clip_id"]) == [ids[3]] and "missing" in failed.loc[0, "reason"]
    # a re-downloaded clip (new file) is segmented again
    make_clip(clips / f"{ids[1]}.mp4", duration=10, fps=4, size=(32, 24))
    again = run_segments(SegmentsConfig(tmp_path, frames_per_segment=F, progress=False))
    assert again["processed"] == 1
    assert (rows(load_segments(tmp_path), ids[1])["num_frames"] == 40).all()


def test_cli_errors_go_to_stderr(tmp_path, capsys):
    assert avel(["segments", "--data-dir", str(tmp_path / "none"), "--workers", "1"]) == 1
    out = capsys.readouterr()
    assert out.err.startswith("error: ") and "manifest" in out.err and out.out == ""


def test_disk_full_is_not_a_clip_failure_and_a_rerun_finishes(tmp_path, capsys):
    from tests.support.disk import error_lines, fill, small_disk

    ids = [f"full{i}______"[:11] for i in range(3)]
    for clip_id in ids:
        make_clip(tmp_path / "clips" / f"{clip_id}.mp4", duration=10, fps=4, size=(32, 24))
    write_manifest(tmp_path, ids)
    args = ["segments", "--data-dir", str(tmp_path), "--frames-per-segment", str(F)]
    with small_disk(DataLayout(tmp_path).segments, "2m") as folder:
        filler = fill(folder, leave=300 * 1024)  # one clip's patches (240 KiB) fit, not three
        assert avel([*args, "--workers", "2"]) != 0
        (err,) = error_lines(capsys.readouterr().err)  # one line, no traceback
        assert err.startswith("error: disk full: "), err
        assert str(folder) in err and "free" in err
        receipts = [json.loads(p.read_text()) for p in folder.glob("*.json")]
        assert all(r["status"] == "ok" for r in receipts) and len(receipts) < 3
        assert not list(folder.glob(".*"))  # no half-written temp file left behind

        filler.unlink()  # space freed: the same command finishes the work
        assert avel([*args, "--workers", "2"]) == 0
        out = capsys.readouterr().out
        assert "failed: 0" in out, out
        assert sorted(load_segments(tmp_path)["clip_id"].unique()) == sorted(ids)


def test_tables_and_receipts_of_the_previous_version_are_read_and_not_redone(tmp_path):
    """A data folder the previous version segmented (key ``youtube_id`` in the ledger, both tables
    and the receipts): read as today's, and a re-run segments nothing again."""
    from tests.support.previous_version import key_columns, write_previous_version

    ids = ["prevA______", "prevB______", "prevBroken_"]
    clips = tmp_path / "clips"
    for clip_id in ids[:2]:
        make_clip(clips / f"{clip_id}.mp4", duration=10, fps=4, size=(32, 24))
    (clips / f"{ids[2]}.mp4").write_bytes(b"not a video")
    write_manifest(tmp_path, ids)
    ledger = Ledger(clips / "status.parquet")
    ledger.ensure({clip_id: clip_id for clip_id in ids})
    for clip_id in ids:
        ledger.update(clip_id, "ok", "ok")
    config = SegmentsConfig(tmp_path, frames_per_segment=F, workers=1, progress=False)
    assert run_segments(config)["processed"] == 3
    table, failed = load_segments(tmp_path), load_segment_failures(tmp_path)

    write_previous_version(tmp_path)
    layout = DataLayout(tmp_path)
    for path in (layout.ledger, layout.segments_table, layout.segments_failed):
        assert key_columns(path) == {"youtube_id"}, path
    receipts = {y: layout.segment_receipt(y) for y in ids}
    assert all("clip_id" not in json.loads(p.read_text()) for p in receipts.values())
    stamps = {y: p.stat().st_mtime_ns for y, p in receipts.items()}
    pd.testing.assert_frame_equal(load_segments(tmp_path), table)
    pd.testing.assert_frame_equal(load_segment_failures(tmp_path), failed)

    again = run_segments(config)
    assert again["processed"] == 0 and again["skipped"] == 3 and again["ok"] == 2
    assert {y: p.stat().st_mtime_ns for y, p in receipts.items()} == stamps  # not redone
    assert key_columns(layout.segments_table) == key_columns(layout.segments_failed) == {"clip_id"}
    pd.testing.assert_frame_equal(load_segments(tmp_path), table)
    pd.testing.assert_frame_equal(load_segment_failures(tmp_path), failed)
    assert list(failed["clip_id"]) == [ids[2]]


def test_table_built_in_batches_is_the_table_built_at_once(tmp_path: Path) -> None:
    """Receipts in the stage's format (no media): the table made a few clips at a time, its parts'
    types unified (an int column in one part, floats in another; a column empty in one part), is
    the one made in a single batch, and the summary's counts add up over the batches."""
    from pipeline.rehearsal.probes import receipts
    from pipeline.stages.segments import build_tables, list_clips

    ids = [f"clip{i:02d}" for i in range(11)]
    write_manifest(tmp_path / "source", ids)
    data = tmp_path / "data"
    receipts(str(tmp_path / "source"), str(data), len(ids))
    layout = DataLayout(data)
    for i, clip_id in enumerate(ids):
        path = layout.segment_receipt(clip_id)
        receipt = json.loads(path.read_text())
        if i < 3:  # the first batch: whole seconds, no clip hash, one short clip with padding
            receipt["clip_info"]["audio_duration"] = 10
            receipt["clip_sha256"] = None
        if i == 1:
            receipt["seconds"][-1]["padded_video"] = True
            for sec in receipt["seconds"]:
                sec["short_clip"] = True
        if i == 7:
            receipt.update(status="failed", reason="decode error")
        path.write_text(json.dumps(receipt))
    clips, problems, _ = list_clips(data)
    assert len(clips) == len(ids) and not problems
    counts_one, failed_one = build_tables(data, clips)
    at_once = load_segments(data)
    counts, failed = build_tables(data, clips, batch=3)
    pd.testing.assert_frame_equal(load_segments(data), at_once)
    pd.testing.assert_frame_equal(failed, failed_one)
    assert counts == counts_one
    assert counts["ok"] == 10 and counts["short_clips"] == 1 and counts["padded_seconds"] == 1
    assert at_once["audio_duration"].dtype == np.float64 and at_once["clip_sha256"].isna().sum()
    assert failed["clip_id"].tolist() == ["clip07"]
    assert not list(data.glob(".segments.parquet.parts-*"))
