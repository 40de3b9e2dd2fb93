"""The features stage's settings, declared once: each option's default, help and flag live in
:class:`FeaturesConfig` (the CLI's flags and the Makefile's variables are made from / checked
against it), plus the machine-dependent defaults the executors share."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.device import resolve_device
from pipeline.core.layout import DataLayout
from pipeline.core.options import non_negative_int, option, positive_float, positive_int

KINDS = ("audio", "visual", "c3d", "clip", "clap")
ENGINES = ("local", "ray")
PRECISIONS = ("fp32", "bf16", "fp16", "auto")
RANDOM_BANNER = "!!! RANDOM WEIGHTS: {what} are NOT pretrained features (smoke run only) !!!"


class FeaturesError(RuntimeError):
    """The stage cannot run as asked (missing inputs or weights, mismatched store)."""


@dataclass
class FeaturesConfig:
    data_dir: Path = option(Path("data"), "the data folder", type=Path)
    features: tuple[str, ...] = option(
        ("audio", "visual"),
        "comma list of audio, visual, c3d, clip, clap (one frame decode)",
        list_of=KINDS,
    )
    dtype: str = option("float16", "storage dtype", choices=("float16", "float32"))
    device: str = option("auto", "auto, cpu or cuda[:N]")
    precision: str = option(
        "fp32",
        "network precision: fp32 (default, on every device), bf16, fp16, or auto (measured: the "
        "reduced precision only where native, faster and within 2e-2 of fp32); recorded in the store",
        choices=PRECISIONS,
    )
    batch_size: int | None = option(
        None,
        "examples per forward pass (audio patches 256, visual frames 64 on the CPU)",
        type=positive_int,
    )
    workers: int | None = option(
        None,
        "frame-decoding processes (default: every core but one on CUDA, half the cores on the CPU)",
        type=positive_int,
    )
    vgg19_weights: str = option("torchvision", "torchvision, keras, random, or a .pth/.h5 file")
    frame_size: int = option(224, "visual frame side (224 = release)", type=positive_int)
    vggish_checkpoint: str | None = option(
        None, "official TF checkpoint (path/URL) or a converted .pt file"
    )
    vggish_output: str = option("ave", "VGGish output mode", choices=("ave", "raw", "pca"))
    vggish_pca_params: str | None = option(
        None, "vggish_pca_params.npz for --vggish-output pca (path/URL)"
    )
    audio_maps: bool = option(False, "also store the VGGish pool5 map (audio_maps)")
    c3d_weights: str = option(
        "mmaction2", "C3D weights: mmaction2, pickle (c3d.pickle), random, a file or a URL"
    )
    c3d_maps: bool = option(False, "also store the C3D pool5 maps (c3d_maps)")
    c3d_batch: int = option(4, "C3D: 16-frame clips per forward pass", type=positive_int)
    c3d_crop: int = option(112, "C3D crop side (112 = the network's)", cli=False)
    clip_weights: str = option(
        "openai/clip-vit-large-patch14",
        "CLIP: a Hugging Face model id (through its cache) or a save_pretrained folder",
    )
    clip_tokens: bool = option(False, "also store CLIP's last-layer tokens (clip_tokens)")
    clap_weights: str = option(
        "laion/clap-htsat-unfused",
        "CLAP: a Hugging Face model id (through its cache) or a save_pretrained folder",
    )
    allow_random_weights: bool = option(False, "smoke runs without pretrained weights")
    allow_download: bool = option(
        True, "never download weights (cache or local only)", flag="--no-download", invert=True
    )
    num_shards: int = option(1, "K independent processes fill the store", type=positive_int)
    shard_index: int = option(0, "this process's part, 0..K-1", type=non_negative_int)
    shard_size: int = option(256, "clips per store shard", type=positive_int)
    merge: bool = option(False, "only build the index of a store filled by K processes")
    force: bool = option(False, "rebuild the stores even when complete")
    engine: str = option(
        "local",
        "local (this machine) or ray (a Ray Data pipeline; pip install avel[ray])",
        choices=ENGINES,
    )
    ray_address: str | None = option(
        None,
        "Ray cluster address ('auto' = the running cluster; default: start a local Ray)",
        flag="--address",
    )
    decode_cpus: float = option(1.0, "Ray engine: CPUs per decode task", type=positive_float)
    model_actors: int | None = option(
        None,
        "Ray engine: model actors (default: the cluster's GPUs, or 1 without)",
        type=positive_int,
    )
    progress: bool = option(True, "progress bars", cli=False)

    @property
    def layout(self) -> DataLayout:
        return DataLayout(self.data_dir)

    def decode_workers(self, device: Any = None) -> int:
        """Decoding processes: ``workers``, else :func:`default_workers` for ``device``."""
        return self.workers if self.workers is not None else default_workers(device)


def default_workers(device: Any = None) -> int:
    """Decoder processes from the machine: on CUDA every core but one (the network needs only one
    feeding process), on the CPU half the cores (the network's threads need the rest), at least one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    cuda = device is not None and str(device).startswith("cuda")
    return max(1, cores - 1 if cuda else cores // 2)


def features_device(cfg: FeaturesConfig) -> Any:
    """``cfg.device`` resolved in this process; unusable devices are a :class:`FeaturesError`."""
    try:
        return resolve_device(cfg.device)
    except RuntimeError as exc:
        raise FeaturesError(str(exc)) from exc


def progress(total: int, enabled: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="clip", file=sys.stderr, disable=not enabled)
