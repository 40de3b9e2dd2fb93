"""VGGish audio features: one import for the frontend, the network and its weights.

The parts live in :mod:`~pipeline.backbones.vggish_frontend` (NumPy log-mel, reference parity),
:mod:`~pipeline.backbones.vggish_model` (PyTorch network, PCA postprocessor) and
:mod:`~pipeline.backbones.vggish_weights` (TF checkpoint conversion, cache, loading)::

    info = ensure_vggish_weights(cache_dir)            # converted official weights, or an error
    model = load_vggish(info.path).eval()
    patches = log_mel_patches(waveform, sample_rate)   # (n_seconds, 96, 64), AVE framing
    with torch.no_grad():
        emb = model(torch.from_numpy(patches), output="ave")  # (n_seconds, 128)
"""

from pipeline.backbones.vggish_frontend import (
    AVE_CHUNK_SAMPLES,
    FFT_LENGTH,
    FRAMINGS,
    LOG_OFFSET,
    MEL_MAX_HZ,
    MEL_MIN_HZ,
    MIN_PATCH_SAMPLES,
    NUM_BANDS,
    NUM_FRAMES,
    NUM_MEL_BINS,
    NUM_SPECTROGRAM_BINS,
    PATCH_HOP_FRAMES,
    SAMPLE_RATE,
    STFT_HOP_SAMPLES,
    STFT_WINDOW_SAMPLES,
    frontend_description,
    log_mel_patches,
    log_mel_spectrogram,
    mel_matrix,
    num_ave_patches,
)
from pipeline.backbones.vggish_model import (
    EMBEDDING_SIZE,
    LAYERS,
    NUM_PARAMETERS,
    OUTPUTS,
    POOL5_SHAPE,
    Postprocessor,
    VGGish,
)
from pipeline.backbones.vggish_weights import (
    VGGISH_CHECKPOINT_URL,
    VGGISH_PCA_PARAMS_URL,
    VGGishWeightsError,
    WeightsInfo,
    convert_tf_checkpoint,
    default_cache_dir,
    ensure_vggish_weights,
    load_vggish,
    random_vggish,
    read_tf_checkpoint,
)

__all__ = [
    "AVE_CHUNK_SAMPLES",
    "EMBEDDING_SIZE",
    "FFT_LENGTH",
    "FRAMINGS",
    "LAYERS",
    "LOG_OFFSET",
    "MEL_MAX_HZ",
    "MEL_MIN_HZ",
    "MIN_PATCH_SAMPLES",
    "NUM_BANDS",
    "NUM_FRAMES",
    "NUM_MEL_BINS",
    "NUM_PARAMETERS",
    "NUM_SPECTROGRAM_BINS",
    "OUTPUTS",
    "PATCH_HOP_FRAMES",
    "POOL5_SHAPE",
    "SAMPLE_RATE",
    "STFT_HOP_SAMPLES",
    "STFT_WINDOW_SAMPLES",
    "VGGISH_CHECKPOINT_URL",
    "VGGISH_PCA_PARAMS_URL",
    "VGGish",
    "VGGishWeightsError",
    "Postprocessor",
    "WeightsInfo",
    "convert_tf_checkpoint",
    "default_cache_dir",
    "ensure_vggish_weights",
    "frontend_description",
    "load_vggish",
    "log_mel_patches",
    "log_mel_spectrogram",
    "mel_matrix",
    "num_ave_patches",
    "random_vggish",
    "read_tf_checkpoint",
]
