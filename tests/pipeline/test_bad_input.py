"""Bad input and faults, as a hostile or unlucky user meets them: one clear line and an honest exit
code, nothing written outside its folder, honest download outcomes, no process left behind, no file
overwritten that the command did not write. Real files, real yt-dlp on loopback, real processes."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from models.data.synthetic import make_synthetic_store
from pipeline.cli import main as avel
from pipeline.core.layout import DataLayout
from pipeline.core.paths import UnsafeNameError
from pipeline.core.store import StoreWriter
from pipeline.demo.server import LoopbackServer
from pipeline.stages.download import load_ledger
from pipeline.stages.segments import SegmentsConfig, run_segments
from tests.support.ave_inputs import make_manifest, write_ave_inputs
from tests.support.make import make
from tests.support.media import make_clip
from tests.support.paths import REPO

VID, OTHER = "resetBody_1", "otherVid_22"


def errors(stderr: str) -> list[str]:
    """The lines of stderr that report an error (a traceback counts as many)."""
    return [ln for ln in stderr.splitlines() if ln.startswith("error:") or "Traceback" in ln]


def one_error(capsys: pytest.CaptureFixture, *needles: str) -> str:
    """The single error line of the last command; it holds every ``needle``."""
    err = capsys.readouterr().err
    lines = errors(err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert all(n in lines[0] for n in needles), (needles, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Served 14 s sources; the moov atom at the front, as web video usually has it."""
    root = tmp_path_factory.mktemp("served")
    for vid in (VID, OTHER):
        make_clip(root / f"{vid}.mp4", duration=14.0, fps=8, size=(64, 48), faststart=True)
    return root


def download_args(data: Path, server: LoopbackServer, *extra: str) -> list[str]:
    url = server.base_url + "/{youtube_id}.mp4"
    return ["download", "--data-dir", str(data), "--url-template", url, "--sleep", "0", *extra]


# ----------------------------------------------------------------------------- writing outside


def test_a_clip_id_that_climbs_out_of_the_data_folder_is_refused(tmp_path, sources, capsys):
    data = tmp_path / "deep" / "data"
    make_manifest(data, [VID])
    manifest = pd.read_parquet(data / "manifest.parquet")
    manifest["clip_id"] = "../../escaped_clip"  # a manifest made by another tool
    manifest.to_parquet(data / "manifest.parquet")
    with LoopbackServer(sources) as server:
        assert avel(download_args(data, server, "--no-progress")) == 2
    one_error(capsys, "manifest.parquet row 0", "'../../escaped_clip'", "make annotations")
    assert not list(tmp_path.rglob("escaped_clip*")) and server.requests == []
    with pytest.raises(UnsafeNameError):
        DataLayout(data).clip("../x")
    assert avel(["segments", "--data-dir", str(data), "--workers", "1"]) == 1
    one_error(capsys, "'../../escaped_clip'")


# ----------------------------------------------------------------------------- text inputs


def _latin1(path: Path) -> None:
    path.write_bytes(path.read_text().replace("Church bell", "Cloche d'église").encode("latin-1"))


@pytest.mark.parametrize(
    "case, where",
    [
        ("annotations_binary", "Annotations.txt: binary data"),
        ("annotations_latin1", "Annotations.txt: not UTF-8 text (byte 0xe9 at line 1"),
        ("split_binary", "train_order.txt: binary data"),
        ("clip_list_empty", "clips.csv: empty file"),
        ("clip_list_binary", "clips.csv: not UTF-8 text"),
        ("clip_list_negative_start", "clips.csv (row 2): start -5.0"),
        ("clip_list_inf_end", "clips.csv (row 1): end inf"),
    ],
)
def test_bad_text_inputs_are_one_line_naming_the_file(tmp_path, capsys, case, where):
    inputs = write_ave_inputs(tmp_path / "in", [VID, OTHER], {})
    args = ["annotations", "--data-dir", str(tmp_path / "data"), "--audioset-csv", "none"]
    if case.startswith("clip_list"):
        clips = tmp_path / "clips.csv"
        clips.write_text(
            {
                "clip_list_empty": "",
                "clip_list_negative_start": f"youtube_id,start,end\n{VID},0,10\n{OTHER},-5,5\n",
                "clip_list_inf_end": f"youtube_id,start,end\n{VID},0,inf\n",
            }.get(case, "")
        )
        if case == "clip_list_binary":
            clips.write_bytes(
                b"youtube_id,start\xff\xfe,end\n" + os.urandom(64).replace(b"\0", b"")
            )
        args += ["--clip-list", str(clips)]
    else:
        args += ["--ave-annotations", str(inputs["annotations"])]
        args += ["--ave-splits", str(inputs["splits"])]
        if case == "annotations_binary":
            inputs["annotations"].write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")
        elif case == "annotations_latin1":
            _latin1(inputs["annotations"])
        else:
            (inputs["splits"] / "train_order.txt").write_bytes(b"\0\x01\x02binary")
    assert avel(args) == 1
    one_error(capsys, where)
    assert not (tmp_path / "data" / "manifest.parquet").exists()


# ----------------------------------------------------------------------------- nonsense options


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--limit", "-1"], "--limit: expected an integer >= 0"),
        (["--workers", "0"], "--workers: expected a positive integer"),
        (["--url-template", "http://127.0.0.1:9/same.mp4"], "no {youtube_id}"),
        (["--url-template", "http://127.0.0.1:9/{id}.mp4"], "unknown field {id}"),
    ],
)
def test_nonsense_download_options_are_refused_before_anything_starts(
    tmp_path, capsys, extra, message
):
    data = tmp_path / "data"
    make_manifest(data, [VID, OTHER])
    argv = ["download", "--data-dir", str(data), "--sleep", "0", *extra]
    with pytest.raises(SystemExit) as stop:
        avel(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err
    assert not (data / "clips").exists()


# ----------------------------------------------------------------------------- outcomes


def test_a_reset_mid_body_is_transient_and_a_busy_folder_exits_4(tmp_path, sources, capsys):
    """A connection reset after the header leaves a clip without video: transient (exit 5), not
    the video's fault. A second download on a folder in use exits 4, as the README's table says."""
    data = tmp_path / "data"
    make_manifest(data, [VID])
    size = (sources / f"{VID}.mp4").stat().st_size
    with LoopbackServer(sources) as server:
        server.route(f"{VID}.mp4", reset_at=size // 10)
        args = download_args(data, server, "--retries", "1", "--no-progress")
        assert avel(args) == 5
        row = load_ledger(data).set_index("clip_id").loc[VID]
        assert (row["status"], row["kind"]) == ("transient", "no_video"), row["reason"]
        assert "the source has a video stream" in row["reason"]

        clips = DataLayout(data).clips
        with open(clips / ".download.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another download holds the folder
            capsys.readouterr()
            assert avel(args) == 4
            one_error(capsys, "another `avel download` is running on", str(clips))


# ----------------------------------------------------------------------------- processes


def _alive_mentioning(text: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains ``text``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(proc.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs Linux /proc")
def test_segments_workers_die_with_a_killed_run(tmp_path):
    data = tmp_path / "segments-kill-data"
    ids = [f"killClip_{i:02d}" for i in range(6)]
    for clip_id in ids:
        make_clip(data / "clips" / f"{clip_id}.mp4", duration=10, fps=10, size=(64, 48))
    pd.DataFrame({"sample": range(len(ids)), "youtube_id": ids}).to_parquet(
        data / "manifest.parquet"
    )
    cmd = [sys.executable, "-m", "pipeline.cli", "segments", "--data-dir", str(data)]
    proc = subprocess.Popen([*cmd, "--workers", "2"], cwd=REPO, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len([p for p in _alive_mentioning(str(data)) if p != proc.pid]) < 2:
            assert time.monotonic() < deadline and proc.poll() is None, "no workers started"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 10
    while _alive_mentioning(str(data)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _alive_mentioning(str(data)) == [], "workers of the killed run still alive"
    assert run_segments(SegmentsConfig(data, frames_per_segment=2, workers=1, progress=False))[
        "ok"
    ] == len(ids)  # and the next run finishes the work


# ----------------------------------------------------------------------------- export


def _clip_list_data(root: Path) -> tuple[Path, list[str]]:
    """A data folder built from a clip list (clip IDs <youtube_id>_<start_ms>) with an audio store."""
    table = root / "clips.csv"
    table.write_text(
        f"youtube_id,start,end,label\n{VID},0,10,dog\n{VID},20,30,cat\n{OTHER},5,15,dog\n"
    )
    data = root / "data"
    assert avel(["annotations", "--data-dir", str(data), "--clip-list", str(table)]) == 0
    keys = list(pd.read_parquet(data / "manifest.parquet")["clip_id"])
    writer = StoreWriter.open(data, "audio", keys, (10, 128))
    for shard, ids in writer.pending_shards():
        writer.write_shard(shard, {k: np.full((10, 128), i, np.float32) for i, k in enumerate(ids)})
    writer.finalize()
    return data, keys


def test_export_of_a_clip_list_folder_writes_noisy_files_and_overwrites_nothing_foreign(
    tmp_path, capsys
):
    data, keys = _clip_list_data(tmp_path)
    assert keys == [f"{VID}_0", f"{VID}_20000", f"{OTHER}_5000"]
    out = tmp_path / "release"
    out.mkdir()
    (out / "audio_feature.h5").write_bytes(b"the downloaded release, not ours")
    args = ["export-release", str(out), "--data-dir", str(data)]
    assert avel(args) == 1
    one_error(capsys, "audio_feature.h5", "--force")
    assert (out / "audio_feature.h5").read_bytes() == b"the downloaded release, not ours"

    assert avel([*args, "--force"]) == 0
    with h5py.File(out / "audio_feature.h5", "r") as f:
        assert f["avadataset"][:, 0, 0].tolist() == [0.0, 1.0, 2.0]  # rows by clip_id
    for name, shape in (("audio_feature_noisy.h5", (0, 10, 128)), ("labels_noisy.h5", (0, 3))):
        with h5py.File(out / name, "r") as f:
            assert f["avadataset"].shape == shape, name  # CMBS's weak script opens them always
    assert avel(args) == 0  # its own files: a rerun needs no --force


def test_truncated_shard_and_random_checkpoint_are_one_line(tmp_path, capsys):
    data = tmp_path / "data"
    make_synthetic_store(data, 12, num_classes=3, splits=(0.5, 0.25, 0.25), shard_size=4)
    runs = tmp_path / "runs"
    train = ["train", "supervised", "--data-dir", str(data), "--run-dir", str(runs)]
    train += ["--model", "a", "--epochs", "1", "--device", "cpu"]
    shard = data / "features" / "audio" / "shard-00001.npy"
    good = shard.read_bytes()
    shard.write_bytes(good[: len(good) // 2])
    assert avel(["export-release", str(tmp_path / "out"), "--data-dir", str(data)]) == 1
    one_error(capsys, str(shard), "make features", "FORCE=1")
    np.save(shard, np.array([{"pickled": "object"}], dtype=object), allow_pickle=True)
    assert avel(train) == 1
    one_error(capsys, str(shard), "rebuild the store")

    shard.write_bytes(good)
    assert avel(train) == 0
    best = runs / "supervised-a" / "seed-1" / "best.pt"
    best.write_bytes(os.urandom(4096))
    capsys.readouterr()
    assert avel(["evaluate", "--run", str(best.parent), "--device", "cpu"]) == 1
    line = one_error(capsys, str(best), "never executed", "avel train")
    assert "weights_only=False" not in line
    (best.parent / "config.json").write_bytes(b"\0\x01")
    assert avel(["attention-maps", str(best.parent), "--video", "x"]) == 1
    one_error(capsys, "config.json: not a run configuration")
    assert avel(["attention-maps", str(best.parent), "--video", "../x"]) == 1
    one_error(capsys, "--video '../x'")


# ----------------------------------------------------------------------------- the TF checkpoint

WRITE_CHECKPOINT = """
import json, sys, warnings
import tensorflow as tf
warnings.simplefilter("ignore")
with tf.Graph().as_default():
    init = tf.compat.v1.random_normal_initializer(stddev=0.05, seed=1)
    for name, shape in json.loads(sys.argv[2]).items():
        scope, leaf = name.rsplit("/", 1)
        with tf.compat.v1.variable_scope(scope):
            tf.compat.v1.get_variable(leaf, shape=shape, initializer=init)
    saver = tf.compat.v1.train.Saver(write_version=tf.compat.v1.train.SaverDef.V1)
    with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        saver.save(sess, sys.argv[1], write_meta_graph=False)
"""


@pytest.mark.slow
def test_features_with_a_tf_checkpoint_convert_it_apart_from_torchvision(tmp_path):
    """`make features FEATURES=audio,visual VGGISH_CHECKPOINT=<TF checkpoint>` on a fresh folder:
    the conversion (TensorFlow) and the visual backbone (torchvision, triton) in one command."""
    pytest.importorskip("tensorflow")
    from pipeline.backbones.vggish_weights import _expected_shapes

    ckpt = tmp_path / "vggish_model.ckpt"  # the official V1 format, random values
    shapes = json.dumps({k: list(v) for k, v in _expected_shapes().items()})
    subprocess.run([sys.executable, "-c", WRITE_CHECKPOINT, str(ckpt), shapes], check=True)
    data = tmp_path / "data"
    make_clip(data / "clips" / f"{VID}.mp4", duration=10, fps=5, size=(64, 48))
    pd.DataFrame({"sample": [0], "youtube_id": [VID]}).to_parquet(data / "manifest.parquet")
    run_segments(SegmentsConfig(data, frames_per_segment=1, workers=1, progress=False))
    cmd = [sys.executable, "-m", "pipeline.cli", "features", "--data-dir", str(data)]
    cmd += ["--features", "audio,visual", "--vggish-checkpoint", str(ckpt), "--device", "cpu"]
    cmd += ["--vgg19-weights", "random", "--allow-random-weights", "--precision", "fp32"]
    cmd += ["--frame-size", "64", "--workers", "1"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    for store in ("audio", "visual"):
        assert (data / "features" / store / "index.parquet").is_file(), store


# ----------------------------------------------------------------------------- make clean


@pytest.mark.skipif(not Path("/usr/bin/make").exists(), reason="make is not installed")
def test_make_clean_keeps_a_data_folder_named_build(tmp_path):
    clip = tmp_path / "build" / "clips" / "abc.mp4"
    clip.parent.mkdir(parents=True)
    clip.write_text("hours of downloading")
    (tmp_path / "build" / "lib").mkdir()
    make("clean", "DATA_DIR=build", cwd=tmp_path)
    assert clip.is_file() and not (tmp_path / "build" / "lib").exists()
