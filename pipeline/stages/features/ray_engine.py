"""``avel features --engine ray``: the features stage as a Ray Data pipeline (``pip install avel[ray]``).

Same decode and model code as the local engine, same stores (``pipeline.core.store``), so everything
downstream is unaware of the engine::

    plan (the pending shards' clips, Parquet)  --read_parquet-->
    decode (CPU tasks, ``--decode-cpus`` each): visual = the planned frames at model resolution,
        uint8 (10 F, S, S, 3) (``pipeline.backbones.frames.decode_planned``); audio = the segments stage's
        (10, 96, 64) log-mel patches. Fixed-size tensors; a clip that fails yields zeros + its error
    model (an actor pool, ``--model-actors``, ``num_gpus=1`` per actor on CUDA; ``batch_size`` =
        ``--batch-size`` examples per forward pass, whole clips per Ray batch): VGG-19 pool5 mean per
        second / VGGish, exactly as the local engine
    driver: results stream back; a shard is written (atomically) as soon as all its clips arrived.

Resume, at clip granularity: only shards without a receipt are planned (a skip-finished filter
against the store), and within them every clip that came back is staged at once in
``<store>/.staging/<clip_id>.npy`` (or ``.json`` holding its error); a re-run takes staged clips from
there and plans only the rest, so a killed run redoes only the clips that were in flight. A shard's
staged files go once the shard is written. A finished store is not touched. Bad clips are stored as
failed with their reason, never fatal.
On a cluster, DATA_DIR (clips, segments, weights cache, stores) must be on a shared filesystem and
avel installed on every node.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.device import reuse_freed_memory
from pipeline.core.io import write_json, write_npy, write_parquet
from pipeline.core.manifest import CLIP_SECONDS
from pipeline.core.store import DTYPES, StoreWriter
from pipeline.stages.features.core import (
    AUDIO_MAP_ROW,
    AUDIO_ROW,
    FeaturesConfig,
    FeaturesError,
    audio_meta,
    build_vggish,
    c3d_backend,
    c3d_plans,
    embed_patches,
    finish_stores,
    frame_plans,
    open_stores,
    pending_shards,
    progress,
    store_names,
    vgg19_visual_backend,
    visual_meta,
    weights_line,
)


def require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise FeaturesError(
            f"--engine ray needs Ray Data ({exc}): pip install 'avel[ray]' (or use --engine local)"
        ) from exc
    return ray


def init_ray(address: str | None) -> Any:
    """Connect to ``address`` (e.g. "auto") or start a local Ray, unless already initialised."""
    ray = require_ray()
    if not ray.is_initialized():
        root = str(Path(__file__).resolve().parents[3])  # workers import this checkout's avel
        options: dict[str, Any] = {"runtime_env": {"env_vars": {"PYTHONPATH": root}}}
        if address is None:
            options["include_dashboard"] = False
        ray.init(address=address, log_to_driver=False, **options)
    ray.data.DataContext.get_current().enable_progress_bars = False
    return ray


def cluster_device(cfg: FeaturesConfig, ray: Any) -> str:
    """The model actors' device: cfg.device, with "auto" = cuda when the cluster has GPUs."""
    if cfg.device == "auto":
        return "cuda" if ray.cluster_resources().get("GPU", 0) > 0 else "cpu"
    return cfg.device


# ----------------------------------------------------------------------------- Ray stages


def decode_visual(row: dict[str, Any], size: int, per_second: int) -> dict[str, Any]:
    """Ray map: one clip -> its planned frames (10 F, size, size, 3) uint8, or zeros + error."""
    from pipeline.backbones.frames import decode_planned

    frames = np.zeros((CLIP_SECONDS * per_second, size, size, 3), np.uint8)
    error = ""
    try:
        plan = np.asarray(row["plan"], dtype=np.int64).reshape(CLIP_SECONDS, per_second)
        unique, inverse = decode_planned(row["path"], plan, size)
        frames = np.ascontiguousarray(unique[inverse])
    except Exception as exc:  # noqa: BLE001 - one bad clip is recorded, never fatal
        error = f"{type(exc).__name__}: {exc}"
    return {"clip_id": row["clip_id"], "shard": row["shard"], "frames": frames, "error": error}


def decode_audio(row: dict[str, Any]) -> dict[str, Any]:
    """Ray map: one clip -> its (10, 96, 64) log-mel patches, or zeros + error."""
    patches, error = np.zeros((CLIP_SECONDS, 96, 64), np.float32), ""
    try:
        loaded = np.load(row["path"])
        if loaded.shape != patches.shape:
            raise ValueError(f"patches of shape {loaded.shape}, expected {patches.shape}")
        patches = loaded.astype(np.float32)
    except Exception as exc:  # noqa: BLE001
        error = f"patches unreadable: {type(exc).__name__}: {exc}"
    return {"clip_id": row["clip_id"], "shard": row["shard"], "patches": patches, "error": error}


class VisualModel:
    """Ray actor: VGG-19 pool5, per-second mean of the planned frames (as ``extract_visual``)."""

    def __init__(self, cfg: FeaturesConfig, device: str) -> None:
        import torch

        reuse_freed_memory()
        self.device = torch.device(device)
        ext = vgg19_visual_backend(cfg, device=device)
        self.weights, self.precision = ext.weights, ext.precision
        self.model = ext.model.to(self.device, memory_format=torch.channels_last).eval()
        self.batch = cfg.batch("visual")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        frames, errors = batch["frames"], batch["error"]
        n, per_clip = frames.shape[:2]
        per_second = per_clip // CLIP_SECONDS
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        ok = [i for i in range(n) if not errors[i]]
        out = None
        with torch.inference_mode():
            x_all = torch.from_numpy(np.ascontiguousarray(frames[ok])).reshape(
                -1, *frames.shape[2:]
            )
            pool = []
            for start in range(0, len(x_all), self.batch):
                x = x_all[start : start + self.batch].to(self.device)
                x = self.weights.preprocess(x).contiguous(memory_format=torch.channels_last)
                with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
                    pool.append(self.model(x).float())
            pooled = torch.cat(pool) if pool else None
            for k, i in enumerate(ok):
                y = pooled[k * per_clip : (k + 1) * per_clip]
                seconds = torch.arange(per_clip, device=self.device) // per_second
                sums = torch.zeros(
                    (CLIP_SECONDS, *y.shape[1:]), dtype=torch.float32, device=self.device
                )
                sums.index_add_(0, seconds, y)
                maps = (sums / per_second).permute(0, 2, 3, 1).contiguous().cpu().numpy()
                if out is None:
                    out = np.zeros((n, *maps.shape), np.float32)
                out[i] = maps
        if out is None:  # every clip of the batch failed: the shape only has to be consistent
            side = frames.shape[2] // 32
            out = np.zeros((n, CLIP_SECONDS, side, side, 512), np.float32)
        return {"clip_id": batch["clip_id"], "shard": batch["shard"], "value": out, "error": errors}


class AudioModel:
    """Ray actor: VGGish embeddings (and pool5 maps) of the patches (as the local engine)."""

    def __init__(self, cfg: FeaturesConfig, device: str) -> None:
        reuse_freed_memory()
        self.cfg, self.device = cfg, device
        self.model = build_vggish(cfg).to(device).eval()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        patches, errors = batch["patches"], batch["error"]
        n = len(patches)
        ok = [i for i in range(n) if not errors[i]]
        stacked = patches[ok].reshape(-1, 96, 64) if ok else np.zeros((0, 96, 64), np.float32)
        cfg = self.cfg
        emb, pool5 = embed_patches(
            self.model, stacked, cfg.vggish_output, cfg.audio_maps, cfg.batch("audio"), self.device
        )
        value = np.zeros((n, *AUDIO_ROW), np.float32)
        value[ok] = emb.reshape(len(ok), *AUDIO_ROW)
        result = {
            "clip_id": batch["clip_id"],
            "shard": batch["shard"],
            "value": value,
            "error": errors,
        }
        if pool5 is not None:
            maps = np.zeros((n, *AUDIO_MAP_ROW), np.float32)
            maps[ok] = pool5.reshape(len(ok), *AUDIO_MAP_ROW)
            result["maps"] = maps
        return result


# ----------------------------------------------------------------------------- driver


def _run_pipeline(
    cfg: FeaturesConfig,
    ray: Any,
    plan: pd.DataFrame,
    decode: Any,
    decode_kwargs: dict[str, Any],
    model_cls: type,
    device: str,
    clips_per_batch: int,
    kind: str,
    model_kwargs: dict[str, Any] | None = None,
):
    """Run read -> decode -> model; yield output rows (dicts) as they arrive."""
    work = cfg.layout.ray_staging
    plan_path = work / f"plan-{kind}-{cfg.shard_index}of{cfg.num_shards}-{os.getpid()}.parquet"
    write_parquet(plan, plan_path)
    cuda = device.startswith("cuda")
    actors = cfg.model_actors or (max(1, int(ray.cluster_resources().get("GPU", 0))) if cuda else 1)
    ds = ray.data.read_parquet(str(plan_path))
    ds = ds.map(decode, fn_kwargs=decode_kwargs, num_cpus=cfg.decode_cpus)
    ds = ds.map_batches(
        model_cls,
        fn_constructor_kwargs={
            "cfg": dataclasses.replace(cfg, visual_backend=None),
            "device": device,
            **(model_kwargs or {}),
        },
        batch_size=clips_per_batch,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_gpus=1 if cuda else 0,
        num_cpus=0 if cuda else 1,
    )
    try:
        yield from ds.iter_rows()
    finally:
        plan_path.unlink(missing_ok=True)


def staging_path(writer: StoreWriter, clip_id: str, error: bool = False) -> Path:
    """Where one clip's result waits for its shard: ``<store>/.staging/<clip_id>.npy|.json``."""
    return writer.root / ".staging" / f"{clip_id}.{'json' if error else 'npy'}"


def _stage(writer: StoreWriter, clip_id: str, value: np.ndarray | str) -> None:
    if isinstance(value, str):
        write_json({"error": value}, staging_path(writer, clip_id, error=True))
    else:
        write_npy(np.asarray(value).astype(DTYPES[writer.dtype]), staging_path(writer, clip_id))


def _staged(writer: StoreWriter, clip_id: str) -> np.ndarray | str | None:
    """A staged result, or None when there is none (or it is unreadable: the clip is redone)."""
    import json

    try:
        if staging_path(writer, clip_id, error=True).is_file():
            return str(json.loads(staging_path(writer, clip_id, error=True).read_text())["error"])
        if staging_path(writer, clip_id).is_file():
            value = np.load(staging_path(writer, clip_id))
            return value if value.shape == writer.row_shape else None
    except (OSError, ValueError, KeyError):
        return None
    return None


def _unstage(writer: StoreWriter, clip_ids: list[str]) -> None:
    for clip_id in clip_ids:
        staging_path(writer, clip_id).unlink(missing_ok=True)
        staging_path(writer, clip_id, error=True).unlink(missing_ok=True)


class _Shards:
    """Results per pending shard (staged ones preloaded); writes a shard once all its clips are in."""

    def __init__(self, writers: dict[str, StoreWriter], todo: list[int]) -> None:
        self.writers = {n: w for n, w in writers.items()}
        first = next(iter(writers.values()))
        self.expected = {s: first.shard_ids(s) for s in todo}
        self.got: dict[int, dict[str, dict[str, Any]]] = {s: {} for s in todo}
        self.written = dict.fromkeys(writers, 0)
        for shard, ids in self.expected.items():
            need = [w for w in writers.values() if not w.is_done(shard)]
            for clip in ids:
                values = {n: _staged(w, clip) for n, w in writers.items() if w in need}
                if values and all(v is not None for v in values.values()):
                    self.got[shard][clip] = values
        for shard in list(self.got):
            self._flush(shard)

    def to_compute(self) -> list[tuple[int, str]]:
        return [(s, c) for s in self.got for c in self.expected[s] if c not in self.got[s]]

    def add(self, shard: int, clip: str, values: dict[str, np.ndarray | str]) -> None:
        for name, value in values.items():
            if not self.writers[name].is_done(shard):
                _stage(self.writers[name], clip, value)
        self.got[shard][clip] = values
        self._flush(shard)

    def _flush(self, shard: int) -> None:
        if len(self.got[shard]) < len(self.expected[shard]):
            return
        results = self.got.pop(shard)
        for name, writer in self.writers.items():
            if not writer.is_done(shard):
                writer.write_shard(shard, {c: v[name] for c, v in results.items()})
                self.written[name] += 1
            _unstage(writer, self.expected[shard])


def _collect(rows, shards: _Shards, fields: dict[str, str], bar) -> dict[str, int]:
    """Stage each result as it arrives; write every shard whose clips are all in."""
    for row in rows:
        error = str(row["error"])
        values = {n: error or np.asarray(row[f]) for n, f in fields.items()}
        shards.add(int(row["shard"]), str(row["clip_id"]), values)
        bar.update(1)
    if shards.got:
        raise FeaturesError(
            f"the Ray pipeline ended without results for shard(s) {sorted(shards.got)[:5]}"
        )
    return shards.written


def run_visual_ray(
    cfg: FeaturesConfig, ids: list[str], segments: pd.DataFrame, frames_per_segment: int
) -> dict[str, Any]:
    """Fill the visual stores with VGG-19 through a Ray Data pipeline."""
    if cfg.visual_backend is not None:
        raise FeaturesError(
            "--engine ray runs the VGG-19 extractor only (no custom visual backend)"
        )
    ray = init_ray(cfg.ray_address)
    device = cluster_device(cfg, ray)
    extractor = vgg19_visual_backend(cfg, device=device)  # checks the weights before launching
    meta = visual_meta(extractor, cfg, frames_per_segment, engine="ray")
    writers = open_stores(cfg, "visual", ids, meta)
    shards = _Shards(writers, pending_shards(writers, cfg))
    work = shards.to_compute()
    if work:
        plans = frame_plans(segments)
        records = [
            {
                "clip_id": c,
                "shard": s,
                "path": str(cfg.layout.clip(c)),
                "plan": plans[c].reshape(-1),
            }
            for s, c in work
        ]
        per_clip = CLIP_SECONDS * frames_per_segment
        clips_per_batch = max(1, cfg.batch("visual") // per_clip)
        stream = _run_pipeline(
            cfg,
            ray,
            pd.DataFrame(records),
            decode_visual,
            {"size": cfg.frame_size, "per_second": frames_per_segment},
            VisualModel,
            device,
            clips_per_batch,
            "visual",
        )

        def with_vec(rows_in):
            for row in rows_in:
                value = np.asarray(row["value"])
                yield dict(row, vec=value.mean(axis=(1, 2)))

        with progress(len(records), cfg.progress, "visual (ray)") as bar:
            _collect(with_vec(stream), shards, {"visual": "value", "visual_vec": "vec"}, bar)
    return finish_stores(
        writers,
        shards.written,
        bool(meta["random_weights"]),
        weights_line(meta),
        clips_computed=len(work),
    )


def run_audio_ray(
    cfg: FeaturesConfig, ids: list[str], frames_per_segment: int, names: list[str] | None = None
) -> dict[str, Any]:
    """Fill the audio stores (``names``, default all of them) through a Ray Data pipeline."""
    names = store_names(cfg, "audio") if names is None else names
    ray = init_ray(cfg.ray_address)
    device = cluster_device(cfg, ray)
    model = build_vggish(cfg)  # checks the weights before launching
    meta = dict(audio_meta(model, cfg, frames_per_segment, device), engine="ray")
    writers = open_stores(cfg, "audio", ids, meta, names)
    shards = _Shards(writers, pending_shards(writers, cfg))
    work = shards.to_compute()
    if work:
        records = [{"clip_id": c, "shard": s, "path": str(cfg.layout.patches(c))} for s, c in work]
        stream = _run_pipeline(
            cfg,
            ray,
            pd.DataFrame(records),
            decode_audio,
            {},
            AudioModel,
            device,
            max(1, cfg.batch("audio") // CLIP_SECONDS),
            "audio",
        )
        fields = {"audio": "value", "audio_maps": "maps"}
        with progress(len(records), cfg.progress, "audio (ray)") as bar:
            _collect(stream, shards, {n: fields[n] for n in names}, bar)
    return finish_stores(
        writers,
        shards.written,
        meta["random_weights"],
        model.weights_info.describe(),
        clips_computed=len(work),
    )


# ----------------------------------------------------------------------------- C3D


def decode_visual_c3d(
    row: dict[str, Any], vgg_size: int, per_second: int, c3d_size: tuple[int, int]
) -> dict[str, Any]:
    """Ray map: one clip decoded once -> its VGG-19 frames (10 F, S, S, 3) (``vgg_size`` 0: none)
    and its C3D frames (160, H, W, 3), uint8; zeros + error for a clip that fails."""
    from pipeline.backbones.c3d import CLIP_FRAMES
    from pipeline.backbones.frames import decode_planned_sizes

    w, h = c3d_size
    n3 = CLIP_SECONDS * CLIP_FRAMES
    side = vgg_size or 1
    frames = np.zeros((CLIP_SECONDS * per_second if vgg_size else 1, side, side, 3), np.uint8)
    clips = np.zeros((n3, h, w, 3), np.uint8)
    error = ""
    try:
        plan3 = np.asarray(row["plan3"], dtype=np.int64).reshape(-1)
        if vgg_size:
            plan = np.asarray(row["plan"], dtype=np.int64).reshape(-1)
            (vgg, c3d), inverse = decode_planned_sizes(
                row["path"], np.concatenate([plan, plan3]), [(vgg_size, vgg_size), c3d_size]
            )
            frames = np.ascontiguousarray(vgg[inverse[: len(plan)]])
            clips = np.ascontiguousarray(c3d[inverse[len(plan) :]])
        else:
            (c3d,), inverse = decode_planned_sizes(row["path"], plan3, [c3d_size])
            clips = np.ascontiguousarray(c3d[inverse])
    except Exception as exc:  # noqa: BLE001 - one bad clip is recorded, never fatal
        error = f"{type(exc).__name__}: {exc}"
    return {
        "clip_id": row["clip_id"],
        "shard": row["shard"],
        "frames": frames,
        "clips": clips,
        "error": error,
    }


class C3DModel:
    """Ray actor: C3D pool5 per second (and VGG-19 on the same decoded clip), as the local engine."""

    def __init__(self, cfg: FeaturesConfig, device: str, with_vgg: bool = False) -> None:
        import torch

        reuse_freed_memory()
        self.device = torch.device(device)
        self.cfg = cfg
        c3d = c3d_backend(cfg, device=device)
        model = c3d.model.to(self.device, memory_format=torch.channels_last_3d).eval()
        self.c3d = (model, c3d.weights)
        self.precision = c3d.precision
        self.vgg, self.vgg_precision = None, "fp32"
        if with_vgg:
            ext = vgg19_visual_backend(cfg, device=device)
            model = ext.model.to(self.device, memory_format=torch.channels_last).eval()
            self.vgg, self.vgg_precision = (model, ext.weights), ext.precision

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from pipeline.backbones.c3d import clip_features, pool5_side

        errors = batch["error"]
        n = len(errors)
        side = pool5_side(self.cfg.c3d_crop)
        maps = np.zeros((n, CLIP_SECONDS, side, side, 512), np.float32)
        vside, channels = (self.cfg.frame_size // 32, 512) if self.vgg is not None else (1, 1)
        visual = np.zeros((n, CLIP_SECONDS, vside, vside, channels), np.float32)
        per_second = batch["frames"].shape[1] // CLIP_SECONDS
        for i in range(n):
            if errors[i]:
                continue
            vgg_frames = (
                torch.from_numpy(np.ascontiguousarray(batch["frames"][i])).to(self.device)
                if self.vgg is not None
                else None
            )
            clips = torch.from_numpy(np.ascontiguousarray(batch["clips"][i])).to(self.device)
            out = clip_features(
                vgg_frames,
                clips,
                per_second,
                self.c3d,
                self.vgg,
                self.precision,
                self.vgg_precision,
                self.cfg.batch("visual"),
                self.cfg.batch("c3d"),
            )
            maps[i] = out["c3d_maps"]
            if "visual" in out:
                visual[i] = out["visual"]
        return {
            "clip_id": batch["clip_id"],
            "shard": batch["shard"],
            "c3d_maps": maps,
            "visual": visual,
            "error": errors,
        }


def run_c3d_ray(
    cfg: FeaturesConfig,
    ids: list[str],
    segments: pd.DataFrame,
    frames_per_segment: int,
    names: list[str],
) -> dict[str, Any]:
    """Fill the C3D stores in ``names`` (and the VGG-19 stores in ``names``, from the same decoded
    clips) through a Ray Data pipeline."""
    if cfg.visual_backend is not None:
        raise FeaturesError("--engine ray runs the VGG-19 and C3D extractors only")
    ray = init_ray(cfg.ray_address)
    device = cluster_device(cfg, ray)
    c3d = c3d_backend(cfg, device=device)  # checks the weights before launching
    vgg_names = [n for n in names if not n.startswith("c3d")]
    c3d_names = [n for n in names if n.startswith("c3d")]
    writers: dict[str, StoreWriter] = {}
    metas = {}
    if vgg_names:
        ext = vgg19_visual_backend(cfg, device=device)
        metas["visual"] = visual_meta(
            ext, cfg, frames_per_segment, engine="ray", decoded_with="c3d"
        )
        writers.update(open_stores(cfg, "visual", ids, metas["visual"], vgg_names))
    metas["c3d"] = visual_meta(c3d, cfg, frames_per_segment, engine="ray")
    if c3d_names:
        writers.update(open_stores(cfg, "c3d", ids, metas["c3d"], c3d_names))
    shards = _Shards(writers, pending_shards(writers, cfg))
    work = shards.to_compute()
    if work:
        plans, plans3 = frame_plans(segments), c3d_plans(segments)
        records = [
            {
                "clip_id": c,
                "shard": s,
                "path": str(cfg.layout.clip(c)),
                "plan": plans[c].reshape(-1),
                "plan3": plans3[c].reshape(-1),
            }
            for s, c in work
        ]
        stream = _run_pipeline(
            cfg,
            ray,
            pd.DataFrame(records),
            decode_visual_c3d,
            {
                "vgg_size": cfg.frame_size if vgg_names else 0,
                "per_second": frames_per_segment,
                "c3d_size": c3d.weights.resize,
            },
            C3DModel,
            device,
            max(1, cfg.batch("c3d") // 2),
            "c3d",
            {"with_vgg": bool(vgg_names)},
        )

        def with_vectors(rows_in):
            for row in rows_in:
                maps, visual = np.asarray(row["c3d_maps"]), np.asarray(row["visual"])
                yield dict(row, c3d=maps.mean(axis=(1, 2)), visual_vec=visual.mean(axis=(1, 2)))

        fields = {n: n for n in names}
        with progress(len(records), cfg.progress, "c3d (ray)") as bar:
            _collect(with_vectors(stream), shards, fields, bar)
    reports = {}
    for kind, group in (("visual", vgg_names), ("c3d", c3d_names)):
        if group:
            reports.update(
                finish_stores(
                    {n: writers[n] for n in group},
                    {n: shards.written[n] for n in group},
                    bool(metas[kind]["random_weights"]),
                    weights_line(metas[kind]),
                    clips_computed=len(work),
                )
            )
    return reports
