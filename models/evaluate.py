"""``avel evaluate --run RUN_DIR``: re-evaluate a finished run from its folder alone.

Reads ``RUN_DIR/config.json`` (data folder, batch size) and ``RUN_DIR/best.pt`` (network config and
weights), evaluates the split (default test) with the reference protocol and writes
``RUN_DIR/eval-<split>.json``. ``--data-dir`` evaluates the same network on another data folder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.io import write_json
from pipeline.store import StoreError


def run_evaluate(run: str | Path, split: str = "test", data_dir: str | Path | None = None,
                 device: str = "auto", batch_size: int | None = None) -> dict:  # fmt: skip
    from models.data import AVEDataset
    from models.train import evaluate, load_checkpoint, resolve_device

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
        "run": str(run), "split": split, "data_dir": str(data_dir), "epoch": payload.get("epoch"),
        "accuracy": m["accuracy"], "segments": m["segments"], "samples": m["samples"],
        "missing_videos": m["missing_videos"], "per_class_accuracy": m["per_class_accuracy"],
        "confusion": m["confusion"],
    }  # fmt: skip
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
    print(f"{r['run']}: {r['split']} segment accuracy {r['accuracy']:.4f} over {r['segments']} seconds "
          f"({r['samples']} clips, {r['missing_videos']} missing) -> {args.run / ('eval-' + r['split'] + '.json')}")  # fmt: skip
    return 0
