"""Segments stage: per clip, the 1 s segment plan (frames, audio span, flags) and log-mel patches.

For every ok clip (``DATA_DIR/clips/status.parquet`` rows with status ``ok``; without a ledger,
every ``DATA_DIR/clips/<clip_id>.mp4`` whose ID is in the manifest):

- Video: every frame is decoded (ffprobe) and counted; container frame counts are never used.
  Frame plan, rule ``release`` (AVE reference 2.1), used for constant-frame-rate clips whose decoded
  length is within ``DURATION_TOLERANCE`` of 10 s: interval = floor(n / 10), frame for second l and
  i in 0..F-1 = floor(l * interval + i * interval / F). Rule ``time`` otherwise (variable frame
  rate, short or long clips): the frame on screen at t = l + i / F seconds (from the first frame),
  so every second stays aligned with its audio; times past the last frame repeat the last frame and
  the second is flagged ``padded_video``. Timestamps are seconds from the first decoded frame.
- Audio: decoded by ffmpeg to float32 at the native rate with all channels, averaged to mono,
  resampled as a whole to 16 kHz with soxr (HQ), cut or zero-padded to exactly 160,000 samples
  (second l = samples [16000 l, 16000 (l + 1))) and turned into one 96x64 log-mel patch per second
  by the VGGish frontend (AVE framing). Missing audio is silence (all zeros), flagged
  ``missing_audio``; a second whose patch reads zero padding (fewer than 15,600 real samples) is
  flagged ``padded_audio``.
- A clip that cannot be probed or decoded is recorded as failed with the reason and skipped. A full
  disk is not the clip's fault: the run stops (one line naming the folder and its free space) and
  records nothing for the clip, so a plain re-run after freeing space finishes the work.

Clips are keyed by the manifest's ``clip_id`` (= YouTube ID for AVE): the file names below, the
``clip_id`` column of both tables and the receipts' ``clip_id``. Tables and receipts of an earlier
version call that key ``youtube_id``; they read as today's (a receipt's key never decides whether
the clip is done, so their clips are not segmented again).

Outputs: ``DATA_DIR/segments/<clip_id>.patches.npy`` (10, 96, 64) float32 and a per-clip receipt
``<clip_id>.json`` (written last; a current receipt means the clip is done: same clip file size
and mtime, same frames per segment), then ``DATA_DIR/segments.parquet`` (one row per clip and second)
and ``DATA_DIR/segments_failed.parquet`` (clip_id, reason), rebuilt from the receipts every run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.io import (
    DiskFullError,
    disk_full_error,
    is_disk_full,
    read_parquet,
    write_json,
    write_npy,
    write_parquet,
)
from pipeline.core.layout import DataLayout
from pipeline.core.manifest import (
    CLIP_SECONDS,
    LEGACY_CLIP_KEY,
    clip_ids,
    keyed_by_clip_id,
    load_manifest,
)
from pipeline.core.media import (
    MediaError,
    decode_audio,
    first_stream,
    frame_timestamps,
    probe,
    require_ffmpeg,
)
from pipeline.stages.download.ledger import read_ledger

SEGMENTS_VERSION = 1
SAMPLE_RATE = 16000
#: Fewest real samples a second needs for its AVE patch (96 frames read 400 + 95 * 160 samples).
PATCH_SAMPLES = 15600
#: A clip whose decoded video is within this many seconds of 10 s gets the release frame rule.
DURATION_TOLERANCE = 0.25
#: Frame durations spreading more than this fraction of the median mark a variable-frame-rate clip.
VFR_SPREAD = 0.1
PATCH_SHAPE = (CLIP_SECONDS, 96, 64)


@dataclass
class SegmentsConfig:
    data_dir: Path = Path("data")
    frames_per_segment: int = 16
    workers: int = 1
    force: bool = False
    limit: int | None = None  # process at most this many pending clips (cheap partial runs)
    progress: bool = True


# ----------------------------------------------------------------------------- inputs


def clips_dir(data_dir: str | Path) -> Path:
    """``DATA_DIR/clips`` (the download stage's folder)."""
    return DataLayout(data_dir).clips


def list_clips(data_dir: str | Path) -> tuple[list[tuple[str, Path]], list[tuple[str, str]], str]:
    """The clips to segment, in manifest order: ``(ok, problems, source)``.

    ``ok`` pairs each clip ID with its clip path; ``problems`` lists IDs the ledger calls ok whose
    file is missing; ``source`` says where the list came from (ledger or a scan of the folder).
    """
    data_dir = Path(data_dir)
    order = list(dict.fromkeys(clip_ids(load_manifest(data_dir))))  # AVE: the YouTube IDs
    layout = DataLayout(data_dir)
    folder, ledger = layout.clips, layout.ledger
    problems: list[tuple[str, str]] = []
    if ledger.is_file():
        table = read_ledger(ledger)
        ok_ids = set(table.loc[table["status"] == "ok", "clip_id"].astype(str))
        ids = [y for y in order if y in ok_ids]
        source = f"ledger {ledger}"
    else:
        present = {p.stem for p in folder.glob("*.mp4")} if folder.is_dir() else set()
        ids = [y for y in order if y in present]
        source = f"scan of {folder}/*.mp4 (no ledger)"
    clips = []
    for clip_id in ids:
        path = layout.clip(clip_id)
        if path.is_file():
            clips.append((clip_id, path))
        else:
            problems.append((clip_id, f"ledger says ok but {path} is missing"))
    return clips, problems, source


# ----------------------------------------------------------------------------- frame plan


def release_frame_indices(num_frames: int, frames_per_segment: int = 16) -> np.ndarray:
    """(10, F) frame indices of the release rule: floor(l * interval + i * interval / F)."""
    interval = num_frames // CLIP_SECONDS
    second = np.arange(CLIP_SECONDS)[:, None]
    i = np.arange(frames_per_segment)[None, :]
    return second * interval + (i * interval) // frames_per_segment


def time_frame_indices(times: np.ndarray, frames_per_segment: int = 16) -> np.ndarray:
    """(10, F) indices of the frames on screen at t = l + i / F (times from the first frame)."""
    targets = (
        np.arange(CLIP_SECONDS)[:, None]
        + np.arange(frames_per_segment)[None, :] / frames_per_segment
    )
    return np.clip(np.searchsorted(times, targets + 1e-9, side="right") - 1, 0, len(times) - 1)


def _clean_times(times: np.ndarray, fallback_step: float) -> np.ndarray:
    """Timestamps from the first frame, NaNs filled by interpolation (or a constant step)."""
    times = np.asarray(times, dtype=np.float64)
    ok = np.isfinite(times)
    if not ok.any():
        return np.arange(len(times)) * fallback_step
    if not ok.all():
        idx = np.arange(len(times))
        times = np.interp(idx, idx[ok], times[ok])
    return times - times[0]


def plan_frames(
    times: np.ndarray, frames_per_segment: int, nominal_fps: float | None
) -> dict[str, Any]:
    """The (10, F) frame plan for a clip whose decoded frames have presentation ``times``."""
    n = len(times)
    fallback = 1.0 / nominal_fps if nominal_fps and nominal_fps > 0 else 0.04
    rel = _clean_times(times, fallback)
    steps = np.diff(rel)
    steps = steps[steps > 0]
    frame_dur = float(np.median(steps)) if steps.size else fallback
    vfr = bool(steps.size > 1 and (steps.max() - steps.min()) > VFR_SPREAD * frame_dur)
    video_duration = float(rel[-1] + frame_dur)
    in_length = abs(video_duration - CLIP_SECONDS) <= DURATION_TOLERANCE
    if in_length and not vfr:
        rule = "release"
        indices = release_frame_indices(n, frames_per_segment)
    else:
        rule = "time"
        indices = time_frame_indices(rel, frames_per_segment)
    targets = (
        np.arange(CLIP_SECONDS)[:, None]
        + np.arange(frames_per_segment)[None, :] / frames_per_segment
    )
    real = indices < n if rule == "release" else targets < video_duration
    indices = np.minimum(indices, n - 1)
    return {
        "indices": indices.astype(np.int64),
        "timestamps": rel[indices],
        "real_frames": real.sum(axis=1).astype(np.int64),
        "rule": rule,
        "vfr": vfr,
        "fps": 1.0 / frame_dur if frame_dur > 0 else float("nan"),
        "video_duration": video_duration,
        "short_clip": video_duration < CLIP_SECONDS - DURATION_TOLERANCE,
        "long_clip": video_duration > CLIP_SECONDS + DURATION_TOLERANCE,
    }


# ----------------------------------------------------------------------------- audio


def audio_16k(path: Path, stream: dict | None) -> tuple[np.ndarray, dict[str, Any]]:
    """Mono 16 kHz float64 waveform of the clip's audio (empty when there is none) and its facts."""
    if stream is None:
        return np.zeros(0), {"sample_rate": None, "channels": None, "audio_duration": 0.0}
    rate = int(stream.get("sample_rate") or 0)
    channels = int(stream.get("channels") or 0)
    if rate <= 0 or channels <= 0:
        raise MediaError(
            f"audio stream without a sample rate or channel count ({rate} Hz, {channels} ch)"
        )
    pcm = decode_audio(path, int(stream["index"]), channels)
    mono = pcm.astype(np.float64).mean(axis=1)
    if rate != SAMPLE_RATE and mono.size:
        import soxr

        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
    info = {"sample_rate": rate, "channels": channels, "audio_duration": pcm.shape[0] / rate}
    return mono, info


def audio_patches(wave16k: np.ndarray) -> np.ndarray:
    """(10, 96, 64) float32 patches of the first 10 s (zero-padded) with the VGGish AVE framing."""
    from pipeline.backbones.vggish_frontend import log_mel_patches  # NumPy only: no torch import

    full = np.zeros(CLIP_SECONDS * SAMPLE_RATE, dtype=np.float64)
    n = min(len(wave16k), full.size)
    full[:n] = wave16k[:n]
    patches = log_mel_patches(full, SAMPLE_RATE, framing="ave")
    if patches.shape != PATCH_SHAPE:
        raise RuntimeError(f"VGGish frontend returned {patches.shape}, expected {PATCH_SHAPE}")
    return patches.astype(np.float32)


# ----------------------------------------------------------------------------- one clip


def _clip_stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"bytes": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def patches_path(data_dir: str | Path, clip_id: str) -> Path:
    """``DATA_DIR/segments/<clip_id>.patches.npy``."""
    return DataLayout(data_dir).patches(clip_id)


def load_patches(data_dir: str | Path, clip_id: str) -> np.ndarray:
    """The (10, 96, 64) float32 log-mel patches the segments stage stored for one clip."""
    path = patches_path(data_dir, clip_id)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `make segments` first")
    return np.load(path)


def _read_receipt(path: Path) -> dict | None:
    """The receipt at ``path`` in today's terms (key ``clip_id``); None when absent or unreadable."""
    try:
        receipt = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(receipt, dict) and LEGACY_CLIP_KEY in receipt:
        receipt.setdefault("clip_id", receipt.pop(LEGACY_CLIP_KEY))
    return receipt


def receipt_is_current(data_dir: Path, clip_id: str, clip: Path, frames_per_segment: int) -> bool:
    receipt = _read_receipt(DataLayout(data_dir).segment_receipt(clip_id))
    if not receipt or receipt.get("version") != SEGMENTS_VERSION:
        return False
    if receipt.get("frames_per_segment") != frames_per_segment:
        return False
    if not clip.is_file() or receipt.get("clip") != _clip_stamp(clip):
        return False
    return receipt["status"] == "failed" or patches_path(data_dir, clip_id).is_file()


def segment_clip(clip_id: str, clip: Path, data_dir: Path, frames_per_segment: int) -> dict:
    """Plan and patch one clip, write its patches then its receipt; return the receipt."""
    receipt: dict[str, Any] = {
        "version": SEGMENTS_VERSION,
        "clip_id": clip_id,
        "clip": _clip_stamp(clip),
        "frames_per_segment": frames_per_segment,
    }
    try:
        receipt.update(_segment(clip, data_dir, clip_id, frames_per_segment))
        receipt["status"], receipt["reason"] = "ok", ""
    except DiskFullError:
        raise
    except Exception as exc:  # anything about this clip: record it, keep going with the rest
        if is_disk_full(exc):  # the machine's problem, not the clip's: never a sticky failure
            raise disk_full_error(DataLayout(data_dir).segments) from exc
        known = isinstance(exc, MediaError | OSError | ValueError)
        receipt.update(
            status="failed", reason=str(exc) if known else f"{type(exc).__name__}: {exc}"
        )
    write_json(receipt, DataLayout(data_dir).segment_receipt(clip_id))
    return receipt


def _segment(clip: Path, data_dir: Path, clip_id: str, frames_per_segment: int) -> dict[str, Any]:
    info = probe(clip)
    video = first_stream(info, "video")
    if video is None:
        raise MediaError("no video stream")
    times, decode_errors = frame_timestamps(clip, int(video["index"]))
    if len(times) == 0:
        raise MediaError(
            f"no video frame could be decoded{': ' + decode_errors if decode_errors else ''}"
        )
    plan = plan_frames(times, frames_per_segment, _rate(video.get("avg_frame_rate")))
    audio = first_stream(info, "audio")
    wave, audio_info = audio_16k(clip, audio)
    patches = audio_patches(wave)
    real = np.clip(len(wave) - np.arange(CLIP_SECONDS) * SAMPLE_RATE, 0, SAMPLE_RATE)
    write_npy(patches, patches_path(data_dir, clip_id))
    clip_info = {
        "num_frames": int(len(times)),
        "fps": plan["fps"],
        "video_duration": plan["video_duration"],
        "width": int(video.get("width") or 0),
        "height": int(video.get("height") or 0),
        "video_codec": str(video.get("codec_name", "")),
        "frame_rule": plan["rule"],
        **audio_info,
        "audio_codec": str(audio.get("codec_name", "")) if audio else "",
        "decode_errors": decode_errors[-500:],
    }
    seconds = []
    for second in range(CLIP_SECONDS):
        seconds.append(
            {
                "second": second,
                "frame_indices": plan["indices"][second].tolist(),
                "timestamps": [round(float(t), 6) for t in plan["timestamps"][second]],
                "real_frames": int(plan["real_frames"][second]),
                "audio_start": second * SAMPLE_RATE,
                "audio_end": (second + 1) * SAMPLE_RATE,
                "audio_real_samples": int(real[second]),
                "short_clip": bool(plan["short_clip"]),
                "long_clip": bool(plan["long_clip"]),
                "vfr": bool(plan["vfr"]),
                "missing_audio": audio is None or len(wave) == 0,
                "padded_video": bool(plan["real_frames"][second] < frames_per_segment),
                "padded_audio": bool(real[second] < PATCH_SAMPLES),
                "decode_errors": bool(decode_errors),
            }
        )
    return {"clip_info": clip_info, "seconds": seconds}


def _rate(text: object) -> float | None:
    try:
        num, den = str(text).split("/")
        return float(num) / float(den) if float(den) else None
    except (ValueError, ZeroDivisionError):
        return None


def _segment_task(args: tuple[str, str, str, int]) -> dict:
    clip_id, clip, data_dir, frames_per_segment = args
    return segment_clip(clip_id, Path(clip), Path(data_dir), frames_per_segment)


# ----------------------------------------------------------------------------- tables


def build_tables(
    data_dir: Path, clips: list[tuple[str, Path]]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """segments (one row per clip and second) and failures, from the receipts of ``clips``."""
    rows, failed = [], []
    for clip_id, _ in clips:
        receipt = _read_receipt(DataLayout(data_dir).segment_receipt(clip_id))
        if receipt is None:
            continue
        if receipt["status"] != "ok":
            failed.append((clip_id, receipt["reason"]))
            continue
        stamp = receipt.get("clip") or {}
        for sec in receipt["seconds"]:
            rows.append(
                {
                    "clip_id": clip_id,
                    **sec,
                    **receipt["clip_info"],
                    "clip_bytes": stamp.get("bytes"),
                    "clip_mtime_ns": stamp.get("mtime_ns"),
                }
            )
    table = pd.DataFrame(rows, columns=SEGMENT_COLUMNS)
    return table, pd.DataFrame(failed, columns=["clip_id", "reason"])


SEGMENT_COLUMNS = [
    "clip_id",
    "second",
    "frame_indices",
    "timestamps",
    "real_frames",
    "audio_start",
    "audio_end",
    "audio_real_samples",
    "short_clip",
    "long_clip",
    "vfr",
    "missing_audio",
    "padded_video",
    "padded_audio",
    "decode_errors",
    "num_frames",
    "fps",
    "video_duration",
    "width",
    "height",
    "video_codec",
    "frame_rule",
    "sample_rate",
    "channels",
    "audio_duration",
    "audio_codec",
    "clip_bytes",  # the clip file the row was made from (size, mtime): what later stages key on
    "clip_mtime_ns",
]


def load_segments(data_dir: str | Path) -> pd.DataFrame:
    """``DATA_DIR/segments.parquet``, with a clear error when the stage has not run."""
    return _read_table(DataLayout(data_dir).segments_table, data_dir)


def load_segment_failures(data_dir: str | Path) -> pd.DataFrame:
    """``DATA_DIR/segments_failed.parquet`` (clip_id, reason)."""
    return _read_table(DataLayout(data_dir).segments_failed, data_dir)


def _read_table(path: Path, data_dir: str | Path) -> pd.DataFrame:
    """One of the stage's tables, keyed ``clip_id`` whatever version wrote it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `make segments DATA_DIR={data_dir}` first")
    remedy = f"rebuild it with `make segments DATA_DIR={data_dir}` (finished clips are kept)"
    return keyed_by_clip_id(read_parquet(path, remedy))


#: What each feature kind is made from, per clip: the clip file, plus (visual) the frame plan.
_FINGERPRINT_COLUMNS = {
    "audio": ("clip_bytes", "clip_mtime_ns", "sample_rate", "channels", "audio_duration"),
    "visual": ("clip_bytes", "clip_mtime_ns", "num_frames", "frame_indices"),
    "c3d": ("clip_bytes", "clip_mtime_ns", "num_frames", "frame_rule", "frame_indices"),
}


def clip_fingerprints(segments: pd.DataFrame, kind: str) -> dict[str, str]:
    """Clip ID -> a short hash of what the ``kind`` ('audio'/'visual'/'c3d') features of a clip are
    made from, read from the segments table: the clip file (size, mtime), the segments version and,
    for visual, the planned frames of every second. A clip whose hash is unchanged has the same
    features; a re-downloaded clip or another frames-per-segment changes it."""
    import hashlib

    columns = [c for c in _FINGERPRINT_COLUMNS[kind] if c in segments.columns]
    out: dict[str, str] = {}
    for clip_id, group in segments.groupby("clip_id", sort=False):
        group = group.sort_values("second")
        parts = [f"segments-v{SEGMENTS_VERSION}"]
        for column in columns:
            values = group[column].tolist() if column == "frame_indices" else group[column].iloc[0]
            parts.append(f"{column}={json.dumps(values, default=_plain)}")
        out[str(clip_id)] = hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
    return out


def _plain(value: object) -> object:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def frame_plan(segments: pd.DataFrame, clip_id: str) -> np.ndarray:
    """(10, F) planned frame indices of one clip from the segments table."""
    rows = segments[segments["clip_id"] == clip_id].sort_values("second")
    if len(rows) != CLIP_SECONDS:
        raise KeyError(f"{clip_id}: not in the segments table")
    return np.stack([np.asarray(v, dtype=np.int64) for v in rows["frame_indices"]])


# ----------------------------------------------------------------------------- stage


def _progress(iterable: Iterator, total: int, enabled: bool) -> Iterator:
    if not enabled or total == 0:  # nothing to do: the summary says so, no empty bar
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc="segments", unit="clip", file=sys.stderr)


def _worker_lifeline(parent: int) -> None:
    """In a pool worker: a process group of its own (its ffmpeg children join it), killed as a
    whole as soon as the stage that started the pool is gone, even after a SIGKILL."""
    os.setpgid(0, 0)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.25)
        with contextlib.suppress(OSError):
            os.killpg(0, signal.SIGKILL)

    threading.Thread(target=watch, name="avel-segments-lifeline", daemon=True).start()


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    """Kill the pool's workers with their children (after an error or Ctrl-C: no waiting)."""
    for pid in list(getattr(pool, "_processes", None) or {}):
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)


def run_segments(cfg: SegmentsConfig) -> dict[str, Any]:
    """Segment every ok clip that has no current receipt, then rebuild the tables."""
    data_dir = Path(cfg.data_dir)
    if cfg.frames_per_segment < 1:
        raise ValueError(f"--frames-per-segment must be at least 1, got {cfg.frames_per_segment}")
    require_ffmpeg()
    import pipeline.backbones.vggish_frontend  # noqa: F401  (imported once, before forking workers)

    clips, problems, source = list_clips(data_dir)
    pending = [
        (y, p)
        for y, p in clips
        if cfg.force or not receipt_is_current(data_dir, y, p, cfg.frames_per_segment)
    ]
    skipped = len(clips) - len(pending)
    if cfg.limit is not None:
        pending = pending[: max(0, cfg.limit)]
    tasks = [(y, str(p), str(data_dir), cfg.frames_per_segment) for y, p in pending]
    new_failed = 0
    if cfg.workers <= 1 or len(tasks) <= 1:
        results: Iterator = (_segment_task(t) for t in tasks)
        for receipt in _progress(results, len(tasks), cfg.progress):
            new_failed += receipt["status"] != "ok"
    else:
        pool = ProcessPoolExecutor(
            max_workers=cfg.workers, initializer=_worker_lifeline, initargs=(os.getpid(),)
        )
        try:
            futures = [pool.submit(_segment_task, t) for t in tasks]
            for future in _progress(as_completed(futures), len(futures), cfg.progress):
                new_failed += future.result()["status"] != "ok"
        except DiskFullError:  # the running clips stop on their own; their temp files go
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            _kill_workers(pool)
            raise
        pool.shutdown(wait=True)
    table, failed = build_tables(data_dir, clips)
    failed = pd.concat(
        [failed, pd.DataFrame(problems, columns=["clip_id", "reason"])], ignore_index=True
    )
    write_parquet(table, DataLayout(data_dir).segments_table)
    write_parquet(failed, DataLayout(data_dir).segments_failed)
    per_clip = table.groupby("clip_id", sort=False).first() if len(table) else table
    return {
        "source": source,
        "clips": len(clips),
        "processed": len(tasks),
        "skipped": skipped,
        "remaining": len(clips) - skipped - len(tasks),
        "failed_now": int(new_failed),
        "ok": int(table["clip_id"].nunique()) if len(table) else 0,
        "failed": int(len(failed)),
        "short_clips": int(per_clip["short_clip"].sum()) if len(table) else 0,
        "long_clips": int(per_clip["long_clip"].sum()) if len(table) else 0,
        "missing_audio": int(per_clip["missing_audio"].sum()) if len(table) else 0,
        "vfr": int(per_clip["vfr"].sum()) if len(table) else 0,
        "padded_seconds": int((table["padded_video"] | table["padded_audio"]).sum())
        if len(table)
        else 0,
        "frames_per_segment": cfg.frames_per_segment,
        "segments": str(DataLayout(data_dir).segments_table),
        "failures": str(DataLayout(data_dir).segments_failed),
    }


def format_summary(s: dict[str, Any]) -> str:
    lines = [
        f"segments: {s['clips']} ok clips ({s['source']})",
        f"  processed now: {s['processed']} (failed {s['failed_now']})   already done: {s['skipped']}"
        + (f"   still pending: {s['remaining']}" if s["remaining"] else ""),
        f"  segmented: {s['ok']}   failed: {s['failed']}   frames per segment: {s['frames_per_segment']}",
        f"  flags: short {s['short_clips']}, long {s['long_clips']}, no audio {s['missing_audio']}, "
        f"VFR {s['vfr']}; padded seconds {s['padded_seconds']}",
        f"  -> {s['segments']}",
    ]
    if s["failed"]:
        lines.append(f"  failures (clip_id, reason) -> {s['failures']}")
    return "\n".join(lines)
