"""Real media fixtures made with ffmpeg's lavfi sources (testsrc video, sine audio).

Shared by every test that needs a clip: ``make_clip`` writes an H.264/AAC mp4 (or any container
ffmpeg infers from the suffix) and ``probe`` reads back what ffprobe sees.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path


def make_clip(
    path: str | Path,
    duration: float = 10.0,
    fps: int = 10,
    size: tuple[int, int] = (64, 48),
    audio: bool = True,
    sample_rate: int = 16000,
    channels: int = 1,
    faststart: bool = True,
    video: bool = True,
    frequency: float = 440.0,
    gop: int | None = None,
    audio_expr: str | None = None,
) -> Path:
    """Write a clip of ``duration`` seconds: testsrc video (``size``, ``fps``) and a sine tone.

    ``audio_expr`` replaces the tone by lavfi ``aevalsrc`` expressions of t, one per channel
    separated by '|' (e.g. ``sin(2*PI*440*t)|0.3*(2*random(0)-1)`` for a tone and noise).

    ``gop`` sets the keyframe interval in frames (default: 4 s worth, so exact cuts need
    re-encoding); ``faststart`` moves the moov atom to the front (``-movflags +faststart``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not (video or audio):
        raise ValueError("a clip needs a video or an audio stream")
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    if video:
        w, h = size
        cmd += ["-f", "lavfi", "-i", f"testsrc=size={w}x{h}:rate={fps}:duration={duration}"]
    if audio:
        layout = {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")
        source = (
            f"aevalsrc='{audio_expr}':s={sample_rate}:d={duration}"
            if audio_expr
            else f"sine=frequency={frequency}:sample_rate={sample_rate}:duration={duration}"
        )
        cmd += ["-f", "lavfi", "-i", source]
    if video:
        cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
        cmd += ["-g", str(gop if gop is not None else 4 * fps)]
    if audio:
        cmd += ["-c:a", "aac", "-b:a", "32k", "-ac", str(channels), "-channel_layout", layout]
    if faststart and path.suffix in (".mp4", ".m4a", ".mov"):
        cmd += ["-movflags", "+faststart"]
    cmd += ["-t", str(duration), str(path)]
    subprocess.run(cmd, check=True)
    return path


def probe(path: str | Path) -> dict:
    """ffprobe's JSON (format + streams) for ``path``."""
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
            str(path),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def duration(path: str | Path) -> float:
    """Container duration in seconds."""
    return float(probe(path)["format"]["duration"])


def stream_types(path: str | Path) -> list[str]:
    """Codec types of the streams, e.g. ``['video', 'audio']``."""
    return [s["codec_type"] for s in probe(path)["streams"]]


def stretch_header(src: str | Path, dst: str | Path, factor: float) -> Path:
    """Copy an mp4 whose header claims ``factor`` times its real length (mvhd, tkhd, mdhd and edit
    list durations scaled; the media stays as it is): a container that lies about its length."""
    import struct

    data = bytearray(Path(src).read_bytes())

    def scale(offset: int) -> None:
        (value,) = struct.unpack(">I", data[offset : offset + 4])
        data[offset : offset + 4] = struct.pack(">I", round(value * factor))

    # version-0 boxes: the duration's offset after the box type
    for box, offset in ((b"mvhd", 20), (b"tkhd", 28), (b"mdhd", 20)):
        i = 0
        while (i := data.find(box, i)) >= 0:
            if data[i + 4] != 0:
                raise ValueError(f"{src}: version-1 {box.decode()} box not supported")
            scale(i + offset)
            i += 4
    i = 0
    while (i := data.find(b"elst", i)) >= 0:
        (entries,) = struct.unpack(">I", data[i + 8 : i + 12])
        for k in range(entries):
            scale(i + 12 + 12 * k)
        i += 4
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    Path(dst).write_bytes(bytes(data))
    return Path(dst)


def segmented_set(
    folder: Path, ids: list[str], fps: list[int], sizes: list[tuple[int, int]]
) -> Path:
    """A data folder with one clip per ID (``fps``/``sizes`` per clip), a manifest and the segments
    stage run on it (2 frames per second); the last clip is then overwritten with bytes that are
    no video, so a later stage meets a clip it cannot decode."""
    import pandas as pd

    from pipeline.stages.segments import SegmentsConfig, run_segments

    for clip_id, rate, size in zip(ids, fps, sizes, strict=True):
        make_clip(folder / "clips" / f"{clip_id}.mp4", duration=10, fps=rate, size=size)
    pd.DataFrame({"sample": range(len(ids)), "youtube_id": ids}).to_parquet(
        folder / "manifest.parquet"
    )
    run_segments(SegmentsConfig(folder, frames_per_segment=2, workers=1, progress=False))
    (folder / "clips" / f"{ids[-1]}.mp4").write_bytes(b"not a video any more")
    return folder


def counting_ffmpeg(folder: Path) -> tuple[Path, str]:
    """The real ffmpeg behind a wrapper in ``folder/bin`` that logs every command line to
    ``folder/ffmpeg.log`` (to count decoding passes): ``(log, PATH with the wrapper first)``."""
    real = shutil.which("ffmpeg")
    log = folder / "ffmpeg.log"
    wrapper = folder / "bin" / "ffmpeg"
    wrapper.parent.mkdir(parents=True)
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    return log, f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}"
