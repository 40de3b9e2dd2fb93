"""VGGish log-mel frontend in NumPy, numerically matching the AudioSet reference (AVE reference 2.2).

Framing:

- ``"ave"`` (the AVE release): the 16 kHz audio is cut into exact 1 s chunks of 16,000 samples and
  the first 96 of each chunk's 98 log-mel frames form one patch, so patch ``l`` is second ``l``.
  Those 96 frames only read the chunk's first 15,600 samples (0.975 s), so a trailing partial
  second yields a patch when at least 15,600 samples of it exist (identical to the complete-second
  patch) and no patch otherwise: 0.5 s of audio gives 0 patches. Nothing is padded; a caller that
  wants a fixed count (10 per clip) pads or flags the missing seconds itself. (The release code
  would have crashed on such a second; it never met one.)
- ``"standard"``: upstream VGGish, 96-frame patches with a 96-frame (0.96 s) hop over the whole
  clip; audio shorter than 0.975 s yields no patch.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000
STFT_WINDOW_SAMPLES = 400  # 0.025 s
STFT_HOP_SAMPLES = 160  # 0.010 s
FFT_LENGTH = 512
NUM_SPECTROGRAM_BINS = FFT_LENGTH // 2 + 1  # 257
NUM_MEL_BINS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
MEL_BREAK_FREQUENCY_HZ = 700.0
MEL_HIGH_FREQUENCY_Q = 1127.0
LOG_OFFSET = 0.01
NUM_FRAMES = 96  # frames per patch
NUM_BANDS = NUM_MEL_BINS
PATCH_HOP_FRAMES = 96  # standard framing hop (0.96 s)
AVE_CHUNK_SAMPLES = SAMPLE_RATE  # AVE framing: one patch per exact second
#: Fewest samples that give one patch (96 frames): 400 + 95 * 160.
MIN_PATCH_SAMPLES = STFT_WINDOW_SAMPLES + (NUM_FRAMES - 1) * STFT_HOP_SAMPLES  # 15,600
FRAMINGS = ("ave", "standard")


def frontend_description(framing: str = "ave") -> dict:
    """The preprocessing record written next to features computed with this frontend (how the
    waveform reached 16 kHz is the segments stage's audio recipe, recorded per clip)."""
    _check_framing(framing)
    return {
        "sample_rate": SAMPLE_RATE,
        "mono": "mean of channels",
        "int16_scale": 1 / 32768,
        "stft_window_samples": STFT_WINDOW_SAMPLES,
        "stft_hop_samples": STFT_HOP_SAMPLES,
        "fft_length": FFT_LENGTH,
        "window": "periodic hann",
        "spectrogram": "magnitude",
        "mel_bins": NUM_MEL_BINS,
        "mel_range_hz": [MEL_MIN_HZ, MEL_MAX_HZ],
        "mel_scale": "htk",
        "log_offset": LOG_OFFSET,
        "patch_frames": NUM_FRAMES,
        "framing": framing,
    }


def periodic_hann(length: int = STFT_WINDOW_SAMPLES) -> np.ndarray:
    """Periodic Hann window 0.5 - 0.5 cos(2 pi n / length)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi / length * np.arange(length))


def hertz_to_mel(frequencies_hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: 1127 ln(1 + f / 700)."""
    return MEL_HIGH_FREQUENCY_Q * np.log(1.0 + np.asarray(frequencies_hz) / MEL_BREAK_FREQUENCY_HZ)


def mel_matrix(
    num_mel_bins: int = NUM_MEL_BINS,
    num_spectrogram_bins: int = NUM_SPECTROGRAM_BINS,
    sample_rate: int = SAMPLE_RATE,
    lower_hz: float = MEL_MIN_HZ,
    upper_hz: float = MEL_MAX_HZ,
) -> np.ndarray:
    """(num_spectrogram_bins, num_mel_bins) triangular weights, linear in mel, peak 1, DC row 0."""
    bins_mel = hertz_to_mel(np.linspace(0.0, sample_rate / 2.0, num_spectrogram_bins))
    edges = np.linspace(hertz_to_mel(lower_hz), hertz_to_mel(upper_hz), num_mel_bins + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel[:, None] - lower) / (center - lower)
    falling = (upper - bins_mel[:, None]) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    return weights


def _frame(data: np.ndarray, window: int, hop: int) -> np.ndarray:
    """(n, window, ...) frames of ``window`` rows every ``hop`` rows, no padding (n may be 0)."""
    n = 0 if data.shape[0] < window else 1 + (data.shape[0] - window) // hop
    if n == 0:
        return np.zeros((0, window) + data.shape[1:], dtype=data.dtype)
    view = np.lib.stride_tricks.sliding_window_view(data, window, axis=0)[: (n - 1) * hop + 1 : hop]
    return np.moveaxis(view, -1, 1)  # window axis next to the frame axis


def log_mel_spectrogram(waveform16k: np.ndarray) -> np.ndarray:
    """(frames, 64) float32 log-mel of a mono 16 kHz waveform; 1 + (N - 400) // 160 frames."""
    data = np.asarray(waveform16k, dtype=np.float64)
    if data.ndim != 1:
        raise ValueError(f"log_mel_spectrogram expects a mono 1-D waveform, got shape {data.shape}")
    frames = _frame(data, STFT_WINDOW_SAMPLES, STFT_HOP_SAMPLES)
    magnitude = np.abs(np.fft.rfft(frames * periodic_hann(), FFT_LENGTH))
    mel = magnitude @ _MEL_MATRIX
    return np.log(mel + LOG_OFFSET).astype(np.float32)


def to_mono_float(waveform: np.ndarray) -> np.ndarray:
    """Mono float64 in [-1, 1] from float or int16/int32 PCM, shape (samples,) or (samples, ch)."""
    data = np.asarray(waveform)
    if data.dtype == np.int16:
        data = data.astype(np.float64) / 32768.0
    elif data.dtype == np.int32:
        data = data.astype(np.float64) / 2147483648.0
    elif np.issubdtype(data.dtype, np.floating):
        data = data.astype(np.float64)
    else:
        raise TypeError(f"unsupported sample type {data.dtype}: pass float in [-1, 1] or int16 PCM")
    if data.ndim == 2:
        if data.shape[1] > data.shape[0]:
            raise ValueError(
                f"waveform of shape {data.shape} looks like (channels, samples); "
                "pass it as (samples, channels), e.g. waveform.T"
            )
        data = data.mean(axis=1)
    elif data.ndim != 1:
        raise ValueError(f"waveform must be (samples,) or (samples, channels), got {data.shape}")
    return data


def resample_to_16k(data: np.ndarray, sample_rate: int) -> np.ndarray:
    """Resample a mono float waveform to 16 kHz with soxr (high quality); no-op at 16 kHz."""
    if sample_rate <= 0:
        raise ValueError(f"sample rate must be positive, got {sample_rate}")
    if sample_rate == SAMPLE_RATE or data.size == 0:
        return data
    import soxr

    return soxr.resample(data, sample_rate, SAMPLE_RATE, quality="HQ")


def log_mel_patches(waveform: np.ndarray, sample_rate: int, framing: str = "ave") -> np.ndarray:
    """(n, 96, 64) float32 log-mel patches of a waveform (see the module docstring for framing)."""
    _check_framing(framing)
    data = resample_to_16k(to_mono_float(waveform), int(sample_rate))
    if framing == "standard":
        return _frame(log_mel_spectrogram(data), NUM_FRAMES, PATCH_HOP_FRAMES).astype(np.float32)
    n = num_ave_patches(data.shape[0])
    out = np.empty((n, NUM_FRAMES, NUM_BANDS), dtype=np.float32)
    for second in range(n):
        start = second * AVE_CHUNK_SAMPLES
        chunk = data[start : start + MIN_PATCH_SAMPLES]  # the samples the first 96 frames read
        out[second] = log_mel_spectrogram(chunk)
    return out


def num_ave_patches(num_samples_16k: int) -> int:
    """Patches the AVE framing yields: seconds with at least 15,600 samples (0.975 s) of audio."""
    if num_samples_16k < MIN_PATCH_SAMPLES:
        return 0
    return 1 + (num_samples_16k - MIN_PATCH_SAMPLES) // AVE_CHUNK_SAMPLES


def _check_framing(framing: str) -> None:
    if framing not in FRAMINGS:
        raise ValueError(f"framing must be one of {FRAMINGS}, got {framing!r}")


_MEL_MATRIX = mel_matrix()
