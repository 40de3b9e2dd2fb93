"""``avel train supervised|weak|crossmodal``: flags -> ``TrainConfig`` -> ``run_train`` -> summary."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.cli.common import (
    fail,
    int_list,
    non_negative_int,
    positive_int,
    show_progress,
    warn,
)
from pipeline.core.paths import name_problem


def register(subparsers: argparse._SubParsersAction) -> None:
    from models.training.engine import MODES

    p = subparsers.add_parser(
        "train",
        help="train a model (localization: supervised or weak; crossmodal: AVDLN or DCCA), "
        "select on val, test once",
        description="Runs go to RUN_DIR/NAME/seed-K; RUN_DIR/NAME/summary.{json,md} gives mean ± "
        "std over seeds. A finished seed with the same settings is reused.",
    )
    p.add_argument("mode", choices=MODES)
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument(
        "--model",
        help="localization: a, v, v_att, av, av_att, dmrn, dmrfe, psp, cmbs, avel-net ... "
        "(default av_att); crossmodal: avdln (default) or dcca",
    )
    p.add_argument(
        "--epochs", type=positive_int, help="default 300 supervised, 250 weak, 20 crossmodal"
    )
    p.add_argument(
        "--batch-size", type=positive_int, help="default 64 (localization), 8 (AVDLN), 256 (DCCA)"
    )
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--seeds",
        type=int_list,
        default=[1],
        help="comma-separated seeds, one run each (default 1)",
    )
    p.add_argument(
        "--run-dir", type=Path, default=Path("runs"), help="runs go to RUN_DIR/NAME/seed-K"
    )
    p.add_argument(
        "--name",
        help="experiment name (default MODE-MODEL[-mil-MIL][-release-loss][-KEY-VALUE...])",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument(
        "--eval-every", type=positive_int, default=1, help="validate every N epochs (default 1)"
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        help="CPU torch threads (default: one per core free at the start; recorded in config.json)",
    )
    p.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="model option (JSON value), repeatable: broadcast=release, num_blocks=2, out_dim=32",
    )
    p.add_argument("--force", action="store_true", help="retrain seeds that already finished")
    loc = p.add_argument_group("localization (supervised, weak)")
    loc.add_argument("--loss", choices=("ce", "release"), default="ce")
    loc.add_argument(
        "--mil", choices=("mean", "max"), default="mean", help="weak: MIL pooling over seconds"
    )
    loc.add_argument(
        "--decay-steps", type=positive_int, default=15000, help="lr x0.1 every this many iterations"
    )
    loc.add_argument(
        "--background-videos",
        action="store_true",
        help="weak: add DATA_DIR/extra_background.parquet's background-only videos to train",
    )
    xm = p.add_argument_group("crossmodal")
    xm.add_argument(
        "--mismatched",
        type=non_negative_int,
        default=0,
        help="extra negatives per event second from other videos",
    )
    xm.add_argument(
        "--select", default="accuracy", choices=["accuracy", "loss"], help="best-on-val criterion"
    )
    xm.add_argument(
        "--plots",
        type=non_negative_int,
        default=3,
        help="distance pictures for the first N test clips",
    )
    xm.add_argument(
        "--plot-samples", type=int_list, default=[], help="or for these manifest sample ids"
    )
    xm.add_argument("--visual-store", default="visual_vec", help="store of (10, 512) vectors")
    xm.add_argument("--audio-store", default="audio", help="store of (10, 128) embeddings")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from models.data.ave import extra_background_path
    from models.training.engine import TrainConfig, format_summary, parse_options, run_train

    if not args.seeds:
        return fail("--seeds: give at least one seed")
    if args.name is not None and (problem := name_problem(args.name)):
        return fail(f"--name {args.name!r} {problem}: it names a folder under --run-dir")
    try:  # the options themselves: bad usage
        cfg = TrainConfig(
            data_dir=str(args.data_dir),
            mode=args.mode,
            model=args.model,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seeds[0],
            run_dir=str(args.run_dir),
            name=args.name,
            device=args.device,
            eval_every=args.eval_every,
            threads=args.threads,
            model_options=parse_options(args.option),
            loss=args.loss,
            mil=args.mil,
            decay_steps=args.decay_steps,
            background_videos=args.background_videos,
            mismatched=args.mismatched,
            select=args.select,
            plots=args.plots,
            plot_samples=args.plot_samples,
            visual_store=args.visual_store,
            audio_store=args.audio_store,
        )
    except ValueError as exc:
        return fail(exc)
    if args.mode == "weak" and args.background_videos:
        extra = extra_background_path(args.data_dir)
        if not extra.is_file():
            warn(f"{extra} not found; training without extra background videos")
    summary = run_train(cfg, args.seeds, force=args.force, progress=show_progress())
    print(format_summary(summary))
    return 0
