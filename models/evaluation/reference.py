"""What a table's segment accuracy means: decomposed metrics per row and the reference rows under it.

``decomposed_stats(runs)``: mean and sample std over seeds of each run's ``localization.test``
(``models.evaluation.metrics.localization_metrics``: video-class accuracy, event precision/recall/F1, boundary
error, accuracy on full-length and short-event clips). ``reference_markdown(data_dir)``: the
reference rows of the test split computed from the manifest (all background, oracle video class on
every second, best single label per video), in the same columns, for printing under every table.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from models.evaluation.metrics import REFERENCE_LABELS, split_reference

DECOMPOSED = {
    "video_class_accuracy": "video acc",
    "event_precision": "event P",
    "event_recall": "event R",
    "event_f1": "event F1",
    "boundary_error_s": "boundary err (s)",
    "accuracy_full": "full-event clips",
    "accuracy_short": "short-event clips",
}
PERCENT = {k for k in DECOMPOSED if k != "boundary_error_s"}


def decomposed_stats(runs: list[dict]) -> dict:
    """``{key}_mean`` / ``{key}_std`` over the seeds' ``metrics.json`` (None where undefined)."""
    out: dict = {}
    for key in DECOMPOSED:
        values = [r.get("localization", {}).get("test", {}).get(key) for r in runs]
        values = [v for v in values if v is not None]
        scale = 100.0 if key in PERCENT else 1.0
        out[f"{key}_mean"] = statistics.fmean(values) * scale if values else None
        out[f"{key}_std"] = (
            (statistics.stdev(values) * scale if len(values) > 1 else 0.0) if values else None
        )
    return out


def _cell(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def decomposed_cells(row: dict) -> list[str]:
    """Markdown cells (mean over seeds) for a table row carrying ``decomposed_stats``."""
    return [
        _cell(row.get(f"{k}_mean"), ".2f" if k == "boundary_error_s" else ".1f") for k in DECOMPOSED
    ]


def decomposed_header() -> tuple[str, str]:
    return " | ".join(DECOMPOSED.values()), "|".join("---" for _ in DECOMPOSED)


def reference_markdown(data_dir: str | Path, split: str = "test") -> str:
    """The reference rows of ``split`` (from the manifest) as a small Markdown table with a note."""
    try:
        ref = split_reference(data_dir, split)
    except (FileNotFoundError, ValueError) as exc:
        return f"Reference rows unavailable: {exc}\n"
    head, rule = decomposed_header()
    lines = [
        f"Reference rows ({split} split, {ref['clips']} clips, {ref['segments']} seconds, from the "
        "manifest; no features): what a segment accuracy is worth.",
        "",
        f"| reference | segment acc | {head} |",
        f"|---|---|{rule}|",
    ]
    for name, m in ref["rows"].items():
        cells = [
            _cell(
                None if m[k] is None else (100 * m[k] if k in PERCENT else m[k]),
                ".2f" if k == "boundary_error_s" else ".1f",
            )
            for k in DECOMPOSED
        ]
        lines.append(
            f"| {REFERENCE_LABELS[name]} | {100 * m['accuracy']:.1f} | {' | '.join(cells)} |"
        )
    lines += [
        "",
        "All background needs no model. The oracle video class knows each clip's class and "
        "predicts it on every second: perfect classification, no localization. The best single "
        "label per video gives each clip the one label (its class or background) that scores best "
        "on it: the ceiling of any method that never localizes within a clip. Segment accuracy "
        "below that ceiling does not show localization; the event F1, boundary error and "
        "short-event columns do.",
    ]
    return "\n".join(lines) + "\n"
