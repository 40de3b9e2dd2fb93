"""``avel evaluate --run RUN | --weights cmm_model_weights.h5``: re-evaluate any run from its folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.cli.common import int_list, non_negative_int, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="re-evaluate a run folder (supervised, weak, AVDLN, DCCA, imported) or the "
        "release's cross-modal weights",
        description="Localization runs: segment accuracy and the decomposed metrics "
        "(SEED_DIR/eval-SPLIT.json); cross-modal runs and --weights: A2V / V2A accuracy "
        "(OUT_DIR/metrics-SPLIT.json with distance pictures).",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--run", type=Path, help="a seed folder RUN_DIR/NAME/seed-K or its NAME folder"
    )
    source.add_argument(
        "--weights", type=Path, help="Keras AVDLN weights (the release's cmm_model_weights.h5)"
    )
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument(
        "--data-dir", type=Path, help="data folder (default: the run's; with --weights: data)"
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=positive_int, help="localization (default: the run's)")
    cross = p.add_argument_group("crossmodal")
    cross.add_argument(
        "--out-dir",
        type=Path,
        help="metrics and pictures (default RUN/evaluate; with --weights runs/avdln-release)",
    )
    cross.add_argument(
        "--plots", type=non_negative_int, default=3, help="distance pictures for the first N clips"
    )
    cross.add_argument(
        "--plot-samples", type=int_list, default=[], help="or for these manifest sample ids"
    )
    cross.add_argument("--visual-store", default="visual_vec")
    cross.add_argument("--audio-store", default="audio")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from models.evaluation.evaluate_run import evaluate_run, format_evaluation

    summary = evaluate_run(
        run=args.run,
        weights=args.weights,
        split=args.split,
        data_dir=args.data_dir,
        device=args.device,
        batch_size=args.batch_size,
        out_dir=args.out_dir,
        plots=args.plots,
        plot_samples=args.plot_samples,
        visual_store=args.visual_store,
        audio_store=args.audio_store,
    )
    print(format_evaluation(summary))
    return 0
