"""The embedded demo: generator (determinism, formats, hard cases), Range server, orchestration."""

from __future__ import annotations

import hashlib
import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.core.manifest import load_manifest
from pipeline.demo.run import (
    BLOCKED,
    DONE,
    FAILED,
    MISSING,
    OK,
    SUPERVISED_MODELS,
    DemoConfig,
    Step,
    available_commands,
    read_metrics,
    run_steps,
)
from pipeline.demo.server import parse_range, serve_folder
from pipeline.demo.synth import CLASSES, SOURCE_SECONDS, generate_demo_set, plan_clips
from pipeline.stages.annotations.stage import AnnotationsConfig, run_annotations
from tests.support.make import make

REPO = Path(__file__).resolve().parents[2]
N_CLIPS, SEED, SIZE, FPS = 4, 0, (128, 96), 8  # 4 clips: train 2, val 1, test 1


@pytest.fixture(scope="module")
def demo_set(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate_demo_set(tmp_path_factory.mktemp("synth"), n_clips=N_CLIPS, seed=SEED)


def _run_demo(data_dir: Path, run_dir: Path) -> tuple[subprocess.CompletedProcess, dict]:
    """`make demo` as a newcomer runs it (offline here: the tests have no network)."""
    proc = make(
        "demo",
        f"DATA_DIR={data_dir}",
        f"RUN_DIR={run_dir}",
        f"CLIPS={N_CLIPS}",
        f"SEED={SEED}",
        "FRAMES_PER_SEGMENT=1",
        "EPOCHS=1",
        "QUIET=1",
        "OFFLINE=1",
        check=False,
    )
    summary_path = run_dir / "demo_summary.json"
    assert summary_path.is_file(), (
        f"no summary; output:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc, json.loads(summary_path.read_text())


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("demo")
    first = _run_demo(root / "data", root / "runs")
    second = _run_demo(root / "data", root / "runs")
    return root, first, second


def _decode(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(frames (n, H, W, 3) uint8, mono 16 kHz float32 audio) of one clip."""
    video = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True,
        check=True,
    ).stdout
    audio = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "f32le", "-ac", "1", "-ar", "16000", "-"],
        capture_output=True,
        check=True,
    ).stdout
    frames = np.frombuffer(video, np.uint8).reshape(-1, SIZE[1], SIZE[0], 3)
    return frames, np.frombuffer(audio, np.float32)


def _checksum(path: Path) -> str:
    frames, audio = _decode(path)
    return hashlib.sha256(frames.tobytes() + audio.tobytes()).hexdigest()


# --------------------------------------------------------------------------- generator


def test_plan_is_deterministic_and_seeded() -> None:
    assert plan_clips(N_CLIPS, SEED) == plan_clips(N_CLIPS, SEED)
    assert plan_clips(N_CLIPS, SEED) != plan_clips(N_CLIPS, SEED + 1)


def test_generation_is_deterministic_and_idempotent(demo_set, demo_runs) -> None:
    root, _, _ = demo_runs
    other = root / "data" / "synthetic"  # generated independently by `avel demo` (same settings)
    assert demo_set["annotations"].read_text() == (other / "Annotations.txt").read_text()
    clip = sorted(demo_set["videos"].glob("*.mp4"))[0]
    assert _checksum(clip) == _checksum(other / "videos" / clip.name)
    before = {p: p.stat().st_mtime_ns for p in demo_set["videos"].glob("*.mp4")}
    generate_demo_set(demo_set["dir"], n_clips=N_CLIPS, seed=SEED)  # marker present: nothing redone
    assert {p: p.stat().st_mtime_ns for p in demo_set["videos"].glob("*.mp4")} == before


def test_annotations_splits_and_offsets_are_valid(demo_set, tmp_path: Path) -> None:
    summary = run_annotations(
        AnnotationsConfig(
            data_dir=tmp_path,
            ave_annotations=str(demo_set["annotations"]),
            ave_splits=str(demo_set["dir"]),
            audioset_csv=[str(demo_set["segments_csv"])],
        )
    )
    assert summary["rows"] == N_CLIPS and summary["videos_with_offset"] == N_CLIPS
    assert all(summary["split_rows"][s] > 0 for s in ("train", "val", "test"))
    manifest = load_manifest(tmp_path)
    ids = manifest["youtube_id"].tolist()
    assert any(i.startswith("-") for i in ids) and any("_" in i for i in ids)
    test_match = manifest[manifest["match_split"] == "test"]
    assert len(test_match) and ((test_match["end"] - test_match["start"]).between(2, 9)).all()
    plan = {c["youtube_id"]: c for c in json.loads(demo_set["plan"].read_text())["clips"]}
    for row in manifest.itertuples():
        clip = plan[row.youtube_id]
        assert (row.start, row.end, row.category) == (clip["start"], clip["end"], clip["category"])
        assert row.clip_start == clip["offset"] and row.clip_end == clip["offset"] + 10
    header = demo_set["segments_csv"].read_text().splitlines()
    assert [h.startswith("#") for h in header[:4]] == [True, True, True, False]
    assert pd.Series(header[3].split(", ")).size == 4 and header[3].split(", ")[1].endswith(".000")


def test_hard_case_seconds_are_real(demo_set) -> None:
    """Decode every clip: the object is drawn exactly in its visible seconds, the sound is heard
    exactly in its audible seconds, so visible-but-silent and heard-but-off-screen seconds exist."""
    plan = json.loads(demo_set["plan"].read_text())["clips"]
    seen: dict[tuple[int, int], int] = {}
    for clip in plan:
        frames, audio = _decode(demo_set["videos"] / f"{clip['youtube_id']}.mp4")
        assert frames.shape[0] == SOURCE_SECONDS * FPS
        colour = np.array([int(CLASSES[clip["label"]].colour[i : i + 2], 16) for i in (2, 4, 6)])
        near = (np.abs(frames.astype(int) - colour).max(axis=-1) < 60).sum(axis=(1, 2))
        for t in range(SOURCE_SECONDS):
            pixels = near[t * FPS + 1 : (t + 1) * FPS - 1]  # inner frames of the second
            chunk = audio[t * 16000 + 3200 : t * 16000 + 12800]  # inner 0.6 s (codec edges aside)
            rms = float(np.sqrt(np.mean(chunk.astype(np.float64) ** 2)))
            visible, audible = clip["visible"][t], clip["audible"][t]
            if visible:
                assert pixels.min() > 100, (clip["youtube_id"], t, pixels)
            else:
                assert pixels.max() < 5, (clip["youtube_id"], t, pixels)
            if audible:
                assert rms > 0.02, (clip["youtube_id"], t, rms)
            else:
                assert rms < 1e-3, (clip["youtube_id"], t, rms)
            seen[(visible, audible)] = seen.get((visible, audible), 0) + 1
    # event (1,1), visible but silent (1,0), heard but off screen (0,1), neither (0,0)
    assert set(seen) == {(1, 1), (1, 0), (0, 1), (0, 0)}, seen


# --------------------------------------------------------------------------- server


def test_parse_range() -> None:
    assert parse_range("bytes=0-9", 100) == (0, 9)
    assert parse_range("bytes=90-", 100) == (90, 99)
    assert parse_range("bytes=-10", 100) == (90, 99)
    assert parse_range("bytes=50-500", 100) == (50, 99)
    assert parse_range("bytes=100-", 100) == "unsatisfiable"
    assert parse_range("bytes=0-1,5-6", 100) is None  # multi-range: served whole


def test_server_honours_ranges_and_404s(tmp_path: Path, demo_set) -> None:
    payload = bytes(range(256)) * 40
    (tmp_path / "blob.bin").write_bytes(payload)

    def get(url: str, headers: dict | None = None):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {})) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), b""

    with serve_folder(tmp_path) as base:
        assert base.startswith("http://127.0.0.1:")
        status, headers, body = get(f"{base}/blob.bin", {"Range": "bytes=1000-1099"})
        assert (status, headers["Content-Range"], body) == (
            206,
            f"bytes 1000-1099/{len(payload)}",
            payload[1000:1100],
        )
        assert headers["Accept-Ranges"] == "bytes" and headers["Content-Length"] == "100"
        assert get(f"{base}/blob.bin", {"Range": "bytes=-7"})[2] == payload[-7:]
        status, headers, body = get(f"{base}/blob.bin")
        assert (status, body, headers["Accept-Ranges"]) == (200, payload, "bytes")
        status, headers, _ = get(f"{base}/blob.bin", {"Range": f"bytes={len(payload)}-"})
        assert (status, headers["Content-Range"]) == (416, f"bytes */{len(payload)}")
        assert get(f"{base}/missing.mp4")[0] == 404
        assert get(f"{base}/../blob.bin")[0] in (200, 404)  # never escapes the folder
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{base}/blob.bin", timeout=2)  # stopped with the block

    clip = sorted(demo_set["videos"].glob("*.mp4"))[0]
    with serve_folder(demo_set["videos"]) as base:  # ffmpeg seeks inside the source over HTTP
        out = tmp_path / "cut.mp4"
        subprocess.run(
            [
                "ffmpeg",
                "-v",
                "error",
                "-y",
                "-ss",
                "4",
                "-i",
                f"{base}/{clip.name}",
                "-t",
                "3",
                "-c",
                "copy",
                str(out),
            ],
            check=True,
            timeout=60,
        )
    duration = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(out)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert 2.5 < float(duration) < 4.0


# --------------------------------------------------------------------------- orchestration


@pytest.mark.slow
def test_demo_end_to_end_and_rerun_skips(demo_runs) -> None:
    root, (proc1, first), (proc2, second) = demo_runs
    assert proc1.returncode == 0, proc1.stdout[-3000:] + proc1.stderr[-3000:]
    assert proc2.returncode == 0, proc2.stdout[-3000:] + proc2.stderr[-3000:]
    status1 = {s["name"]: s["status"] for s in first["steps"]}
    status2 = {s["name"]: s["status"] for s in second["steps"]}
    steps = ["generate", "serve", "annotations", "download", "segments", "features"]
    runs = [f"supervised_{m}" for m in SUPERVISED_MODELS] + ["weak_av_att", "crossmodal_avdln"]
    assert list(status1)[: len(steps)] == steps
    assert set(status1.values()) == {OK}, status1  # every stage ran: none missing, none failed
    assert not first["failed"] and not first["not_available"]
    # Second run: everything that finished is skipped, nothing reruns.
    assert all(status2[name] == DONE for name in status1 if name != "serve"), status2
    # Offline: RANDOM backbones, said in the summary, in the table and by the stores themselves.
    assert (
        first["settings"]["weights"].startswith("RANDOM")
        and "offline" in first["settings"]["weights"]
    )
    assert "WARNING: RANDOM backbone weights" in proc1.stdout
    assert first["settings"]["frames_per_segment"] == 1 and "1 frame(s) per segment" in proc1.stdout
    # Every model reports its numbers, as read back from its own run folder.
    assert sorted(first["models"]) == sorted(runs)
    for run, metrics in first["models"].items():
        assert metrics == read_metrics(root / "runs" / run)
        wanted = {"a2v", "v2a"} if run.startswith("crossmodal") else {"accuracy"}
        assert wanted <= set(metrics), (run, metrics)
    pictures = {Path(p).name for p in first["pictures"]}
    assert {"curves.png", "confusion.png", "distance-0000.png"} <= pictures


def test_read_metrics_is_defensive(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text(
        json.dumps(
            {"val": {"accuracy": 0.1}, "test": {"accuracy": 0.62}, "A2V_accuracy": 0.3, "v2a": 25.0}
        )
    )
    assert read_metrics(tmp_path) == {"accuracy": 0.62, "a2v": 0.3, "v2a": 25.0}
    (tmp_path / "metrics.json").write_text("not json")
    assert read_metrics(tmp_path) == {}
    seed = tmp_path / "seed-0"  # per-seed files below, mean +- std dicts, unrelated a2v keys
    seed.mkdir()
    (seed / "metrics.json").write_text(
        json.dumps({"val_accuracy": 0.9, "a2v_start_mae": 1.5, "test": {"a2v_accuracy": 0.4}})
    )
    (tmp_path / "summary.json").write_text(
        json.dumps({"test_accuracy": {"mean": 0.5, "std": 0.1}, "v2a_accuracy": {"mean": 0.2}})
    )
    assert read_metrics(tmp_path) == {"accuracy": 0.5, "a2v": 0.4, "v2a": 0.2}


def test_available_commands_sees_nested_and_positional_subcommands() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    sub.add_parser("train").add_argument("mode", choices=["supervised", "weak"])
    sub.add_parser("features").add_argument("--features")
    have = available_commands(parser)
    assert {("train",), ("train", "supervised"), ("train", "weak"), ("features",)} <= have
    assert ("demo",) in available_commands() and ("annotations",) in available_commands()


def test_run_steps_skips_reruns_and_reports_missing(demo_set, tmp_path: Path) -> None:
    """A finished step is skipped, rerun when a step it needs ran again; an unregistered stage is
    'not available' and what needs it is blocked."""
    cfg = DemoConfig(data_dir=tmp_path / "data", run_dir=tmp_path / "runs", echo=False)
    g = demo_set["dir"]
    steps = [
        Step(
            "annotations",
            ("annotations",),
            [
                "--data-dir",
                str(cfg.data_dir),
                "--ave-annotations",
                str(g / "Annotations.txt"),
                "--ave-splits",
                str(g),
                "--audioset-csv",
                str(g / "segments.csv"),
            ],
            outputs=[cfg.data_dir / "manifest.parquet"],
            needs=("generate",),
        ),
        Step("future", ("no-such-stage",), [], needs=("annotations",)),
        Step(
            "after future", ("annotations",), ["--data-dir", str(cfg.data_dir)], needs=("future",)
        ),
    ]

    def statuses(generate: str) -> list[str]:
        return [r.status for r in run_steps(cfg, steps, "http://unused", {"generate": generate})]

    assert statuses(DONE) == [OK, MISSING, BLOCKED]
    assert statuses(DONE) == [DONE, MISSING, BLOCKED]
    assert statuses(OK) == [OK, MISSING, BLOCKED]  # regenerated inputs: annotations runs again
    steps[0].args[-1] = str(tmp_path / "absent.csv")  # a failing stage is reported, with its log
    failed = run_steps(cfg, steps[:1], "http://unused", {"generate": DONE})[0]
    assert failed.status == FAILED and "absent.csv" in failed.detail
