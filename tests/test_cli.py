"""The CLI's conventions, for every command: one error line (the traceback only with --debug),
exit 1 for a failed run and 2 for bad usage (download keeps its own codes), --version, progress
bars only on a terminal and never with --quiet; and every command on a read-only folder and on a
binary or empty input file prints one line and exits non-zero."""

from __future__ import annotations

import io
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from models.data.synthetic import make_synthetic_store
from pipeline.cli import main as avel
from pipeline.stages.segments import SegmentsConfig, run_segments
from tests.support.disk import read_only
from tests.support.media import make_clip
from tests.support.paths import REPO
from tests.support.release_pickles import release_network, save_release_pickle

CLIP = "sweepClip_1"
BINARY = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\xff\xfe" + bytes(range(256))


def run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """``avel ARGV`` in this process: its exit status and stderr."""
    capsys.readouterr()
    try:
        code = avel(argv)
    except SystemExit as stop:  # argparse
        code = stop.code if isinstance(stop.code, int) else 1
    return code, capsys.readouterr().err


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("error:") or "Traceback" in ln]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, small_release: dict) -> dict[str, Path]:
    """A data folder with stores, a segmented one, a trained run, a release, a release checkpoint."""
    root = tmp_path_factory.mktemp("cli-world")
    data = root / "data"
    make_synthetic_store(data, 12, num_classes=3, splits=(0.5, 0.25, 0.25), shard_size=4)
    seg = root / "seg"
    make_clip(seg / "clips" / f"{CLIP}.mp4", duration=10, fps=5, size=(64, 48))
    pd.DataFrame({"sample": [0], "youtube_id": [CLIP]}).to_parquet(seg / "manifest.parquet")
    run_segments(SegmentsConfig(seg, frames_per_segment=1, workers=1, progress=False))
    runs = root / "runs"
    argv = ["train", "supervised", "--data-dir", str(data), "--run-dir", str(runs)]
    assert avel([*argv, "--model", "av_att", "--epochs", "1", "--device", "cpu"]) == 0
    checkpoint = save_release_pickle(release_network("av_att"), root / "AV_att.pt", "av_att")
    clips = root / "clips.csv"
    clips.write_text(f"youtube_id,start,end\n{CLIP},0,10\n")
    return {
        "root": root,
        "data": data,
        "seg": seg,
        "runs": runs,
        "run": runs / "supervised-av_att" / "seed-1",
        "release": small_release["release"],
        "release_manifest": small_release["manifest_dir"],
        "checkpoint": checkpoint,
        "clips": clips,
    }


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


# ----------------------------------------------------------------------------- conventions


def test_version_debug_and_exit_codes(tmp_path, capsys):
    code, _ = run(["--version"], capsys)
    assert code == 0  # argparse prints the version to stdout
    none = str(tmp_path / "none")
    code, err = run(["segments", "--data-dir", none], capsys)
    assert code == 1 and len(error_lines(err)) == 1 and "manifest.parquet not found" in err
    code, err = run(["--debug", "segments", "--data-dir", none], capsys)
    assert code == 1 and "Traceback" in err and "manifest.parquet not found" in err
    os.environ["AVEL_DEBUG"] = "1"
    try:
        assert "Traceback" in run(["segments", "--data-dir", none], capsys)[1]
    finally:
        del os.environ["AVEL_DEBUG"]
    code, err = run(["export-release", "a", "--out-dir", "b"], capsys)
    assert code == 2 and "two output folders" in err  # bad usage
    code, err = run(["train", "supervised", "--name", "../up"], capsys)
    assert code == 2 and "--name '../up'" in err
    code, err = run(["segments", "--workers", "0"], capsys)
    assert code == 2 and "--workers: expected a positive integer" in err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("quiet", ["", "--quiet", "AVEL_QUIET"])
def test_progress_bars_only_on_a_terminal_and_not_when_quiet(world, tmp_path, quiet, monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    if quiet == "AVEL_QUIET":
        monkeypatch.setenv("AVEL_QUIET", "1")
    argv = ["--quiet"] if quiet == "--quiet" else []
    out = tmp_path / "out"
    assert avel([*argv, "export-release", str(out), "--data-dir", str(world["data"])]) == 0
    drawn = "export audio_feature.h5" in terminal.getvalue()
    assert drawn is (not quiet), terminal.getvalue()[-500:]


# ----------------------------------------------------------------------------- every command

#: command -> (argv for a world, the folder it writes into): the run is made read-only.
Case = Callable[[dict[str, Path], Path], tuple[list[str], Path]]


def _annotations(w: dict, tmp: Path) -> tuple[list[str], Path]:
    data = tmp / "data"
    data.mkdir()
    return ["annotations", "--data-dir", str(data), "--clip-list", str(w["clips"])], data


def _download(w: dict, tmp: Path) -> tuple[list[str], Path]:
    data = copy(w["seg"], tmp / "data")
    shutil.rmtree(data / "clips")
    argv = ["download", "--data-dir", str(data), "--from-dir", str(w["seg"] / "clips")]
    return [*argv, "--no-progress"], data


def _segments(w: dict, tmp: Path) -> tuple[list[str], Path]:
    data = copy(w["seg"], tmp / "data")
    return ["segments", "--data-dir", str(data), "--workers", "1", "--force"], data


def _features(w: dict, tmp: Path) -> tuple[list[str], Path]:
    data = copy(w["seg"], tmp / "data")
    argv = ["features", "--data-dir", str(data), "--features", "audio", "--device", "cpu"]
    return [*argv, "--allow-random-weights", "--no-download", "--precision", "fp32"], data


def _import_release(w: dict, tmp: Path) -> tuple[list[str], Path]:
    data = copy(w["release_manifest"], tmp / "data")
    return ["import-release", str(w["release"]), "--data-dir", str(data), "--no-checksum"], data


def _export_release(w: dict, tmp: Path) -> tuple[list[str], Path]:
    out = tmp / "out"
    out.mkdir()
    return ["export-release", str(out), "--data-dir", str(w["data"])], out


def _train(w: dict, tmp: Path) -> tuple[list[str], Path]:
    runs = tmp / "runs"
    runs.mkdir()
    argv = ["train", "supervised", "--data-dir", str(w["data"]), "--run-dir", str(runs)]
    return [*argv, "--model", "a", "--epochs", "1", "--device", "cpu"], runs


def _evaluate(w: dict, tmp: Path) -> tuple[list[str], Path]:
    run_dir = copy(w["run"], tmp / "run")
    return ["evaluate", "--run", str(run_dir), "--device", "cpu"], run_dir


def _table(w: dict, tmp: Path) -> tuple[list[str], Path]:
    runs = tmp / "runs"
    runs.mkdir()
    argv = ["table", "models", "--data-dir", str(w["data"]), "--run-dir", str(runs)]
    return [*argv, "--only", "a", "--seeds", "1", "--epochs", "1", "--device", "cpu"], runs


def _zero_shot(w: dict, tmp: Path) -> tuple[list[str], Path]:
    data = copy(w["data"], tmp / "data")
    return ["zero-shot", "--data-dir", str(data), "--run-dir", str(tmp / "runs")], data


def _attention_maps(w: dict, tmp: Path) -> tuple[list[str], Path]:
    run_dir = copy(w["run"], tmp / "run")
    video = str(pd.read_parquet(w["data"] / "manifest.parquet")["youtube_id"].iloc[0])
    clip = tmp / "clip.mp4"
    make_clip(clip, duration=10, fps=2, size=(32, 32), audio=False)
    return ["attention-maps", str(run_dir), "--video", video, "--clip", str(clip)], run_dir


def _import_checkpoint(w: dict, tmp: Path) -> tuple[list[str], Path]:
    out = tmp / "runs"
    out.mkdir()
    argv = ["import-checkpoint", str(w["checkpoint"]), "--out", str(out / "release-AV_att")]
    return [*argv, "--data-dir", str(w["data"])], out


def _bench(w: dict, tmp: Path) -> tuple[list[str], Path]:
    data = tmp / "data"
    data.mkdir()
    return ["bench", "--data-dir", str(data), "--out-dir", str(data / "bench"), "--quick"], data


def _demo(w: dict, tmp: Path) -> tuple[list[str], Path]:
    data = tmp / "data"
    data.mkdir()
    return ["demo", "--data-dir", str(data), "--run-dir", str(data / "runs"), "--offline"], data


def _rehearsal(w: dict, tmp: Path) -> tuple[list[str], Path]:
    data = tmp / "data"
    data.mkdir()
    return ["rehearsal", "--data-dir", str(data), "--run-dir", str(data / "runs")], data


def _convert_vggish(w: dict, tmp: Path) -> tuple[list[str], Path]:
    weights = tmp / "weights"
    weights.mkdir()
    (tmp / "vggish.pt").write_bytes(b"")
    argv = ["convert-vggish", "--data-dir", str(tmp), "--weights-dir", str(weights)]
    return [*argv, "--no-download"], weights


COMMANDS: dict[str, Case] = {
    "annotations": _annotations,
    "download": _download,
    "segments": _segments,
    "features": _features,
    "convert-vggish": _convert_vggish,
    "import-release": _import_release,
    "export-release": _export_release,
    "train": _train,
    "evaluate": _evaluate,
    "table": _table,
    "zero-shot": _zero_shot,
    "attention-maps": _attention_maps,
    "import-checkpoint": _import_checkpoint,
    "bench": _bench,
    "demo": _demo,
    "rehearsal": _rehearsal,
}


def test_every_command_is_in_the_sweep_and_the_readme_table():
    from tests.test_make import subcommands

    assert set(subcommands()) == set(COMMANDS)
    readme = (REPO / "README.md").read_text()
    table = readme.split("## Errors and exit codes", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    listed = {name for line in rows for name in re.findall(r"`([a-z-]+)`", line.split("|")[1])}
    assert listed == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_read_only_folder_is_one_line_and_non_zero(world, tmp_path, capsys, command):
    argv, folder = COMMANDS[command](world, tmp_path)
    with read_only(folder):
        code, err = run(argv, capsys)
    lines = error_lines(err)
    assert code == {"download": 4}.get(command, 1) and len(lines) == 1, (code, err[-3000:])
    assert str(folder) in lines[0] or command == "convert-vggish", lines[0]


#: command -> (the input file it reads, made in the case's folder; the command line)
Input = Callable[[dict[str, Path], Path], tuple[Path, str]]
TRAIN = "--epochs 1 --device cpu"
INPUTS: dict[str, Input] = {
    "annotations": lambda w, t: (
        t / "clips.csv",
        f"annotations --data-dir {t / 'a'} --clip-list {t / 'clips.csv'}",
    ),
    "download": lambda w, t: (
        copy(w["seg"], t / "seg") / "manifest.parquet",
        f"download --data-dir {t / 'seg'} --from-dir {t / 'seg'}",
    ),
    "segments": lambda w, t: (
        copy(w["seg"], t / "seg") / "manifest.parquet",
        f"segments --data-dir {t / 'seg'} --workers 1",
    ),
    "features": lambda w, t: (
        copy(w["seg"], t / "seg") / "segments.parquet",
        f"features --data-dir {t / 'seg'} --allow-random-weights --no-download",
    ),
    "import-release": lambda w, t: (
        copy(w["release"], t / "release") / "audio_feature.h5",
        f"import-release {t / 'release'} --no-checksum "
        f"--data-dir {copy(w['release_manifest'], t / 'data')}",
    ),
    "export-release": lambda w, t: (
        copy(w["data"], t / "data") / "features" / "audio" / "index.parquet",
        f"export-release {t / 'out'} --data-dir {t / 'data'}",
    ),
    "train": lambda w, t: (
        copy(w["data"], t / "data") / "features" / "visual" / "shard-00000.npy",
        f"train supervised --data-dir {t / 'data'} --run-dir {t / 'runs'} --model av_att {TRAIN}",
    ),
    "evaluate": lambda w, t: (
        copy(w["run"], t / "run") / "best.pt",
        f"evaluate --run {t / 'run'} --device cpu",
    ),
    "table": lambda w, t: (
        copy(w["data"], t / "data") / "manifest.parquet",
        f"table models --data-dir {t / 'data'} --run-dir {t / 'runs'} --only a --seeds 1 {TRAIN}",
    ),
    "attention-maps": lambda w, t: (
        copy(w["run"], t / "run") / "config.json",
        f"attention-maps {t / 'run'} --video x",
    ),
    "import-checkpoint": lambda w, t: (
        t / "AV_att.pt",
        f"import-checkpoint {t / 'AV_att.pt'} --out {t / 'imported'}",
    ),
    "rehearsal": lambda w, t: (
        t / "Annotations.txt",
        f"rehearsal --data-dir {t / 'r'} --run-dir {t / 'rr'} --ave-annotations {t / 'Annotations.txt'}",
    ),
}


@pytest.mark.parametrize("content", ["binary", "empty"])
@pytest.mark.parametrize("command", sorted(INPUTS))
def test_a_binary_or_empty_input_is_one_line_and_non_zero(
    world, tmp_path, capsys, command, content
):
    path, argv = INPUTS[command](world, tmp_path)
    path.write_bytes(BINARY if content == "binary" else b"")
    code, err = run(argv.split(), capsys)
    lines = error_lines(err)
    assert code == {"download": 2}.get(command, 1) and len(lines) == 1, (code, err[-3000:])
    assert path.name in lines[0], lines[0]
