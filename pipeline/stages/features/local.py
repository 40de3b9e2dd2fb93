"""The local engine of the features stage: this process decodes, runs the networks and writes the
stores shard by shard (``avel features``, the default ``--engine local``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipeline.stages.features.core import (
    FeaturesConfig,
    VGG19Extractor,
    audio_meta,
    audio_precision,
    build_vggish,
    c3d_backend,
    c3d_plans,
    embed_patches,
    features_device,
    finish_stores,
    frame_plans,
    load_visual_backend,
    open_stores,
    pending_shards,
    progress,
    store_names,
    visual_meta,
    weights_line,
)
from pipeline.stages.segments import load_patches


def run_audio(
    cfg: FeaturesConfig, ids: list[str], frames_per_segment: int, names: list[str] | None = None
) -> dict[str, Any]:
    """Fill the audio stores (``names``, default all of them) with VGGish on the stored patches."""
    names = store_names(cfg, "audio") if names is None else names
    device = features_device(cfg)
    model = build_vggish(cfg).to(device).eval()
    precision, probe = audio_precision(model, cfg, device)
    meta = audio_meta(model, cfg, frames_per_segment, device, precision, probe)
    writers = open_stores(cfg, "audio", ids, meta, names)
    todo = pending_shards(writers, cfg)
    written = dict.fromkeys(names, 0)
    first = writers[names[0]]
    with progress(sum(len(first.shard_ids(s)) for s in todo), cfg.progress, "audio") as bar:
        for shard in todo:
            shard_ids = first.shard_ids(shard)
            loaded, errors = [], {}
            for clip_id in shard_ids:
                try:
                    loaded.append((clip_id, load_patches(cfg.data_dir, clip_id)))
                except (OSError, ValueError) as exc:
                    errors[clip_id] = f"patches unreadable: {exc}"
            need_maps = "audio_maps" in writers and not writers["audio_maps"].is_done(shard)
            if not need_maps and ("audio" not in writers or writers["audio"].is_done(shard)):
                continue
            stacked = (
                np.concatenate([p for _, p in loaded])
                if loaded
                else np.zeros((0, 96, 64), np.float32)
            )
            emb, pool5 = embed_patches(
                model,
                stacked,
                cfg.vggish_output,
                need_maps,
                cfg.batch("audio", device),
                device,
                precision,
            )
            for name, values in (("audio", emb), ("audio_maps", pool5)):
                writer = writers.get(name)
                if writer is None or writer.is_done(shard) or values is None:
                    continue
                results: dict[str, np.ndarray | str] = dict(errors)
                seconds = writer.row_shape[0]
                for k, (clip_id, _) in enumerate(loaded):
                    results[clip_id] = values[seconds * k : seconds * (k + 1)]
                writer.write_shard(shard, results)
                written[name] += 1
            bar.update(len(shard_ids))
    return finish_stores(
        writers,
        written,
        meta["random_weights"],
        model.weights_info.describe(),
        precision=precision,
    )


def run_visual(
    cfg: FeaturesConfig, ids: list[str], segments: pd.DataFrame, frames_per_segment: int
) -> dict[str, Any]:
    """Fill the visual stores with the configured visual extractor."""
    extractor = load_visual_backend(cfg)
    meta = visual_meta(extractor, cfg, frames_per_segment)
    writers = open_stores(cfg, "visual", ids, meta)
    plans = frame_plans(segments)
    todo = pending_shards(writers, cfg)
    written = dict.fromkeys(writers, 0)
    extracted = 0
    first = writers["visual"]
    with progress(sum(len(first.shard_ids(s)) for s in todo), cfg.progress, "visual") as bar:
        for shard in todo:
            shard_ids = first.shard_ids(shard)
            items = [(c, cfg.layout.clip(c), plans[c]) for c in shard_ids]
            maps: dict[str, np.ndarray | str] = {}
            for clip_id, value in extractor(items):
                maps[clip_id] = value
                extracted += 1
                bar.update(1)
            vecs = {
                c: v if isinstance(v, str) else np.asarray(v).mean(axis=(1, 2))
                for c, v in maps.items()
            }
            for name, results in (("visual", maps), ("visual_vec", vecs)):
                if not writers[name].is_done(shard):
                    writers[name].write_shard(shard, results)
                    written[name] += 1
    extra = {"precision": meta.get("precision")}
    stats = getattr(extractor, "stats", None)
    if stats and stats.get("total_s"):
        extra["speed"] = speed_line(stats, extracted)
    return finish_stores(
        writers, written, bool(meta["random_weights"]), weights_line(meta), **extra
    )


def speed_line(stats: dict[str, float], clips: int) -> str:
    """One line: clips/s and whether decoding or the network bound the visual extraction."""
    wait = stats["wait_s"] / stats["total_s"]
    rate = f"{clips / stats['total_s']:.2f} clips/s" if clips else "no clip extracted"
    if wait > 0.5:
        return (
            f"{rate}; waited for decoded frames {100 * wait:.0f}% of the time: decoding, not the "
            "network, bounds this run (more --workers, or fewer frames per segment)"
        )
    return f"{rate}; waited for decoded frames {100 * wait:.0f}% of the time: the network bounds it"


def run_visual_c3d(
    cfg: FeaturesConfig,
    ids: list[str],
    segments: pd.DataFrame,
    frames_per_segment: int,
    names: list[str],
) -> dict[str, Any]:
    """Fill the C3D stores in ``names`` and, in the same decoding pass, the VGG-19 stores in ``names``.

    Each clip is decoded once (one ffmpeg process for both frame sizes). A custom visual backend
    (``cfg.visual_backend``) cannot share the decoding: its stores are then filled by
    :func:`run_visual` and C3D decodes on its own.
    """
    from pipeline.backbones.c3d import extract_c3d

    c3d_names = [n for n in names if n.startswith("c3d")]
    vgg_names = [n for n in names if not n.startswith("c3d")]
    reports: dict[str, Any] = {}
    extractor = None
    if vgg_names:
        extractor = load_visual_backend(cfg)
        if not isinstance(extractor, VGG19Extractor):
            reports.update(run_visual(cfg, ids, segments, frames_per_segment))
            vgg_names, extractor = [], None
    c3d = c3d_backend(cfg) if c3d_names else None
    writers = {}
    if extractor is not None:
        meta = visual_meta(extractor, cfg, frames_per_segment, decoded_with="c3d")
        writers.update(open_stores(cfg, "visual", ids, meta, vgg_names))
    if c3d is not None:
        meta3 = visual_meta(
            c3d, cfg, frames_per_segment, decoded_with="visual" if vgg_names else ""
        )
        writers.update(open_stores(cfg, "c3d", ids, meta3, c3d_names))
    plans, plans3 = frame_plans(segments), c3d_plans(segments)
    todo = pending_shards(writers, cfg)
    written = dict.fromkeys(writers, 0)
    first = next(iter(writers.values()))
    desc = "+".join(["visual"] * bool(vgg_names) + ["c3d"] * bool(c3d_names))
    with progress(sum(len(first.shard_ids(s)) for s in todo), cfg.progress, desc) as bar:
        for shard in todo:
            need = {n for n, w in writers.items() if not w.is_done(shard)}
            want_vgg = extractor is not None and bool(need & {"visual", "visual_vec"})
            want_c3d = c3d is not None and bool(need & {"c3d", "c3d_maps"})
            shard_ids = first.shard_ids(shard)
            items = [(c, cfg.layout.clip(c), plans[c], plans3[c]) for c in shard_ids]
            results: dict[str, dict[str, np.ndarray | str]] = {n: {} for n in writers}
            stream = extract_c3d(
                items,
                (c3d.model, c3d.weights) if want_c3d else None,
                (extractor.model, extractor.weights) if want_vgg else None,
                device=str(c3d.device if c3d else extractor.device),
                precision=c3d.precision if c3d else "fp32",
                vgg_precision=extractor.precision if extractor else None,
                batch_size=cfg.batch("visual", c3d.device if c3d else extractor.device),
                c3d_batch=cfg.batch("c3d"),
                num_workers=cfg.decode_workers(c3d.device if c3d else extractor.device),
                vgg_size=cfg.frame_size,
            )
            for clip_id, value in stream:
                for name in writers:
                    if isinstance(value, str):
                        results[name][clip_id] = value
                    elif name == "visual":
                        results[name][clip_id] = value["visual"]
                    elif name == "visual_vec":
                        results[name][clip_id] = value["visual"].mean(axis=(1, 2))
                    elif name == "c3d_maps":
                        results[name][clip_id] = value["c3d_maps"]
                    elif name == "c3d":
                        results[name][clip_id] = value["c3d_maps"].mean(axis=(1, 2))
                bar.update(1)
            for name in need:
                writers[name].write_shard(shard, results[name])
                written[name] += 1
    by_kind = {"c3d": c3d, "visual": extractor}
    for kind, ext in by_kind.items():
        group = {n: w for n, w in writers.items() if n.startswith("c3d") == (kind == "c3d")}
        if ext is not None and group:
            reports.update(
                finish_stores(
                    group,
                    {n: written[n] for n in group},
                    bool(ext.meta["random_weights"]),
                    weights_line(ext.meta),
                )
            )
    return reports
