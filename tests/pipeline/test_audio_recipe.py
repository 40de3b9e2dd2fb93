"""The segments stage's audio recipes on real ffmpeg-made AAC clips: ``release`` against an
independent implementation of the AVE release's recipe, ``soxr`` against the frontend on an
independent decode, and what a change of recipe redoes (and what it leaves alone)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.cli import main as avel
from pipeline.core.layout import DataLayout
from pipeline.stages.segments import (
    SegmentsConfig,
    load_patches,
    load_segments,
    patches_sha256,
    run_segments,
)
from tests.support.media import make_clip
from tests.support.previous_version import AUDIO_RECIPE_FIELDS, write_before_audio_recipe
from tests.support.release_audio import read_wav, release_patches

#: clip ID -> (sample rate, channels, aevalsrc expressions: a chirp or tone and noise)
CLIPS = {
    "stereo44k1_": (44100, 2, "0.5*sin(2*PI*(300+200*t)*t)|0.3*(2*random(0)-1)"),
    "mono48k____": (48000, 1, "0.4*sin(2*PI*1000*t)+0.2*(2*random(0)-1)"),
    "mono16k____": (16000, 1, "0.4*sin(2*PI*700*t)+0.2*(2*random(0)-1)"),
}
SHORT = "short44k1__"  # 4.5 s of 44.1 kHz stereo
F = 2  # frames per segment: cheap


def segment(data: Path, recipe: str | None = None) -> None:
    """``avel segments`` on ``data`` (its summary goes to stdout)."""
    args = ["segments", "--data-dir", str(data), "--frames-per-segment", str(F), "--workers", "1"]
    assert avel(args + (["--audio-recipe", recipe] if recipe else [])) == 0


def summary_lines(capsys) -> list[str]:
    return [line.strip() for line in capsys.readouterr().out.splitlines()]


def receipts(data: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in DataLayout(data).segments.glob("*.json")}


def soxr_patches(clip: Path, rate: int, channels: int) -> np.ndarray:
    """avel's first recipe on an independent decode (s32 PCM): the frontend's whole-clip soxr."""
    from pipeline.backbones.vggish_frontend import log_mel_patches

    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(clip), "-vn", "-f", "s32le", "pipe:1"]
    pcm = np.frombuffer(subprocess.run(cmd, check=True, capture_output=True).stdout, "<i4")
    return log_mel_patches(pcm.reshape(-1, channels).astype(np.float64) / 2**31, rate)[:10]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Three 10 s clips and a short one, segmented with the default recipe."""
    d = tmp_path_factory.mktemp("recipes")
    for clip_id, (rate, channels, expr) in CLIPS.items():
        make_clip(
            d / "clips" / f"{clip_id}.mp4",
            duration=10,
            fps=5,
            size=(32, 24),
            sample_rate=rate,
            channels=channels,
            audio_expr=expr,
        )
    make_clip(
        d / "clips" / f"{SHORT}.mp4",
        duration=4.5,
        fps=5,
        size=(32, 24),
        sample_rate=44100,
        channels=2,
        audio_expr=CLIPS["stereo44k1_"][2],
    )
    ids = [*CLIPS, SHORT]
    pd.DataFrame({"sample": range(len(ids)), "youtube_id": ids}).to_parquet(d / "manifest.parquet")
    run_segments(SegmentsConfig(d, frames_per_segment=F, workers=1, progress=False))
    return d


def copy_of(data: Path, folder: Path) -> Path:
    """A copy of a data folder (file times kept: the receipts stay current)."""
    return Path(shutil.copytree(data, folder / "data"))


@pytest.mark.parametrize("clip_id", list(CLIPS))
def test_release_recipe_matches_an_independent_implementation(data, clip_id, tmp_path):
    expected = release_patches(data / "clips" / f"{clip_id}.mp4", tmp_path)
    stored = load_patches(data, clip_id)
    np.testing.assert_allclose(stored, expected, atol=1e-4, rtol=0)
    rows = load_segments(data).query("clip_id == @clip_id")
    rate, channels, _ = CLIPS[clip_id]
    assert (rows["sample_rate"] == rate).all() and (rows["channels"] == channels).all()
    assert len(rows) == 10 and (rows["audio_recipe"] == "release").all()
    assert (rows["patches_sha256"] == patches_sha256(stored)).all()
    clip_hash = hashlib.sha256((data / "clips" / f"{clip_id}.mp4").read_bytes()).hexdigest()
    assert (rows["clip_sha256"] == clip_hash).all()
    assert not rows["padded_audio"].any() and (rows["audio_real_samples"] == 16000).all()


def test_release_recipe_pads_a_short_clip_at_its_native_rate(data, tmp_path):
    rows = load_segments(data).query("clip_id == @SHORT").sort_values("second")
    # about 4.5 s at 44.1 kHz (AAC adds a few samples): four full seconds, then about 0.5 s
    pcm, rate = read_wav(data / "clips" / f"{SHORT}.mp4", tmp_path)
    last = (len(pcm) - 4 * rate) * 16000 // rate
    assert 7900 < last < 8200
    assert list(rows["audio_real_samples"]) == [16000] * 4 + [last] + [0] * 5
    assert list(rows["padded_audio"]) == [False] * 4 + [True] * 6
    stored = load_patches(data, SHORT)
    expected = release_patches(data / "clips" / f"{SHORT}.mp4", tmp_path, seconds=4)
    np.testing.assert_allclose(stored[:4], expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(stored[5:], np.log(0.01), atol=1e-6)  # zero padding = silence


def test_switching_the_recipe_redoes_the_audio_only(data, tmp_path, capsys):
    d = copy_of(data, tmp_path)
    before = receipts(d)
    segment(d, "soxr")
    lines = summary_lines(capsys)
    assert "4 clips re-segmented: audio recipe release -> soxr" in lines, lines
    assert "of those processed, 4 audio only (frame plan kept)" in lines, lines
    after = receipts(d)
    for clip_id, (rate, channels, _) in CLIPS.items():
        release, soxr = load_patches(data, clip_id), load_patches(d, clip_id)
        clip = d / "clips" / f"{clip_id}.mp4"
        # (the s32 decode rounds differently from the stage's float32 one: ~1e-4 in quiet bands)
        np.testing.assert_allclose(soxr, soxr_patches(clip, rate, channels), atol=1e-3)
        difference = float(np.abs(soxr - release).max())  # measured: 0.19 (44.1k), 0.65 (48k)
        assert difference > (0.05 if rate != 16000 else 0.0)
        frames = [s["frame_indices"] for s in after[clip_id]["seconds"]]
        assert frames == [s["frame_indices"] for s in before[clip_id]["seconds"]]
        assert after[clip_id]["audio_recipe"] == "soxr"
        assert after[clip_id]["patches_sha256"] == patches_sha256(soxr)
        assert after[clip_id]["patches_sha256"] != before[clip_id]["patches_sha256"]
    assert (load_segments(d)["audio_recipe"] == "soxr").all()

    stamps = {p.name: p.stat().st_mtime_ns for p in DataLayout(d).segments.iterdir()}
    segment(d, "soxr")  # asked again: nothing to do
    assert not any("re-segmented" in line for line in summary_lines(capsys))
    assert {p.name: p.stat().st_mtime_ns for p in DataLayout(d).segments.iterdir()} == stamps


def test_a_folder_of_the_soxr_version_is_redone_by_default_and_kept_under_soxr(
    data, tmp_path, capsys
):
    old = copy_of(data, tmp_path / "old")
    run_segments(SegmentsConfig(old, frames_per_segment=F, audio_recipe="soxr", progress=False))
    soxr = {clip_id: load_patches(old, clip_id) for clip_id in [*CLIPS, SHORT]}
    write_before_audio_recipe(old)  # as that version wrote it: no recipe, no hashes
    assert not any(set(AUDIO_RECIPE_FIELDS) & set(r) for r in receipts(old).values())

    # --audio-recipe soxr: nothing decoded again, the receipts only get their recipe and hashes
    kept = copy_of(old, tmp_path / "kept")
    patches_before = {p.name: p.stat().st_mtime_ns for p in DataLayout(kept).segments.glob("*.npy")}
    segment(kept, "soxr")
    lines = summary_lines(capsys)
    assert "processed now: 0 (failed 0)   already done: 4" in lines, lines
    assert "4 receipts given their sha256 hashes (nothing decoded)" in lines, lines
    patches_after = {p.name: p.stat().st_mtime_ns for p in DataLayout(kept).segments.glob("*.npy")}
    assert patches_after == patches_before
    table = load_segments(kept)
    for clip_id, receipt in receipts(kept).items():
        assert receipt["audio_recipe"] == "soxr"
        assert receipt["patches_sha256"] == patches_sha256(soxr[clip_id])
        clip_bytes = (kept / "clips" / f"{clip_id}.mp4").read_bytes()
        assert receipt["clip_sha256"] == hashlib.sha256(clip_bytes).hexdigest()
        rows = table.query("clip_id == @clip_id")
        assert (rows["patches_sha256"] == receipt["patches_sha256"]).all()
    assert (table["audio_recipe"] == "soxr").all()

    # the default (release): every clip's audio is redone, the summary says why
    segment(old)
    lines = summary_lines(capsys)
    assert "4 clips re-segmented: audio recipe soxr -> release" in lines, lines
    for clip_id in [*CLIPS, SHORT]:
        np.testing.assert_array_equal(load_patches(old, clip_id), load_patches(data, clip_id))
    assert (load_segments(old)["audio_recipe"] == "release").all()
