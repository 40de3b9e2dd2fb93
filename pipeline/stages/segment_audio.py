"""The segments stage's audio: a clip's first 10 s as ten 96x64 VGGish log-mel patches, one per
second, by one of two recipes (``AUDIO_RECIPES``).

- ``release`` (the default; the AVE release's ``vggish_input.wavfile_to_examples``): ffmpeg decodes
  the clip's first audio stream to int16 PCM at its native rate and channels, scaled by 1/32768;
  second ``l`` is samples [l sr, (l + 1) sr) at that rate; each second alone is averaged to mono
  and resampled to 16 kHz with resampy's default filter (kaiser_best); a native 16 kHz stream is
  not resampled. Each second then gives one patch (VGGish frontend, AVE framing).
- ``soxr`` (avel's first recipe): ffmpeg decodes to float32, the mean of the channels is resampled
  as a whole to 16 kHz with soxr (HQ) and cut per second (second ``l`` = samples
  [16000 l, 16000 (l + 1))).

Beyond the release, which only met clips of 10 s: audio past 10 s is ignored (as there), shorter
audio is zero-padded to 10 s (at the native rate for ``release``, which gives the release's
numbers for every second it could compute), and a clip without audio gets the patches of silence.
``real_samples`` counts each second's real samples in 16 kHz terms, so the caller can flag
seconds whose patch reads padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.backbones.vggish_frontend import SAMPLE_RATE, log_mel_patches
from pipeline.core.manifest import CLIP_SECONDS
from pipeline.core.media import MediaError, decode_audio

AUDIO_RECIPES = ("release", "soxr")
DEFAULT_AUDIO_RECIPE = "release"
#: The recipe of segments made before the recipe was recorded.
UNRECORDED_AUDIO_RECIPE = "soxr"
PATCH_SHAPE = (CLIP_SECONDS, 96, 64)


@dataclass
class ClipAudio:
    """A clip's patches, each second's real samples (16 kHz terms) and the stream's facts."""

    patches: np.ndarray  # (10, 96, 64) float32
    real_samples: np.ndarray  # (10,) int64, 0..16000
    info: dict[str, Any]  # sample_rate, channels, audio_duration (s)


def check_recipe(recipe: str) -> None:
    if recipe not in AUDIO_RECIPES:
        raise ValueError(
            f"--audio-recipe must be one of {', '.join(AUDIO_RECIPES)}, got {recipe!r}"
        )


def prepare_recipe(recipe: str) -> None:
    """Import (and compile) the recipe's resampler once, before worker processes are forked."""
    check_recipe(recipe)
    if recipe == "release":
        import resampy

        resampy.resample(np.zeros((1, 2 * SAMPLE_RATE)), 2 * SAMPLE_RATE, SAMPLE_RATE, axis=-1)


def clip_audio(path: Path, stream: dict | None, recipe: str) -> ClipAudio:
    """The patches of ``stream`` (ffprobe's description of the clip's first audio stream, or None
    when the clip has none) by ``recipe``."""
    check_recipe(recipe)
    if stream is None:
        silence = np.zeros((CLIP_SECONDS, SAMPLE_RATE))
        info = {"sample_rate": None, "channels": None, "audio_duration": 0.0}
        return ClipAudio(_patches(silence), np.zeros(CLIP_SECONDS, np.int64), info)
    rate, channels = _stream_format(stream)
    if recipe == "release":
        return _release(path, int(stream["index"]), rate, channels)
    return _soxr(path, int(stream["index"]), rate, channels)


def _stream_format(stream: dict) -> tuple[int, int]:
    rate = int(stream.get("sample_rate") or 0)
    channels = int(stream.get("channels") or 0)
    if rate <= 0 or channels <= 0:
        raise MediaError(
            f"audio stream without a sample rate or channel count ({rate} Hz, {channels} ch)"
        )
    return rate, channels


def _release(path: Path, index: int, rate: int, channels: int) -> ClipAudio:
    pcm = decode_audio(path, index, channels, sample_format="s16")
    kept = pcm[: CLIP_SECONDS * rate] / 32768.0  # scaled before the channels are averaged
    padded = np.zeros((CLIP_SECONDS * rate, channels))
    padded[: len(kept)] = kept
    seconds = padded.reshape(CLIP_SECONDS, rate, channels).mean(axis=2)
    if rate != SAMPLE_RATE:
        import resampy

        seconds = resampy.resample(seconds, rate, SAMPLE_RATE, axis=-1)  # each second alone
    native = np.clip(len(kept) - np.arange(CLIP_SECONDS) * rate, 0, rate)
    real = native * SAMPLE_RATE // rate
    return ClipAudio(_patches(seconds), real.astype(np.int64), _info(pcm, rate, channels))


def _soxr(path: Path, index: int, rate: int, channels: int) -> ClipAudio:
    pcm = decode_audio(path, index, channels)
    mono = pcm.astype(np.float64).mean(axis=1)
    if rate != SAMPLE_RATE and mono.size:
        import soxr

        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
    full = np.zeros(CLIP_SECONDS * SAMPLE_RATE)
    n = min(len(mono), full.size)
    full[:n] = mono[:n]
    real = np.clip(len(mono) - np.arange(CLIP_SECONDS) * SAMPLE_RATE, 0, SAMPLE_RATE)
    seconds = full.reshape(CLIP_SECONDS, SAMPLE_RATE)
    return ClipAudio(_patches(seconds), real.astype(np.int64), _info(pcm, rate, channels))


def _info(pcm: np.ndarray, rate: int, channels: int) -> dict[str, Any]:
    return {"sample_rate": rate, "channels": channels, "audio_duration": pcm.shape[0] / rate}


def _patches(seconds: np.ndarray) -> np.ndarray:
    """(10, 96, 64) float32: one patch per row of ``seconds`` (10 rows of 16 kHz audio)."""
    out = np.stack([log_mel_patches(second, SAMPLE_RATE, framing="ave")[0] for second in seconds])
    if out.shape != PATCH_SHAPE:
        raise RuntimeError(f"VGGish frontend returned {out.shape}, expected {PATCH_SHAPE}")
    return out.astype(np.float32)
