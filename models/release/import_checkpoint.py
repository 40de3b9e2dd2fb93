"""``avel import-checkpoint FILE [--arch av_att|av_att_weak|dmrn]``: a release model as an avel run.

Reads one of the AVE release's PyTorch-0.3 whole-module pickles with the restricted unpickler
(``models.release.unpickler``; nothing in the file is executed), maps every tensor onto our network
with the release's quirks switched on (``models.release.localization``), and writes a run folder that
``avel evaluate --run RUN_DIR`` evaluates like a trained one: ``config.json`` (the network, the data
folder, the source file and its sha256) and ``best.pt`` (our checkpoint format, a state dict).
Importing the same file again into the same folder does nothing unless ``--force``.
"""

from __future__ import annotations

import json
from pathlib import Path

BATCH_SIZE = 64  # the release's


def run_import_checkpoint(
    source: str | Path,
    arch: str = "auto",
    out: str | Path | None = None,
    data_dir: str | Path = "data",
    force: bool = False,
) -> dict:
    """Import ``source`` into ``out`` (default ``runs/release-<file name>``); returns a summary.

    ``arch="auto"`` takes the network from the class the pickle records (``models.att_Net`` ->
    av_att, ``models_weakly.att_Net`` -> av_att_weak, ``models_fusion.TBMRF_Net`` -> dmrn).
    """
    from models.release.localization import RELEASE_FILE, build_release_model, resolve_arch
    from models.release.unpickler import read_release_checkpoint
    from models.reports.paper import PAPER_ACCURACY
    from models.training.checkpoint import save_checkpoint
    from pipeline.core.io import write_json

    ckpt = read_release_checkpoint(source)
    arch = resolve_arch(arch, ckpt)
    source = Path(source)
    out = Path(out or f"runs/release-{source.stem}")
    config_path, best = out / "config.json", out / "best.pt"
    if not force and config_path.is_file() and best.is_file():
        old = json.loads(config_path.read_text()).get("imported", {})
        if old.get("arch") == arch and old.get("sha256") == ckpt.sha256:
            return {**old, "run": str(out), "reused": True}

    model = build_release_model(arch, ckpt)
    config = dict(model.config)
    name, num_classes = config.pop("name"), config.pop("num_classes")
    imported = {
        "arch": arch,
        "source": str(source.resolve()),
        "sha256": ckpt.sha256,
        "format": ckpt.format,
        "release_class": ckpt.release_class,
        "release_file": RELEASE_FILE[arch],
        "release_attributes": ckpt.attributes,
        "tensors": len(ckpt.tensors),
        "parameters": sum(p.numel() for p in model.parameters()),
        "model": name,
        "model_options": config,
        "num_classes": num_classes,
        "paper_test_accuracy": PAPER_ACCURACY[arch],
    }
    run_config = {
        "train": {
            "data_dir": str(data_dir),
            "batch_size": BATCH_SIZE,
            "mode": "weak" if arch == "av_att_weak" else "supervised",
            "model": name,
            "model_options": config,
        },
        "model": model.config,
        "parameters": imported["parameters"],
        "imported": imported,
    }
    out.mkdir(parents=True, exist_ok=True)
    for stale in [out / "config.json", *out.glob("eval-*.json")]:
        stale.unlink(missing_ok=True)
    save_checkpoint(model, best, epoch=None, imported_from=imported["source"], sha256=ckpt.sha256)
    write_json(run_config, config_path)  # written last: a folder with config.json is complete
    return {**imported, "run": str(out), "reused": False}


def format_summary(summary: dict) -> str:
    state = "already imported (same file)" if summary["reused"] else "imported"
    return (
        f"{summary['source']} ({summary['release_class']}, sha256 {summary['sha256'][:16]}...) "
        f"{state} as {summary['model']} {summary['model_options']}: {summary['tensors']} tensors, "
        f"{summary['parameters']:,} parameters -> {summary['run']}\n"
        f"evaluate: avel evaluate --run {summary['run']}  "
        f"(paper: {summary['paper_test_accuracy']}% test segment accuracy)"
    )
