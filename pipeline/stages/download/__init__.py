"""Download stage: rebuild the AVE clips from their YouTube IDs, resumable and honest about failures.

``avel download`` reads the manifest, fetches ``[clip_start, clip_end)`` of every video with a
yt-dlp range download (or ingests clips a user already has with ``--from-dir``), validates each
clip with ffprobe and records every result in ``DATA_DIR/clips/status.parquet``.
"""

from __future__ import annotations

from pipeline.stages.download.classify import STATUSES, Outcome, classify_exception
from pipeline.stages.download.ledger import Ledger, load_ledger
from pipeline.stages.download.stage import (
    EXIT_TRANSIENT,
    RATE_LIMIT_ADVICE,
    DownloadConfig,
    run_download,
)
from pipeline.stages.download.validate import ClipCheck, check_clip

__all__ = [
    "ClipCheck",
    "DownloadConfig",
    "Ledger",
    "Outcome",
    "STATUSES",
    "check_clip",
    "classify_exception",
    "format_summary",
    "load_ledger",
    "run_download",
]


def format_summary(summary: dict) -> str:
    """The human summary printed at the end of a run."""
    run, status = summary["this_run"], summary["status"]
    lines = [
        f"{summary['mode']}: {summary['videos']} videos"
        + (f" (from {summary['from_dir']})" if summary.get("from_dir") else ""),
        f"  this run: {run['new_ok']} new clips (downloaded {run['downloaded']}, ingested "
        f"{run['ingested']}, existing files adopted {run['adopted']}); {run['already_ok']} already ok; "
        f"{run['skipped_permanent']} permanent failures skipped (--retry-failed retries them)",
        "  ledger:   " + "   ".join(f"{s} {status[s]}" for s in STATUSES),
    ]
    if summary["availability"] is not None:
        lines.append(f"  availability: {100 * summary['availability']:.1f}% of the videos tried")
    if run["no_offset"]:
        lines.append(f"  {run['no_offset']} videos have no AudioSet offset (absent from the CSVs)")
    if run.get("range_changed"):
        lines.append(
            f"  {run['range_changed']} clips were cut from another range than the manifest asks: "
            "set aside in clips/.stale and downloaded again"
        )
    if run["not_in_from_dir"]:
        lines.append(f"  {run['not_in_from_dir']} videos are not in the --from-dir folder")
    if summary["top_failures"]:
        lines.append("  top failure reasons:")
        width = max(len(f"{r['status']}/{r['kind']}") for r in summary["top_failures"])
        for r in summary["top_failures"]:
            label = f"{r['status']}/{r['kind']}"
            lines.append(f"    {r['count']:>6}  {label:<{width}}  e.g. {r['example']}")
    lines.append(f"  -> clips in {summary['clips_dir']}, ledger {summary['ledger']}")
    if summary["stopped"]:
        lines.append(f"STOPPED: {summary['stopped']}")
        if summary["this_run"]["rate_limited_answers"]:
            lines.append(f"  {RATE_LIMIT_ADVICE}")
    elif summary["exit_code"] == EXIT_TRANSIENT:
        lines.append(
            f"NOT FINISHED: {status['transient']} clips are still transient after every retry; "
            f"run the same command again later (exit code {EXIT_TRANSIENT})"
        )
    return "\n".join(lines)
