"""``avel convert-vggish``: fetch (or take) the official VGGish TF checkpoint and convert it once
into the cached torch state dict under DATA_DIR/weights/vggish (needs the ``tf`` extra)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path


@dataclasses.dataclass
class ConvertVGGishConfig:
    data_dir: Path
    vggish_checkpoint: str | None = None  # local path or URL; None: cache, else the public URL
    weights_dir: Path | None = None  # default DATA_DIR/weights/vggish
    allow_download: bool = True


def run_convert_vggish(cfg: ConvertVGGishConfig) -> dict:
    """Make sure converted VGGish weights exist; return their record."""
    from pipeline.backbones.vggish_weights import default_cache_dir, ensure_vggish_weights

    cache = Path(cfg.weights_dir) if cfg.weights_dir else default_cache_dir(cfg.data_dir)
    info = ensure_vggish_weights(cache, cfg.vggish_checkpoint, allow_download=cfg.allow_download)
    return {"path": str(info.path), **info.to_dict()["weights"]}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "convert-vggish", help="convert the official VGGish TF checkpoint into cached torch weights"
    )
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument(
        "--vggish-checkpoint",
        "--checkpoint",
        help="vggish_model.ckpt path or URL (default: the cache, else the official public URL)",
    )
    p.add_argument(
        "--weights-dir", type=Path, help="cache folder (default DATA_DIR/weights/vggish)"
    )
    p.add_argument("--no-download", action="store_true", help="never download the checkpoint")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from pipeline.backbones.vggish_weights import VGGishWeightsError

    cfg = ConvertVGGishConfig(
        data_dir=args.data_dir,
        vggish_checkpoint=args.vggish_checkpoint,
        weights_dir=args.weights_dir,
        allow_download=not args.no_download,
    )
    try:
        summary = run_convert_vggish(cfg)
    except VGGishWeightsError as exc:
        print(f"error: {exc}")
        return 2
    print(
        f"VGGish weights ready: {summary['path']}\n"
        f"  source {summary['source']}\n  source sha256 {summary['source_sha256']}\n"
        f"  converted sha256 {summary['sha256']}"
    )
    return 0
