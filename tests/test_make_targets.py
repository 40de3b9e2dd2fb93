"""Every Make target that runs a stage, run through `make` on tiny data: 4 generated clips (the
demo's generator) served on loopback, 1 frame per second, random backbone weights (asked for
explicitly), 1 epoch. Paths hold spaces and quotes and a clip ID starts with '-'.

`make demo` runs in tests/pipeline/test_demo.py, `make convert-vggish` in
tests/pipeline/test_demo_weights.py; `make bench` (minutes even in its quick mode), `make setup`,
`make test` and `make test-ray` (they install into the venv) are checked as plans in
tests/test_make.py."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline.core.manifest import load_manifest
from pipeline.core.store import FeatureStore
from pipeline.demo.server import LoopbackServer
from pipeline.demo.synth import generate_demo_set
from tests.support.make import avel_commands, make

CLIPS = 4


def _plan(out: str) -> list[str]:
    return [" ".join(a[:2]) if a[0] == "train" else a[0] for a in avel_commands(out)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """Inputs, a loopback server for the sources, and `make train-supervised` on a fresh folder."""
    root = tmp_path_factory.mktemp("make")
    synth = generate_demo_set(root / "synth", n_clips=CLIPS, seed=0)
    with LoopbackServer(synth["videos"]) as server:
        data, runs = root / "data", root / "runs 'dir'"
        inputs = [
            f"AVE_ANNOTATIONS={synth['annotations']}",
            f"AVE_SPLITS={synth['dir']}",
            f"AUDIOSET_CSV={synth['segments_csv']}",
        ]
        common = [
            f"DATA_DIR={data}",
            *inputs,
            f"URL_TEMPLATE={server.base_url}/{{youtube_id}}.mp4",
            "SLEEP=0",
            "WORKERS=2",
            "NO_PROGRESS=1",
            "FRAMES_PER_SEGMENT=1",
            "ALLOW_RANDOM_WEIGHTS=yes",
            "VGG19_WEIGHTS=random",
            "NO_DOWNLOAD=true",
            "DEVICE=cpu",
            "EPOCHS=1",
            "SEEDS=1",
            "BATCH_SIZE=8",
            f"RUN_DIR={runs}",
        ]
        first = make("train-supervised", *common, "MODEL=av_att", "NAME=sup")
        yield {
            "root": root,
            "data": data,
            "runs": runs,
            "inputs": inputs,
            "common": common,
            "first": first,
            "server": server,
        }


def test_train_supervised_on_a_fresh_folder_runs_every_missing_stage(tiny) -> None:
    assert _plan(tiny["first"].stdout) == [
        "annotations",
        "download",
        "segments",
        "features",
        "train supervised",
    ]
    seed = tiny["runs"] / "sup" / "seed-1"
    assert (seed / "best.pt").is_file() and (seed / "metrics.json").is_file()
    assert len(load_manifest(tiny["data"])) == CLIPS
    assert len(FeatureStore.open(tiny["data"], "visual").clip_ids) == CLIPS
    # a named stage always runs its command (it resumes: nothing left to do)
    again = make("features", *tiny["common"])
    assert _plan(again.stdout) == ["features"] and "random" in again.stdout.lower()


def test_weak_crossmodal_and_table_reuse_the_stages(tiny) -> None:
    weak = make("train-weak", *tiny["common"], "NAME=weak", "MIL=max", "BACKGROUND_VIDEOS=0")
    assert _plan(weak.stdout) == ["train weak"]
    config = json.loads((tiny["runs"] / "weak" / "seed-1" / "config.json").read_text())
    assert (
        config["fingerprint"]["mil"] == "max"
        and config["fingerprint"]["background_videos"] is False
    )
    xm = make("train-avdln", *tiny["common"], "NAME=xm", "MISMATCHED=0")
    assert _plan(xm.stdout) == ["train crossmodal"]
    make("evaluate-crossmodal", f"RUN={tiny['runs'] / 'xm'}", "DEVICE=cpu")
    metrics = json.loads((tiny["runs"] / "xm" / "evaluate" / "metrics-test.json").read_text())
    assert metrics["data_dir"] == str(tiny["data"])  # the run's own data folder
    table = make("table", *tiny["common"], "TABLE=models", "ONLY=a")
    assert _plan(table.stdout) == ["table"]
    assert "| A |" in (tiny["runs"] / "tables" / "models.md").read_text()


def test_evaluate_and_attention_maps_read_the_runs_data_folder(tiny, tmp_path: Path) -> None:
    """Run from a folder without data/: the data folder comes from the run's config."""
    seed = tiny["runs"] / "sup" / "seed-1"
    make("evaluate", f"RUN={seed}", "DEVICE=cpu", cwd=tmp_path)
    result = json.loads((seed / "eval-test.json").read_text())
    assert result["data_dir"] == str(tiny["data"])
    video = next(v for v in load_manifest(tiny["data"])["youtube_id"] if v.startswith("-"))
    png = tmp_path / "it's a map.png"
    make("attention-maps", f"RUN={seed}", f"VIDEO={video}", f"OUT={png}", cwd=tmp_path)
    assert png.is_file() and png.stat().st_size > 1000


def test_export_then_import_release_round_trip(tiny) -> None:
    out = tiny["root"] / "ex port"
    make("export-release", f"DATA_DIR={tiny['data']}", f"OUT_DIR={out}")
    with h5py.File(out / "audio_feature.h5", "r") as f:
        assert f["avadataset"].dtype == np.float64 and f["avadataset"].shape == (CLIPS, 10, 128)
    back = tiny["root"] / "imported"
    imported = make(
        "import-release", f"DATA_DIR={back}", *tiny["inputs"], f"RELEASE_DIR={out}", "NO_CHECKSUM=1"
    )
    assert _plan(imported.stdout) == ["annotations", "import-release"]
    for name in ("audio", "visual"):
        a, b = FeatureStore.open(tiny["data"], name), FeatureStore.open(back, name)
        assert a.clip_ids == b.clip_ids
        np.testing.assert_array_equal(a.gather(a.clip_ids), b.gather(b.clip_ids))


def test_import_checkpoint_and_evaluate_a_released_model(tmp_path: Path) -> None:
    pytest.importorskip("models.release.names")
    from models.data.synthetic import make_synthetic_store
    from tests.support.release_pickles import release_network, save_release_pickle

    data = tmp_path / "release data"
    make_synthetic_store(data, 10, num_classes=28, shard_size=8, stores=("audio", "visual"))
    source = tmp_path / "my checkpoints" / "AV_att.pt"
    source.parent.mkdir()
    save_release_pickle(release_network("av_att"), source, "av_att")
    runs = tmp_path / "runs"
    make("evaluate", f"CHECKPOINT={source}", f"DATA_DIR={data}", f"RUN_DIR={runs}", "DEVICE=cpu")
    run = runs / "release-AV_att"
    assert json.loads((run / "eval-test.json").read_text())["data_dir"] == str(data)
    again = make("import-checkpoint", f"CHECKPOINT={source}", f"RUN_DIR={runs}")
    assert "already imported" in again.stdout
    forced = make("import-checkpoint", f"CHECKPOINT={source}", f"RUN_DIR={runs}", "FORCE=1")
    assert "already imported" not in forced.stdout and "imported as av_att" in forced.stdout


def test_lint_and_ffmpeg() -> None:
    make("ffmpeg")
    make("lint")
