"""CLI for the cross-modality task: ``avel train-crossmodal`` and ``avel evaluate-crossmodal``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, found {text!r}"
        ) from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default="data", help="data directory (manifest + feature stores)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--plots", type=int, default=3, help="distance pictures for the first N test clips"
    )
    p.add_argument(
        "--plot-samples", type=_ints, default=[], help="or for these manifest sample ids (1,2,...)"
    )
    p.add_argument(
        "--visual-store", default="visual_vec", help="feature store of (10, 512) visual vectors"
    )
    p.add_argument(
        "--audio-store", default="audio", help="feature store of (10, 128) audio embeddings"
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train-crossmodal",
        help="train AVDLN or DCCA for cross-modality localization (A2V / V2A)",
        description="Train on match_split train, select on match_split val, report on test.",
    )
    _common(p)
    p.add_argument("--model", default="avdln", choices=["avdln", "dcca"])
    p.add_argument("--run-dir", default=None, help="run directory (default runs/<model>)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument(
        "--batch-size", type=int, default=None, help="default 8 (AVDLN, release) / 256 (DCCA)"
    )
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--seeds", type=_ints, default=[0], help="comma-separated seeds; mean +- std over them"
    )
    p.add_argument(
        "--mismatched",
        type=int,
        default=0,
        help="extra negatives per event second from other videos",
    )
    p.add_argument(
        "--select", default="accuracy", choices=["accuracy", "loss"], help="best-on-val criterion"
    )
    p.add_argument(
        "--options", default="{}", help="builder options as JSON, e.g. '{\"out_dim\": 32}' (DCCA)"
    )
    p.set_defaults(func=_train)

    p = subparsers.add_parser(
        "evaluate-crossmodal",
        help="A2V / V2A accuracy of a trained run or of the release's cmm_model_weights.h5",
    )
    _common(p)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="run directory written by train-crossmodal")
    source.add_argument(
        "--weights", help="Keras AVDLN weights (the release's cmm_model_weights.h5)"
    )
    p.add_argument(
        "--split", default="test", choices=["train", "val", "test"], help="cross-modal split"
    )
    p.add_argument(
        "--out-dir", default=None, help="where metrics and pictures go (default RUN/evaluate)"
    )
    p.set_defaults(func=_evaluate)


def _train(args: argparse.Namespace) -> int:
    from models.training.crossmodal import CrossmodalConfig, format_summary, run_train_crossmodal

    cfg = CrossmodalConfig(
        data_dir=args.data_dir,
        run_dir=args.run_dir or f"runs/{args.model}",
        model=args.model,
        options=json.loads(args.options),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seeds=args.seeds,
        mismatched=args.mismatched,
        select=args.select,
        device=args.device,
        plots=args.plots,
        plot_samples=args.plot_samples,
        visual_store=args.visual_store,
        audio_store=args.audio_store,
    )
    print(format_summary(run_train_crossmodal(cfg)))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from models.evaluation.crossmodal import format_metrics
    from models.training.crossmodal import run_evaluate_crossmodal

    out_dir = args.out_dir or (
        Path(args.run) / "evaluate" if args.run else Path("runs") / "avdln-release"
    )
    summary = run_evaluate_crossmodal(
        args.data_dir,
        out_dir,
        run=args.run,
        weights=args.weights,
        split=args.split,
        device=args.device,
        plots=args.plots,
        plot_samples=args.plot_samples,
        visual_store=args.visual_store,
        audio_store=args.audio_store,
    )
    print(f"cross-modal {args.split} split, {summary['source']}:")
    for name, m in summary["results"].items():
        print(f"  {name}: {format_metrics(m)}")
    if len(summary["results"]) > 1:
        a, v = summary["a2v_accuracy"], summary["v2a_accuracy"]
        print(
            f"  mean: A2V {100 * a['mean']:.1f} +- {100 * a['std']:.1f}%  V2A {100 * v['mean']:.1f} +- {100 * v['std']:.1f}%"
        )
    print(f"  metrics and pictures in {out_dir}  (paper AVDLN 44.8 / 35.6, DCCA 34.8 / 34.1)")
    return 0
