"""``avel zero-shot``: training-free localization from the clip and clap stores and the class
prompts; writes a run folder that ``avel evaluate --run`` reads."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.cli.common import positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "zero-shot",
        help="training-free localization: CLIP and CLAP text towers vs the clip/clap stores",
        description="Per second, the class closest to the CLIP image embedding and to the CLAP "
        "audio embedding (class prompts through the text towers of the stores' models); an event "
        "where both agree, else background. Writes RUN_DIR/NAME/seed-0 like a trained run.",
    )
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--run-dir", type=Path, default=Path("runs"))
    p.add_argument("--name", default="zero-shot", help="the run's folder name")
    p.add_argument("--visual-store", default="clip")
    p.add_argument("--audio-store", default="clap")
    p.add_argument("--clip-weights", help="default: the weights the visual store records")
    p.add_argument("--clap-weights", help="default: the weights the audio store records")
    p.add_argument("--clip-prompt", default="a photo of {}", help="{} = the class name")
    p.add_argument("--clap-prompt", default="the sound of {}", help="{} = the class name")
    p.add_argument("--no-download", action="store_true", help="cache or local weights only")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--force", action="store_true", help="redo a finished run")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from models.evaluation.zero_shot import ZeroShotConfig, format_zero_shot, run_zero_shot

    cfg = ZeroShotConfig(
        data_dir=args.data_dir,
        run_dir=args.run_dir,
        name=args.name,
        visual_store=args.visual_store,
        audio_store=args.audio_store,
        clip_weights=args.clip_weights,
        clap_weights=args.clap_weights,
        clip_prompt=args.clip_prompt,
        clap_prompt=args.clap_prompt,
        allow_download=not args.no_download,
        device=args.device,
        batch_size=args.batch_size,
        force=args.force,
    )
    result = run_zero_shot(cfg)  # a failure is reported (exit 1) by the CLI's one error path
    print(format_zero_shot(result))
    return 0
