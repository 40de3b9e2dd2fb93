"""``avel zero-shot``: training-free localization from the ``clip`` and ``clap`` stores and the text
towers of the same CLIP and CLAP models (the open-vocabulary AVE setting).

Each class name of the manifest's classes (background left out) becomes a prompt per modality
(``--clip-prompt "a photo of {}"``, ``--clap-prompt "the sound of {}"``), embedded by CLIP's and
CLAP's text towers (``get_text_features``). The network (``models.networks.zero_shot``) holds these
embeddings; per second it takes each modality's closest class (cosine) and calls an event where both
agree, background otherwise. The run folder has the layout of a trained run (``config.json``,
``best.pt``, ``metrics.json``, ``summary.json``), so ``avel evaluate --run`` and the tables read it.

The text towers are those of the weights the stores were extracted with (their ``meta.json``),
unless ``--clip-weights`` / ``--clap-weights`` name others, which must have the same sha256.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from models.training import runs
from pipeline.core.io import write_json

INSTALL_HINT = 'pip install -e ".[foundation]"'


@dataclass
class ZeroShotConfig:
    data_dir: Path = Path("data")
    run_dir: Path = Path("runs")
    name: str = "zero-shot"
    visual_store: str = "clip"
    audio_store: str = "clap"
    clip_weights: str | None = None  # default: the weights the visual store records
    clap_weights: str | None = None  # default: the weights the audio store records
    clip_prompt: str = "a photo of {}"
    clap_prompt: str = "the sound of {}"
    allow_download: bool = True
    device: str = "auto"
    batch_size: int = 64
    force: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def seed_dir(self) -> Path:
        return Path(self.run_dir) / self.name / "seed-0"

    def fingerprint(self) -> dict[str, Any]:
        """The settings and the identity of both stores: a run on stores rebuilt since is redone."""
        from pipeline.core.identity import store_identity_sha256
        from pipeline.core.layout import DataLayout

        keys = ("data_dir", "visual_store", "audio_store", "clip_prompt", "clap_prompt")
        layout = DataLayout(self.data_dir)
        stores = {
            name: store_identity_sha256(layout.store(name))
            for name in (self.visual_store, self.audio_store)
        }
        return {**{k: str(getattr(self, k)) for k in keys}, "stores": stores}


def prompts(class_names: list[str], template: str) -> list[str]:
    """One prompt per event class (every class but the last, background)."""
    if "{}" not in template:
        raise ValueError(f"prompt template {template!r} has no {{}} for the class name")
    return [template.format(name) for name in class_names[:-1]]


def store_weights(store: Any, asked: str | None) -> tuple[str, str, bool]:
    """(where to load the model, the store's weights sha256, whether they are random)."""
    weights = store.meta.get("weights") or {}
    record = store.meta.get("weights_record") or {}
    sha = str(weights.get("sha256"))
    if asked is not None:
        return asked, sha, sha == "random"
    folder = record.get("folder")
    source = folder if folder and Path(folder).is_dir() else weights.get("source")
    if not source:
        raise ValueError(f"{store.root}: its meta.json names no weights; pass the model's weights")
    return str(source), sha, sha == "random"


def byte_tokens(texts: list[str], text_config: Any) -> dict[str, Any]:
    """Token IDs for a random model that has no tokenizer: each UTF-8 byte b becomes ID 3 + b,
    between the config's begin and end tokens, padded (its embeddings mean nothing, as its weights)."""
    import torch

    limit = int(text_config.max_position_embeddings)
    rows = [
        [text_config.bos_token_id, *(3 + b for b in t.encode())][: limit - 1]
        + [text_config.eos_token_id]
        for t in texts
    ]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), int(text_config.pad_token_id), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def text_embeddings(
    model_class: Any,
    source: str,
    sha: str,
    random: bool,
    texts: list[str],
    allow_download: bool,
    small_config: Any,
) -> Any:
    """(len(texts), D) ``get_text_features`` of the model at ``source``, checked against ``sha``.
    A store of random weights gets the same random model back (same config, same seed; the
    backbone's ``small_config`` when the model's config was not at hand) and, without a tokenizer,
    :func:`byte_tokens`."""
    import torch
    from transformers import AutoTokenizer

    from pipeline.backbones.hf_weights import load_model

    model, weights, folder = load_model(source, model_class, allow_download, random, small_config)
    if weights.sha256 != sha:
        raise ValueError(
            f"{source}: weights sha256 {weights.sha256[:12]}, but the store was extracted with "
            f"{sha[:12]}; pass the same weights (or re-extract the store)"
        )
    tokenizer = None
    if folder is not None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
        except (OSError, ValueError):
            if not random:
                raise
    if tokenizer is not None:
        tokens = tokenizer(texts, padding=True, return_tensors="pt")
    elif random:
        tokens = byte_tokens(texts, model.config.text_config)
    else:
        raise ValueError(f"{source}: no tokenizer at hand (a save_pretrained folder has one)")
    with torch.inference_mode():
        out = model.get_text_features(**tokens)
    return getattr(out, "pooler_output", out).float()


def build_zero_shot(cfg: ZeroShotConfig) -> tuple[Any, dict[str, Any]]:
    """The zero-shot network of ``cfg`` and a record of its prompts and weights."""
    from models.networks import build_model
    from pipeline.backbones.hf_weights import require_transformers
    from pipeline.core.manifest import load_classes
    from pipeline.core.store import FeatureStore

    require_transformers()
    from transformers import ClapModel, CLIPModel

    from pipeline.backbones import clap_backbone, clip_backbone

    classes = load_classes(cfg.data_dir)
    visual = FeatureStore.open(cfg.data_dir, cfg.visual_store)
    audio = FeatureStore.open(cfg.data_dir, cfg.audio_store)
    texts_v, texts_a = prompts(classes, cfg.clip_prompt), prompts(classes, cfg.clap_prompt)
    record: dict[str, Any] = {"classes": classes, "clip_prompts": texts_v, "clap_prompts": texts_a}
    embeddings = []
    for store, model_class, asked, texts, key, small in (
        (visual, CLIPModel, cfg.clip_weights, texts_v, "clip", clip_backbone.small_config),
        (audio, ClapModel, cfg.clap_weights, texts_a, "clap", clap_backbone.small_config),
    ):
        source, sha, random = store_weights(store, asked)
        emb = text_embeddings(model_class, source, sha, random, texts, cfg.allow_download, small)
        if emb.shape[1] != store.row_shape[-1]:
            raise ValueError(
                f"{source}: text embeddings of width {emb.shape[1]}, store {store.root} rows "
                f"{store.row_shape}: not the same model"
            )
        embeddings.append(emb)
        record[f"{key}_weights"] = {"source": source, "sha256": sha, "random": random}
    net = build_model(
        "zero_shot",
        num_classes=len(classes),
        visual_dim=int(embeddings[0].shape[1]),
        audio_dim=int(embeddings[1].shape[1]),
        visual_store=cfg.visual_store,
        audio_store=cfg.audio_store,
    )
    net.text_visual.copy_(embeddings[0])
    net.text_audio.copy_(embeddings[1])
    return net.eval(), record


def run_zero_shot(cfg: ZeroShotConfig) -> dict[str, Any]:
    """Write the zero-shot run folder (reused when finished with the same settings)."""
    from models.data.ave import AVEDataset
    from models.evaluation.metrics import reference_rows
    from models.networks import count_parameters
    from models.training.checkpoint import save_checkpoint
    from models.training.localization import evaluate
    from pipeline.core.device import resolve_device
    from pipeline.core.manifest import load_manifest
    from pipeline.core.provenance import provenance

    out = cfg.seed_dir()
    fingerprint = cfg.fingerprint()
    if not cfg.force and (done := runs.finished(out, fingerprint)) is not None:
        return {**done, "reused": True, "run": str(out)}
    started = time.time()
    device = resolve_device(cfg.device)
    net, record = build_zero_shot(cfg)
    net = net.to(device)
    config = {
        "train": {**asdict(cfg), "mode": "zero-shot", "model": "zero_shot", "seed": 0},
        "fingerprint": fingerprint,
        "model": net.config,
        "parameters": count_parameters(net),
        "zero_shot": record,
        "provenance": provenance(device, ffmpeg=False),
    }
    config["train"] = {k: str(v) if isinstance(v, Path) else v for k, v in config["train"].items()}
    runs.start_seed(out, config)
    save_checkpoint(net, out / runs.BEST, epoch=0, seed=0)
    present = set(load_manifest(cfg.data_dir)["split"].dropna())
    if "test" not in present:
        raise ValueError(f"{cfg.data_dir}/manifest.parquet: no test split to evaluate on")
    splits = {}
    for split in ("train", "val", "test"):
        if split in present:
            dataset = AVEDataset(cfg.data_dir, split, net.stores)
            splits[split] = (dataset, evaluate(net, dataset, cfg.batch_size, device))
    test_set, test = splits["test"]
    metrics = {
        "best_epoch": 0,
        "epochs": 0,
        "seed": 0,
        "mode": "zero-shot",
        "model": "zero_shot",
        "parameters": 0,
        **{f"{s}_accuracy": m["accuracy"] for s, (_, m) in splits.items()},
        "test_segments": test["segments"],
        "per_class_accuracy": {s: m["per_class_accuracy"] for s, (_, m) in splits.items()},
        "confusion_test": test["confusion"],
        "missing_videos": {"test": test["missing_videos"]},
        "localization": {s: m["localization"] for s, (_, m) in splits.items()},
        "reference_test": reference_rows(
            test_set.segment_labels, test_set.video_labels, test_set.num_classes - 1
        ),
        "train_seconds": time.time() - started,
        "device": str(device),
        "random_features": test_set.random_features,
    }
    write_json(metrics, out / runs.METRICS)
    headline = {k: metrics[k] for k in ("val_accuracy", "test_accuracy") if k in metrics}
    summary = {
        "name": cfg.name,
        "mode": "zero-shot",
        "model": "zero_shot",
        "seeds": [0],
        "experiment_dir": str(out.parent),
        "runs": {"0": {"best_epoch": 0, **headline}},
        **{k: runs.mean_std([v]) for k, v in headline.items()},
        "reused": [],
        "random_features": metrics["random_features"],
    }
    columns = {k: k.replace("_accuracy", " acc") for k in headline}
    runs.write_summary(out.parent, summary, columns)
    return {**metrics, "reused": False, "run": str(out)}


def format_zero_shot(result: dict[str, Any]) -> str:
    state = "reused (same settings; --force to redo)" if result.get("reused") else "written"
    lines = [f"zero-shot run {state}: {result['run']}"]
    for split in ("val", "test"):
        if f"{split}_accuracy" in result:
            lines.append(f"  {split} segment accuracy: {100 * result[f'{split}_accuracy']:.1f}%")
    if result.get("random_features"):
        lines.append("!!! RANDOM WEIGHTS: the clip/clap stores are NOT pretrained features !!!")
    return "\n".join(lines)
