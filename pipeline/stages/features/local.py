"""The local engine of the features stage: this process decodes, runs the networks and writes the
stores shard by shard (``avel features``, the default ``--engine local``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipeline.stages.features.core import (
    FeaturesConfig,
    audio_meta,
    audio_precision,
    build_vggish,
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
