"""Cross-modality localization: AVDLN, DCCA, the A2V/V2A protocol, the release's Keras weights."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from models.data.crossmodal import build_pairs, load_clips
from models.evaluation.crossmodal import chance_accuracy, evaluate_matrices, evaluate_model
from models.networks import build_model, count_parameters, model_names
from models.networks.avdln import AVDLN, NUM_PARAMETERS, contrastive_loss
from models.networks.dcca import cca_loss
from models.release.keras_avdln import KERAS_AVDLN_LAYERS, ReleaseWeightsError, load_keras_avdln
from models.reports.plots import plot_distance_matrix
from models.training.engine import TrainConfig, run_train
from pipeline import cli
from pipeline.core.io import write_parquet
from pipeline.core.store import StoreWriter
from tests.support.paths import shared_dir

BACKGROUND = 28
CODE = 8


# --------------------------------------------------------------------------- synthetic store


def _write_synthetic(
    data_dir, seed: int = 0, plan=(("train", 70), ("val", 16), ("test", 24))
) -> None:
    """Manifest + visual_vec/audio stores where event seconds share a hidden code across modalities.

    Each second draws a code z; on event seconds audio and visual are linear images of the same z,
    on background seconds of independent codes (they do not belong together).
    """
    rng = np.random.default_rng(seed)
    w_visual = rng.normal(size=(CODE, 512)) / np.sqrt(CODE)
    w_audio = rng.normal(size=(CODE, 128)) / np.sqrt(CODE)
    rows, visual, audio = [], {}, {}
    sample = 0
    for split, n in plan:
        for k in range(n):
            length = int(rng.integers(2, 10))
            start = int(rng.integers(0, 10 - length + 1))
            if split == "train" and k < 3:
                start, length = 0, 10  # full-length events give positives only
            if split == "test" and k == 0:
                start, length = 0, 10  # skipped by the protocol
            if split == "test" and k == 1:
                start, length = 0, 0  # empty event: skipped
            end = start + length
            label = int(rng.integers(0, BACKGROUND))
            youtube_id = f"x{sample:010d}"
            z_visual = rng.normal(size=(10, CODE))
            z_audio = rng.normal(size=(10, CODE))
            z_audio[start:end] = z_visual[start:end]
            visual[youtube_id] = z_visual @ w_visual + 0.05 * rng.normal(size=(10, 512))
            audio[youtube_id] = z_audio @ w_audio + 0.05 * rng.normal(size=(10, 128))
            seg = [label if start <= t < end else BACKGROUND for t in range(10)]
            rows.append((sample, youtube_id, f"class{label}", label, start, end, split, split, seg))
            sample += 1
    manifest = pd.DataFrame(
        rows,
        columns=[
            "sample",
            "youtube_id",
            "category",
            "label",
            "start",
            "end",
            "split",
            "match_split",
            "segment_labels",
        ],
    )
    manifest["split"] = manifest["split"].astype("string")
    manifest["match_split"] = manifest["match_split"].astype("string")
    write_parquet(manifest, data_dir / "manifest.parquet")
    ids = manifest["youtube_id"].tolist()
    for name, arrays, dim in (("visual_vec", visual, 512), ("audio", audio, 128)):
        writer = StoreWriter.open(data_dir, name, ids, (10, dim), dtype="float32", shard_size=64)
        for shard, shard_ids in writer.pending_shards():
            writer.write_shard(shard, {y: arrays[y] for y in shard_ids})
        assert writer.finalize() is not None


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("xmodal")
    _write_synthetic(data_dir)
    return data_dir


# --------------------------------------------------------------------------- network and loss


def test_avdln_parameter_count_and_registry():
    model = build_model("avdln")
    assert isinstance(model, AVDLN)
    assert count_parameters(model) == NUM_PARAMETERS == 98_688
    assert set(model_names("crossmodal")) == {"avdln", "dcca"}
    with pytest.raises(ValueError, match="unknown model"):
        build_model("nope")


def test_contrastive_loss_hand_computed():
    d = torch.tensor([0.5, 1.0, 2.5, 0.0])
    y = torch.tensor([1.0, 0.0, 0.0, 1.0])
    # y=1: D^2 -> 0.25, 0; y=0: max(2 - D, 0)^2 -> (2 - 1)^2 = 1, max(-0.5, 0)^2 = 0; mean = 1.25 / 4
    assert float(contrastive_loss(d, y, margin=2.0)) == pytest.approx(0.3125)
    assert float(contrastive_loss(d, y, margin=3.0)) == pytest.approx((0.25 + 4.0 + 0.25) / 4)


def test_cca_loss_sees_shared_signal():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(500, 3, generator=g)
    h1 = torch.cat([z, torch.randn(500, 2, generator=g)], 1)
    h2 = torch.cat([z @ torch.randn(3, 3, generator=g), torch.randn(500, 2, generator=g)], 1)
    top3 = -float(cca_loss(h1, h2, top_k=3, reg=1e-4))
    assert 2.9 < top3 <= 3.0 + 1e-6  # three perfectly correlated directions
    assert (
        -float(cca_loss(h1, h2, top_k=5, reg=1e-4)) < top3 + 0.5
    )  # the two noise pairs add little


# --------------------------------------------------------------------------- protocol


def test_evaluation_hand_made_clips(tmp_path):
    """Three localizable clips with known answers, plus a 10 s and an empty clip that are skipped."""
    dist = np.ones((5, 10, 10))
    # clip 0: event 2..5 (l=3); matching seconds are close -> both directions find start 2
    for t in range(2, 5):
        dist[0, t, t] = 0.0
    # clip 1: event 5..9 (l=4); audio seconds 5..8 are closest to visual 3..6 -> A2V says 3 (error 2);
    # visual seconds 5..8 look best against audio 5..8 (0.5 each) -> V2A says 5
    for i in range(4):
        dist[1, 5 + i, 5 + i] = 0.5
        dist[1, 3 + i, 5 + i] = 0.0
    # clip 2: event 0..2 (l=2); all windows tie -> argmin takes the first start, 0, which is correct
    dist[2] = 0.7
    starts = np.array([2, 5, 0, 0, 4])
    ends = np.array([5, 9, 2, 10, 4])
    m = evaluate_matrices(dist, starts, ends)
    assert (m["clips"], m["skipped_full_length"], m["skipped_empty"]) == (3, 1, 1)
    assert m["pred_a2v"][:3].tolist() == [2, 3, 0] and m["pred_v2a"][:3].tolist() == [2, 5, 0]
    assert m["a2v_accuracy"] == pytest.approx(2 / 3)
    assert m["v2a_accuracy"] == pytest.approx(1.0)
    assert m["a2v_start_mae"] == pytest.approx(2 / 3)
    assert m["v2a_start_mae"] == 0.0
    assert m["chance_accuracy"] == pytest.approx((1 / 8 + 1 / 7 + 1 / 9) / 3)
    png = plot_distance_matrix(dist[1], 5, 9, 3, 5, tmp_path / "d.png", "clip 1")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_chance_matches_random_ranking():
    rng = np.random.default_rng(1)
    lengths = np.array([2, 5, 9, 3])
    starts = np.array([1, 0, 1, 7])
    dist = rng.random((4000, 10, 10))
    m = evaluate_matrices(dist, np.tile(starts, 1000), np.tile(starts + lengths, 1000))
    assert m["a2v_accuracy"] == pytest.approx(chance_accuracy(lengths), abs=0.03)


def test_pairs_follow_the_release(synthetic):
    clips = load_clips(synthetic, "train")
    v, a, y = build_pairs(clips)
    assert v.shape == (len(clips) * 10, 512) and a.shape == (len(clips) * 10, 128)
    expected = int((clips.rows["end"] - clips.rows["start"]).sum())
    assert int(y.sum()) == expected
    np.testing.assert_array_equal(v[:10], clips.visual[0])
    v2, a2, y2 = build_pairs(clips, mismatched=2)
    assert len(y2) == len(y) + 2 * expected and int(y2.sum()) == expected
    _, _, y3 = build_pairs(clips, positives_only=True)
    assert len(y3) == expected and y3.min() == 1


# --------------------------------------------------------------------------- training


def test_avdln_learns_synthetic_codes(synthetic, tmp_path):
    torch.set_num_threads(1)
    cfg = TrainConfig(
        data_dir=str(synthetic),
        mode="crossmodal",
        run_dir=str(tmp_path),
        name="avdln",
        epochs=4,
        batch_size=16,
        seed=0,
        plots=2,
    )
    summary = run_train(cfg, [0, 1], progress=False)
    chance = summary["chance_accuracy"]["mean"]
    assert summary["a2v_accuracy"]["mean"] > chance + 0.4, summary
    assert summary["v2a_accuracy"]["mean"] > chance + 0.4, summary
    seed_dir = tmp_path / "avdln" / "seed-0"
    for name in ("config.json", "metrics.jsonl", "metrics.json", "best.pt", "curves.png"):
        assert (seed_dir / name).is_file(), name
    assert len(list(seed_dir.glob("distance-*.png"))) == 2
    assert len((seed_dir / "metrics.jsonl").read_text().splitlines()) == 4
    seed_metrics = json.loads((seed_dir / "metrics.json").read_text())
    assert seed_metrics["test"]["clips"] == 22  # 24 test clips less the 10 s and the empty one
    assert (tmp_path / "avdln" / "summary.md").is_file()
    # a second call reuses the finished seeds (resumable, idempotent)
    stamp = (seed_dir / "best.pt").stat().st_mtime_ns
    again = run_train(cfg, [0, 1], progress=False)
    assert (seed_dir / "best.pt").stat().st_mtime_ns == stamp
    assert again["a2v_accuracy"] == summary["a2v_accuracy"]
    # re-evaluation from the run directory alone, through the CLI
    assert (
        cli.main(
            [
                "evaluate",
                "--data-dir",
                str(synthetic),
                "--run",
                str(tmp_path / "avdln"),
                "--plot-samples",
                "88",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    evaluated = json.loads((tmp_path / "avdln" / "evaluate" / "metrics-test.json").read_text())
    assert evaluated["a2v_accuracy"]["mean"] == pytest.approx(summary["a2v_accuracy"]["mean"])
    assert (tmp_path / "avdln" / "evaluate" / "seed-1" / "distance-0088.png").is_file()
    # a run of the previous version: flat config, {"model": NAME, "options", "state_dict"} best.pt
    previous = tmp_path / "previous" / "seed-0"
    previous.mkdir(parents=True)
    payload = torch.load(seed_dir / "best.pt", weights_only=True)
    torch.save(
        {"model": "avdln", "options": {}, "state_dict": payload["state_dict"], "epoch": 1},
        previous / "best.pt",
    )
    (previous / "config.json").write_text(json.dumps({"data_dir": str(synthetic), "seed": 0}))
    assert cli.main(["evaluate", "--run", str(previous), "--device", "cpu", "--plots", "0"]) == 0
    old = json.loads((previous / "evaluate" / "metrics-test.json").read_text())
    assert old["results"]["run"]["a2v_accuracy"] == seed_metrics["test"]["a2v_accuracy"]


def test_dcca_trains_and_evaluates(synthetic, tmp_path):
    torch.set_num_threads(1)
    assert (
        cli.main(
            [
                "train",
                "crossmodal",
                "--data-dir",
                str(synthetic),
                "--model",
                "dcca",
                "--epochs",
                "8",
                "--batch-size",
                "64",
                "--option",
                "hidden=64",
                "--option",
                "out_dim=8",
                "--seeds",
                "0",
                "--run-dir",
                str(tmp_path),
                "--name",
                "dcca",
                "--device",
                "cpu",
                "--plots",
                "1",
            ]
        )
        == 0
    )
    summary = json.loads((tmp_path / "dcca" / "summary.json").read_text())
    assert summary["a2v_accuracy"]["mean"] > summary["chance_accuracy"]["mean"] + 0.2, summary
    assert summary["v2a_accuracy"]["mean"] > summary["chance_accuracy"]["mean"] + 0.2, summary
    assert (tmp_path / "dcca" / "seed-0" / "best.pt").is_file()
    assert cli.main(["evaluate", "--run", str(tmp_path / "dcca" / "seed-0"), "--plots", "0"]) == 0
    evaluated = json.loads(
        (tmp_path / "dcca" / "seed-0" / "evaluate" / "metrics-test.json").read_text()
    )
    assert evaluated["a2v_accuracy"]["mean"] == pytest.approx(summary["a2v_accuracy"]["mean"])


# --------------------------------------------------------------------------- release weights


def _write_keras_h5(path, arrays: dict[str, dict[str, np.ndarray]]) -> None:
    """A Keras 2 ``save_weights`` file: one group per layer with ``weight_names``."""
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.1.4"
        f.attrs["layer_names"] = np.array([k.encode() for k in arrays])
        for layer, weights in arrays.items():
            group = f.create_group(layer)
            names = [f"{layer}/{short}:0" for short in weights]
            group.attrs["weight_names"] = np.array([n.encode() for n in names])
            for name, value in zip(names, weights.values(), strict=True):
                group.create_dataset(name, data=value)


def _random_keras_layers(rng) -> dict[str, dict[str, np.ndarray]]:
    return {
        layer: {
            "kernel": rng.normal(size=shape).astype(np.float32),
            "bias": rng.normal(size=shape[1]).astype(np.float32),
        }
        for layer, (_, shape) in KERAS_AVDLN_LAYERS.items()
    }


def _keras_distance(
    layers: dict[str, dict[str, np.ndarray]], visual: np.ndarray, audio: np.ndarray
) -> np.ndarray:
    """The Keras model's forward pass in float64 numpy: two Dense-LeakyReLU(0.3)-Dense branches."""

    def dense(x, layer):
        return x @ layers[layer]["kernel"].astype(np.float64) + layers[layer]["bias"].astype(
            np.float64
        )

    def leaky(x):
        return np.where(x > 0, x, 0.3 * x)

    v = dense(leaky(dense(visual, "dense_1")), "dense_2")
    a = dense(leaky(dense(audio, "dense_3")), "dense_4")
    return np.sqrt(np.maximum(((v - a) ** 2).sum(-1), 1e-7))


def test_keras_loader_maps_and_refuses(tmp_path):
    rng = np.random.default_rng(0)
    layers = _random_keras_layers(rng)
    good = tmp_path / "good.h5"
    _write_keras_h5(good, layers)
    model = load_keras_avdln(good).double()
    visual, audio = rng.random((50, 512)), rng.random((50, 128))
    with torch.no_grad():
        ours = model(torch.from_numpy(visual), torch.from_numpy(audio)).numpy()
    np.testing.assert_allclose(ours, _keras_distance(layers, visual, audio), rtol=1e-6, atol=1e-6)

    missing = {k: v for k, v in layers.items() if k != "dense_3"}
    _write_keras_h5(tmp_path / "missing.h5", missing)
    with pytest.raises(ReleaseWeightsError, match="dense_3.*missing"):
        load_keras_avdln(tmp_path / "missing.h5")
    bad = dict(
        layers,
        dense_2={"kernel": layers["dense_2"]["kernel"].T.copy(), "bias": layers["dense_2"]["bias"]},
    )
    _write_keras_h5(tmp_path / "bad.h5", bad)
    with pytest.raises(ReleaseWeightsError, match=r"dense_2/kernel has shape \(64, 128\)"):
        load_keras_avdln(tmp_path / "bad.h5")
    with pytest.raises(ReleaseWeightsError, match="not found"):
        load_keras_avdln(tmp_path / "absent.h5")


@pytest.fixture(scope="module")
def release():
    path = shared_dir() / "ave" / "release"
    if (
        not (path / "cmm_model_weights.h5").is_file()
        or not (path / "audio_feature_noisy.h5").is_file()
    ):
        pytest.skip(
            f"{path}: the AVE release's cmm_model_weights.h5 / audio_feature_noisy.h5 are absent"
        )
    return path


def test_release_weights_parity(release):
    """Our AVDLN with the authors' weights computes the Keras network's distances (1e-5)."""
    from models.release.keras_avdln import read_keras_weights

    layers = read_keras_weights(release / "cmm_model_weights.h5")
    with h5py.File(release / "audio_feature_noisy.h5", "r") as f:
        audio = np.asarray(f["avadataset"][...], dtype=np.float64).reshape(-1, 128)
    rng = np.random.default_rng(0)
    visual = rng.random((audio.shape[0], 512)) * 2.0  # pool5 averages are non-negative
    expected = _keras_distance(layers, visual, audio)
    model = load_keras_avdln(release / "cmm_model_weights.h5")
    assert count_parameters(model) == NUM_PARAMETERS
    with torch.no_grad():
        ours64 = model.double()(torch.from_numpy(visual), torch.from_numpy(audio)).numpy()
        ours32 = model.float()(
            torch.from_numpy(visual).float(), torch.from_numpy(audio).float()
        ).numpy()
    assert expected.std() > 0.1  # a real, non-degenerate spread of distances
    np.testing.assert_allclose(ours64, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(ours32, expected, rtol=1e-5, atol=1e-4)


def test_release_weights_evaluate_on_store(release, synthetic, tmp_path):
    """``evaluate --weights`` runs the protocol with the authors' network."""
    assert (
        cli.main(
            [
                "evaluate",
                "--data-dir",
                str(synthetic),
                "--weights",
                str(release / "cmm_model_weights.h5"),
                "--out-dir",
                str(tmp_path),
                "--plots",
                "1",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    summary = json.loads((tmp_path / "metrics-test.json").read_text())
    model = load_keras_avdln(release / "cmm_model_weights.h5")
    direct, _ = evaluate_model(model, load_clips(synthetic, "test"))
    assert summary["results"]["release"]["a2v_accuracy"] == direct["a2v_accuracy"]
    assert summary["results"]["release"]["clips"] == 22
    assert len(list(tmp_path.glob("distance-*.png"))) == 1
