"""``avel import-release`` and ``avel export-release``: flags -> config -> stage -> summary."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.cli.common import fail, show_progress
from pipeline.core.store import DTYPES as STORE_DTYPES
from pipeline.stages.release import export_release, import_release
from pipeline.stages.release.export_release import (
    COMPRESSION,
    MASK_FILE,
    MISSING,
    ROWS,
    ExportReleaseConfig,
    run_export_release,
)
from pipeline.stages.release.import_release import ImportReleaseConfig, run_import_release


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_import(subparsers)
    _register_export(subparsers)


def _register_import(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "import-release", help="import the published AVE feature files (h5) into the feature stores"
    )
    p.add_argument("dir", nargs="?", type=Path, help="folder with the release's .h5 files")
    p.add_argument("--release-dir", type=Path, help="same as DIR (for make RELEASE_DIR=...)")
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument(
        "--dtype",
        choices=sorted(STORE_DTYPES),
        default="float16",
        help="storage dtype (default float16)",
    )
    p.add_argument("--force", action="store_true", help="rebuild stores that are already finished")
    p.add_argument(
        "--no-checksum",
        action="store_true",
        help="skip the sha256 of the feature files (hashing the 7.7 GiB visual file takes minutes)",
    )
    p.set_defaults(func=_main_import)


def _main_import(args: argparse.Namespace) -> int:
    if args.dir and args.release_dir and Path(args.dir) != Path(args.release_dir):
        return fail(f"two release folders given: {args.dir} and --release-dir {args.release_dir}")
    release_dir = args.dir or args.release_dir
    if release_dir is None:
        return fail(
            "give the release folder: avel import-release DIR (make import-release RELEASE_DIR=DIR)"
        )
    cfg = ImportReleaseConfig(
        release_dir=release_dir,
        data_dir=args.data_dir,
        dtype=args.dtype,
        force=args.force,
        checksum=not args.no_checksum,
        progress=show_progress(),
    )
    summary = run_import_release(cfg)
    print(import_release.format_summary(summary))
    return 0


def _register_export(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export-release",
        help="write the feature stores in the AVE release layout (h5) for other AVE model repositories",
    )
    p.add_argument("out", nargs="?", type=Path, help="output folder")
    p.add_argument("--out-dir", type=Path, help="same as OUT_DIR (for make OUT_DIR=...)")
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument(
        "--rows",
        choices=ROWS,
        default="annotations-order",
        help="row order: Annotations.txt (default) or the manifest file's own order",
    )
    p.add_argument(
        "--dtype",
        choices=sorted(export_release.DTYPES),
        default=ExportReleaseConfig.dtype,
        help=f"feature dtype (default {ExportReleaseConfig.dtype}, the release's; float32 halves "
        "the size for consumers that cast anyway)",
    )
    p.add_argument(
        "--missing",
        choices=MISSING,
        default="drop",
        help="rows without features: drop them and remap the order files (default), or zero-fill "
        f"them and write {MASK_FILE}",
    )
    p.add_argument(
        "--compression",
        choices=COMPRESSION,
        default="none",
        help="feature files: contiguous as released (default) or row-chunked and compressed",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="overwrite release files in OUT_DIR that another program (or a download) put there",
    )
    p.set_defaults(func=_main_export)


def _main_export(args: argparse.Namespace) -> int:
    if args.out and args.out_dir and Path(args.out) != Path(args.out_dir):
        return fail(f"two output folders given: {args.out} and --out-dir {args.out_dir}")
    out = args.out or args.out_dir
    if out is None:
        return fail(
            "give the output folder: avel export-release OUT_DIR (make export-release OUT_DIR=...)"
        )
    cfg = ExportReleaseConfig(
        out_dir=out,
        data_dir=args.data_dir,
        rows=args.rows,
        dtype=args.dtype,
        missing=args.missing,
        compression=args.compression,
        force=args.force,
        progress=show_progress(),
    )
    summary = run_export_release(cfg)
    print(export_release.format_summary(summary))
    return 0
