"""A clip's audio as the waveform backbones read it: mono float32 at their sample rate, one row per
second of the clip's first 10 s."""

from __future__ import annotations

import os
import subprocess

import numpy as np

from pipeline.core.manifest import CLIP_SECONDS

#: How the waveform is made, recorded in the identity of the stores computed from it.
WAVEFORM_RECIPE = (
    "ffmpeg first audio stream, downmixed to mono (-ac 1), resampled by swresample (-ar), "
    "float32; the first 10 s, zero-padded, one row per second"
)


def decode_waveform(path: str | os.PathLike | None, rate: int, timeout: float = 300) -> np.ndarray:
    """(10, rate) float32: second k of the clip's first audio stream, mono at ``rate`` Hz, zeros
    past the end of the audio. A clip without audio is a ``ValueError`` naming it."""
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0", "-vn"]
    cmd += ["-ac", "1", "-ar", str(int(rate)), "-t", str(CLIP_SECONDS), "-f", "f32le", "pipe:1"]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ValueError(f"{path}: decoding the audio took over {timeout:.0f} s") from exc
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        reason = lines[-1] if lines else f"ffmpeg exited {done.returncode}"
        raise ValueError(f"{path}: no audio to decode at {rate} Hz ({reason})")
    samples = np.frombuffer(done.stdout, dtype="<f4")
    if samples.size == 0:
        raise ValueError(f"{path}: the audio stream decoded to no samples")
    out = np.zeros(CLIP_SECONDS * int(rate), dtype=np.float32)
    n = min(out.size, samples.size)
    out[:n] = samples[:n]
    return out.reshape(CLIP_SECONDS, int(rate))
