"""Tiny AVE-shaped annotation inputs (Annotations.txt, split lists, an AudioSet-style CSV)."""

from __future__ import annotations

from pathlib import Path

from pipeline.stages.annotations.stage import AnnotationsConfig, run_annotations

#: The AudioSet-style clip inside each 14 s served source.
OFFSET = (2.5, 12.5)


def write_ave_inputs(folder: Path, ids: list[str], offsets: dict[str, tuple[float, float]]) -> dict:
    """A tiny AVE-shaped input set: Annotations.txt, split lists, an AudioSet-style CSV."""
    folder.mkdir(parents=True, exist_ok=True)
    cats = ["Church bell", "Male speech, man speaking"]
    lines = [f"{cats[i % 2]}&{vid}&good&{i % 5}&10" for i, vid in enumerate(ids)]
    lines.sort(key=lambda line: line.split("&")[0] != cats[0])  # contiguous category blocks
    (folder / "Annotations.txt").write_text("\n".join(lines) + "\n")
    splits = folder / "splits"
    splits.mkdir(exist_ok=True)
    rows = list(range(len(lines)))
    parts = {"train": rows[0::3], "val": rows[1::3], "test": rows[2::3]}
    for name, part in parts.items():
        (splits / f"{name}_order.txt").write_text("".join(f"{i}\n" for i in part))
    csv = folder / "segments.csv"
    header = "# Segments csv\n# num_ytids=0\n# YTID, start_seconds, end_seconds, positive_labels\n"
    body = "".join(f'{v}, {s:.3f}, {e:.3f}, "/m/0"\n' for v, (s, e) in offsets.items())
    csv.write_text(header + body)
    return {"annotations": folder / "Annotations.txt", "splits": splits, "csv": csv}


def make_manifest(
    data_dir: Path,
    ids: list[str],
    without_offset: tuple[str, ...] = (),
    offsets: dict | None = None,
) -> None:
    """Run the annotations stage on ``write_ave_inputs`` (every clip at ``OFFSET`` unless given)."""
    offsets = {v: (offsets or {}).get(v, OFFSET) for v in ids if v not in without_offset}
    inputs = write_ave_inputs(data_dir.parent / f"{data_dir.name}_inputs", ids, offsets)
    run_annotations(
        AnnotationsConfig(
            data_dir=data_dir,
            ave_annotations=str(inputs["annotations"]),
            ave_splits=str(inputs["splits"]),
            audioset_csv=[str(inputs["csv"])],
        )
    )
