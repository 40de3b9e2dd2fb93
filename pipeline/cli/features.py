"""``avel convert-vggish`` and ``avel features``: flags -> config -> stage -> summary."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.cli.common import (
    EXIT_FAILED,
    fail,
    non_negative_int,
    positive_float,
    positive_int,
    show_progress,
    str_list,
)
from pipeline.core.store import DTYPES


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
    p = subparsers.add_parser(
        "features", help="VGGish audio / VGG-19 visual feature stores from the segments"
    )
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument(
        "--features",
        default="audio,visual",
        help="comma list: audio, visual, c3d (default audio,visual; visual,c3d decode each clip once)",
    )
    p.add_argument("--dtype", default="float16", choices=sorted(DTYPES), help="storage dtype")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="examples per forward pass (audio 256, visual 64)",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="frame-decoding processes (visual; default: every core but one on CUDA, half the cores on the CPU)",
    )
    p.add_argument(
        "--vgg19-weights",
        default="torchvision",
        help="torchvision, keras, random, or a .pth/.h5 file",
    )
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="VGGish and VGG-19; auto: fp16 on CUDA, bf16 on a CPU with native bf16 when measured "
        "faster and within 2e-2 of fp32, else fp32",
    )
    p.add_argument(
        "--c3d-weights",
        default="mmaction2",
        help="C3D weights: mmaction2, pickle (c3d.pickle), random, a file or a URL",
    )
    p.add_argument(
        "--c3d-maps", action="store_true", help="also store the C3D pool5 maps (c3d_maps)"
    )
    p.add_argument(
        "--c3d-batch", type=positive_int, default=4, help="C3D: 16-frame clips per forward pass"
    )
    p.add_argument(
        "--frame-size", type=positive_int, default=224, help="visual frame side (224 = release)"
    )
    p.add_argument(
        "--vggish-checkpoint", help="official TF checkpoint (path/URL) or a converted .pt file"
    )
    p.add_argument("--vggish-output", default="ave", choices=["ave", "raw", "pca"])
    p.add_argument(
        "--vggish-pca-params", help="vggish_pca_params.npz for --vggish-output pca (path/URL)"
    )
    p.add_argument(
        "--audio-maps", action="store_true", help="also store the VGGish pool5 map (audio_maps)"
    )
    p.add_argument(
        "--allow-random-weights", action="store_true", help="smoke runs without pretrained weights"
    )
    p.add_argument(
        "--no-download", action="store_true", help="never download weights (cache or local only)"
    )
    p.add_argument(
        "--num-shards", type=positive_int, default=1, help="K independent processes fill the store"
    )
    p.add_argument(
        "--shard-index", type=non_negative_int, default=0, help="this process's part, 0..K-1"
    )
    p.add_argument("--shard-size", type=positive_int, default=256, help="clips per store shard")
    p.add_argument(
        "--merge", action="store_true", help="only build the index of a store filled by K processes"
    )
    p.add_argument("--force", action="store_true", help="rebuild stores even when complete")
    p.add_argument(
        "--engine",
        default="local",
        choices=["local", "ray"],
        help="local (this process) or ray (a Ray Data pipeline; pip install avel[ray])",
    )
    p.add_argument(
        "--address",
        help="Ray cluster address ('auto' = the running cluster; default: start a local Ray)",
    )
    p.add_argument(
        "--decode-cpus", type=positive_float, default=1.0, help="Ray engine: CPUs per decode task"
    )
    p.add_argument(
        "--model-actors",
        type=positive_int,
        help="Ray engine: model actors (default: the cluster's GPUs, or 1 without)",
    )
    p.set_defaults(func=features_main)


def features_main(args: argparse.Namespace) -> int:
    from pipeline.stages.features.core import FeaturesConfig
    from pipeline.stages.features.stage import format_errors, format_summary, run_features

    cfg = FeaturesConfig(
        data_dir=args.data_dir,
        features=tuple(str_list(args.features)),
        dtype=args.dtype,
        device=args.device,
        batch_size=args.batch_size,
        workers=args.workers,
        vgg19_weights=args.vgg19_weights,
        precision=args.precision,
        frame_size=args.frame_size,
        vggish_checkpoint=args.vggish_checkpoint,
        vggish_output=args.vggish_output,
        vggish_pca_params=args.vggish_pca_params,
        audio_maps=args.audio_maps,
        allow_random_weights=args.allow_random_weights,
        allow_download=not args.no_download,
        num_shards=args.num_shards,
        shard_index=args.shard_index,
        shard_size=args.shard_size,
        merge=args.merge,
        force=args.force,
        engine=args.engine,
        ray_address=args.address,
        decode_cpus=args.decode_cpus,
        model_actors=args.model_actors,
        c3d_weights=args.c3d_weights,
        c3d_maps=args.c3d_maps,
        c3d_batch=args.c3d_batch,
        progress=show_progress(),
    )
    summary = run_features(cfg)
    print(format_summary(summary, errors=False))
    code = 0
    for line in format_errors(summary):
        code = fail(line, code=EXIT_FAILED)
    return code
