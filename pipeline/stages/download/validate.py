"""Check a clip with ffprobe before it counts: streams, header length, and the decoded length.

The container's duration field can lie (a header that says 10 s over 6 s of media); every frame of
every stream is decoded and the clip counts only when what decodes is as long as asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.core.media import MediaError, decoded_lengths, first_stream, probe

#: A clip is accepted when its duration is within this many seconds of the requested length.
DURATION_TOLERANCE = 0.1
#: Each stream (video, audio) must decode to at least the requested length minus this.
STREAM_TOLERANCE = 0.5


@dataclass(frozen=True)
class ClipCheck:
    """Result of ``check_clip``: ``problem`` is None for a valid clip, else what is wrong."""

    problem: str | None
    kind: str = "ok"  # ok / truncated / wrong_length / no_audio / no_video / undecodable
    duration: float | None = None  # the decoded length when it was measured, else the header's
    bytes: int = 0

    @property
    def ok(self) -> bool:
        return self.problem is None


def check_clip(
    path: str | Path, expected: float, tolerance: float = DURATION_TOLERANCE
) -> ClipCheck:
    """Validate ``path`` as a clip of ``expected`` seconds with a video and an audio stream.

    The header's duration must be within ``tolerance`` of ``expected``; then every frame is
    decoded: the longest stream must decode to within ``tolerance`` of ``expected`` and each of the
    video and audio streams to within ``STREAM_TOLERANCE``, without decoder errors.
    """
    path = Path(path)
    size = path.stat().st_size if path.is_file() else 0
    if size == 0:
        return ClipCheck("empty or missing file", "truncated", None, size)
    try:
        info = probe(path)
    except MediaError as exc:
        return ClipCheck(str(exc), "truncated", None, size)
    video, audio = first_stream(info, "video"), first_stream(info, "audio")
    try:
        header = float(info["format"]["duration"])
    except (KeyError, ValueError):
        return ClipCheck("no duration in the container", "truncated", None, size)
    if video is None:
        return ClipCheck("no video stream", "no_video", header, size)
    if audio is None:
        return ClipCheck("no audio stream", "no_audio", header, size)
    if abs(header - expected) > tolerance:
        kind = "truncated" if header < expected else "wrong_length"
        return ClipCheck(
            f"duration {header:.3f} s, expected {expected:.3f} s (+-{tolerance} s)",
            kind,
            header,
            size,
        )
    try:
        lengths, counts, errors = decoded_lengths(path)
    except MediaError as exc:
        return ClipCheck(str(exc), "undecodable", header, size)
    v, a = int(video["index"]), int(audio["index"])
    if not counts.get(v):
        return ClipCheck("no video frame decodes", "undecodable", header, size)
    dv, da = lengths.get(v, 0.0), lengths.get(a, 0.0)
    decoded = max(dv, da)
    if decoded < expected - tolerance or min(dv, da) < expected - STREAM_TOLERANCE:
        return ClipCheck(
            f"decodes to {dv:.3f} s of video and {da:.3f} s of audio, expected {expected:.3f} s "
            f"(the header says {header:.3f} s)",
            "truncated",
            decoded,
            size,
        )
    if errors:
        return ClipCheck(
            f"decoder errors: {errors.splitlines()[-1][:300]}", "undecodable", decoded, size
        )
    return ClipCheck(None, "ok", decoded, size)
