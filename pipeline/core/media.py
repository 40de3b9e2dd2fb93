"""ffprobe/ffmpeg helpers for reading clips: stream info, decoded-frame timestamps, PCM audio."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np


class MediaError(RuntimeError):
    """A clip cannot be probed or decoded; the message says what ffmpeg/ffprobe reported."""


def require_ffmpeg() -> None:
    missing = [tool for tool in ("ffmpeg", "ffprobe") if shutil.which(tool) is None]
    if missing:
        raise FileNotFoundError(
            f"{' and '.join(missing)} not found on PATH; install ffmpeg (`make ffmpeg`, or "
            "`sudo apt-get install -y ffmpeg`)"
        )


def _last_line(text: str, fallback: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else fallback


def _run(cmd: list[str], timeout: float, what: str) -> subprocess.CompletedProcess:
    try:
        out = subprocess.run(cmd, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise MediaError(f"{what}: timed out after {timeout:.0f} s") from None
    if out.returncode != 0:
        err = _last_line(out.stderr.decode(errors="replace"), f"exit status {out.returncode}")
        raise MediaError(f"{what}: {err}")
    return out


def _target(path: str | Path) -> str:
    """A URL as it is, a file as an absolute path (a name starting with '-' is not an option)."""
    text = str(path)
    return text if "://" in text else str(Path(path).absolute())


def probe(path: str | Path, timeout: float = 60, headers: dict[str, str] | None = None) -> dict:
    """ffprobe's format and stream description of ``path`` (a file or an http(s) URL; ``headers``
    are sent with a URL)."""
    cmd = ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams"]
    if headers and "://" in str(path):
        cmd += ["-headers", "".join(f"{k}: {v}\r\n" for k, v in headers.items())]
    cmd.append(_target(path))
    out = _run(cmd, timeout, "ffprobe cannot read the file")
    return json.loads(out.stdout)


def first_stream(info: dict, kind: str) -> dict | None:
    """The first stream of ``kind`` ('video'/'audio') in ffprobe's output, ignoring cover art."""
    for stream in info.get("streams", []):
        if stream.get("codec_type") != kind:
            continue
        if kind == "video" and stream.get("disposition", {}).get("attached_pic"):
            continue
        return stream
    return None


def frame_timestamps(
    path: str | Path, stream_index: int, timeout: float = 300
) -> tuple[np.ndarray, str]:
    """Decode every frame of one video stream; return its presentation times (s) and decoder errors.

    The count is that of frames the decoder actually produced (never the container's frame count).
    A frame without a timestamp gets NaN. The second value is ffprobe's error output ('' if clean).
    """
    cmd = [
        "ffprobe",
        "-v",
        "error",
        "-select_streams",
        str(stream_index),
        "-show_entries",
        "frame=best_effort_timestamp_time",
        "-of",
        "json",
        str(Path(path).absolute()),
    ]
    out = _run(cmd, timeout, "decoding the video failed")
    frames = json.loads(out.stdout or b"{}").get("frames", [])
    times = np.array(
        [_float(f.get("best_effort_timestamp_time")) for f in frames], dtype=np.float64
    )
    return times, out.stderr.decode(errors="replace").strip()


def decoded_lengths(
    path: str | Path, timeout: float = 300
) -> tuple[dict[int, float], dict[int, int], str]:
    """Decode every frame of every stream; per stream index, the decoded length in seconds (end of
    the last frame minus the start of the first) and the number of frames, plus decoder errors.

    Unlike the container's duration field, this is what the file really holds: a header that
    claims 10 s over 6 s of media gives 6 here.
    """
    cmd = [
        "ffprobe",
        "-v",
        "error",
        "-show_entries",
        "frame=stream_index,best_effort_timestamp_time,pkt_duration_time,duration_time",
        "-of",
        "json",
        str(Path(path).absolute()),
    ]
    out = _run(cmd, timeout, "decoding the file failed")
    starts: dict[int, float] = {}
    ends: dict[int, float] = {}
    counts: dict[int, int] = {}
    for frame in json.loads(out.stdout or b"{}").get("frames", []):
        index = int(frame.get("stream_index", -1))
        t = _float(frame.get("best_effort_timestamp_time"))
        if not np.isfinite(t):
            continue
        step = _float(frame.get("duration_time", frame.get("pkt_duration_time")))
        end = t + (step if np.isfinite(step) else 0.0)
        starts[index] = min(starts.get(index, t), t)
        ends[index] = max(ends.get(index, end), end)
        counts[index] = counts.get(index, 0) + 1
    lengths = {i: ends[i] - starts[i] for i in starts}
    return lengths, counts, out.stderr.decode(errors="replace").strip()


#: PCM sample formats of :func:`decode_audio`: ffmpeg's format and codec, NumPy's dtype.
PCM_FORMATS = {"f32": ("f32le", "pcm_f32le", "<f4"), "s16": ("s16le", "pcm_s16le", "<i2")}


def decode_audio(
    path: str | Path,
    stream_index: int,
    channels: int,
    timeout: float = 300,
    sample_format: str = "f32",
) -> np.ndarray:
    """(samples, channels) PCM of one audio stream at its native rate and channel count: float32
    (``sample_format`` "f32") or int16 ("s16", what a 16-bit WAV of the stream holds)."""
    if sample_format not in PCM_FORMATS:
        raise ValueError(
            f"sample_format must be one of {sorted(PCM_FORMATS)}, got {sample_format!r}"
        )
    container, codec, dtype = PCM_FORMATS[sample_format]
    cmd = [
        "ffmpeg",
        "-nostdin",
        "-v",
        "error",
        "-i",
        str(Path(path).absolute()),
        "-map",
        f"0:{stream_index}",
        "-vn",
        "-f",
        container,
        "-acodec",
        codec,
        "pipe:1",
    ]
    out = _run(cmd, timeout, "decoding the audio failed")
    data = np.frombuffer(out.stdout, dtype=dtype)
    if channels < 1 or data.size % channels:
        raise MediaError(f"decoded {data.size} samples, not a multiple of {channels} channels")
    return data.reshape(-1, channels)


def _float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")
