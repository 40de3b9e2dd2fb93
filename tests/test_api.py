"""`import avel` as a user calls it (docs/python-api.md): a data folder in pandas / NumPy, the
dataset in a DataLoader, training, evaluation and prediction from Python, and `extract` on real
generated clips, equal to the rows a data folder built by the stages holds."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import avel
from models.data.synthetic import make_synthetic_store
from models.training.localization import predict as predict_dataset
from pipeline.core.io import write_parquet
from pipeline.stages.annotations.stage import AnnotationsConfig, run_annotations
from pipeline.stages.download.stage import DownloadConfig, run_download
from pipeline.stages.features.stage import FeaturesConfig, run_features
from pipeline.stages.segments import SegmentsConfig, run_segments
from tests.support.media import make_clip

torch.set_num_threads(1)

#: Small and fast, the same for `extract` and the stages: random weights, tiny frames.
SEGMENTS = {"frames_per_segment": 2}
FEATURES = {
    "features": ("audio", "visual"),
    "device": "cpu",
    "precision": "fp32",
    "frame_size": 32,
    "workers": 1,
    "vgg19_weights": "random",
    "allow_random_weights": True,
    "allow_download": False,
}


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    bad = root / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    return {
        "tone": make_clip(root / "my tone.mp4", duration=10, fps=8, frequency=440),
        "chirp": make_clip(root / "other.mp4", duration=10, fps=8, frequency=880, channels=2),
        "broken": bad,
    }


@pytest.fixture(scope="module")
def extracted(videos: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("mine")
    paths = [videos["tone"], videos["broken"], videos["chirp"]]
    with pytest.warns(UserWarning, match="RANDOM WEIGHTS"):
        results = avel.extract(paths, data_dir=data, progress=False, **SEGMENTS, **FEATURES)
    return data, results


def _stages_folder(clip: Path, root: Path) -> Path:
    """A data folder built by the stage entry points the CLI calls: a clip list, the clip taken
    in with `download --from-dir`, segments, features."""
    data = root / "data"
    table = root / "clips.parquet"
    write_parquet(
        pd.DataFrame({"youtube_id": ["refClip0001"], "start": [0.0], "end": [10.0]}), table
    )
    run_annotations(AnnotationsConfig(data_dir=data, clip_list=[str(table)]))
    incoming = root / "incoming"
    incoming.mkdir()
    shutil.copyfile(clip, incoming / "refClip0001_0.mp4")
    run_download(DownloadConfig(data_dir=data, from_dir=incoming, progress=False))
    run_segments(SegmentsConfig(data_dir=data, progress=False, **SEGMENTS))
    summary = run_features(FeaturesConfig(data_dir=data, progress=False, **FEATURES))
    assert not summary["errors"], summary["errors"]
    return data


def test_extract_equals_the_rows_of_a_data_folder_built_by_the_stages(
    extracted, videos: dict[str, Path], tmp_path: Path
) -> None:
    data, (tone, broken, chirp) = extracted
    assert tone.ok and chirp.ok and tone.path == videos["tone"]
    assert set(tone.features) == {"audio", "visual", "visual_vec"}
    assert tone["audio"].shape == (10, 128) and tone["visual_vec"].shape == (10, 512)
    assert not np.array_equal(tone["audio"], chirp["audio"])  # two sounds, two embeddings

    reference = _stages_folder(videos["tone"], tmp_path)
    for name, row in tone.features.items():
        stored = avel.open_store(reference, name).get("refClip0001_0")
        # the same clip, recipe and weights; batched with another clip here, alone there, so a
        # value may round to the next float16 (2**-10 relative)
        assert row.dtype == stored.dtype and row.shape == stored.shape
        np.testing.assert_allclose(row, stored, rtol=2**-10, atol=1e-6)

    assert not broken.ok and broken.features == {} and broken.problem
    failed = pd.read_parquet(data / "segments_failed.parquet")
    assert failed["clip_id"].tolist() == [broken.clip_id]  # recorded, the others extracted


def test_extract_again_reuses_the_folder_and_extends_it(extracted, videos, tmp_path) -> None:
    data, (tone, broken, chirp) = extracted
    audio_only = {**FEATURES, "features": ("audio",)}
    index = data / "features" / "audio" / "index.parquet"
    before = index.stat().st_mtime_ns
    with pytest.warns(UserWarning, match="RANDOM WEIGHTS"):
        (again,) = avel.extract(videos["chirp"], data, progress=False, **SEGMENTS, **audio_only)
    assert index.stat().st_mtime_ns == before  # nothing recomputed
    assert again.clip_id == chirp.clip_id and set(again.features) == {"audio"}
    np.testing.assert_array_equal(again["audio"], chirp["audio"])

    new_clip = make_clip(tmp_path / "new.mp4", duration=10, fps=8, frequency=660)
    with pytest.warns(UserWarning, match="RANDOM WEIGHTS"):
        (new,) = avel.extract([new_clip], data, progress=False, **SEGMENTS, **audio_only)
    ids = [tone.clip_id, broken.clip_id, chirp.clip_id, new.clip_id]
    assert new.ok and avel.open_manifest(data)["clip_id"].tolist() == ids  # the list extended
    assert avel.open_store(data, "audio").clip_ids == [tone.clip_id, chirp.clip_id, new.clip_id]
    np.testing.assert_array_equal(avel.open_store(data, "audio").get(tone.clip_id), tone["audio"])


def test_extract_refuses_a_folder_with_another_manifest(tmp_path: Path, videos) -> None:
    make_synthetic_store(tmp_path / "ave", 4, num_classes=2)
    before = (tmp_path / "ave" / "manifest.parquet").read_bytes()
    with pytest.raises(avel.ExtractError, match="a data folder of its own"):
        avel.extract(videos["tone"], data_dir=tmp_path / "ave", progress=False, **FEATURES)
    assert (tmp_path / "ave" / "manifest.parquet").read_bytes() == before
    with pytest.raises(avel.ExtractError, match="no such video file"):
        avel.extract(tmp_path / "absent.mp4", data_dir=tmp_path / "x", progress=False)


def test_without_weights_extract_stops_with_the_stage_message(tmp_path: Path, videos) -> None:
    settings = {**FEATURES, "features": ("audio",), "allow_random_weights": False}
    with pytest.raises(avel.ExtractError, match="audio: "):
        avel.extract(
            videos["tone"], data_dir=tmp_path / "d", progress=False, **SEGMENTS, **settings
        )


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("ave-like")
    make_synthetic_store(data, 20, num_classes=3, splits=(0.6, 0.2, 0.2), signal=2.0, noise=0.5)
    return data


def test_stores_and_dataset_in_a_dataloader(synthetic: Path) -> None:
    manifest = avel.open_manifest(synthetic)
    train_ids = manifest.loc[manifest["split"] == "train", "clip_id"].tolist()
    audio = avel.open_store(synthetic, "audio").gather(train_ids)
    assert audio.dtype == np.float32 and audio.shape == (len(train_ids), 10, 128)
    assert avel.class_names(synthetic)[-1] == "background"

    dataset = avel.AVEDataset(synthetic, "train", ("audio", "visual"))
    assert dataset.clip_ids == train_ids and len(dataset) == len(train_ids)
    loader = torch.utils.data.DataLoader(dataset, batch_size=5)
    batches = list(loader)
    assert len(batches) == -(-len(dataset) // 5)
    for i, batch in enumerate(batches):
        expected = dataset.batch(range(5 * i, min(5 * i + 5, len(dataset))))
        assert batch.keys() == expected.keys()
        for key in batch:
            torch.testing.assert_close(batch[key], expected[key], rtol=0, atol=0)
    torch.testing.assert_close(batches[0]["audio"], torch.from_numpy(audio[:5]))
    assert dataset[-1]["segment_labels"].shape == (10,)
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_train_evaluate_load_and_predict(synthetic: Path, extracted, tmp_path: Path) -> None:
    summary = avel.train(
        synthetic, model="a", epochs=3, batch_size=4, run_dir=tmp_path, progress=False
    )
    run = Path(summary["experiment_dir"])
    assert run == tmp_path / "supervised-a" and summary["seeds"] == [1]
    again = avel.train(
        synthetic, model="a", epochs=3, batch_size=4, run_dir=tmp_path, progress=False
    )
    assert again["reused"] == [1]

    evaluation = avel.evaluate(run, split="test", device="cpu")
    model = avel.load_model(run)
    assert model.stores == ("audio",) and not model.training
    test = avel.AVEDataset(synthetic, "test", model.stores)
    labels = avel.predict(model, test.batch(range(len(test))))
    np.testing.assert_array_equal(labels, predict_dataset(model, test, 64, "cpu"))
    accuracy = float((labels == test.segment_labels).mean())
    assert evaluation["accuracy"]["mean"] == pytest.approx(accuracy)

    _, (tone, _, _) = extracted  # one clip of one's own, audio from extract
    one = avel.predict(model, tone.features)
    assert one.shape == (10,) and set(one.tolist()) <= set(range(len(avel.class_names(synthetic))))
    with pytest.raises(KeyError, match="audio"):
        avel.predict(model, {"visual": np.zeros((10, 7, 7, 512))})
