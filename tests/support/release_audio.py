"""The AVE release's audio recipe written again from its description, independently of the stage's
code, to check the patches the segments stage stores: ffmpeg writes the clip's audio as a 16-bit
WAV at its native rate and channels, read back by a small RIFF reader of its own; samples
/ 32768; second i = samples [i sr, (i + 1) sr), averaged over the channels and resampled alone to
16 kHz with resampy's default filter (none at 16 kHz); the first 96 log-mel frames of the second."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import numpy as np


def read_wav(clip: Path, folder: Path) -> tuple[np.ndarray, int]:
    """(samples, channels) int16 of the clip's audio, through a WAV file ffmpeg writes, and its
    sample rate."""
    path = folder / f"{clip.stem}.wav"
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(clip), "-vn"]
    subprocess.run([*cmd, "-acodec", "pcm_s16le", "-f", "wav", str(path)], check=True)
    return parse_wav(path.read_bytes())


def parse_wav(data: bytes) -> tuple[np.ndarray, int]:
    """(samples, channels) int16 and the sample rate of a 16-bit PCM WAV (plain or extensible, as
    ffmpeg writes more than two channels; the standard library's ``wave`` reads only the plain)."""
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    chunks, offset = {}, 12
    while offset + 8 <= len(data):
        (size,) = struct.unpack_from("<I", data, offset + 4)
        chunks[data[offset : offset + 4]] = data[offset + 8 : offset + 8 + size]
        offset += 8 + size + (size & 1)
    tag, channels, rate = struct.unpack_from("<HHI", chunks[b"fmt "])
    (bits,) = struct.unpack_from("<H", chunks[b"fmt "], 14)
    assert tag in (1, 0xFFFE) and bits == 16, (tag, bits)
    return np.frombuffer(chunks[b"data"], "<i2").reshape(-1, channels), rate


def release_patches(clip: Path, folder: Path, seconds: int = 10) -> np.ndarray:
    """(seconds, 96, 64) patches of the clip's first ``seconds`` full seconds."""
    import resampy

    from pipeline.backbones.vggish_frontend import log_mel_spectrogram

    pcm, rate = read_wav(clip, folder)
    data = pcm / 32768.0
    out = []
    for i in range(seconds):
        chunk = data[i * rate : (i + 1) * rate]
        assert len(chunk) == rate, f"{clip}: second {i} is not complete"
        mono = chunk.mean(axis=1)
        if rate != 16000:
            mono = resampy.resample(mono, rate, 16000)
        out.append(log_mel_spectrogram(mono)[:96])
    return np.stack(out)
