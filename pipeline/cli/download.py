"""``avel download``: flags -> ``DownloadConfig`` -> ``run_download`` -> summary."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.cli.common import (
    EXIT_INTERRUPTED,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    set_exit_code,
    show_progress,
    warn,
)
from pipeline.core.io import DiskFullError
from pipeline.stages.download import format_summary
from pipeline.stages.download.classify import SystemicError
from pipeline.stages.download.fetch import (
    DEFAULT_FORMAT,
    DEFAULT_URL_TEMPLATE,
    check_url_template,
)
from pipeline.stages.download.stage import (
    EXIT_SETUP,
    EXIT_SYSTEMIC,
    DownloadConfig,
    run_download,
)

EXIT_CODES = (
    "exit codes: 0 finished (every clip ok or a permanent failure); 2 did not start (bad input or "
    "setup); 3 stopped: rate-limited; 4 stopped: a problem of this machine (disk full or "
    "read-only, another download on the folder); 5 finished, some clips still transient (run it "
    "again later); 1 an unexpected failure (avel --debug download ... shows it)"
)


def _url_template(text: str) -> str:
    try:
        return check_url_template(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(subparsers: argparse._SubParsersAction) -> None:
    d = DownloadConfig()
    p = subparsers.add_parser(
        "download",
        help="rebuild the 10 s clips (yt-dlp range downloads, or --from-dir)",
        epilog=EXIT_CODES,
    )
    p.add_argument("--data-dir", type=Path, default=d.data_dir)
    p.add_argument(
        "--url-template",
        type=_url_template,
        default=DEFAULT_URL_TEMPLATE,
        help="source URL per video; fields {youtube_id} {start} {end} (default: the YouTube watch URL)",
    )
    p.add_argument(
        "--from-dir",
        type=Path,
        help="ingest existing <clip_id>.mp4 clips (AVE: <youtube_id>.mp4; no network)",
    )
    p.add_argument(
        "--workers", type=positive_int, default=d.workers, help="parallel downloads (default 4)"
    )
    p.add_argument(
        "--sleep",
        type=non_negative_float,
        default=d.sleep,
        help="seconds (jittered) each worker waits before a request (default 5)",
    )
    p.add_argument("--rate-limit", help="max download speed per worker, e.g. 2M (bytes/s)")
    p.add_argument("--cookies", help="cookies.txt (Netscape format) from a logged-in browser")
    p.add_argument(
        "--limit",
        type=non_negative_int,
        help="only the first N unique IDs of the manifest (trials)",
    )
    p.add_argument(
        "--num-shards",
        type=positive_int,
        default=1,
        help="split the clip list into K parts (one DATA_DIR per part; see docs/scaling.md)",
    )
    p.add_argument(
        "--shard-index", type=non_negative_int, default=0, help="this run's part, 0..K-1"
    )
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="also retry permanent failures (unavailable / unusable)",
    )
    p.add_argument(
        "--format", default=DEFAULT_FORMAT, help=f"yt-dlp format (default {DEFAULT_FORMAT})"
    )
    p.add_argument(
        "--max-rate-limited",
        type=positive_int,
        default=d.max_rate_limited,
        help="stop after this many rate-limited answers in a row (default 5)",
    )
    p.add_argument(
        "--rate-limit-pause",
        type=non_negative_float,
        default=d.rate_limit_pause,
        help="seconds every worker pauses at the first rate-limited answer; doubles (300)",
    )
    p.add_argument(
        "--retries",
        type=positive_int,
        default=d.retries,
        help="attempts per video per run for transient failures (default 3)",
    )
    p.add_argument(
        "--backoff",
        type=non_negative_float,
        default=d.backoff,
        help="base of the exponential back-off between attempts, seconds (default 10)",
    )
    p.add_argument(
        "--socket-timeout",
        type=positive_float,
        default=d.socket_timeout,
        help="seconds one network read may wait (default 30)",
    )
    p.add_argument(
        "--transfer-timeout",
        type=positive_float,
        default=d.transfer_timeout,
        help="seconds one whole attempt (fetch, cut, check) may take before it is killed and "
        "recorded transient/timeout (default 300)",
    )
    p.add_argument(
        "--js-runtime",
        default=d.js_runtime,
        help="JavaScript runtime for YouTube: auto (the deno wheel, then deno/node/bun on PATH) "
        "or the path of one",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    cfg = DownloadConfig(
        data_dir=args.data_dir,
        url_template=args.url_template,
        from_dir=args.from_dir,
        workers=args.workers,
        sleep=args.sleep,
        rate_limit=args.rate_limit,
        cookies=args.cookies,
        limit=args.limit,
        num_shards=args.num_shards,
        shard_index=args.shard_index,
        retry_failed=args.retry_failed,
        format=args.format,
        max_rate_limited=args.max_rate_limited,
        rate_limit_pause=args.rate_limit_pause,
        retries=args.retries,
        backoff=args.backoff,
        socket_timeout=args.socket_timeout,
        transfer_timeout=args.transfer_timeout,
        js_runtime=args.js_runtime,
        progress=show_progress() and not args.no_progress,
    )
    try:
        summary = run_download(cfg)
    except (SystemicError, DiskFullError) as exc:  # this machine: disk full, the folder busy
        set_exit_code(exc, EXIT_SYSTEMIC)
        raise
    except (FileNotFoundError, ValueError) as exc:  # did not start: no manifest, a bad value
        set_exit_code(exc, EXIT_SETUP)
        raise
    except OSError as exc:  # this machine: a read-only or unwritable folder
        set_exit_code(exc, EXIT_SYSTEMIC)
        raise
    except KeyboardInterrupt:
        warn("interrupted: the ledger holds every finished video; run the same command to resume")
        return EXIT_INTERRUPTED
    print(format_summary(summary))
    return int(summary["exit_code"])
