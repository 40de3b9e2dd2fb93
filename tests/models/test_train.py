"""Training, evaluation and attention maps on small synthetic stores written by the real StoreWriter."""

from __future__ import annotations

import json
import subprocess

import matplotlib.image
import pandas as pd
import pytest
import torch

from models.data.ave import AVEDataset
from models.data.synthetic import make_synthetic_store
from models.evaluation.evaluate_run import run_evaluate
from models.reports.attention_maps import run_attention_maps
from models.training.checkpoint import load_checkpoint
from models.training.engine import TrainConfig, train_seed
from pipeline.cli import main as avel
from pipeline.core.store import FeatureStore

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ave-tiny")
    make_synthetic_store(
        root,
        20,
        num_classes=3,
        splits=(0.6, 0.2, 0.2),
        signal=2.0,
        noise=0.5,
        shard_size=8,
        background_videos=2,
    )
    return root


@pytest.fixture(scope="module")
def av_att_run(data_dir, tmp_path_factory):
    cfg = TrainConfig(
        str(data_dir),
        model="av_att",
        epochs=10,
        batch_size=12,
        lr=3e-3,
        run_dir=str(tmp_path_factory.mktemp("runs")),
    )
    metrics = train_seed(cfg, progress=False)
    return cfg.seed_dir(), metrics


def test_dataset_reads_split_and_stores(data_dir):
    manifest = pd.read_parquet(data_dir / "manifest.parquet")
    train = AVEDataset(data_dir, "train", ("audio", "visual"))
    assert len(train) == int((manifest["split"] == "train").sum()) and not train.missing
    batch = train.batch([0, 1])
    assert batch["audio"].dtype == torch.float32 and batch["visual"].shape == (2, 10, 7, 7, 512)
    row = manifest[manifest["youtube_id"] == train.clip_ids[1]].iloc[0]
    assert batch["segment_labels"][1].tolist() == list(row["segment_labels"])
    stored = FeatureStore.open(data_dir, "visual").get(train.clip_ids[1])
    torch.testing.assert_close(batch["visual"][1], torch.from_numpy(stored.astype("float32")))
    weak = AVEDataset(data_dir, "train", ("audio",), background_videos=True)
    assert weak.extra_videos == 2 and len(weak) == len(train) + 2
    assert (weak.segment_labels[-2:] == train.num_classes - 1).all()


def test_av_att_reaches_full_train_accuracy_and_writes_run_dir(av_att_run):
    run, metrics = av_att_run
    for name in (
        "config.json",
        "metrics.jsonl",
        "metrics.json",
        "best.pt",
        "curves.png",
        "confusion.png",
    ):
        assert (run / name).is_file(), name
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == list(range(1, 11))
    assert history[-1]["train_accuracy"] == 1.0  # every training second right in the last epoch
    assert metrics["train_accuracy"] >= 0.9  # the best-val checkpoint, re-evaluated on train
    best = max(history, key=lambda h: (h["val_accuracy"], -h["epoch"]))
    assert (
        metrics["best_epoch"] == best["epoch"] and metrics["val_accuracy"] == best["val_accuracy"]
    )
    assert metrics["test_segments"] == 10 * 4 and set(metrics["per_class_accuracy"]["test"]) >= {
        "background"
    }
    model, payload = load_checkpoint(run / "best.pt")  # tensors + JSON config only
    assert payload["epoch"] == metrics["best_epoch"] and model.config["name"] == "av_att"


def test_evaluate_from_run_folder(av_att_run, data_dir):
    run, metrics = av_att_run
    result = run_evaluate(run, "test", device="cpu")
    assert result["accuracy"] == metrics["test_accuracy"] and (run / "eval-test.json").is_file()
    assert avel(["evaluate", "--run", str(run), "--split", "val", "--device", "cpu"]) == 0
    assert json.loads((run / "eval-val.json").read_text())["accuracy"] == metrics["val_accuracy"]


def test_same_seed_gives_identical_metrics(data_dir, tmp_path):
    results = []
    for i in range(2):
        cfg = TrainConfig(
            str(data_dir),
            model="av",
            epochs=2,
            batch_size=8,
            run_dir=str(tmp_path / f"r{i}"),
            threads=1,  # a thread count changes float rounding; the free cores may change
        )
        metrics = train_seed(cfg, progress=False)
        losses = [
            json.loads(x)["loss"]
            for x in (cfg.seed_dir() / "metrics.jsonl").read_text().splitlines()
        ]
        results.append((losses, {k: v for k, v in metrics.items() if k != "train_seconds"}))
    assert results[0] == results[1]


def test_weak_training_with_background_videos_and_seeds(data_dir, tmp_path):
    code = avel(
        [
            "train",
            "weak",
            "--data-dir",
            str(data_dir),
            "--model",
            "av",
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--mil",
            "max",
            "--background-videos",
            "--seeds",
            "1,2",
            "--run-dir",
            str(tmp_path),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    exp = tmp_path / "weak-av-mil-max"
    summary = json.loads((exp / "summary.json").read_text())
    assert set(summary["runs"]) == {"1", "2"} and "std" in summary["test_accuracy"]
    config = json.loads((exp / "seed-1" / "config.json").read_text())
    assert config["data"]["extra_background_videos"] == 2 and config["model"]["mil"] == "max"
    metrics = json.loads((exp / "seed-1" / "metrics.json").read_text())
    assert metrics["test_segments"] == 40  # evaluated per second
    # a finished seed with the same config is reused, not retrained
    assert (
        avel(
            [
                "train",
                "weak",
                "--data-dir",
                str(data_dir),
                "--model",
                "av",
                "--epochs",
                "2",
                "--batch-size",
                "8",
                "--mil",
                "max",
                "--background-videos",
                "--seeds",
                "1",
                "--run-dir",
                str(tmp_path),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert json.loads((exp / "summary.json").read_text())["reused"] == [1]


def test_attention_maps_for_generated_clip(av_att_run, data_dir, tmp_path):
    run, _ = av_att_run
    video = AVEDataset(data_dir, "test", ("audio",)).clip_ids[0]
    clip = tmp_path / f"{video}.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=10:duration=10",
            "-pix_fmt",
            "yuv420p",
            str(clip),
        ],
        check=True,
    )
    out = run_attention_maps(run, video, clip=clip, out=tmp_path / "middle.png")
    image = matplotlib.image.imread(out)
    assert image.ndim == 3 and image.shape[1] > image.shape[0] > 100
    pd.DataFrame(
        {
            "clip_id": [video] * 10,
            "second": range(10),
            "frame_indices": [[10 * t + 4, 10 * t + 5] for t in range(10)],
        }
    ).to_parquet(data_dir / "segments.parquet")
    try:
        out2 = run_attention_maps(run, video, clip=clip, out=tmp_path / "planned.png")
    finally:
        (data_dir / "segments.parquet").unlink()
    assert matplotlib.image.imread(out2).shape == image.shape


@pytest.mark.gpu
def test_training_on_gpu_matches_protocol(data_dir, tmp_path):
    cfg = TrainConfig(
        str(data_dir), model="dmrn", epochs=2, batch_size=8, run_dir=str(tmp_path), device="cuda"
    )
    metrics = train_seed(cfg, progress=False)
    assert metrics["device"].startswith("cuda") and metrics["test_segments"] == 40


def test_videos_missing_from_a_store_are_left_out_and_counted(tmp_path):
    import numpy as np

    from pipeline.core.store import StoreWriter

    make_synthetic_store(tmp_path, 10, num_classes=2, splits=(0.6, 0.2, 0.2), stores=("audio",))
    full = AVEDataset(tmp_path, "train", ("audio",))
    ids = FeatureStore.open(tmp_path, "audio").clip_ids
    writer = StoreWriter.open(tmp_path, "audio", ids, (10, 128), "float32", 256, force=True)
    rows = {y: np.zeros((10, 128), np.float32) for y in ids}
    rows[full.clip_ids[0]] = "download failed"
    writer.write_shard(0, rows)
    writer.finalize()
    partial = AVEDataset(tmp_path, "train", ("audio",))
    assert partial.missing == [full.clip_ids[0]] and len(partial) == len(full) - 1


def test_evaluate_every_localization_kind_through_the_cli(av_att_run, data_dir, tmp_path, capsys):
    """A weak experiment folder (seed-*), a run of the previous version (old checkpoint format and
    config), and a file that is no checkpoint (a clear error on stderr)."""
    import shutil

    assert (
        avel(
            [
                "train",
                "weak",
                "--data-dir",
                str(data_dir),
                "--model",
                "av",
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--seeds",
                "1,2",
                "--run-dir",
                str(tmp_path),
                "--device",
                "cpu",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    exp = tmp_path / "weak-av-mil-mean"
    for seed in (1, 2):
        assert json.loads((exp / f"seed-{seed}" / "config.json").read_text())["torch_threads"] == 1
    capsys.readouterr()
    with pytest.raises(SystemExit) as usage:
        avel(["train", "weak", "--data-dir", str(data_dir), "--threads", "0"])
    assert usage.value.code == 2 and "--threads: expected a positive" in capsys.readouterr().err
    assert avel(["evaluate", "--run", str(exp), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "segment accuracy" in out and "mean over seeds" in out and "video acc" in out
    for seed in (1, 2):
        evaluated = json.loads((exp / f"seed-{seed}" / "eval-test.json").read_text())
        trained = json.loads((exp / f"seed-{seed}" / "metrics.json").read_text())
        assert evaluated["accuracy"] == trained["test_accuracy"]

    run, metrics = av_att_run
    old = tmp_path / "old-run"
    old.mkdir()
    shutil.copy(run / "config.json", old / "config.json")
    payload = torch.load(run / "best.pt", weights_only=True)
    spec = payload["model"]
    legacy = {
        "format": "avel-localization-checkpoint-1",
        "model": {"name": spec["name"], "num_classes": spec["num_classes"], **spec["options"]},
        "epoch": payload["epoch"],
        "state_dict": payload["state_dict"],
    }
    torch.save(legacy, old / "best.pt")
    assert avel(["evaluate", "--run", str(old), "--device", "cpu"]) == 0
    assert json.loads((old / "eval-test.json").read_text())["accuracy"] == metrics["test_accuracy"]

    torch.save({"something": torch.zeros(2)}, old / "best.pt")
    capsys.readouterr()
    assert avel(["evaluate", "--run", str(old), "--device", "cpu"]) == 1
    captured = capsys.readouterr()
    assert "not an avel checkpoint" in captured.err and "import-checkpoint" in captured.err
    assert captured.out == ""


def test_in_memory_batches_equal_memory_mapped_ones(data_dir):
    """Rows read once into memory give exactly the batches the memory-mapped gather gives."""
    stores = ("audio", "visual", "visual_vec")
    mapped = AVEDataset(data_dir, "train", stores, background_videos=True, in_memory=False)
    resident = AVEDataset(data_dir, "train", stores, background_videos=True, in_memory=True)
    assert resident.feature_bytes() > 0
    order = torch.randperm(len(mapped), generator=torch.Generator().manual_seed(3)).tolist()
    for a, b in zip(mapped.batches(5), resident.batches(5), strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
    a, b = mapped.batch(order[:7]), resident.batch(order[:7])
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resident.batch(order[:7])["visual"].dtype == torch.float32  # float16 store, float32 out


def test_native_cpu_lstm_hooks_keep_the_lstm_and_restore_onednn():
    from models.networks.blocks.lstm import BiLSTM
    from models.training.speed import native_cpu_lstm, training_threads

    torch.manual_seed(0)
    net = torch.nn.Sequential(BiLSTM(16, hidden=8))
    x = torch.randn(4, 10, 16)
    reference = net(x)
    reference.sum().backward()
    grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    seen = []
    probe = net[0].register_forward_hook(lambda *_: seen.append(torch.backends.mkldnn.enabled))
    with native_cpu_lstm(net, "cpu") as switched:
        out = net(x)
        assert torch.backends.mkldnn.enabled  # only inside the LSTM's own forward
    probe.remove()
    out.sum().backward()
    assert switched == 1 and seen == [False]
    assert torch.allclose(out, reference, atol=1e-6)
    assert all(
        torch.allclose(p.grad, g, atol=1e-5) for p, g in zip(net.parameters(), grads, strict=True)
    )
    assert not net[0]._forward_pre_hooks and not net[0]._forward_hooks  # hooks removed
    before = torch.get_num_threads()
    with training_threads("cpu", 1) as n:
        assert n == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == before


def test_run_records_the_threads_it_trained_with(av_att_run):
    """CPU training takes the cores free at its start (1..usable cores) and records the count."""
    import os

    from models.training.speed import free_cores

    run, _ = av_att_run
    used = json.loads((run / "config.json").read_text())["torch_threads"]
    usable = len(os.sched_getaffinity(0))
    assert 1 <= used <= usable and 1 <= free_cores(0.05) <= usable


def test_a_finished_seed_is_retrained_when_its_stores_changed(tmp_path):
    """A seed's fingerprint carries the identity of every store it read: the same settings on
    rebuilt stores (here: other values) train again instead of answering "reused"."""
    data = tmp_path / "data"
    make_synthetic_store(data, 12, num_classes=2, splits=(0.5, 0.25, 0.25), shard_size=8)
    cfg = TrainConfig(str(data), model="av", epochs=1, batch_size=8, run_dir=str(tmp_path / "r"))
    train_seed(cfg, progress=False)
    stores = json.loads((cfg.seed_dir() / "config.json").read_text())["fingerprint"]["stores"]
    assert set(stores) == {"audio", "visual_vec"} and all(stores.values())
    assert train_seed(cfg, progress=False).get("reused")
    make_synthetic_store(data, 12, num_classes=2, seed=7, splits=(0.5, 0.25, 0.25), shard_size=8)
    assert not train_seed(cfg, progress=False).get("reused")
    assert train_seed(cfg, progress=False).get("reused")


def test_run_records_provenance_outside_its_fingerprint(data_dir, tmp_path):
    """config.json carries the git state, versions and device; another record reuses the seed."""
    from pipeline.core.provenance import git_state

    cfg = TrainConfig(str(data_dir), model="a", epochs=1, batch_size=8, run_dir=str(tmp_path))
    train_seed(cfg, progress=False)
    path = cfg.seed_dir() / "config.json"
    config = json.loads(path.read_text())
    record = config["provenance"]
    assert record["git"] == git_state() and record["versions"]["torch"] == torch.__version__
    assert record["device"] and "provenance" not in config["fingerprint"]
    config["provenance"] = {"git": {"commit": "0" * 40, "dirty": True}, "device": "elsewhere"}
    path.write_text(json.dumps(config))
    assert train_seed(cfg, progress=False)["reused"] is True
