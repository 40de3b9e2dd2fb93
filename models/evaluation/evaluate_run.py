"""``avel evaluate --run RUN_DIR``: re-evaluate a finished run from its folder alone.

Reads ``RUN_DIR/config.json`` (data folder, batch size) and ``RUN_DIR/best.pt`` (network config and
weights), evaluates the split (default test) with the reference protocol and writes
``RUN_DIR/eval-<split>.json``: segment accuracy, per-class accuracy, confusion, the decomposed
metrics (``localization``: video-class accuracy, event precision/recall/F1, boundary error, full vs
short clips) and the reference rows for the same clips (``reference``: all background, oracle video
class, best single label per video; see ``models.evaluation.metrics``). ``--data-dir`` evaluates the same
network on another data folder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.core.io import write_json
from pipeline.core.store import StoreError


def run_evaluate(
    run: str | Path,
    split: str = "test",
    data_dir: str | Path | None = None,
    device: str = "auto",
    batch_size: int | None = None,
) -> dict:
    from models.data.ave import AVEDataset
    from models.evaluation.metrics import reference_rows
    from models.training.localization import evaluate, load_checkpoint, resolve_device

    run = Path(run)
    config_path, ckpt = run / "config.json", run / "best.pt"
    if not config_path.is_file() or not ckpt.is_file():
        raise FileNotFoundError(
            f"{run}: not a finished run folder (config.json and best.pt needed)"
        )
    config = json.loads(config_path.read_text())["train"]
    data_dir = Path(data_dir or config["data_dir"])
    dev = resolve_device(device)
    model, payload = load_checkpoint(ckpt, dev)
    dataset = AVEDataset(data_dir, split, model.stores)
    m = evaluate(model, dataset, batch_size or config["batch_size"], dev)
    result = {
        "run": str(run),
        "split": split,
        "data_dir": str(data_dir),
        "epoch": payload.get("epoch"),
        "accuracy": m["accuracy"],
        "segments": m["segments"],
        "samples": m["samples"],
        "missing_videos": m["missing_videos"],
        "per_class_accuracy": m["per_class_accuracy"],
        "confusion": m["confusion"],
        "localization": m["localization"],
        "reference": reference_rows(
            dataset.segment_labels, dataset.video_labels, dataset.num_classes - 1
        ),
    }
    write_json(result, run / f"eval-{split}.json")
    return result


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate", help="re-evaluate a trained run (segment accuracy) from its folder"
    )
    p.add_argument("--run", type=Path, required=True, help="a run folder RUN_DIR/NAME/seed-K")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument(
        "--data-dir", type=Path, help="data folder (default: the one the run was trained on)"
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    try:
        r = run_evaluate(args.run, args.split, args.data_dir, args.device, args.batch_size)
    except (FileNotFoundError, ValueError, StoreError) as exc:
        print(f"error: {exc}")
        return 2
    print(
        f"{r['run']}: {r['split']} segment accuracy {r['accuracy']:.4f} over {r['segments']} seconds "
        f"({r['samples']} clips, {r['missing_videos']} missing) -> {args.run / ('eval-' + r['split'] + '.json')}"
    )
    print(format_localization(r["localization"], r["reference"]))
    return 0


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def format_localization(loc: dict, reference: dict | None = None) -> str:
    """A small text table: the decomposed metrics of a run, and the reference rows under it."""
    from models.evaluation.metrics import REFERENCE_LABELS

    head = f"  {'':36s} seg acc  video acc  ev P   ev R   ev F1  bound.err(s)  full   short"
    rows = [("this model", loc)] + [(REFERENCE_LABELS[k], v) for k, v in (reference or {}).items()]
    lines = [head]
    for label, m in rows:
        b = "–" if m["boundary_error_s"] is None else f"{m['boundary_error_s']:.2f}"
        lines.append(
            f"  {label:36s} {_pct(m['accuracy']):>6s}  {_pct(m['video_class_accuracy']):>8s}  "
            f"{_pct(m['event_precision']):>5s}  {_pct(m['event_recall']):>5s}  {_pct(m['event_f1']):>5s}  "
            f"{b:>12s}  {_pct(m['accuracy_full']):>5s}  {_pct(m['accuracy_short']):>5s}"
        )
    return "\n".join(lines)
