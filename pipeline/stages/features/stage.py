"""Features stage: per-clip audio (VGGish) and visual (VGG-19, issue 5) stores from the segments.

Stores (``pipeline.core.store``, one row per clip, videos = the segmented ok clips in manifest order):

- ``audio`` (10, 128): VGGish on the segments stage's log-mel patches, ``--vggish-output`` mode;
- ``audio_maps`` (10, 6, 4, 512): the VGGish pool5 map (``--audio-maps``);
- ``visual`` (10, 7, 7, 512) and ``visual_vec`` (10, 512, the 7x7 mean of the same maps): from the
  visual extractor plugged in at ``VISUAL_BACKEND``.

Each store is filled shard by shard (resumable; ``--num-shards K --shard-index i`` lets K processes
fill disjoint shards; the last to finish, or ``--merge``, writes the index). A finished store is not
rewritten without ``--force``. A store records which weights made it; a partly written store is only
resumed with the same weights and settings. Without pretrained weights the stage refuses to run
unless ``--allow-random-weights``, and then marks the store ``random_weights`` and says so loudly.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipeline.core.io import write_json
from pipeline.core.store import DTYPES, StoreError, StoreWriter, store_dir
from pipeline.stages.segments import clips_dir, load_patches, load_segments

KINDS = ("audio", "visual")
AUDIO_ROW = (10, 128)
AUDIO_MAP_ROW = (10, 6, 4, 512)
VISUAL_ROW = (10, 7, 7, 512)
VISUAL_VEC_ROW = (10, 512)
#: Default forward-pass batch sizes when ``--batch-size`` is not given.
DEFAULT_BATCH = {"audio": 256, "visual": 64}
RANDOM_BANNER = "!!! RANDOM WEIGHTS: {what} are NOT pretrained features (smoke run only) !!!"


class FeaturesError(RuntimeError):
    """The stage cannot run as asked (missing inputs or weights, mismatched store)."""


#: One visual work item: (youtube_id, clip path, planned frame indices (10, F)).
VisualItem = tuple[str, Path, np.ndarray]


class VisualExtractor(Protocol):
    """What a visual backend factory returns: metadata plus a batched extractor over clips.

    ``meta`` is written into the visual stores: backbone, weights {source, sha256} (or "random"),
    preprocessing, precision, ``random_weights``. Calling it with work items yields, per item and in
    any order, ``(youtube_id, (10, 7, 7, 512) array)`` or ``(youtube_id, error string)``.
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
    workers: int = 2  # decoding processes for the visual extractor
    vgg19_weights: str = "torchvision"  # torchvision, keras, random or a .pth/.h5 path
    precision: str = (
        "auto"  # visual: fp32, bf16, fp16; auto = fp16 on CUDA (torchvision), else fp32
    )
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

    def batch(self, kind: str) -> int:
        return self.batch_size or DEFAULT_BATCH[kind]


# ----------------------------------------------------------------------------- shared helpers


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


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise FeaturesError(
            "--device cuda asked for but torch sees no CUDA device; use --device cpu"
        )
    return device


def _open_store(
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
    identity = {
        k: meta.get(k)
        for k in ("backbone", "weights", "output", "preprocessing", "frames_per_segment")
    }
    run_path = writer.root / "run.json"
    if run_path.is_file():
        import json

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


def _weights_line(meta: dict) -> str:
    weights = meta.get("weights") or {}
    return (
        f"{meta.get('backbone')} {weights.get('source')} sha256 {str(weights.get('sha256'))[:12]}"
    )


def _store_report(writer: StoreWriter, written: int, meta_out: dict | None) -> dict[str, Any]:
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


def _progress(total: int, enabled: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="clip", file=sys.stderr, disable=not enabled)


# ----------------------------------------------------------------------------- audio


def build_vggish(cfg: FeaturesConfig):
    """The VGGish model for this run (weights identity in ``model.weights_info``)."""
    from pipeline.backbones import vggish as vg
    from pipeline.core.fetch import SourceError, fetch

    cache = vg.default_cache_dir(cfg.data_dir)
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


def audio_meta(model, cfg: FeaturesConfig, frames_per_segment: int, device: str) -> dict[str, Any]:
    info = model.weights_info.with_mode(output=cfg.vggish_output, framing="ave")
    meta = info.to_dict()
    meta.update(
        source="avel features (self-extracted)",
        storage_dtype=cfg.dtype,
        random_weights=info.is_random,
        precision="fp32",
        device=device,
        frames_per_segment=frames_per_segment,
        code_version=code_version(),
        inputs="DATA_DIR/segments/<youtube_id>.patches.npy (segments stage, AVE framing)",
    )
    return meta


def embed_patches(
    model, patches: np.ndarray, output: str, maps: bool, batch_size: int, device: str
):
    """VGGish on (N, 96, 64) patches in batches: (N, 128) embeddings and optionally (N, 6, 4, 512)."""
    import torch

    emb = np.empty((len(patches), 128), dtype=np.float32)
    pool5 = np.empty((len(patches), 6, 4, 512), dtype=np.float32) if maps else None
    with torch.inference_mode():
        for start in range(0, len(patches), batch_size):
            x = torch.from_numpy(patches[start : start + batch_size]).to(device)
            emb[start : start + len(x)] = model(x, output=output).float().cpu().numpy()
            if pool5 is not None:
                pool5[start : start + len(x)] = model.pool5(x).float().cpu().numpy()
    return emb, pool5


def run_audio(cfg: FeaturesConfig, ids: list[str], frames_per_segment: int) -> dict[str, Any]:
    names = _store_names(cfg, "audio")
    rows = {"audio": AUDIO_ROW, "audio_maps": AUDIO_MAP_ROW}
    if cfg.merge:
        return {n: _merge(cfg, n, ids, rows[n]) for n in names}
    done = {n: _existing_report(cfg, n) for n in names if not cfg.force and _complete(cfg, n)}
    names = [n for n in names if n not in done]

    device = resolve_device(cfg.device)
    model = build_vggish(cfg).to(device).eval()
    meta = audio_meta(model, cfg, frames_per_segment, device)
    writers = {n: _open_store(cfg, n, ids, rows[n], dict(meta, feature=n)) for n in names}
    reports: dict[str, Any] = {}
    todo = sorted(
        {s for w in writers.values() for s, _ in w.pending_shards(cfg.shard_index, cfg.num_shards)}
    )
    written = dict.fromkeys(names, 0)
    first = writers[names[0]]
    with _progress(sum(len(first.shard_ids(s)) for s in todo), cfg.progress, "audio") as bar:
        for shard in todo:
            shard_ids = first.shard_ids(shard)
            loaded, errors = [], {}
            for youtube_id in shard_ids:
                try:
                    loaded.append((youtube_id, load_patches(cfg.data_dir, youtube_id)))
                except (OSError, ValueError) as exc:
                    errors[youtube_id] = f"patches unreadable: {exc}"
            need_maps = "audio_maps" in writers and not writers["audio_maps"].is_done(shard)
            if not need_maps and ("audio" not in writers or writers["audio"].is_done(shard)):
                continue
            stacked = (
                np.concatenate([p for _, p in loaded])
                if loaded
                else np.zeros((0, 96, 64), np.float32)
            )
            emb, pool5 = embed_patches(
                model, stacked, cfg.vggish_output, need_maps, cfg.batch("audio"), device
            )
            for name, values in (("audio", emb), ("audio_maps", pool5)):
                writer = writers.get(name)
                if writer is None or writer.is_done(shard) or values is None:
                    continue
                results: dict[str, np.ndarray | str] = dict(errors)
                for k, (youtube_id, _) in enumerate(loaded):
                    results[youtube_id] = values[10 * k : 10 * (k + 1)]
                writer.write_shard(shard, results)
                written[name] += 1
            bar.update(len(shard_ids))
    for name, writer in writers.items():
        reports[name] = _store_report(writer, written[name], writer.finalize())
        reports[name]["random_weights"] = meta["random_weights"]
        reports[name]["weights"] = model.weights_info.describe()
    return {**done, **reports}


# ----------------------------------------------------------------------------- visual


def load_visual_backend(cfg: FeaturesConfig) -> VisualExtractor:
    """The visual extractor: ``cfg.visual_backend`` or :func:`vgg19_visual_backend`."""
    return (cfg.visual_backend or vgg19_visual_backend)(cfg)


def vgg19_visual_backend(cfg: FeaturesConfig, device: str | None = None) -> VisualExtractor:
    """VGG-19 pool5 (issue 5's ``pipeline.backbones.vgg19`` / ``visual``) behind the visual seam.

    ``device``: the device the model will run on when it is not this process's (the Ray engine's
    driver plans for its workers' GPUs); default: ``cfg.device`` resolved here.
    """
    try:
        from pipeline.backbones.vgg19 import WeightsError, build_vgg19_pool5
        from pipeline.backbones.visual import extract_visual
    except ModuleNotFoundError as exc:
        raise FeaturesError(
            "visual features need the VGG-19 extractor (pipeline.backbones.vgg19 / visual, issue 5), "
            f"which this build does not have ({exc}); run with --features audio"
        ) from exc
    device = device or resolve_device(cfg.device)
    cache = Path(cfg.data_dir) / "weights" / "vgg19"
    try:
        model, weights = build_vgg19_pool5(
            cfg.vgg19_weights, allow_random=cfg.allow_random_weights, cache_dir=cache
        )
    except WeightsError as exc:
        named = cfg.vgg19_weights in ("torchvision", "keras")
        if not (named and cfg.allow_random_weights):
            raise FeaturesError(str(exc)) from exc
        model, weights = build_vgg19_pool5("random", allow_random=True, cache_dir=cache)
    precision = cfg.precision
    if precision == "auto":
        # fp16 on CUDA for ImageNet-normalised inputs (the `gpu` tests bound its pool5 error vs fp32
        # at 1e-2 relative); Caffe-style inputs (+-128) risk fp16 overflow deep in the net: fp32.
        on_cuda = str(device).startswith("cuda")
        precision = "fp16" if on_cuda and weights.scale != 1.0 else "fp32"
    record = weights.meta()
    meta = {
        "backbone": "vgg19 pool5 (torchvision vgg19().features), mean over the frames of each second",
        "weights": {
            "source": weights.source or weights.url or weights.name,
            "sha256": weights.sha256,
        },
        "weights_record": record,
        "preprocessing": record.get("preprocessing"),
        "frame_size": cfg.frame_size,
        "precision": precision,
        "device": device,
        "random_weights": bool(weights.is_random),
    }

    class _Extractor:
        def __init__(self) -> None:
            self.meta = meta
            self.model, self.weights, self.precision = model, weights, precision  # Ray engine

        def __call__(self, items: Iterable[VisualItem]) -> Iterator[tuple[str, np.ndarray | str]]:
            return extract_visual(
                list(items),
                model,
                weights,
                device=device,
                precision=precision,
                batch_size=cfg.batch("visual"),
                num_workers=cfg.workers,
                size=cfg.frame_size,
            )

    return _Extractor()


def visual_rows(frame_size: int) -> dict[str, tuple[int, ...]]:
    """Row shapes of the visual stores: pool5 is 1/32 of the frame side (7 x 7 at 224)."""
    side = frame_size // 32
    return {"visual": (10, side, side, 512), "visual_vec": VISUAL_VEC_ROW}


def run_visual(
    cfg: FeaturesConfig, ids: list[str], segments, frames_per_segment: int
) -> dict[str, Any]:
    names = visual_rows(cfg.frame_size)
    if cfg.merge:
        return {n: _merge(cfg, n, ids, row) for n, row in names.items()}
    extractor = load_visual_backend(cfg)
    meta = dict(extractor.meta)
    meta.setdefault("random_weights", (meta.get("weights") or {}).get("sha256") == "random")
    meta.update(
        source="avel features (self-extracted)",
        storage_dtype=cfg.dtype,
        frames_per_segment=frames_per_segment,
        code_version=code_version(),
    )
    writers = {
        "visual": _open_store(cfg, "visual", ids, names["visual"], dict(meta, feature="visual")),
        "visual_vec": _open_store(
            cfg,
            "visual_vec",
            ids,
            VISUAL_VEC_ROW,
            dict(meta, feature="visual_vec", reduction="mean over 7x7"),
        ),
    }
    plans = {
        y: np.stack(
            [np.asarray(v, dtype=np.int64) for v in g.sort_values("second")["frame_indices"]]
        )
        for y, g in segments.groupby("youtube_id", sort=False)
    }
    todo = sorted(
        {s for w in writers.values() for s, _ in w.pending_shards(cfg.shard_index, cfg.num_shards)}
    )
    written = dict.fromkeys(names, 0)
    first = writers["visual"]
    with _progress(sum(len(first.shard_ids(s)) for s in todo), cfg.progress, "visual") as bar:
        for shard in todo:
            shard_ids = first.shard_ids(shard)
            items = [(y, clips_dir(cfg.data_dir) / f"{y}.mp4", plans[y]) for y in shard_ids]
            maps: dict[str, np.ndarray | str] = {}
            for youtube_id, value in extractor(items):
                maps[youtube_id] = value
                bar.update(1)
            vecs = {
                y: v if isinstance(v, str) else np.asarray(v).mean(axis=(1, 2))
                for y, v in maps.items()
            }
            for name, results in (("visual", maps), ("visual_vec", vecs)):
                if not writers[name].is_done(shard):
                    writers[name].write_shard(shard, results)
                    written[name] += 1
    reports = {}
    for name, writer in writers.items():
        reports[name] = _store_report(writer, written[name], writer.finalize())
        reports[name]["random_weights"] = bool(meta["random_weights"])
        reports[name]["weights"] = _weights_line(meta)
    return reports


# ----------------------------------------------------------------------------- stage


def _merge(cfg: FeaturesConfig, name: str, ids: list[str], row: tuple[int, ...]) -> dict[str, Any]:
    root = store_dir(cfg.data_dir, name)
    if not (root / "plan.json").is_file():
        raise FeaturesError(f"{root}: no store to merge (run `avel features` first)")
    writer = StoreWriter.open(
        cfg.data_dir, name, ids, row, dtype=cfg.dtype, shard_size=cfg.shard_size
    )
    import json

    meta_path = root / "meta.json"
    writer.meta = (
        json.loads(meta_path.read_text())
        if meta_path.is_file()
        else json.loads((root / "run.json").read_text())
    )
    report = _store_report(writer, 0, writer.finalize())
    report["random_weights"] = bool(writer.meta.get("random_weights"))
    return report


def run_features(cfg: FeaturesConfig) -> dict[str, Any]:
    """Build (or resume, or merge) the requested feature stores; return the summary."""
    cfg.data_dir = Path(cfg.data_dir)
    unknown = set(cfg.features) - set(KINDS)
    if unknown or not cfg.features:
        raise FeaturesError(
            f"--features takes a comma list of {KINDS}, got {','.join(cfg.features)}"
        )
    if cfg.dtype not in DTYPES:
        raise FeaturesError(f"--dtype must be one of {sorted(DTYPES)}, got {cfg.dtype}")
    if not 0 <= cfg.shard_index < cfg.num_shards:
        raise FeaturesError(f"--shard-index {cfg.shard_index} outside 0..{cfg.num_shards - 1}")
    if (cfg.batch_size is not None and cfg.batch_size < 1) or cfg.shard_size < 1:
        raise FeaturesError("--batch-size and --shard-size must be positive")
    segments = load_segments(cfg.data_dir)
    ids = list(dict.fromkeys(segments["youtube_id"]))
    if not ids:
        raise FeaturesError(
            f"{cfg.data_dir / 'segments.parquet'} lists no segmented clip: nothing to extract"
        )
    fps = int(len(segments["frame_indices"].iloc[0]))
    summary: dict[str, Any] = {
        "clips": len(ids),
        "frames_per_segment": fps,
        "stores": {},
        "errors": {},
    }
    runners = {
        "audio": lambda: run_audio(cfg, ids, fps),
        "visual": lambda: run_visual(cfg, ids, segments, fps),
    }
    if cfg.engine == "ray" and not cfg.merge:
        from pipeline.stages.features.ray_engine import run_audio_ray, run_visual_ray

        runners = {
            "audio": lambda: run_audio_ray(cfg, ids, fps),
            "visual": lambda: run_visual_ray(cfg, ids, segments, fps),
        }
    elif cfg.engine not in ("local", "ray"):
        raise FeaturesError(f"--engine must be local or ray, got {cfg.engine!r}")
    for kind in cfg.features:
        complete = [n for n in _store_names(cfg, kind) if _complete(cfg, n)]
        if not cfg.force and not cfg.merge and len(complete) == len(_store_names(cfg, kind)):
            for name in complete:
                summary["stores"][name] = _existing_report(cfg, name)
            continue
        try:
            summary["stores"].update(runners[kind]())
        except (FeaturesError, StoreError) as exc:
            summary["errors"][kind] = str(exc)
    return summary


def _store_names(cfg: FeaturesConfig, kind: str) -> list[str]:
    if kind == "audio":
        return ["audio"] + (["audio_maps"] if cfg.audio_maps else [])
    return ["visual", "visual_vec"]


def _complete(cfg: FeaturesConfig, name: str) -> bool:
    root = store_dir(cfg.data_dir, name)
    return (root / "meta.json").is_file() and (root / "index.parquet").is_file()


def _existing_report(cfg: FeaturesConfig, name: str) -> dict[str, Any]:
    import json

    root = store_dir(cfg.data_dir, name)
    meta = json.loads((root / "meta.json").read_text())
    return {
        "path": str(root),
        "shards_written": 0,
        "shards_pending": 0,
        "complete": True,
        "already_complete": True,
        "videos": meta["videos"],
        "failed": len(meta["failed"]),
        "random_weights": bool(meta.get("random_weights")),
        "weights": _weights_line(meta),
    }


def format_summary(summary: dict[str, Any]) -> str:
    lines = [
        f"features: {summary['clips']} segmented clips, {summary['frames_per_segment']} frames per segment"
    ]
    for name, r in summary["stores"].items():
        state = "complete" if r["complete"] else f"{r['shards_pending']} shard(s) still pending"
        if r.get("already_complete"):
            state = "already complete (not rewritten; --force to rebuild)"
        counts = f", {r['videos']} videos, {r['failed']} failed" if "videos" in r else ""
        lines.append(
            f"  {name}: {state}; wrote {r['shards_written']} shard(s){counts} -> {r['path']}"
        )
        if r.get("weights"):
            lines.append(f"    weights: {r['weights']}")
    random = [n for n, r in summary["stores"].items() if r.get("random_weights")]
    if random:
        lines.append(RANDOM_BANNER.format(what=", ".join(random)))
    for kind, message in summary["errors"].items():
        lines.append(f"  {kind}: NOT extracted: {message}")
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "features", help="VGGish audio / VGG-19 visual feature stores from the segments"
    )
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument(
        "--features", default="audio,visual", help="comma list: audio, visual (default both)"
    )
    p.add_argument("--dtype", default="float16", choices=sorted(DTYPES), help="storage dtype")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="examples per forward pass (audio 256, visual 64)",
    )
    p.add_argument("--workers", type=int, default=2, help="frame-decoding processes (visual)")
    p.add_argument(
        "--vgg19-weights",
        default="torchvision",
        help="torchvision, keras, random, or a .pth/.h5 file",
    )
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--frame-size", type=int, default=224, help="visual frame side (224 = release)")
    p.add_argument(
        "--vggish-checkpoint", help="official TF checkpoint (path/URL) or a converted .pt file"
    )
    p.add_argument("--vggish-output", default="ave", choices=["ave", "raw", "pca"])
    p.add_argument(
        "--vggish-pca-params", help="vggish_pca_params.npz for --vggish-output pca (path/URL)"
    )
    p.add_argument(
        "--audio-maps", action="store_true", help="also store the VGGish pool5 map (audio_maps)"
    )
    p.add_argument(
        "--allow-random-weights", action="store_true", help="smoke runs without pretrained weights"
    )
    p.add_argument(
        "--no-download", action="store_true", help="never download weights (cache or local only)"
    )
    p.add_argument(
        "--num-shards", type=int, default=1, help="K independent processes fill the store"
    )
    p.add_argument("--shard-index", type=int, default=0, help="this process's part, 0..K-1")
    p.add_argument("--shard-size", type=int, default=256, help="videos per store shard")
    p.add_argument(
        "--merge", action="store_true", help="only build the index of a store filled by K processes"
    )
    p.add_argument("--force", action="store_true", help="rebuild stores even when complete")
    p.add_argument(
        "--engine",
        default="local",
        choices=["local", "ray"],
        help="local (this process) or ray (a Ray Data pipeline; pip install avel[ray])",
    )
    p.add_argument(
        "--address",
        help="Ray cluster address ('auto' = the running cluster; default: start a local Ray)",
    )
    p.add_argument(
        "--decode-cpus", type=float, default=1.0, help="Ray engine: CPUs per decode task"
    )
    p.add_argument(
        "--model-actors",
        type=int,
        help="Ray engine: model actors (default: the cluster's GPUs, or 1 without)",
    )
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    cfg = FeaturesConfig(
        data_dir=args.data_dir,
        features=tuple(k.strip() for k in args.features.split(",") if k.strip()),
        dtype=args.dtype,
        device=args.device,
        batch_size=args.batch_size,
        workers=args.workers,
        vgg19_weights=args.vgg19_weights,
        precision=args.precision,
        frame_size=args.frame_size,
        vggish_checkpoint=args.vggish_checkpoint,
        vggish_output=args.vggish_output,
        vggish_pca_params=args.vggish_pca_params,
        audio_maps=args.audio_maps,
        allow_random_weights=args.allow_random_weights,
        allow_download=not args.no_download,
        num_shards=args.num_shards,
        shard_index=args.shard_index,
        shard_size=args.shard_size,
        merge=args.merge,
        force=args.force,
        engine=args.engine,
        ray_address=args.address,
        decode_cpus=args.decode_cpus,
        model_actors=args.model_actors,
    )
    try:
        summary = run_features(cfg)
    except (FeaturesError, StoreError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    if summary["errors"]:
        return 1
    return 0
