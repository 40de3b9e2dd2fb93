"""Issue 6 "done when": `make import-release` -> `make train-supervised MODEL=dmrn` and
`make train-weak MODEL=av_att` select on val and report test accuracy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.release_set import release_data_dir as _data_dir

ROOT = Path(__file__).resolve().parents[2]


def make(target: str, *args: str, data: Path) -> str:
    cmd = [
        "make",
        "-s",
        "-o",
        ".venv/.installed-run",
        "-o",
        "ffmpeg",
        target,
        f"AVEL={sys.executable} -m pipeline.cli",
        f"DATA_DIR={data}",
        *args,
    ]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"make {target}:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def test_train_supervised_and_weak_on_imported_release(small, tmp_path):  # noqa: F811
    data = _data_dir(small, tmp_path)
    runs = tmp_path / "runs"
    make("import-release", f"RELEASE_DIR={small['release']}", "NO_CHECKSUM=1", data=data)
    make(
        "train-supervised",
        "MODEL=dmrn",
        "EPOCHS=3",
        "BATCH_SIZE=8",
        f"RUN_DIR={runs}",
        "SEEDS=1",
        data=data,
    )
    make(
        "train-weak",
        "MODEL=av_att",
        "EPOCHS=3",
        "BATCH_SIZE=8",
        f"RUN_DIR={runs}",
        "SEEDS=1",
        "BACKGROUND_VIDEOS=1",
        data=data,
    )
    for name in ("supervised-dmrn", "weak-av_att-mil-mean"):
        metrics = json.loads((runs / name / "seed-1" / "metrics.json").read_text())
        assert 1 <= metrics["best_epoch"] <= 3
        # the reported accuracies are the selected checkpoint's, re-evaluated from the run folder
        for split in ("val", "test"):
            make("evaluate", f"RUN={runs / name / 'seed-1'}", f"SPLIT={split}", data=data)
            again = json.loads((runs / name / "seed-1" / f"eval-{split}.json").read_text())
            assert again["epoch"] == metrics["best_epoch"], (name, split)
            assert again["accuracy"] == metrics[f"{split}_accuracy"], (name, split)
        assert (runs / name / "seed-1" / "best.pt").is_file()
