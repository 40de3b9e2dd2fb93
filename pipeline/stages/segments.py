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
- Audio (``pipeline/stages/segment_audio.py``): one 96x64 log-mel patch per second of the first
  10 s by the VGGish frontend (AVE framing), from 16 kHz audio made by the ``--audio-recipe``:
  ``release`` (default; the AVE release: int16 PCM at the native rate, each second alone averaged
  to mono and resampled with resampy) or ``soxr`` (float32 PCM, mono, the whole clip resampled
  with soxr). Second l is audio samples [16000 l, 16000 (l + 1)) at 16 kHz. Audio shorter than
  10 s is zero-padded; a second whose patch reads padding (fewer than 15,600 real samples at
  16 kHz) is flagged ``padded_audio``; missing audio is silence, flagged ``missing_audio``.
- A clip that cannot be probed or decoded is recorded as failed with the reason and skipped. A full
  disk is not the clip's fault: the run stops (one line naming the folder and its free space) and
  records nothing for the clip, so a plain re-run after freeing space finishes the work.

Clips are keyed by the manifest's ``clip_id`` (= YouTube ID for AVE): the file names below, the
``clip_id`` column of both tables and the receipts' ``clip_id``. Tables and receipts of an earlier
version call that key ``youtube_id``; they read as today's (a receipt's key never decides whether
the clip is done, so their clips are not segmented again).

Outputs: ``DATA_DIR/segments/<clip_id>.patches.npy`` (10, 96, 64) float32 and a per-clip receipt
``<clip_id>.json`` (written last; a current receipt means the clip is done: same clip file size
and mtime, same frames per segment, same audio recipe), then ``DATA_DIR/segments.parquet`` (one
row per clip and second) and ``DATA_DIR/segments_failed.parquet`` (clip_id, reason), rebuilt from
the receipts every run. Receipts and table name each clip's ``audio_recipe`` (a receipt without
one was made by the ``soxr`` recipe), ``clip_sha256`` (the clip file) and ``patches_sha256`` (the
stored patches' float32 C-order bytes). A clip whose receipt names another recipe than the one
asked is done again: its audio only when its frame plan is current (the video is not decoded
again), else the whole clip. A current receipt without the hashes gets them (files hashed, nothing
decoded).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.fetch import sha256_file
from pipeline.core.io import (
    DiskFullError,
    atomic_path,
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
    first_stream,
    frame_timestamps,
    probe,
    require_ffmpeg,
)
from pipeline.core.text import shell_word
from pipeline.stages.download.ledger import read_ledger
from pipeline.stages.segment_audio import (
    DEFAULT_AUDIO_RECIPE,
    UNRECORDED_AUDIO_RECIPE,
    ClipAudio,
    check_recipe,
    clip_audio,
    prepare_recipe,
)

SEGMENTS_VERSION = 1
SAMPLE_RATE = 16000
#: Fewest real samples a second needs for its AVE patch (96 frames read 400 + 95 * 160 samples).
PATCH_SAMPLES = 15600
#: A clip whose decoded video is within this many seconds of 10 s gets the release frame rule.
DURATION_TOLERANCE = 0.25
#: Frame durations spreading more than this fraction of the median mark a variable-frame-rate clip.
VFR_SPREAD = 0.1


@dataclass
class SegmentsConfig:
    data_dir: Path = Path("data")
    frames_per_segment: int = 16
    audio_recipe: str = DEFAULT_AUDIO_RECIPE  # release | soxr (pipeline/stages/segment_audio.py)
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


def patches_sha256(patches: np.ndarray) -> str:
    """sha256 hex of a patches array's float32 C-order bytes (the receipts' ``patches_sha256``)."""
    return hashlib.sha256(np.ascontiguousarray(patches, dtype=np.float32).tobytes()).hexdigest()


def _read_receipt(path: Path) -> dict | None:
    """The receipt at ``path`` in today's terms (key ``clip_id``); None when absent or unreadable."""
    try:
        receipt = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(receipt, dict) and LEGACY_CLIP_KEY in receipt:
        receipt.setdefault("clip_id", receipt.pop(LEGACY_CLIP_KEY))
    return receipt


def receipt_recipe(receipt: dict) -> str:
    """The audio recipe a receipt's patches were made with (``soxr`` before it was recorded)."""
    return str(receipt.get("audio_recipe", UNRECORDED_AUDIO_RECIPE))


def _missing_hashes(receipt: dict) -> bool:
    needed = ("clip_sha256", "patches_sha256") if receipt["status"] == "ok" else ("clip_sha256",)
    return any(not receipt.get(key) for key in needed)


def clip_work(
    data_dir: Path, clip_id: str, clip: Path, frames_per_segment: int, audio_recipe: str
) -> tuple[str, str | None]:
    """What a clip needs and the audio recipe its receipt names: ``done``; ``hashes`` (done, its
    receipt lacks the hashes); ``audio`` (frame plan current, another audio recipe); ``segment``
    (no current receipt, or another recipe on a failed one)."""
    receipt = _read_receipt(DataLayout(data_dir).segment_receipt(clip_id))
    if (
        not receipt
        or receipt.get("version") != SEGMENTS_VERSION
        or receipt.get("frames_per_segment") != frames_per_segment
        or not clip.is_file()
        or receipt.get("clip") != _clip_stamp(clip)
    ):
        return "segment", None
    ok = receipt.get("status") == "ok"
    if ok and not patches_path(data_dir, clip_id).is_file():
        return "segment", None
    recipe = receipt_recipe(receipt)
    if recipe != audio_recipe:
        return ("audio" if ok else "segment"), recipe
    return ("hashes" if _missing_hashes(receipt) else "done"), recipe


def add_hashes(data_dir: Path, clip_id: str, clip: Path) -> bool:
    """Give a current receipt its recipe and hashes in place: the files are hashed, not decoded.
    False when a file cannot be read (the clip is then segmented again)."""
    path = DataLayout(data_dir).segment_receipt(clip_id)
    receipt = _read_receipt(path)
    try:
        if receipt is None:
            return False
        receipt["audio_recipe"] = receipt_recipe(receipt)
        receipt["clip_sha256"] = sha256_file(clip)
        if receipt["status"] == "ok":
            receipt["patches_sha256"] = patches_sha256(load_patches(data_dir, clip_id))
    except (OSError, ValueError):
        return False
    write_json(receipt, path)
    return True


def receipt_head(
    clip_id: str, clip: Path, frames_per_segment: int, audio_recipe: str
) -> dict[str, Any]:
    """What a receipt says before the clip is decoded: version, clip, its file's stamp, settings."""
    return {
        "version": SEGMENTS_VERSION,
        "clip_id": clip_id,
        "clip": _clip_stamp(clip),
        "frames_per_segment": frames_per_segment,
        "audio_recipe": audio_recipe,
    }


def segment_clip(
    clip_id: str,
    clip: Path,
    data_dir: Path,
    frames_per_segment: int,
    audio_recipe: str = DEFAULT_AUDIO_RECIPE,
    audio_only: bool = False,
) -> dict:
    """Plan and patch one clip, write its patches then its receipt; return the receipt. With
    ``audio_only`` the frame plan of the clip's current receipt is kept and only the audio redone."""
    layout = DataLayout(data_dir)
    kept = _read_receipt(layout.segment_receipt(clip_id)) if audio_only else None
    kept = kept if kept and kept.get("status") == "ok" else None
    receipt = receipt_head(clip_id, clip, frames_per_segment, audio_recipe)
    try:
        receipt["clip_sha256"] = sha256_file(clip)
        info = probe(clip)
        plan = _plan_part(kept) if kept else _video(clip, info, frames_per_segment)
        audio_stream = first_stream(info, "audio")
        audio = clip_audio(clip, audio_stream, audio_recipe)
        write_npy(audio.patches, patches_path(data_dir, clip_id))
        receipt.update(merge_parts(plan, audio_part(audio, audio_stream)))
        receipt["patches_sha256"] = patches_sha256(audio.patches)
        receipt["status"], receipt["reason"] = "ok", ""
    except DiskFullError:
        raise
    except Exception as exc:  # anything about this clip: record it, keep going with the rest
        if is_disk_full(exc):  # the machine's problem, not the clip's: never a sticky failure
            raise disk_full_error(layout.segments) from exc
        known = isinstance(exc, MediaError | OSError | ValueError)
        receipt.update(
            status="failed", reason=str(exc) if known else f"{type(exc).__name__}: {exc}"
        )
    write_json(receipt, layout.segment_receipt(clip_id))
    return receipt


#: The receipt's audio facts: of the clip (``clip_info``) and of each second (``seconds``).
AUDIO_CLIP_KEYS = ("sample_rate", "channels", "audio_duration", "audio_codec")
AUDIO_SECOND_KEYS = (
    "audio_start",
    "audio_end",
    "audio_real_samples",
    "missing_audio",
    "padded_audio",
)


def _plan_part(receipt: dict) -> dict[str, Any]:
    """The video part (frame plan and video facts) of a receipt."""
    return {
        "clip_info": {k: v for k, v in receipt["clip_info"].items() if k not in AUDIO_CLIP_KEYS},
        "seconds": [
            {k: v for k, v in sec.items() if k not in AUDIO_SECOND_KEYS}
            for sec in receipt["seconds"]
        ],
    }


def merge_parts(plan: dict[str, Any], audio: dict[str, Any]) -> dict[str, Any]:
    """One receipt's ``clip_info`` and ``seconds`` from its video and audio parts."""
    return {
        "clip_info": {**plan["clip_info"], **audio["clip_info"]},
        "seconds": [{**v, **a} for v, a in zip(plan["seconds"], audio["seconds"], strict=True)],
    }


def _video(clip: Path, info: dict, frames_per_segment: int) -> dict[str, Any]:
    """The video part of a receipt: the frame plan of every second and the video's facts."""
    video = first_stream(info, "video")
    if video is None:
        raise MediaError("no video stream")
    times, decode_errors = frame_timestamps(clip, int(video["index"]))
    if len(times) == 0:
        raise MediaError(
            f"no video frame could be decoded{': ' + decode_errors if decode_errors else ''}"
        )
    return video_part(times, video, decode_errors, frames_per_segment)


def video_part(
    times: np.ndarray, video: dict, decode_errors: str, frames_per_segment: int
) -> dict[str, Any]:
    """The video part of a receipt from the decoded frames' ``times`` and the ffprobe stream."""
    plan = plan_frames(times, frames_per_segment, _rate(video.get("avg_frame_rate")))
    clip_info = {
        "num_frames": int(len(times)),
        "fps": plan["fps"],
        "video_duration": plan["video_duration"],
        "width": int(video.get("width") or 0),
        "height": int(video.get("height") or 0),
        "video_codec": str(video.get("codec_name", "")),
        "frame_rule": plan["rule"],
        "decode_errors": decode_errors[-500:],
    }
    seconds = [
        {
            "second": second,
            "frame_indices": plan["indices"][second].tolist(),
            "timestamps": [round(float(t), 6) for t in plan["timestamps"][second]],
            "real_frames": int(plan["real_frames"][second]),
            "short_clip": bool(plan["short_clip"]),
            "long_clip": bool(plan["long_clip"]),
            "vfr": bool(plan["vfr"]),
            "padded_video": bool(plan["real_frames"][second] < frames_per_segment),
            "decode_errors": bool(decode_errors),
        }
        for second in range(CLIP_SECONDS)
    ]
    return {"clip_info": clip_info, "seconds": seconds}


def audio_part(audio: ClipAudio, stream: dict | None) -> dict[str, Any]:
    """The audio part of a receipt: the stream's facts and each second's span and flags."""
    clip_info = {**audio.info, "audio_codec": str(stream.get("codec_name", "")) if stream else ""}
    missing = stream is None or not audio.info["audio_duration"]
    seconds = [
        {
            "audio_start": second * SAMPLE_RATE,
            "audio_end": (second + 1) * SAMPLE_RATE,
            "audio_real_samples": int(audio.real_samples[second]),
            "missing_audio": bool(missing),
            "padded_audio": bool(audio.real_samples[second] < PATCH_SAMPLES),
        }
        for second in range(CLIP_SECONDS)
    ]
    return {"clip_info": clip_info, "seconds": seconds}


def _rate(text: object) -> float | None:
    try:
        num, den = str(text).split("/")
        return float(num) / float(den) if float(den) else None
    except (ValueError, ZeroDivisionError):
        return None


def _segment_task(args: tuple[str, str, str, int, str, bool]) -> dict:
    clip_id, clip, data_dir, frames_per_segment, audio_recipe, audio_only = args
    return segment_clip(
        clip_id, Path(clip), Path(data_dir), frames_per_segment, audio_recipe, audio_only
    )


# ----------------------------------------------------------------------------- tables


#: Clips whose table rows are made at a time: what building the table holds in Python objects.
TABLE_BATCH = 10_000
#: Counts of the summary that the segments table gives (a sum over the batches).
TABLE_COUNTS = ("ok", "short_clips", "long_clips", "missing_audio", "vfr", "padded_seconds")


def build_tables(
    data_dir: Path, clips: list[tuple[str, Path]], batch: int = TABLE_BATCH
) -> tuple[dict[str, int], pd.DataFrame]:
    """Write the segments table (one row per clip and second) from the receipts of ``clips``;
    returns its counts and the failures. Rows are made ``batch`` clips at a time, each batch a
    Parquet part in a folder beside the table, then copied part by part into one file of the
    parts' common schema: the memory it takes does not grow with the clips."""
    table = DataLayout(data_dir).segments_table
    for stale in table.parent.glob(f".{table.name}.parts-*"):  # a run killed while building
        shutil.rmtree(stale, ignore_errors=True)
    counts: Counter = Counter()
    rows: list[dict[str, Any]] = []
    failed: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix=f".{table.name}.parts-", dir=table.parent) as tmp:
        parts: list[Path] = []

        def flush() -> None:
            frame = pd.DataFrame(rows, columns=SEGMENT_COLUMNS)
            counts.update(_table_counts(frame))
            parts.append(Path(tmp) / f"{len(parts):06d}.parquet")
            write_parquet(frame, parts[-1])
            rows.clear()

        for n, (clip_id, _) in enumerate(clips, 1):
            receipt = _read_receipt(DataLayout(data_dir).segment_receipt(clip_id))
            if receipt is not None and receipt["status"] != "ok":
                failed.append((clip_id, receipt["reason"]))
            elif receipt is not None:
                rows.extend(_table_rows(clip_id, receipt))
            if n % batch == 0 and rows:
                flush()
        if rows or not parts:
            flush()
        schema = pa.unify_schemas([pq.read_schema(p) for p in parts], promote_options="permissive")
        with atomic_path(table, suffix=".parquet") as out, pq.ParquetWriter(out, schema) as w:
            for part in parts:
                w.write_table(pq.read_table(part).cast(schema))
    out_counts = {k: int(counts[k]) for k in TABLE_COUNTS}
    return out_counts, pd.DataFrame(failed, columns=["clip_id", "reason"])


def _table_rows(clip_id: str, receipt: dict) -> list[dict[str, Any]]:
    """The table's rows of one ok clip's receipt (one a second)."""
    stamp = receipt.get("clip") or {}
    return [
        {
            "clip_id": clip_id,
            **sec,
            **receipt["clip_info"],
            "clip_bytes": stamp.get("bytes"),
            "clip_mtime_ns": stamp.get("mtime_ns"),
            "audio_recipe": receipt_recipe(receipt),
            "patches_sha256": receipt.get("patches_sha256"),
            "clip_sha256": receipt.get("clip_sha256"),
        }
        for sec in receipt["seconds"]
    ]


def _table_counts(table: pd.DataFrame) -> Counter:
    """The summary's counts of some whole clips' rows of the table."""
    if not len(table):
        return Counter()
    per_clip = table.groupby("clip_id", sort=False).first()
    return Counter(
        ok=int(table["clip_id"].nunique()),
        short_clips=int(per_clip["short_clip"].sum()),
        long_clips=int(per_clip["long_clip"].sum()),
        missing_audio=int(per_clip["missing_audio"].sum()),
        vfr=int(per_clip["vfr"].sum()),
        padded_seconds=int((table["padded_video"] | table["padded_audio"]).sum()),
    )


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
    "audio_recipe",  # how the clip's patches were made (release | soxr)
    "patches_sha256",  # the stored patches (float32 C-order bytes)
    "clip_sha256",  # the clip file
]


def load_segments(data_dir: str | Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """``DATA_DIR/segments.parquet`` (only those of ``columns`` it has, when given: at AudioSet's
    size the whole table is gigabytes in pandas), with a clear error when the stage has not run."""
    return _read_table(DataLayout(data_dir).segments_table, data_dir, columns)


def load_segment_failures(data_dir: str | Path) -> pd.DataFrame:
    """``DATA_DIR/segments_failed.parquet`` (clip_id, reason)."""
    return _read_table(DataLayout(data_dir).segments_failed, data_dir)


def _read_table(
    path: Path, data_dir: str | Path, columns: Sequence[str] | None = None
) -> pd.DataFrame:
    """One of the stage's tables, keyed ``clip_id`` whatever version wrote it."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: run `make segments DATA_DIR={shell_word(data_dir)}` first"
        )
    remedy = (
        f"rebuild it with `make segments DATA_DIR={shell_word(data_dir)}` (finished clips are kept)"
    )
    if columns is not None:
        columns = list(dict.fromkeys(["clip_id", LEGACY_CLIP_KEY, *columns]))
    return keyed_by_clip_id(read_parquet(path, remedy, columns))


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
    check_recipe(cfg.audio_recipe)
    require_ffmpeg()

    clips, problems, source = list_clips(data_dir)
    work = {
        y: ("segment", None)
        if cfg.force
        else clip_work(data_dir, y, p, cfg.frames_per_segment, cfg.audio_recipe)
        for y, p in clips
    }
    hashed = 0
    for clip_id, clip in clips:
        if work[clip_id][0] == "hashes":
            if add_hashes(data_dir, clip_id, clip):
                hashed += 1
            else:
                work[clip_id] = ("segment", None)
    pending = [(y, p) for y, p in clips if work[y][0] in ("segment", "audio")]
    skipped = len(clips) - len(pending)
    if cfg.limit is not None:
        pending = pending[: max(0, cfg.limit)]
    if pending:
        prepare_recipe(cfg.audio_recipe)  # once, before forking workers
    tasks = [
        (y, str(p), str(data_dir), cfg.frames_per_segment, cfg.audio_recipe, work[y][0] == "audio")
        for y, p in pending
    ]
    recipe_changes = Counter(work[y][1] for y, _ in pending if work[y][1] is not None)
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
    counts, failed = build_tables(data_dir, clips)
    failed = pd.concat(
        [failed, pd.DataFrame(problems, columns=["clip_id", "reason"])], ignore_index=True
    )
    write_parquet(failed, DataLayout(data_dir).segments_failed)
    return {
        "source": source,
        "clips": len(clips),
        "processed": len(tasks),
        "skipped": skipped,
        "remaining": len(clips) - skipped - len(tasks),
        "failed_now": int(new_failed),
        "audio_only": sum(t[-1] for t in tasks),
        "recipe_changes": {old: n for old, n in recipe_changes.items()},
        "hashed": hashed,
        "ok": counts["ok"],
        "failed": int(len(failed)),
        **{k: counts[k] for k in TABLE_COUNTS if k != "ok"},
        "frames_per_segment": cfg.frames_per_segment,
        "audio_recipe": cfg.audio_recipe,
        "segments": str(DataLayout(data_dir).segments_table),
        "failures": str(DataLayout(data_dir).segments_failed),
    }


def format_summary(s: dict[str, Any]) -> str:
    lines = [
        f"segments: {s['clips']} ok clips ({s['source']})",
        f"  processed now: {s['processed']} (failed {s['failed_now']})   already done: {s['skipped']}"
        + (f"   still pending: {s['remaining']}" if s["remaining"] else ""),
    ]
    for old, n in s.get("recipe_changes", {}).items():
        lines.append(f"  {n} clips re-segmented: audio recipe {old} -> {s['audio_recipe']}")
    if s.get("audio_only"):
        lines.append(f"  of those processed, {s['audio_only']} audio only (frame plan kept)")
    if s.get("hashed"):
        lines.append(f"  {s['hashed']} receipts given their sha256 hashes (nothing decoded)")
    lines += [
        f"  segmented: {s['ok']}   failed: {s['failed']}   frames per segment: "
        f"{s['frames_per_segment']}   audio recipe: {s['audio_recipe']}",
        f"  flags: short {s['short_clips']}, long {s['long_clips']}, no audio {s['missing_audio']}, "
        f"VFR {s['vfr']}; padded seconds {s['padded_seconds']}",
        f"  -> {s['segments']}",
    ]
    if s["failed"]:
        lines.append(f"  failures (clip_id, reason) -> {s['failures']}")
    return "\n".join(lines)
