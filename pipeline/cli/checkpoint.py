"""``avel import-checkpoint FILE``: a release model (AV_att.pt ...) as a run folder for ``avel evaluate``."""

from __future__ import annotations

import argparse

from pipeline.cli.common import fail


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "import-checkpoint",
        help="import the release's trained AV_att / AV_att_weak / DMRN (.pt) as a run folder",
        description="Reads a PyTorch-0.3 whole-module pickle without executing it and writes a "
        "run folder for `avel evaluate --run`.",
    )
    p.add_argument("checkpoint", nargs="?", help="model/AV_att.pt, model/AV_att_weak.pt or DMRN.pt")
    p.add_argument(
        "--checkpoint",
        dest="checkpoint_option",
        help="same as CHECKPOINT (for make CHECKPOINT=...)",
    )
    p.add_argument(
        "--arch",
        default="auto",
        choices=("auto", "av_att", "av_att_weak", "dmrn"),
        help="the release network (default: from the class recorded in the file)",
    )
    p.add_argument("--out", default=None, help="run folder (default runs/release-<file name>)")
    p.add_argument("--data-dir", default="data", help="data folder evaluated by default")
    p.add_argument("--force", action="store_true", help="import again even if already imported")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from models.release.import_checkpoint import format_summary, run_import_checkpoint

    if args.checkpoint and args.checkpoint_option and args.checkpoint != args.checkpoint_option:
        return fail(
            f"two checkpoints given: {args.checkpoint} and --checkpoint {args.checkpoint_option}"
        )
    checkpoint = args.checkpoint or args.checkpoint_option
    if checkpoint is None:
        return fail(
            "give the checkpoint: avel import-checkpoint FILE (make import-checkpoint CHECKPOINT=FILE)"
        )
    summary = run_import_checkpoint(checkpoint, args.arch, args.out, args.data_dir, args.force)
    print(format_summary(summary))
    return 0
