"""``avel table fusion|models|weak|sota|features --seeds 1,2``: comparison tables, retrained over seeds.

Each table is a fixed list of configurations (``TABLES``). Every configuration is trained with the
ordinary trainer (``models.training.engine.run_train``) into ``RUN_DIR/<experiment>/seed-K`` with the trainer's
own naming, so a seed trained before (by ``avel train`` or an earlier ``avel table``) with the same
settings is reused, not retrained: the command is resumable. A finished seed trained with other
settings (epochs, lr, background videos, ...) is never overwritten: its row fails naming the settings
that differ (``--force`` retrains, or use another ``--run-dir``). The table (mean +- sample std of test and
val segment accuracy over seeds, parameters, mean train time per seed) is written beside the paper's
numbers (AVE reference 5; "–" where the reference gives none) to ``RUN_DIR/tables/<table>.md``,
``.csv`` and ``.json``. Configurations whose feature stores are absent (the supplementary attentions
need ``audio_maps``: ``make features AUDIO_MAPS=1``) are listed as skipped; a failing configuration is
reported and the others still run.

``features`` (supplementary Tables 4-5): A, and V and A+V on each visual feature set (VGG-19
``visual_vec``, C3D ``c3d``, both concatenated; model option ``visual``), side by side; the C3D stores
come from ``make features FEATURES=visual,c3d``.

``sota``: ``av_att``, ``dmrn``, ``psp``, ``cmbs`` and ``avel-net``, with the decomposed test
metrics (``models.evaluation.metrics.localization_metrics``, mean over seeds) as extra columns. Every row of every
table carries those means (``*_mean``/``*_std`` in the CSV and JSON), and every table's Markdown ends
with the reference rows of the test split computed from the manifest (all background, oracle video
class on every second, best single label per video; ``models.evaluation.reference``).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from models.evaluation.reference import DECOMPOSED
from models.reports.paper import FEATURES, SOTA, SUPERVISED, WEAK
from models.training.runs import mean_std
from pipeline.core.io import atomic_path, write_json

DECOMPOSED_TABLES = ("sota",)  # tables whose Markdown shows the decomposed metrics as columns

METHOD_NAMES = {
    "additive": "Additive",
    "max": "Max-pooling",
    "gated": "Gated",
    "bilinear": "Multimodal Bilinear",
    "gated_bilinear": "Gated Multimodal Bilinear",
    "gmu": "GMU",
    "concat": "Concatenation",
    "mrn": "MRN",
}


@dataclass(frozen=True)
class Entry:
    """One row of a table: a registered model with options, trained in ``mode``."""

    key: str
    label: str
    model: str
    options: dict[str, Any] = field(default_factory=dict)
    mode: str = "supervised"
    paper: float | None = None  # test segment accuracy %, AVE reference 5
    features: str | None = None  # the visual feature set (table ``features``)


def _fusion_entries() -> list[Entry]:
    out = []
    for method, name in METHOD_NAMES.items():
        for position in ("early", "late", "decision"):
            key, label = f"{method}-{position}", f"{name} ({position})"
            if (method, position) == ("concat", "late"):  # the paper's A+V-att network, by name
                out.append(Entry(key, label + " = A+V-att", "av_att", paper=SUPERVISED["av_att"]))
                continue
            out.append(Entry(key, label, method, {"position": position}))
    out.append(Entry("dmrn", "DMRN (late)", "dmrn", paper=SUPERVISED["dmrn"]))
    out.append(Entry("dmrfe", "DMRFE (late)", "dmrfe", paper=SUPERVISED["dmrfe"]))
    return out


#: Visual feature sets of the ``features`` table: model option ``visual`` -> column label.
FEATURE_SETS = {
    "vgg19": "VGG-19",
    "c3d": "C3D",
    "vgg19+c3d": "VGG-19 + C3D",
    "clip": "CLIP",
    "vgg19+clip": "VGG-19 + CLIP",
}
#: Rows of the ``features`` table on CLAP audio (model option ``audio``) and the training-free
#: zero-shot baseline: key -> (label, model, options, mode, the visual column they sit in).
FOUNDATION_ROWS = {
    "a-clap": ("A (CLAP)", "a", {"audio": "clap"}, "supervised", None),
    "av-clap-clip": (
        "A+V (CLAP + CLIP)",
        "av",
        {"audio": "clap", "visual": "clip"},
        "supervised",
        "clip",
    ),
    "zero-shot": ("zero-shot CLAP + CLIP (no training)", "zero_shot", {}, "zero-shot", "clip"),
}


def _feature_entries() -> list[Entry]:
    """A once (no visual input), then V and A+V on each visual feature set (supplementary Tables 4-5),
    then the CLAP rows and the zero-shot baseline."""
    out = [Entry("a", "A", "a", paper=SUPERVISED["a"], features="audio only")]
    for model, label in (("v", "V"), ("av", "A+V")):
        for name, column in FEATURE_SETS.items():
            key = f"{model}-{name}"
            paper = SUPERVISED[model] if name == "vgg19" else FEATURES.get(key)
            options = {} if name == "vgg19" else {"visual": name}
            out.append(
                Entry(key, f"{label} ({column})", model, options, paper=paper, features=name)
            )
    for key, (label, model, options, mode, column) in FOUNDATION_ROWS.items():
        out.append(Entry(key, label, model, options, mode=mode, features=column or "audio only"))
    return out


TABLES: dict[str, list[Entry]] = {
    "fusion": _fusion_entries(),
    "models": [
        Entry("a", "A", "a", paper=SUPERVISED["a"]),
        Entry("v", "V", "v", paper=SUPERVISED["v"]),
        Entry("v_att", "V-att", "v_att", paper=SUPERVISED["v_att"]),
        Entry("av", "A+V", "av", paper=SUPERVISED["av"]),
        Entry("av_att", "A+V-att", "av_att", paper=SUPERVISED["av_att"]),
        Entry("dmrn", "DMRN", "dmrn", paper=SUPERVISED["dmrn"]),
        Entry("dmrfe", "DMRFE", "dmrfe", paper=SUPERVISED["dmrfe"]),
        Entry("edtcn", "ED-TCN (V features)", "edtcn", paper=SUPERVISED["edtcn"]),
        Entry("v_att_audio", "A-att (visual-guided audio attention)", "v_att_audio"),
        Entry("co_att", "A-att+V-att (co-attention)", "co_att"),
    ],
    "sota": [
        Entry("av_att", "A+V-att", "av_att", paper=SUPERVISED["av_att"]),
        Entry("dmrn", "DMRN", "dmrn", paper=SUPERVISED["dmrn"]),
        Entry("psp", "PSP (Zhou et al. 2021)", "psp", paper=SOTA["psp"]),
        Entry("cmbs", "CMBS (Xia & Zhao 2022)", "cmbs", paper=SOTA["cmbs"]),
        Entry("avel-net", "avel-net (ours)", "avel-net"),
    ],
    "features": _feature_entries(),
    "weak": [
        Entry("a", "A", "a", mode="weak", paper=WEAK["a"]),
        Entry("v", "V", "v", mode="weak", paper=WEAK["v"]),
        Entry("v_att", "V-att", "v_att", mode="weak", paper=WEAK["v_att"]),
        Entry("av", "A+V", "av", mode="weak", paper=WEAK["av"]),
        Entry("av_att", "A+V-att", "av_att", mode="weak", paper=WEAK["av_att"]),
    ],
}


@dataclass
class TableConfig:
    data_dir: str
    table: str = "models"
    seeds: tuple[int, ...] = (1,)
    run_dir: str = "runs"
    epochs: int | None = None
    batch_size: int = 64
    lr: float = 1e-3
    device: str = "auto"
    eval_every: int = 1
    mil: str = "mean"
    background_videos: bool = True
    only: tuple[str, ...] = ()
    force: bool = False

    def __post_init__(self) -> None:
        if self.table not in TABLES:
            raise ValueError(f"unknown table {self.table!r}; choose one of {sorted(TABLES)}")
        if not self.seeds:
            raise ValueError("at least one seed is needed")
        keys = [e.key for e in TABLES[self.table]]
        unknown = [k for k in self.only if k not in keys]
        if unknown:
            raise ValueError(
                f"table {self.table!r} has no configuration {unknown}; choose from {keys}"
            )

    def entries(self) -> list[Entry]:
        return [e for e in TABLES[self.table] if not self.only or e.key in self.only]


def _missing_stores(data_dir: str, entry: Entry) -> list[str]:
    from models.networks import build_model
    from pipeline.core.store import FeatureStore, StoreError

    stores = build_model(entry.model, num_classes=2, **entry.options).stores
    missing = []
    for name in stores:
        try:
            FeatureStore.open(data_dir, name)
        except StoreError:
            missing.append(name)
    return missing


def _refuse_to_overwrite(train_cfg, seeds: tuple[int, ...]) -> None:
    """A finished seed trained with other settings (epochs, lr, ...) is kept: raise instead."""
    from models.training.engine import TrainConfig

    for seed in seeds:
        seed_cfg = TrainConfig(**{**asdict(train_cfg), "seed": seed})
        run = seed_cfg.seed_dir()
        if not ((run / "metrics.json").is_file() and (run / "config.json").is_file()):
            continue
        old = json.loads((run / "config.json").read_text()).get("fingerprint") or {}
        new = seed_cfg.fingerprint()
        changed = sorted(k for k in new if old.get(k) != new[k])
        if changed:
            raise ValueError(
                f"{run} holds a finished run with other settings ({', '.join(changed)}); "
                "pass --force to retrain over it, or use another --run-dir"
            )


def _stat(values: list[float]) -> tuple[float, float]:
    m = mean_std(values)
    return m["mean"], m["std"]


def run_entry(cfg: TableConfig, entry: Entry, progress: bool = True) -> dict[str, Any]:
    """Train (or reuse) every seed of one configuration; one result row."""
    from models.evaluation.reference import decomposed_stats
    from models.training.engine import TrainConfig, run_train

    row: dict[str, Any] = {
        "key": entry.key,
        "label": entry.label,
        "model": entry.model,
        "options": json.dumps(entry.options, sort_keys=True),
        "mode": entry.mode,
        "paper": entry.paper,
    }
    missing = _missing_stores(cfg.data_dir, entry)
    if missing:
        hint = " (make features AUDIO_MAPS=1)" if "audio_maps" in missing else ""
        if any(n.startswith("c3d") for n in missing):
            hint = " (make features FEATURES=visual,c3d)"
        if any(n in ("clip", "clap") for n in missing):
            hint = " (make features FEATURES=clip,clap)"
        return {**row, "status": f"skipped: store(s) {', '.join(missing)} missing{hint}"}
    if entry.mode == "zero-shot":
        return {**row, **zero_shot_row(cfg)}
    train_cfg = TrainConfig(
        data_dir=cfg.data_dir,
        mode=entry.mode,
        model=entry.model,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        seed=cfg.seeds[0],
        run_dir=cfg.run_dir,
        name=None,
        mil=cfg.mil,
        device=cfg.device,
        eval_every=cfg.eval_every,
        background_videos=cfg.background_videos and entry.mode == "weak",
        model_options=dict(entry.options),
    )
    if not cfg.force:
        _refuse_to_overwrite(train_cfg, cfg.seeds)
    summary = run_train(train_cfg, list(cfg.seeds), force=cfg.force, progress=progress)
    runs = [
        json.loads((train_cfg.experiment_dir() / f"seed-{s}" / "metrics.json").read_text())
        for s in cfg.seeds
    ]
    test_m, test_s = _stat([100 * r["test_accuracy"] for r in runs])
    val_m, val_s = _stat([100 * r["val_accuracy"] for r in runs])
    return {
        **row,
        "status": "ok",
        "experiment": summary["name"],
        "seeds": len(runs),
        "reused_seeds": len(summary["reused"]),
        "test_mean": test_m,
        "test_std": test_s,
        "val_mean": val_m,
        "val_std": val_s,
        "parameters": runs[0]["parameters"],
        "train_seconds": statistics.fmean(r["train_seconds"] for r in runs),
        "epochs": runs[0]["epochs"],
        "random_features": any(r.get("random_features") for r in runs),
        **decomposed_stats(runs),
    }


def zero_shot_row(cfg: TableConfig) -> dict[str, Any]:
    """The zero-shot baseline's row (``models.evaluation.zero_shot``: one run, no seeds)."""
    from models.evaluation.reference import decomposed_stats
    from models.evaluation.zero_shot import ZeroShotConfig, run_zero_shot

    m = run_zero_shot(
        ZeroShotConfig(Path(cfg.data_dir), Path(cfg.run_dir), device=cfg.device, force=cfg.force)
    )
    return {
        "status": "ok",
        "experiment": "zero-shot",
        "seeds": 1,
        "reused_seeds": int(bool(m.get("reused"))),
        "test_mean": 100 * m["test_accuracy"],
        "test_std": 0.0,
        "val_mean": 100 * m.get("val_accuracy", float("nan")),
        "val_std": 0.0,
        "parameters": 0,
        "train_seconds": m["train_seconds"],
        "epochs": 0,
        "random_features": m["random_features"],
        **decomposed_stats([m]),
    }


def _fmt(value: Any, spec: str = ".1f") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    return format(value, spec)


def to_markdown(cfg: TableConfig, rows: list[dict[str, Any]]) -> str:
    seeds = ",".join(str(s) for s in cfg.seeds)
    from models.evaluation.reference import decomposed_cells, decomposed_header, reference_markdown

    wide = cfg.table in DECOMPOSED_TABLES  # decomposed metrics as columns
    extra_head, extra_rule = decomposed_header()
    lines = [
        f"# AVE comparison: {cfg.table}",
        "",
        f"Segment accuracy (%) over seeds {seeds}, mean ± sample std; mode "
        f"{'weak (MIL ' + cfg.mil + ')' if cfg.table == 'weak' else 'supervised'}; data {cfg.data_dir}; "
        f"runs in {cfg.run_dir}. Paper: AVE reference 5 (test split; – = not given there).",
        "",
        "| configuration | test acc | val acc | paper | parameters | train time / seed (s) | status |"
        + (f" {extra_head} |" if wide else ""),
        "|---|---|---|---|---|---|---|" + (f"{extra_rule}|" if wide else ""),
    ]
    for r in rows:
        if r["status"] != "ok":
            lines.append(
                f"| {r['label']} | – | – | {_fmt(r['paper'])} | – | – | {r['status']} |"
                + (" – |" * len(extra_rule.split("|")) if wide else "")
            )
            continue
        status = f"{r['seeds']} seed(s), {r['epochs']} epochs" + (
            f", {r['reused_seeds']} reused" if r["reused_seeds"] else ""
        )
        lines.append(
            f"| {r['label']} | {r['test_mean']:.1f} ± {r['test_std']:.1f} | "
            f"{r['val_mean']:.1f} ± {r['val_std']:.1f} | {_fmt(r['paper'])} | {r['parameters']:,} | "
            f"{r['train_seconds']:.0f} | {status} |"
            + (f" {' | '.join(decomposed_cells(r))} |" if wide else "")
        )
    if wide:
        lines += [
            "",
            "Decomposed test metrics, mean over seeds (%; boundary error in seconds): "
            "models.evaluation.metrics.localization_metrics.",
        ]
    if cfg.table == "features":
        lines += ["", *features_markdown(rows)]
    lines += ["", reference_markdown(cfg.data_dir).rstrip()]
    if any(r.get("random_features") for r in rows):
        lines += [
            "",
            "**WARNING: features come from random-weight networks (a smoke run); "
            "these numbers mean nothing.**",
        ]
    return "\n".join(lines) + "\n"


def features_markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The ``features`` table side by side: one line per model, one column per visual feature set."""
    by_key = {r["key"]: r for r in rows}

    def cell(key: str) -> str:
        r = by_key.get(key)
        if r is None:
            return "–"
        if r["status"] != "ok":
            return r["status"].split(":")[0]
        paper = f" (paper {_fmt(r['paper'])})" if r.get("paper") is not None else ""
        return f"{r['test_mean']:.1f} ± {r['test_std']:.1f}{paper}"

    head = " | ".join(FEATURE_SETS.values())
    lines = [
        "Test segment accuracy (%) by visual feature set (paper: AVE reference 5 where it gives one):",
        "",
        f"| model | {head} |",
        "|---|" + "---|" * len(FEATURE_SETS),
        f"| A (no visual input) | {' | '.join([cell('a')] * len(FEATURE_SETS))} |",
    ]
    for model, label in (("v", "V"), ("av", "A+V")):
        cells = " | ".join(cell(f"{model}-{name}") for name in FEATURE_SETS)
        lines.append(f"| {label} | {cells} |")
    for key, (label, _, _, _, column) in FOUNDATION_ROWS.items():
        if key in by_key:
            cells = [cell(key) if column in (None, name) else "–" for name in FEATURE_SETS]
            lines.append(f"| {label} | {' | '.join(cells)} |")
    return lines


COLUMNS = [
    "key",
    "label",
    "model",
    "options",
    "mode",
    "status",
    "experiment",
    "seeds",
    "reused_seeds",
    "epochs",
    "test_mean",
    "test_std",
    "val_mean",
    "val_std",
    "paper",
    "parameters",
    "train_seconds",
    "random_features",
]
COLUMNS += [f"{k}_{stat}" for k in DECOMPOSED for stat in ("mean", "std")]


def run_table(cfg: TableConfig, progress: bool = True) -> dict[str, Any]:
    """Train/reuse every configuration of the table, write RUN_DIR/tables/TABLE.{md,csv,json}."""
    rows = []
    for entry in cfg.entries():
        try:
            rows.append(run_entry(cfg, entry, progress))
        except (FileNotFoundError, ValueError, RuntimeError) as exc:
            rows.append(
                {
                    "key": entry.key,
                    "label": entry.label,
                    "model": entry.model,
                    "options": json.dumps(entry.options, sort_keys=True),
                    "mode": entry.mode,
                    "paper": entry.paper,
                    "status": f"failed: {exc}",
                }
            )
    out = Path(cfg.run_dir) / "tables"
    frame = (
        pd.DataFrame(rows)
        .reindex(columns=COLUMNS)
        .round({"test_mean": 3, "test_std": 3, "val_mean": 3, "val_std": 3, "train_seconds": 1})
    )
    with atomic_path(out / f"{cfg.table}.csv", suffix=".csv") as tmp:
        frame.to_csv(tmp, index=False)
    markdown = to_markdown(cfg, rows)
    with atomic_path(out / f"{cfg.table}.md", suffix=".md") as tmp:
        tmp.write_text(markdown)
    summary = {
        "table": cfg.table,
        "config": asdict(cfg),
        "rows": rows,
        "files": [str(out / f"{cfg.table}.{x}") for x in ("md", "csv", "json")],
        "trained": sum(
            r.get("seeds", 0) - r.get("reused_seeds", 0) for r in rows if r["status"] == "ok"
        ),
        "reused": sum(r.get("reused_seeds", 0) for r in rows if r["status"] == "ok"),
        "skipped": [r["key"] for r in rows if r["status"].startswith("skipped")],
        "failed": [r["key"] for r in rows if r["status"].startswith("failed")],
        "markdown": markdown,
    }
    write_json(summary, out / f"{cfg.table}.json")
    return summary
