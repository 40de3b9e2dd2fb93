"""``avel convert-vggish`` and ``avel features``: flags -> config -> stage -> summary."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.cli.common import EXIT_FAILED, fail, show_progress


def register(subparsers: argparse._SubParsersAction) -> None:
    register_convert_vggish(subparsers)
    register_features(subparsers)


# ----------------------------------------------------------------------------- convert-vggish


def register_convert_vggish(subparsers: argparse._SubParsersAction) -> None:
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
    p.set_defaults(func=convert_vggish_main)


def convert_vggish_main(args: argparse.Namespace) -> int:
    from pipeline.stages.convert_vggish import ConvertVGGishConfig, run_convert_vggish

    cfg = ConvertVGGishConfig(
        data_dir=args.data_dir,
        vggish_checkpoint=args.vggish_checkpoint,
        weights_dir=args.weights_dir,
        allow_download=not args.no_download,
    )
    summary = run_convert_vggish(cfg)
    print(
        f"VGGish weights ready: {summary['path']}\n"
        f"  source {summary['source']}\n  source sha256 {summary['source_sha256']}\n"
        f"  converted sha256 {summary['sha256']}"
    )
    return 0


# ----------------------------------------------------------------------------- features


def register_features(subparsers: argparse._SubParsersAction) -> None:
    """``avel features``: one flag per option of :class:`FeaturesConfig` (defaults and help from it)."""
    from pipeline.core.options import add_options
    from pipeline.stages.features.core import FeaturesConfig

    p = subparsers.add_parser(
        "features", help="VGGish audio / VGG-19 visual / C3D feature stores from the segments"
    )
    add_options(p, FeaturesConfig)
    p.set_defaults(func=features_main)


def features_main(args: argparse.Namespace) -> int:
    from pipeline.core.options import config_from
    from pipeline.stages.features.core import FeaturesConfig
    from pipeline.stages.features.stage import format_errors, format_summary, run_features

    cfg = config_from(FeaturesConfig, args, progress=show_progress())
    summary = run_features(cfg)
    print(format_summary(summary, errors=False))
    code = 0
    for line in format_errors(summary):
        code = fail(line, code=EXIT_FAILED)
    return code
