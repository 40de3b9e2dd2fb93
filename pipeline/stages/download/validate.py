"""Check a clip with ffprobe/ffmpeg before it counts: length, streams, decodable ends."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.media import MediaError, probe

#: A clip is accepted when its duration is within this many seconds of the requested length.
DURATION_TOLERANCE = 0.1


@dataclass(frozen=True)
class ClipCheck:
    """Result of ``check_clip``: ``problem`` is None for a valid clip, else what is wrong."""

    problem: str | None
    kind: str = "ok"  # ok / truncated / wrong_length / no_audio / no_video / undecodable
    duration: float | None = None
    bytes: int = 0

    @property
    def ok(self) -> bool:
        return self.problem is None


def _decodes(path: Path, start: float, seconds: float, timeout: float = 60) -> str | None:
    """None when ``seconds`` of every stream from ``start`` decode without errors, else the error."""
    out = subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-ss",
            f"{max(start, 0):.3f}",
            "-t",
            f"{seconds:.3f}",
            "-i",
            str(path.absolute()),
            "-f",
            "null",
            "-",
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if out.returncode != 0 or out.stderr.strip():
        lines = out.stderr.strip().splitlines()
        return lines[-1] if lines else f"ffmpeg exited with {out.returncode}"
    return None


def check_clip(
    path: str | Path, expected: float, tolerance: float = DURATION_TOLERANCE
) -> ClipCheck:
    """Validate ``path`` as a clip of ``expected`` seconds with a video and an audio stream."""
    path = Path(path)
    size = path.stat().st_size if path.is_file() else 0
    if size == 0:
        return ClipCheck("empty or missing file", "truncated", None, size)
    try:
        info = probe(path)
    except MediaError as exc:
        return ClipCheck(str(exc), "truncated", None, size)
    kinds = [s.get("codec_type") for s in info.get("streams", [])]
    try:
        duration = float(info["format"]["duration"])
    except (KeyError, ValueError):
        return ClipCheck("no duration in the container", "truncated", None, size)
    if "video" not in kinds:
        return ClipCheck("no video stream", "no_video", duration, size)
    if "audio" not in kinds:
        return ClipCheck("no audio stream", "no_audio", duration, size)
    if abs(duration - expected) > tolerance:
        kind = "truncated" if duration < expected else "wrong_length"
        return ClipCheck(
            f"duration {duration:.3f} s, expected {expected:.3f} s (+-{tolerance} s)",
            kind,
            duration,
            size,
        )
    for start in (0.0, duration - 1.0):
        error = _decodes(path, start, 1.0)
        if error:
            return ClipCheck(
                f"second at {start:.1f} s does not decode: {error}", "undecodable", duration, size
            )
    return ClipCheck(None, "ok", duration, size)
