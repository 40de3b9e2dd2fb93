"""What both feature engines share: the config, store opening and reports, the audio model and
the visual backend setup. The local engine (:mod:`.local`) and the Ray engine (:mod:`.ray_engine`)
import this module and nothing of each other.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from pipeline.backbones.vgg19 import WeightsError, build_vgg19_pool5
from pipeline.backbones.visual import extract_visual
from pipeline.core.device import resolve_device
from pipeline.core.io import write_json
from pipeline.core.layout import DataLayout
from pipeline.core.manifest import CLIP_SECONDS
from pipeline.core.store import ROW_SHAPES, StoreWriter

KINDS = ("audio", "visual", "c3d")
AUDIO_ROW = ROW_SHAPES["audio"]
AUDIO_MAP_ROW = ROW_SHAPES["audio_maps"]
VISUAL_VEC_ROW = ROW_SHAPES["visual_vec"]
#: Default forward-pass batch sizes when ``--batch-size`` is not given (CPU; on CUDA the visual
#: batch grows with the GPU's memory, :func:`default_batch`).
DEFAULT_BATCH = {"audio": 256, "visual": 64, "c3d": 4}
#: Visual frames per GiB of GPU memory for the default CUDA batch (VGG-19 at 224, inference,
#: fp16/bf16 activations ~20 MiB per frame at the peak layer, with room for the decoder's buffers).
FRAMES_PER_GPU_GIB = 8
MAX_GPU_BATCH = 512
RANDOM_BANNER = "!!! RANDOM WEIGHTS: {what} are NOT pretrained features (smoke run only) !!!"
#: Store settings that must not change while a store is partly written (``run.json``).
IDENTITY_KEYS = ("backbone", "weights", "output", "preprocessing", "frames_per_segment")


class FeaturesError(RuntimeError):
    """The stage cannot run as asked (missing inputs or weights, mismatched store)."""


#: One visual work item: (clip_id, clip path, planned frame indices (10, F)).
VisualItem = tuple[str, Path, np.ndarray]


class VisualExtractor(Protocol):
    """What a visual backend factory returns: metadata plus a batched extractor over clips.

    ``meta`` is written into the visual stores: backbone, weights {source, sha256} (or "random"),
    preprocessing, precision, ``random_weights``. Calling it with work items yields, per item and in
    any order, ``(clip_id, (10, 7, 7, 512) array)`` or ``(clip_id, error string)``.
    """

    meta: dict[str, Any]

    def __call__(self, items: Iterable[VisualItem]) -> Iterator[tuple[str, np.ndarray | str]]: ...


@dataclass
class FeaturesConfig:
    data_dir: Path = Path("data")
    features: tuple[str, ...] = KINDS
    dtype: str = "float16"
    device: str = "auto"
    batch_size: int | None = None  # examples per forward pass (audio patches / visual frames)
    workers: int | None = None  # decoding processes (visual); None = default_workers(device)
    vgg19_weights: str = "torchvision"  # torchvision, keras, random or a .pth/.h5 path
    precision: str = "auto"  # fp32, bf16, fp16; auto = measured (pipeline.backbones.precision)
    frame_size: int = 224  # visual frame side (224 = release; smaller only for fast tests)
    vggish_checkpoint: str | None = None  # TF checkpoint (path/URL) or a converted .pt state dict
    vggish_output: str = "ave"
    vggish_pca_params: str | None = None
    audio_maps: bool = False
    allow_random_weights: bool = False
    allow_download: bool = True
    num_shards: int = 1
    shard_index: int = 0
    shard_size: int = 256
    merge: bool = False
    force: bool = False
    progress: bool = True
    engine: str = (
        "local"  # local, or ray (pipeline.stages.features.ray_engine: a Ray Data pipeline)
    )
    ray_address: str | None = None  # ray.init address ("auto" = the running cluster); None = local
    decode_cpus: float = 1.0  # Ray engine: CPUs per decode task
    model_actors: int | None = None  # Ray engine: model actors (default: GPUs in the cluster, or 1)
    #: Visual extractor factory taking this config; None = :func:`vgg19_visual_backend`.
    visual_backend: Callable[[FeaturesConfig], VisualExtractor] | None = field(
        default=None, repr=False
    )
    c3d_weights: str = "mmaction2"  # mmaction2, pickle, random, a file or a URL
    c3d_maps: bool = False  # also store the C3D pool5 maps (store c3d_maps)
    c3d_crop: int = 112  # C3D crop side (112 = the network's; smaller only for fast tests)
    c3d_batch: int = 4  # C3D: 16-frame clips per forward pass

    def batch(self, kind: str, device: Any = None) -> int:
        """Examples per forward pass: ``batch_size``, else :func:`default_batch` for ``device``
        (C3D: ``c3d_batch`` clips)."""
        if kind == "c3d":
            return self.c3d_batch
        return self.batch_size or default_batch(kind, device)

    def decode_workers(self, device: Any = None) -> int:
        """Decoding processes: ``workers``, else :func:`default_workers` for ``device``."""
        return self.workers if self.workers is not None else default_workers(device)

    @property
    def layout(self) -> DataLayout:
        return DataLayout(self.data_dir)


def default_workers(device: Any = None) -> int:
    """Decoder processes from the machine: on CUDA every core but one (the network needs only one
    feeding process; ~3 clips/s per core at 16 fps keeps a GPU busier than two workers can), on the
    CPU half the cores (the network's threads need the rest), at least one."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    cuda = device is not None and str(device).startswith("cuda")
    return max(1, cores - 1 if cuda else cores // 2)


def default_batch(kind: str, device: Any = None) -> int:
    """Forward batch from the machine: on CUDA, visual frames from the GPU's memory
    (:data:`FRAMES_PER_GPU_GIB` per GiB, a power of two, 64..:data:`MAX_GPU_BATCH`); else
    :data:`DEFAULT_BATCH`."""
    if kind == "visual" and device is not None and str(device).startswith("cuda"):
        import torch

        gib = torch.cuda.get_device_properties(torch.device(device)).total_memory / 2**30
        frames = max(DEFAULT_BATCH["visual"], int(gib * FRAMES_PER_GPU_GIB))
        return min(MAX_GPU_BATCH, 1 << (frames.bit_length() - 1))
    return DEFAULT_BATCH[kind]


def resolve_precision(
    cfg: FeaturesConfig, probe: Callable[[], dict[str, Any]], device: Any, network: str = ""
):
    """(precision, probe figures or None) for one network: an explicit ``cfg.precision`` is checked
    against the device; ``auto`` runs ``probe`` (bf16 on a CPU with native bf16) and keeps bf16 only
    within the error bound and when faster (:func:`pipeline.backbones.precision.choose_precision`).
    The decision is kept in ``DATA_DIR/features/precision.json`` (per network, device and frame
    size), so a resumed or repeated run writes its stores in the precision the first one chose."""
    from pipeline.backbones.precision import check_precision, choose_precision, native_bf16_cpu

    if cfg.precision != "auto":
        try:
            check_precision(device, cfg.precision)
        except ValueError as exc:
            raise FeaturesError(str(exc)) from exc
        return cfg.precision, None
    if not (str(device).startswith("cpu") and native_bf16_cpu()):
        return "fp32", None
    path = cfg.layout.features / "precision.json"
    key = f"{network}|{device}|{cfg.frame_size}"
    known = json.loads(path.read_text()) if path.is_file() else {}
    if key not in known or cfg.force:
        figures = probe()
        known[key] = {"precision": choose_precision(figures), "probe": figures}
        write_json(known, path)
    return known[key]["precision"], known[key]["probe"]


# ----------------------------------------------------------------------------- stores


def code_version() -> str:
    """avel's version plus the git commit of the checkout when there is one."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        base = version("avel")
    except PackageNotFoundError:
        base = "0+unknown"
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
        commit = out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    return f"{base}+g{commit}" if commit else base


def features_device(cfg: FeaturesConfig) -> Any:
    """``cfg.device`` resolved in this process (a ``torch.device``); unusable devices are a
    :class:`FeaturesError`."""
    try:
        return resolve_device(cfg.device)
    except RuntimeError as exc:
        raise FeaturesError(str(exc)) from exc


def visual_rows(frame_size: int) -> dict[str, tuple[int, ...]]:
    """Row shapes of the visual stores: pool5 is 1/32 of the frame side (7 x 7 at 224)."""
    side = frame_size // 32
    channels = ROW_SHAPES["visual"][-1]
    return {"visual": (CLIP_SECONDS, side, side, channels), "visual_vec": VISUAL_VEC_ROW}


def store_rows(cfg: FeaturesConfig, kind: str) -> dict[str, tuple[int, ...]]:
    """The stores one kind fills, with their row shapes."""
    if kind == "audio":
        rows = {"audio": AUDIO_ROW}
        if cfg.audio_maps:
            rows["audio_maps"] = AUDIO_MAP_ROW
        return rows
    if kind == "c3d":
        return c3d_rows(cfg)
    return visual_rows(cfg.frame_size)


def store_names(cfg: FeaturesConfig, kind: str) -> list[str]:
    return list(store_rows(cfg, kind))


def open_store(
    cfg: FeaturesConfig, name: str, ids: list[str], row: tuple[int, ...], meta: dict
) -> StoreWriter:
    """Open (plan) a store and check that a partly written one was made with the same settings."""
    writer = StoreWriter.open(
        cfg.data_dir,
        name,
        ids,
        row,
        dtype=cfg.dtype,
        shard_size=cfg.shard_size,
        meta=meta,
        force=cfg.force,
    )
    identity = {k: meta.get(k) for k in IDENTITY_KEYS}
    run_path = writer.root / "run.json"
    if run_path.is_file():
        old = json.loads(run_path.read_text())
        if old != json.loads(json.dumps(identity, default=str)):
            now = json.loads(json.dumps(identity, default=str))
            changed = ", ".join(
                f"{k}: {str(old.get(k))[:60]} -> {str(now.get(k))[:60]}"
                for k in now
                if old.get(k) != now.get(k)
            )
            raise FeaturesError(
                f"{writer.root}: this store was (partly) written with other weights or settings "
                f"({changed}); pass --force (FORCE=1) to rebuild it"
            )
    else:
        write_json(identity, run_path)
    return writer


def open_stores(
    cfg: FeaturesConfig,
    kind: str,
    ids: list[str],
    meta: dict[str, Any],
    names: Iterable[str] | None = None,
) -> dict[str, StoreWriter]:
    """Open the stores of one kind (or only ``names``), each with ``meta`` plus its own name."""
    rows = store_rows(cfg, kind)
    extra = {
        "visual_vec": {"reduction": "mean over 7x7"},
        "c3d": {"reduction": "mean over the pool5 map (1 x 4 x 4 at 112)"},
    }
    return {
        n: open_store(cfg, n, ids, rows[n], dict(meta, feature=n, **extra.get(n, {})))
        for n in (rows if names is None else names)
    }


def pending_shards(writers: dict[str, StoreWriter], cfg: FeaturesConfig) -> list[int]:
    """Shards this process still has to write in any of ``writers``."""
    return sorted(
        {s for w in writers.values() for s, _ in w.pending_shards(cfg.shard_index, cfg.num_shards)}
    )


def weights_line(meta: dict) -> str:
    weights = meta.get("weights") or {}
    return (
        f"{meta.get('backbone')} {weights.get('source')} sha256 {str(weights.get('sha256'))[:12]}"
    )


def store_report(writer: StoreWriter, written: int, meta_out: dict | None) -> dict[str, Any]:
    pending = sum(not writer.is_done(s) for s in range(writer.num_shards))
    report = {
        "path": str(writer.root),
        "shards_written": written,
        "shards_pending": pending,
        "complete": writer.complete,
    }
    if meta_out is not None:
        report.update(videos=meta_out["videos"], failed=len(meta_out["failed"]))
    return report


def finish_stores(
    writers: dict[str, StoreWriter],
    written: dict[str, int],
    random_weights: bool,
    weights: str,
    **extra: Any,
) -> dict[str, dict[str, Any]]:
    """Finalize every store whose shards are all written; one report per store."""
    reports = {}
    for name, writer in writers.items():
        reports[name] = store_report(writer, written[name], writer.finalize())
        reports[name].update(extra)
        reports[name]["random_weights"] = random_weights
        reports[name]["weights"] = weights
    return reports


def progress(total: int, enabled: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="clip", file=sys.stderr, disable=not enabled)


def frame_plans(segments: pd.DataFrame) -> dict[str, np.ndarray]:
    """Clip ID -> its (10, F) planned frame indices, from the segments table."""
    return {
        clip_id: np.stack(
            [np.asarray(v, dtype=np.int64) for v in g.sort_values("second")["frame_indices"]]
        )
        for clip_id, g in segments.groupby("clip_id", sort=False)
    }


# ----------------------------------------------------------------------------- audio


def build_vggish(cfg: FeaturesConfig):
    """The VGGish model for this run (weights identity in ``model.weights_info``)."""
    from pipeline.backbones import vggish as vg
    from pipeline.core.fetch import SourceError, fetch

    cache = cfg.layout.weights("vggish")
    pca = None
    if cfg.vggish_output == "pca":
        location = cfg.vggish_pca_params or vg.VGGISH_PCA_PARAMS_URL
        if location.startswith(("http://", "https://")) and not cfg.allow_download:
            raise FeaturesError(
                "--vggish-output pca needs vggish_pca_params.npz: pass --vggish-pca-params"
            )
        try:
            pca = fetch(location, cache)
        except SourceError as exc:
            raise FeaturesError(f"cannot get the VGGish PCA parameters: {exc}") from exc
    checkpoint = cfg.vggish_checkpoint
    try:
        if checkpoint and Path(checkpoint).suffix in (".pt", ".pth"):
            return vg.load_vggish(checkpoint, pca_params=pca)
        info = vg.ensure_vggish_weights(
            cache, checkpoint=checkpoint, allow_download=cfg.allow_download
        )
        return vg.load_vggish(info.path, pca_params=pca)
    except vg.VGGishWeightsError as exc:
        if checkpoint or not cfg.allow_random_weights:
            raise FeaturesError(str(exc)) from exc
        return vg.random_vggish(seed=0, pca_params=pca)


def audio_precision(model, cfg: FeaturesConfig, device: Any) -> tuple[str, dict | None]:
    """VGGish's precision on ``device`` (:func:`resolve_precision`) and the probe's figures."""
    from pipeline.backbones.vggish_model import probe_vggish_precision

    return resolve_precision(cfg, lambda: probe_vggish_precision(model, device), device, "vggish")


def audio_meta(
    model,
    cfg: FeaturesConfig,
    frames_per_segment: int,
    device: Any,
    precision: str = "fp32",
    probe: dict | None = None,
) -> dict[str, Any]:
    """Store metadata of the audio stores made by ``model`` on ``device`` in ``precision``."""
    info = model.weights_info.with_mode(output=cfg.vggish_output, framing="ave")
    meta = info.to_dict()
    meta.update(
        source="avel features (self-extracted)",
        storage_dtype=cfg.dtype,
        random_weights=info.is_random,
        precision=precision,
        precision_probe=probe,
        device=str(device),
        frames_per_segment=frames_per_segment,
        code_version=code_version(),
        inputs="DATA_DIR/segments/<clip_id>.patches.npy (segments stage, AVE framing)",
    )
    return meta


def embed_patches(
    model,
    patches: np.ndarray,
    output: str,
    maps: bool,
    batch_size: int,
    device: Any,
    precision: str = "fp32",
) -> tuple[np.ndarray, np.ndarray | None]:
    """VGGish on (N, 96, 64) patches in batches: (N, 128) embeddings and optionally (N, 6, 4, 512);
    ``precision`` bf16/fp16 runs under autocast (outputs stored as float32)."""
    import torch

    from pipeline.backbones.precision import autocast

    emb = np.empty((len(patches), *AUDIO_ROW[1:]), dtype=np.float32)
    pool5 = np.empty((len(patches), *AUDIO_MAP_ROW[1:]), dtype=np.float32) if maps else None
    with torch.inference_mode(), autocast(device, precision):
        for start in range(0, len(patches), batch_size):
            x = torch.from_numpy(patches[start : start + batch_size]).to(device)
            if pool5 is None:
                emb[start : start + len(x)] = model(x, output=output).float().cpu().numpy()
                continue
            maps_x = model.pool5(x)
            emb[start : start + len(x)] = model.head(maps_x, output).float().cpu().numpy()
            pool5[start : start + len(x)] = maps_x.float().cpu().numpy()
    return emb, pool5


# ----------------------------------------------------------------------------- visual


class VGG19Extractor:
    """The VGG-19 visual backend: ``meta`` for the stores, the network and its weights record
    (the Ray engine's actors take ``model``, ``weights`` and ``precision``), and a call over work
    items that runs :func:`pipeline.backbones.visual.extract_visual`."""

    def __init__(
        self,
        cfg: FeaturesConfig,
        model: Any,
        weights: Any,
        precision: str,
        device: str,
        probe: dict[str, Any] | None = None,
    ) -> None:
        self.cfg, self.model, self.weights = cfg, model, weights
        self.precision, self.device = precision, device
        #: ``wait_s`` / ``total_s`` of the extraction so far (decoding- or network-bound).
        self.stats: dict[str, float] = {}
        record = weights.meta()
        self.meta: dict[str, Any] = {
            "backbone": "vgg19 pool5 (torchvision vgg19().features), mean over the frames of each second",
            "weights": {
                "source": weights.source or weights.url or weights.name,
                "sha256": weights.sha256,
            },
            "weights_record": record,
            "preprocessing": record.get("preprocessing"),
            "frame_size": cfg.frame_size,
            "precision": precision,
            "precision_probe": probe,
            "device": device,
            "batch_size": cfg.batch("visual", device),
            "decode_workers": cfg.decode_workers(device),
            "random_weights": bool(weights.is_random),
        }

    def __call__(self, items: Iterable[VisualItem]) -> Iterator[tuple[str, np.ndarray | str]]:
        return extract_visual(
            list(items),
            self.model,
            self.weights,
            device=self.device,
            precision=self.precision,
            batch_size=self.cfg.batch("visual", self.device),
            num_workers=self.cfg.decode_workers(self.device),
            size=self.cfg.frame_size,
            stats=self.stats,
        )


def build_backbone(
    build: Any, weights: str, named: tuple[str, ...], cfg: FeaturesConfig, backbone: str
):
    """``build(weights)`` with the weights cache of ``backbone``; named pretrained weights that are
    missing fall back to random ones only when random weights are allowed."""
    cache = cfg.layout.weights(backbone)
    try:
        return build(weights, allow_random=cfg.allow_random_weights, cache_dir=cache)
    except WeightsError as exc:
        if not (weights in named and cfg.allow_random_weights):
            raise FeaturesError(str(exc)) from exc
        return build("random", allow_random=True, cache_dir=cache)


def vgg19_visual_backend(cfg: FeaturesConfig, device: str | None = None) -> VGG19Extractor:
    """VGG-19 pool5 (:mod:`pipeline.backbones.vgg19` / :mod:`~pipeline.backbones.visual`) behind
    the visual seam.

    ``device``: the device the model will run on when it is not this process's (the Ray engine's
    driver plans for its workers' GPUs); default: ``cfg.device`` resolved here.
    """
    device = str(device or features_device(cfg))
    model, weights = build_backbone(
        build_vgg19_pool5, cfg.vgg19_weights, ("torchvision", "keras"), cfg, "vgg19"
    )
    from pipeline.backbones.vgg19 import probe_vgg19_precision

    if cfg.precision == "auto" and device.startswith("cuda"):
        # fp16 on CUDA for ImageNet-normalised inputs (the `gpu` tests bound its pool5 error vs fp32
        # at 1e-2 relative); Caffe-style inputs (+-128) risk fp16 overflow deep in the net: fp32.
        precision, probe = ("fp16" if weights.scale != 1.0 else "fp32"), None
    else:
        precision, probe = resolve_precision(
            cfg,
            lambda: probe_vgg19_precision(model, weights, device, size=cfg.frame_size),
            device,
            "vgg19",
        )
    return VGG19Extractor(cfg, model, weights, precision, device, probe)


def load_visual_backend(cfg: FeaturesConfig) -> VisualExtractor:
    """The visual extractor: ``cfg.visual_backend`` or :func:`vgg19_visual_backend`."""
    return (cfg.visual_backend or vgg19_visual_backend)(cfg)


def visual_meta(
    extractor: VisualExtractor, cfg: FeaturesConfig, frames_per_segment: int, **extra: Any
) -> dict[str, Any]:
    """Store metadata of the visual stores: the extractor's record plus this run's settings."""
    meta = dict(extractor.meta)
    meta.setdefault("random_weights", (meta.get("weights") or {}).get("sha256") == "random")
    meta.update(
        source="avel features (self-extracted)",
        storage_dtype=cfg.dtype,
        frames_per_segment=frames_per_segment,
        code_version=code_version(),
        **extra,
    )
    return meta


# ----------------------------------------------------------------------------- C3D


def c3d_rows(cfg: FeaturesConfig) -> dict[str, tuple[int, ...]]:
    """Row shapes of the C3D stores: ``c3d`` (10, 512) and, with ``c3d_maps``, the pool5 maps."""
    from pipeline.backbones.c3d import pool5_side

    rows = {"c3d": ROW_SHAPES["c3d"]}
    if cfg.c3d_maps:
        side = pool5_side(cfg.c3d_crop)
        rows["c3d_maps"] = (CLIP_SECONDS, side, side, ROW_SHAPES["c3d_maps"][-1])
    return rows


def c3d_plans(segments: pd.DataFrame) -> dict[str, np.ndarray]:
    """Clip ID -> its (10, 16) C3D frames (``pipeline.backbones.c3d.c3d_plan`` of its segment plan)."""
    from pipeline.backbones.c3d import c3d_plan

    plans = frame_plans(segments)
    first = segments.drop_duplicates("clip_id").set_index("clip_id")
    out = {}
    for clip_id, plan in plans.items():
        row = first.loc[clip_id]
        num = int(row["num_frames"]) if "num_frames" in row else None
        rule = str(row["frame_rule"]) if "frame_rule" in row else None
        out[clip_id] = c3d_plan(plan, num, rule)
    return out


@dataclass
class C3DExtractor:
    """The C3D backend: network, weights record, precision, and ``meta`` for the C3D stores."""

    model: Any
    weights: Any
    precision: str
    device: str
    meta: dict[str, Any]


def c3d_backend(cfg: FeaturesConfig, device: str | None = None) -> C3DExtractor:
    """C3D (:mod:`pipeline.backbones.c3d`) with the configured weights; missing weights are a
    :class:`FeaturesError` unless random weights are allowed (named weights then fall back to random).

    ``precision`` ``auto`` is fp32 (inputs of +-128 risk fp16 overflow; pass bf16 explicitly on CUDA).
    """
    from pipeline.backbones.c3d import build_c3d

    device = str(device or features_device(cfg))
    model, weights = build_backbone(build_c3d, cfg.c3d_weights, ("mmaction2", "pickle"), cfg, "c3d")
    weights = weights.scaled(cfg.c3d_crop)
    precision = "fp32" if cfg.precision == "auto" else cfg.precision
    record = weights.meta()
    meta = {
        "backbone": "c3d pool5 (Sports-1M layout), one 16-frame clip per second, mean over 1 x h x w",
        "weights": {
            "source": weights.source or weights.url or weights.name,
            "sha256": weights.sha256,
        },
        "weights_record": record,
        "preprocessing": record.get("preprocessing"),
        "c3d_frames": "the segment plan at 16 frames per second; other F: the release rule at 16 "
        "from the clip's frame count, or the planned frames repeated (time-rule clips)",
        "precision": precision,
        "device": device,
        "random_weights": bool(weights.is_random),
    }
    return C3DExtractor(model, weights, precision, device, meta)
