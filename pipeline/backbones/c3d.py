"""C3D (Tran et al., ICCV 2015) up to pool5, its Sports-1M weights records, and the C3D extractor.

The network is the layout of the common Sports-1M PyTorch port: 3x3x3 convolutions with padding 1
and ReLU; conv1 64, pool1 (1, 2, 2); conv2 128, pool2 2; conv3a/b 256, pool3 2; conv4a/b 512, pool4 2;
conv5a/b 512, pool5 kernel/stride 2 with padding (0, 1, 1). A 16x112x112 clip gives pool5 512x1x4x4;
the convolutions hold 27,655,936 parameters (the fc layers are not needed for features and not built).

Weights records (preprocessing travels with the weights and goes into the store's ``meta.json``):

- ``mmaction2`` (default): ``c3d_sports1m_pretrain_20201016-dcc47ddc.pth`` of mmaction2 (its state
  dict, keys ``conv1a.conv.weight`` ... ``conv5b.conv.bias``, ``fc6``, ``fc7``; the file name carries
  the sha256 prefix). Frames resized to 171x128 (W x H, the Caffe model's input size; aspect not
  kept), center crop 112x112, RGB, per-channel means (104, 117, 128) subtracted, no scaling (the values
  of mmaction2's C3D config).
- ``pickle``: ``c3d.pickle`` of the PyTorch port (github.com/DavideA/c3d-pytorch; a state dict with
  keys ``conv1.weight`` ... ``fc8.bias``; no published checksum, the sha256 is recorded). Its demo
  resizes frames to 200x112 (W x H), crops columns 44..155, keeps RGB values in 0..255 and
  subtracts nothing: that is what this record does.
- ``random``: a smoke run only, refused unless ``allow_random`` is set.

Neither port subtracts the original Caffe model's Sports-1M mean cube (16x128x171); no public copy of it
ships with either, so none is used. Weight files are looked up in ``cache_dir`` (``DATA_DIR/weights/c3d``)
and the torch hub cache, or given as a path; an http(s) URL is fetched into ``cache_dir`` once.

Frames: one 16-frame clip per 1 s segment (``c3d_plan``), decoded together with the VGG-19 frames of
the same clip by one ffmpeg process (:func:`pipeline.backbones.frames.decode_planned_sizes`).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.backbones.vgg19 import (
    WeightsError,
    default_cache_dirs,
    input_tensor,
    randomize_convolutions,
)
from pipeline.core.fetch import SourceError, fetch, is_url, sha256_file
from pipeline.core.manifest import CLIP_SECONDS

#: Frames per C3D clip (one clip per 1 s segment).
CLIP_FRAMES = 16
#: (name, in channels, out channels) of the convolutions, in order.
CONVS = (
    ("conv1", 3, 64),
    ("conv2", 64, 128),
    ("conv3a", 128, 256),
    ("conv3b", 256, 256),
    ("conv4a", 256, 512),
    ("conv4b", 512, 512),
    ("conv5a", 512, 512),
    ("conv5b", 512, 512),
)
#: The pooling after each of these convolutions: (kernel = stride, padding).
POOLS = {
    "conv1": ((1, 2, 2), (0, 0, 0)),
    "conv2": ((2, 2, 2), (0, 0, 0)),
    "conv3b": ((2, 2, 2), (0, 0, 0)),
    "conv4b": ((2, 2, 2), (0, 0, 0)),
    "conv5b": ((2, 2, 2), (0, 1, 1)),
}
CONV_PARAMETERS = 27_655_936
#: fc tensors of the public files (not used for features; checked for shape when present).
FC_SHAPES = {
    "fc6.weight": (4096, 8192),
    "fc6.bias": (4096,),
    "fc7.weight": (4096, 4096),
    "fc7.bias": (4096,),
    "fc8.weight": (487, 4096),
    "fc8.bias": (487,),
}
#: mmaction2's module names for the port's convolutions (``<name>.conv.weight``).
MMACTION2_NAMES = {"conv1": "conv1a", "conv2": "conv2a"}

PICKLE_URL = "http://imagelab.ing.unimore.it/files/c3d_pytorch/c3d.pickle"
MMACTION2_FILE = "c3d_sports1m_pretrain_20201016-dcc47ddc.pth"
MMACTION2_URL = f"https://download.openmmlab.com/mmaction/recognition/c3d/{MMACTION2_FILE}"


def c3d_pool5() -> Any:
    """C3D convolutions up to pool5 (torch module; input (N, 3, 16, H, W), output (N, 512, 1, h, w))."""
    import torch
    from torch import nn

    class C3DPool5(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for name, cin, cout in CONVS:
                setattr(self, name, nn.Conv3d(cin, cout, kernel_size=3, padding=1))
            self.relu = nn.ReLU(inplace=True)
            for name, (size, pad) in POOLS.items():
                setattr(self, "pool" + name[4], nn.MaxPool3d(size, size, pad))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for name, _, _ in CONVS:
                x = self.relu(getattr(self, name)(x))
                if name in POOLS:
                    x = getattr(self, "pool" + name[4])(x)
            return x

    return C3DPool5()


@dataclass(frozen=True)
class C3DWeights:
    """Identity and preprocessing of one C3D weight set.

    ``preprocess`` maps uint8 RGB clips (N, 16, H, W, 3) decoded at ``resize`` (width, height) to the
    float input (N, 3, 16, crop, crop): center crop, channel order, ``(x * scale - mean) / std``
    (``mean``/``std`` in network channel order).
    """

    name: str
    layout: str  # "mmaction2", "pickle" or "random": how the file's tensors are named
    url: str | None
    file_name: str | None
    sha256: str | None  # full hex digest, "random", or None before the file is read
    sha256_prefix: str | None  # mmaction2 names its files after the sha256 prefix
    channel_order: str  # "RGB" or "BGR"
    resize: tuple[int, int]  # (width, height) the frames are scaled to (ffmpeg bilinear)
    crop: int  # center crop side
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str | None = None  # the local file the weights were read from

    @property
    def is_random(self) -> bool:
        return self.sha256 == "random"

    def scaled(self, crop: int) -> C3DWeights:
        """The same record at another crop side (resize scaled alike); for fast tests only."""
        if crop == self.crop:
            return self
        w, h = self.resize
        size = (max(crop, round(w * crop / self.crop)), max(crop, round(h * crop / self.crop)))
        return replace(self, resize=size, crop=crop)

    def crop_box(self) -> tuple[int, int]:
        """(top, left) of the center crop in the resized frame."""
        w, h = self.resize
        return (h - self.crop) // 2, (w - self.crop) // 2

    def preprocess(self, clips: Any) -> Any:
        """uint8 RGB clips (N, 16, H, W, 3) (numpy or torch, any device) -> float32 (N, 3, 16, c, c)."""
        import torch

        x = input_tensor(clips)
        w, h = self.resize
        if x.ndim != 5 or x.shape[-1] != 3 or tuple(x.shape[2:4]) != (h, w):
            raise ValueError(f"expected clips (N, T, {h}, {w}, 3), got {tuple(x.shape)}")
        top, left = self.crop_box()
        x = x[:, :, top : top + self.crop, left : left + self.crop]
        if self.channel_order == "BGR":
            x = x.flip(-1)
        x = x.to(torch.float32)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device)
        x = (x * self.scale - mean) / std
        return x.permute(0, 4, 1, 2, 3).contiguous()

    def meta(self) -> dict[str, Any]:
        """JSON-able record for feature-store metadata."""
        out = asdict(self)
        out["random_weights"] = self.is_random
        w, h = self.resize
        top, left = self.crop_box()
        out["preprocessing"] = (
            f"{CLIP_FRAMES} frames per second resized to {w}x{h} (WxH) by ffmpeg swscale bilinear "
            f"(aspect not kept); center crop {self.crop}x{self.crop} at row {top}, column {left}; "
            f"{self.channel_order}; x*{self.scale:g} - mean {self.mean} / std {self.std}"
        )
        return out


MMACTION2 = C3DWeights(
    name="mmaction2-c3d-sports1m",
    layout="mmaction2",
    url=MMACTION2_URL,
    file_name=MMACTION2_FILE,
    sha256=None,
    sha256_prefix="dcc47ddc",
    channel_order="RGB",
    resize=(171, 128),
    crop=112,
    scale=1.0,
    mean=(104.0, 117.0, 128.0),
    std=(1.0, 1.0, 1.0),
)
PICKLE = C3DWeights(
    name="c3d-pytorch-pickle-sports1m",
    layout="pickle",
    url=PICKLE_URL,
    file_name="c3d.pickle",
    sha256=None,
    sha256_prefix=None,
    channel_order="RGB",
    resize=(200, 112),
    crop=112,
    scale=1.0,
    mean=(0.0, 0.0, 0.0),
    std=(1.0, 1.0, 1.0),
)
RANDOM = replace(
    MMACTION2, name="random", layout="random", url=None, file_name=None, sha256="random"
)
RECORDS = {"mmaction2": MMACTION2, "pickle": PICKLE}


def conv_shapes() -> dict[str, tuple[int, ...]]:
    """The port's names and shapes of every convolution tensor (``conv1.weight`` ...)."""
    out: dict[str, tuple[int, ...]] = {}
    for name, cin, cout in CONVS:
        out[f"{name}.weight"] = (cout, cin, 3, 3, 3)
        out[f"{name}.bias"] = (cout,)
    return out


def layout_names(layout: str) -> dict[str, str]:
    """Our tensor name -> the tensor's name in a public file of ``layout`` (``pickle``/``mmaction2``)."""
    if layout == "pickle":
        return {k: k for k in [*conv_shapes(), *FC_SHAPES]}
    if layout == "mmaction2":
        names = {}
        for key in conv_shapes():
            layer, kind = key.split(".")
            names[key] = f"{MMACTION2_NAMES.get(layer, layer)}.conv.{kind}"
        names.update({k: k for k in FC_SHAPES if not k.startswith("fc8")})
        return names
    raise ValueError(f"unknown C3D weights layout {layout!r}")


def convert_state(state: dict[str, Any], layout: str, origin: str = "") -> dict[str, Any]:
    """A public file's tensors -> the state dict of :func:`c3d_pool5`, every tensor checked.

    Accepts the file's dict as saved: plain, under ``state_dict``, and with ``module.``/``backbone.``
    prefixes (mmaction2 checkpoints). A missing, misshapen or unknown tensor is a
    :class:`WeightsError` naming all of them; the fc tensors are checked and left out.
    """
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    stripped = {}
    for key, value in state.items():
        for prefix in ("module.", "backbone."):
            key = key.removeprefix(prefix)
        stripped[key] = value
    names = layout_names(layout)
    expected = {**conv_shapes(), **FC_SHAPES}
    problems, out = [], {}
    for ours, theirs in names.items():
        if theirs not in stripped:
            if ours in conv_shapes():
                problems.append(f"missing {theirs}")
            continue
        shape = tuple(stripped[theirs].shape)
        if shape != expected[ours]:
            problems.append(f"{theirs} has shape {shape}, expected {expected[ours]}")
        elif ours in conv_shapes():
            out[ours] = stripped[theirs]
    known = set(names.values())
    extra = sorted(k for k in stripped if k not in known and not k.startswith("cls_head."))
    if layout == "mmaction2":
        extra = [k for k in extra if not k.startswith("fc8.")]
    problems += [f"unexpected tensor {k}" for k in extra]
    if problems:
        raise WeightsError(
            f"{origin or 'state dict'}: not a C3D {layout} weights file: " + "; ".join(problems)
        )
    return out


def _lookup(record: C3DWeights, cache_dir: str | os.PathLike | None) -> Path:
    dirs = ([Path(cache_dir)] if cache_dir else []) + default_cache_dirs()
    for d in dirs:
        if record.file_name and (d / record.file_name).is_file():
            return d / record.file_name
    raise WeightsError(
        f"C3D weights '{record.name}' not found: the file {record.file_name} is not in "
        f"{', '.join(str(d) for d in dirs)}. Download {record.url} on a machine with internet and put "
        f"it into one of those folders (or pass its path or URL as --c3d-weights). For a smoke run "
        f"without pretrained weights pass --allow-random-weights (the features are then random and "
        f"labelled so)."
    )


def _layout_of(path: Path, state: dict[str, Any]) -> str:
    inner = state.get("state_dict", state) if isinstance(state, dict) else {}
    keys = {k.removeprefix("module.").removeprefix("backbone.") for k in inner}
    return "mmaction2" if "conv1a.conv.weight" in keys else "pickle"


def build_c3d(
    weights: str | os.PathLike = "mmaction2",
    allow_random: bool = False,
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
) -> tuple[Any, C3DWeights]:
    """C3D up to pool5, in eval mode, and the record of the weights used.

    ``weights``: ``"mmaction2"``, ``"pickle"``, ``"random"``, a local file (layout detected from its
    tensor names; preprocessing of that layout's record) or an http(s) URL (fetched into ``cache_dir``).
    """
    import torch

    model = c3d_pool5()
    name = str(weights)
    if name == "random":
        return randomize_convolutions(model, "C3D", allow_random, seed), RANDOM
    if name in RECORDS:
        record = RECORDS[name]
        path = _lookup(record, cache_dir)
    else:
        if is_url(name):
            try:
                path = fetch(name, cache_dir or Path.cwd())
            except SourceError as exc:
                raise WeightsError(f"cannot fetch the C3D weights: {exc}") from exc
        else:
            path = Path(name).expanduser()
            if not path.is_file():
                raise WeightsError(f"{path}: C3D weights file not found")
        record = None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a weights error
        raise WeightsError(f"{path}: not a torch weights file ({exc})") from exc
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: holds a {type(state).__name__}, not a state dict")
    if record is None:
        layout = _layout_of(path, state)
        record = replace(RECORDS[layout], name=f"{layout}-file", url=None, sha256_prefix=None)
    sha = sha256_file(path)
    if record.sha256_prefix and not sha.startswith(record.sha256_prefix):
        raise WeightsError(
            f"{path}: sha256 {sha} does not start with {record.sha256_prefix}; the file is corrupt or "
            f"another version. Download {record.url} again."
        )
    record = replace(record, sha256=sha, source=str(path))
    model.load_state_dict(convert_state(state, record.layout, str(path)), strict=True)
    return model.eval(), record


def pool5_side(crop: int) -> int:
    """Side of the pool5 map for a ``crop`` x ``crop`` input (4 for 112)."""
    side = crop
    for _ in range(4):  # pool1..pool4 halve
        side //= 2
    return side // 2 + 1  # pool5: kernel 2, stride 2, padding 1


def c3d_plan(
    plan: np.ndarray, num_frames: int | None = None, rule: str | None = None
) -> np.ndarray:
    """The (10, 16) C3D frames of a clip from its (10, F) segment plan.

    F = 16: the plan itself (the release rule at 16 frames per second, or the time rule). Otherwise a
    release-rule clip gets the release rule at 16 from its decoded frame count; other clips repeat or
    skip their planned frames (frame ``floor(i * F / 16)`` of the second for i < 16).
    """
    plan = np.asarray(plan, dtype=np.int64)
    per_second = plan.shape[1]
    if per_second == CLIP_FRAMES:
        return plan
    if rule == "release" and num_frames:
        interval = int(num_frames) // CLIP_SECONDS
        second = np.arange(CLIP_SECONDS)[:, None]
        i = np.arange(CLIP_FRAMES)[None, :]
        return second * interval + (i * interval) // CLIP_FRAMES
    pick = (np.arange(CLIP_FRAMES) * per_second) // CLIP_FRAMES
    return plan[:, pick]


# ----------------------------------------------------------------------------- extraction
