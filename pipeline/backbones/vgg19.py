"""VGG-19 up to pool5 (torchvision ``vgg19().features``) with its weights records.

A weights record carries where the weights come from (URL, file name, checksum) and the input
preprocessing that belongs to them, so a network is never paired with the wrong normalisation:

- ``torchvision``: ``VGG19_Weights.IMAGENET1K_V1`` (``vgg19-dcbb9e9d.pth``), RGB in [0, 1]
  normalised with the ImageNet mean/std.
- ``keras``: the Caffe-converted Keras file ``vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5``
  that the published AVE features used, converted into the same torch network; BGR, Caffe means
  subtracted, no scaling.
- ``random``: a smoke run only, refused unless ``allow_random`` is set.

No network access happens here: weight files are looked up in local caches or given as paths.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.fetch import sha256_file

TORCHVISION_FILE = "vgg19-dcbb9e9d.pth"
TORCHVISION_URL = f"https://download.pytorch.org/models/{TORCHVISION_FILE}"
KERAS_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
KERAS_URL = f"https://storage.googleapis.com/tensorflow/keras-applications/vgg19/{KERAS_FILE}"
KERAS_MD5 = "253f8cb515780f3b799900260a226db6"  # keras.applications.vgg19 file_hash
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

# (block, conv) -> index of the Conv2d in torchvision's vgg19().features (config "E").
CONV_INDEX = {
    (1, 1): 0,
    (1, 2): 2,
    (2, 1): 5,
    (2, 2): 7,
    (3, 1): 10,
    (3, 2): 12,
    (3, 3): 14,
    (3, 4): 16,
    (4, 1): 19,
    (4, 2): 21,
    (4, 3): 23,
    (4, 4): 25,
    (5, 1): 28,
    (5, 2): 30,
    (5, 3): 32,
    (5, 4): 34,
}


class WeightsError(RuntimeError):
    """Weights missing, corrupt, or not a VGG-19."""


def input_tensor(frames: Any) -> Any:
    """Frames (numpy or torch) as a tensor without a copy; read-only arrays (Ray's object store)
    are accepted without torch's warning, since preprocessing only reads them."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.as_tensor(frames)


def randomize_convolutions(model: Any, network: str, allow_random: bool, seed: int) -> Any:
    """``model`` in eval mode with seeded random convolution weights (He normal over the fan-out,
    as torchvision initialises VGG) and zero biases: for smoke runs only, so it refuses unless
    ``allow_random`` confirms that the features will mean nothing."""
    import torch

    if not allow_random:
        raise WeightsError(
            f"random {network} weights requested: pass --allow-random-weights "
            "(allow_random=True) to confirm that this is a smoke run whose features mean nothing"
        )
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d | torch.nn.Conv3d):
                fan_out = m.out_channels * int(np.prod(m.kernel_size))
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_out) ** 0.5)
                m.bias.zero_()
    return model.eval()


@dataclass(frozen=True)
class VGG19Weights:
    """Identity and preprocessing of one VGG-19 weight set.

    ``preprocess`` maps uint8 RGB frames (N, H, W, 3) to the float NCHW input of the network:
    ``x = (frames[..., channel_order] * scale - mean) / std`` (``mean``/``std`` in network channel order).
    """

    name: str
    url: str | None
    file_name: str | None
    sha256: str | None  # full hex digest, "random", or None when unknown
    sha256_prefix: str | None  # torchvision names its files after the sha256 prefix
    md5: str | None  # keras.utils.get_file checks an md5
    channel_order: str  # "RGB" or "BGR"
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str | None = None  # the local file the weights were read from

    @property
    def is_random(self) -> bool:
        return self.sha256 == "random"

    def preprocess(self, frames: Any) -> Any:
        """uint8 RGB frames NHWC (numpy or torch, any device) -> float32 tensor NCHW.

        The result is a channels-last view (no copy of the layout), which is what the network wants.
        """
        import torch

        x = input_tensor(frames)
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"expected frames (N, H, W, 3), got {tuple(x.shape)}")
        if self.channel_order == "BGR":
            x = x.flip(-1)
        x = x.to(torch.float32)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device)
        x = (x * self.scale - mean) / std
        return x.permute(0, 3, 1, 2)

    def meta(self) -> dict[str, Any]:
        """JSON-able record for feature-store metadata."""
        out = asdict(self)
        out["random_weights"] = self.is_random
        out["preprocessing"] = (
            f"frames resized to 224x224 by ffmpeg swscale bilinear (no crop); {self.channel_order}; x*{self.scale:g} - mean {self.mean}"
            f" / std {self.std}"
        )
        return out


TORCHVISION = VGG19Weights(
    name="torchvision-IMAGENET1K_V1",
    url=TORCHVISION_URL,
    file_name=TORCHVISION_FILE,
    sha256=None,
    sha256_prefix="dcbb9e9d",
    md5=None,
    channel_order="RGB",
    scale=1.0 / 255.0,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
)
KERAS = VGG19Weights(
    name="keras-imagenet-caffe",
    url=KERAS_URL,
    file_name=KERAS_FILE,
    sha256=None,
    sha256_prefix=None,
    md5=KERAS_MD5,
    channel_order="BGR",
    scale=1.0,
    mean=CAFFE_MEAN_BGR,
    std=(1.0, 1.0, 1.0),
)
RANDOM = replace(
    TORCHVISION, name="random", url=None, file_name=None, sha256="random", sha256_prefix=None
)


def default_cache_dirs() -> list[Path]:
    """Where pretrained files are looked for: the torch hub cache and the Keras cache."""
    import torch

    return [Path(torch.hub.get_dir()) / "checkpoints", Path(os.path.expanduser("~/.keras/models"))]


def _find(file_name: str, cache_dir: str | os.PathLike | None) -> Path | None:
    dirs = ([Path(cache_dir)] if cache_dir else []) + default_cache_dirs()
    for d in dirs:
        if (d / file_name).is_file():
            return d / file_name
    return None


def _missing(record: VGG19Weights, cache_dir: str | os.PathLike | None) -> WeightsError:
    where = ", ".join(
        str(d) for d in ([Path(cache_dir)] if cache_dir else []) + default_cache_dirs()
    )
    return WeightsError(
        f"VGG-19 weights '{record.name}' not found: the file {record.file_name} is not in {where}. "
        f"Download {record.url} on a machine with internet and put it into one of those folders "
        f"(or pass its path as --vgg19-weights PATH). For a smoke run without pretrained weights "
        f"pass --allow-random-weights (the features are then random and labelled so)."
    )


def vgg19_features() -> Any:
    """torchvision's ``vgg19().features`` (37 modules, pool5 output 512x7x7 for 224x224)."""
    from torchvision.models import vgg19

    return vgg19(weights=None).features


def convert_keras_vgg19(h5_path: str | os.PathLike) -> dict[str, Any]:
    """State dict for ``vgg19().features`` from a Keras VGG19 h5 file (full model or weights only).

    Handles ``model_weights/<layer>/...`` (``model.save``), top-level ``<layer>/...`` (Keras 2
    ``save_weights``, the published file) and Keras 3 ``layers/conv2d_N/vars/{0,1}`` layouts. Kernels are
    (3, 3, in, out) and become (out, in, 3, 3); Keras convolutions are cross-correlations like
    torch's, so no spatial flip.
    """
    import h5py
    import torch

    found: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    pattern = re.compile(r"(?:^|/)block(\d)_conv(\d)(?:/|$)")

    def visit(name: str, obj: Any) -> None:
        if not isinstance(obj, h5py.Dataset):
            return
        m = pattern.search(name)
        if not m:
            return
        key = (int(m.group(1)), int(m.group(2)))
        slot = found.setdefault(key, {})
        kind = {4: "kernel", 1: "bias"}.get(obj.ndim)
        if kind is None:
            return
        if kind in slot:
            raise WeightsError(f"{h5_path}: two {kind} arrays for block{key[0]}_conv{key[1]}")
        slot[kind] = np.asarray(obj[()], dtype=np.float32)

    with h5py.File(h5_path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        root.visititems(visit)
        if not found and "layers" in f:
            found = _keras3_layers(f["layers"])
    missing = [f"block{b}_conv{c}" for (b, c) in CONV_INDEX if len(found.get((b, c), {})) != 2]
    if missing:
        raise WeightsError(
            f"{h5_path}: not a Keras VGG19 weights file (no kernel/bias for {', '.join(missing)})"
        )
    state: dict[str, Any] = {}
    for key, index in CONV_INDEX.items():
        kernel, bias = found[key]["kernel"], found[key]["bias"]
        if kernel.shape[:2] != (3, 3) or kernel.shape[3] != bias.shape[0]:
            raise WeightsError(
                f"{h5_path}: block{key[0]}_conv{key[1]} kernel {kernel.shape} is not 3x3"
            )
        state[f"{index}.weight"] = torch.from_numpy(
            np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))
        )
        state[f"{index}.bias"] = torch.from_numpy(bias)
    return state


def _keras3_layers(layers: Any) -> dict[tuple[int, int], dict[str, np.ndarray]]:
    """Keras 3 ``.weights.h5``: ``layers/conv2d{,_1,..,_15}/vars/{0,1}`` named by creation order."""
    names = [n for n in layers if re.fullmatch(r"conv2d(_\d+)?", n)]
    names.sort(key=lambda n: int(n.rsplit("_", 1)[1]) if "_" in n else 0)
    found: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    for key, name in zip(CONV_INDEX, names, strict=False):
        var = layers[name]["vars"]
        found[key] = {
            "kernel": np.asarray(var["0"][()], np.float32),
            "bias": np.asarray(var["1"][()], np.float32),
        }
    if len(names) != len(CONV_INDEX):
        raise WeightsError(
            f"{layers.file.filename}: {len(names)} conv layers, VGG-19 has {len(CONV_INDEX)}"
        )
    return found


def _load_torchvision_file(path: Path) -> dict[str, Any]:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if any(k.startswith("features.") for k in state):
        state = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
    return state


def build_vgg19_pool5(
    weights: str | os.PathLike = "torchvision",
    allow_random: bool = False,
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
) -> tuple[Any, VGG19Weights]:
    """VGG-19 conv layers up to pool5, in eval mode, and the record of the weights used.

    ``weights``: ``"torchvision"``, ``"keras"``, ``"random"`` or a path to a torchvision ``.pth``
    (full model or features-only) or a Keras ``.h5`` file (converted; Caffe preprocessing).
    Named weights are looked up in ``cache_dir`` then the torch hub and Keras caches.
    """

    model = vgg19_features()
    name = str(weights)
    if name == "random":
        return randomize_convolutions(model, "VGG-19", allow_random, seed), RANDOM
    if name in ("torchvision", "keras"):
        record = TORCHVISION if name == "torchvision" else KERAS
        path = _find(record.file_name, cache_dir)
        if path is None:
            raise _missing(record, cache_dir)
    else:
        path = Path(name).expanduser()
        if not path.is_file():
            raise WeightsError(f"{path}: VGG-19 weights file not found")
        keras = path.suffix.lower() in (".h5", ".hdf5")
        record = replace(
            KERAS if keras else TORCHVISION, name=f"{'keras' if keras else 'torchvision'}-file"
        )
        record = replace(record, sha256_prefix=None, md5=None)
    sha = sha256_file(path)
    if record.sha256_prefix and not sha.startswith(record.sha256_prefix):
        raise WeightsError(
            f"{path}: sha256 {sha} does not start with {record.sha256_prefix}; the file is corrupt or "
            f"another version. Download {record.url} again."
        )
    if record.md5 and sha256_file(path, algorithm="md5") != record.md5:
        raise WeightsError(f"{path}: md5 does not match {record.md5}; download {record.url} again.")
    record = replace(record, sha256=sha, source=str(path))
    if record.channel_order == "BGR":
        state = convert_keras_vgg19(path)
    else:
        state = _load_torchvision_file(path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{path}: not VGG-19 features weights: {exc}") from exc
    return model.eval(), record


def probe_vgg19_precision(
    model: Any,
    record: VGG19Weights,
    device: Any = "cpu",
    precision: str = "bf16",
    frames: int = 2,
    size: int = 224,
    seed: int = 0,
) -> dict[str, Any]:
    """:func:`pipeline.backbones.precision.probe_precision` for VGG-19 pool5 on ``frames`` seeded
    random frames (the same preprocessing, channels-last): speeds and pool5 relative error."""
    import torch

    from pipeline.backbones.precision import probe_precision

    gen = torch.Generator().manual_seed(seed)
    raw = torch.randint(0, 256, (frames, size, size, 3), dtype=torch.uint8, generator=gen)
    dev = torch.device(device)
    net = model.to(dev, memory_format=torch.channels_last).eval()
    x = record.preprocess(raw.to(dev)).contiguous(memory_format=torch.channels_last)
    return probe_precision(net, x, dev, precision)
