"""CLIP and CLAP through the extraction driver, on tiny random models saved with save_pretrained:
the stores equal the transformers models applied in the test to independently decoded inputs."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers", reason='pip install -e ".[foundation]"')

import torch  # noqa: E402

from pipeline.backbones.base import BackboneError, backbone_class  # noqa: E402
from pipeline.core.store import FeatureStore  # noqa: E402
from pipeline.stages.features.core import FeaturesConfig  # noqa: E402
from pipeline.stages.features.stage import run_features  # noqa: E402
from pipeline.stages.segments import frame_plan, load_segments  # noqa: E402
from tests.support.foundation import CLIP_SIDE, tiny_clap, tiny_clip  # noqa: E402
from tests.support.media import counting_ffmpeg, segmented_set  # noqa: E402

IDS = ["fdn_a______", "fdn_b______", "fdn_bad____"]
RATE = 48000


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("foundation_models")
    return {"clip": tiny_clip(d / "clip"), "clap": tiny_clap(d / "clap")}


@pytest.fixture(scope="module")
def data(tmp_path_factory, models) -> Path:
    d = tmp_path_factory.mktemp("foundation_data")
    segmented_set(d, IDS, fps=[5, 4, 4], sizes=[(48, 32), (30, 30), (30, 30)])
    cfg = config(d, models, ("clip", "clap"), clip_tokens=True)
    summary = run_features(cfg)
    assert not summary["errors"], summary["errors"]
    return d


def config(data: Path, models: dict[str, Path], features: tuple[str, ...], **kw) -> FeaturesConfig:
    settings = dict(
        features=features,
        dtype="float32",
        device="cpu",
        workers=0,
        clip_weights=str(models["clip"]),
        clap_weights=str(models["clap"]),
        allow_download=False,
        shard_size=1,
        batch_size=8,
        progress=False,
    )
    return FeaturesConfig(data, **{**settings, **kw})


def decode_frames(path: Path, side: int | None = None) -> np.ndarray:
    """Every frame of ``path`` at its own size (or side x side), RGB uint8 (decoded here, not by
    avel)."""
    probe = ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries"]
    probe += ["stream=width,height", "-of", "csv=p=0", str(path)]
    width, height = map(
        int, subprocess.run(probe, capture_output=True, check=True).stdout.split(b",")
    )
    cmd = ["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", "-vsync", "passthrough"]
    if side is not None:
        cmd += ["-vf", f"scale={side}:{side}:flags=bilinear"]
        width = height = side
    cmd += ["-pix_fmt", "rgb24", "-f", "rawvideo", "-"]
    raw = subprocess.run(cmd, capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def decode_seconds(path: Path) -> np.ndarray:
    """(10, 48000) mono float32 seconds of the clip's audio, zero-padded (decoded here)."""
    cmd = ["ffmpeg", "-v", "error", "-i", str(path), "-vn", "-ac", "1", "-ar", str(RATE)]
    raw = subprocess.run(cmd + ["-f", "f32le", "-"], capture_output=True, check=True).stdout
    samples = np.frombuffer(raw, "<f4")[: 10 * RATE]
    return np.pad(samples, (0, 10 * RATE - len(samples))).reshape(10, RATE)


def test_clip_store_equals_get_image_features(data, models):
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(str(models["clip"])).eval()
    processor = CLIPProcessor.from_pretrained(str(models["clip"]))
    store, tokens = FeatureStore.open(data, "clip"), FeatureStore.open(data, "clip_tokens")
    assert store.row_shape == (10, 768) and tokens.row_shape == (10, (CLIP_SIDE // 8) ** 2 + 1, 32)
    assert not store.is_random and store.meta["weights"]["sha256"] != "random"
    segments = load_segments(data)
    for clip_id in IDS[:2]:
        plan = np.asarray(frame_plan(segments, clip_id))  # (10, F)
        frames = decode_frames(data / "clips" / f"{clip_id}.mp4")[plan.reshape(-1)]
        pixels = processor(images=list(frames), return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            out = model.get_image_features(pixel_values=pixels)
        embeds = getattr(out, "pooler_output", out).reshape(10, plan.shape[1], -1).mean(1)
        np.testing.assert_allclose(store.get(clip_id), embeds.numpy(), rtol=1e-5, atol=1e-6)
        hidden = out.last_hidden_state.reshape(10, plan.shape[1], *out.last_hidden_state.shape[1:])
        np.testing.assert_allclose(
            tokens.get(clip_id), hidden.mean(1).numpy(), rtol=1e-5, atol=1e-5
        )
    assert IDS[2] in store.meta["failed"]


def test_clap_store_equals_get_audio_features_per_second(data, models):
    from transformers import ClapFeatureExtractor, ClapModel

    model = ClapModel.from_pretrained(str(models["clap"])).eval()
    extractor = ClapFeatureExtractor.from_pretrained(str(models["clap"]))
    store = FeatureStore.open(data, "clap")
    assert store.row_shape == (10, 512) and "tiled" in store.meta["preprocessing"]["framing"]
    for clip_id in IDS[:2]:
        seconds = decode_seconds(data / "clips" / f"{clip_id}.mp4")
        inputs = extractor(list(seconds), sampling_rate=RATE, return_tensors="pt")
        assert not inputs["is_longer"].any()
        with torch.inference_mode():
            out = model.get_audio_features(**inputs)
        expected = getattr(out, "pooler_output", out).numpy()
        np.testing.assert_allclose(store.get(clip_id), expected, rtol=1e-4, atol=1e-5)
    # a second is framed as itself tiled to CLAP's 10 s window: the same model input
    tiled = extractor([np.tile(seconds[3], 10)], sampling_rate=RATE, return_tensors="np")
    single = extractor([seconds[3]], sampling_rate=RATE, return_tensors="np")
    np.testing.assert_array_equal(single["input_features"], tiled["input_features"])
    assert IDS[2] in store.meta["failed"]


def test_finished_stores_are_reused_and_other_weights_refused(data, models, tmp_path):
    again = run_features(config(data, models, ("clip", "clap"), clip_tokens=True))
    assert all(r.get("already_complete") for r in again["stores"].values()), again
    other = tiny_clip(tmp_path / "clip-other", seed=1)
    changed = run_features(config(data, {**models, "clip": other}, ("clip",), clip_tokens=True))
    assert "sha256" in changed["errors"]["clip"], changed["errors"]


def test_missing_weights_are_loud_unless_random_allowed(tmp_path):
    for kind in ("clip", "clap"):
        cfg = FeaturesConfig(tmp_path, allow_download=False, clip_weights="nobody/no-model")
        cfg.clap_weights = "nobody/no-model"
        with pytest.raises(BackboneError, match="nobody/no-model.*--allow-random-weights"):
            backbone_class(kind)(cfg, tmp_path).prepare("cpu")
    cfg = FeaturesConfig(
        tmp_path, allow_download=False, allow_random_weights=True, clip_weights="nobody/no-model"
    )
    cfg.clap_weights = "nobody/no-model"
    for kind in ("clip", "clap"):  # offline, no config: the small default one, said loudly
        backbone = backbone_class(kind)(cfg, tmp_path)
        backbone.prepare("cpu")
        assert backbone.random and "RANDOM" in backbone.weights_line
        assert backbone.identity()["weights"]["sha256"] == "random"


def label_set(data: Path) -> list[str]:
    """Give the data folder AVE annotations: classes named from the tokenizer's words; the first
    clip in train, the second in val, both (and the broken one) in test, with known labels."""
    import pandas as pd

    from pipeline.core.io import write_parquet
    from pipeline.core.layout import DataLayout

    names = ["dog", "guitar", "bell", "background"]
    seg = {IDS[0]: [0] * 5 + [3] * 5, IDS[1]: [1] * 10, IDS[2]: [3] * 10}
    label = {IDS[0]: 0, IDS[1]: 1, IDS[2]: 2}
    rows = [
        (IDS[0], "train"),
        (IDS[1], "val"),
        (IDS[0], "test"),
        (IDS[1], "test"),
        (IDS[2], "test"),
    ]
    n = len(rows)
    manifest = pd.DataFrame(
        {
            "sample": range(n),
            "youtube_id": [y for y, _ in rows],
            "category": [names[label[y]] for y, _ in rows],
            "label": pd.array([label[y] for y, _ in rows], dtype="int16"),
            "start": [0] * n,
            "end": [5 if y == IDS[0] else 10 for y, _ in rows],
            "split": pd.array([s for _, s in rows], dtype="string"),
            "match_split": pd.array([None] * n, dtype="string"),
            "clip_start": pd.array([None] * n, dtype="Float64"),
            "clip_end": pd.array([None] * n, dtype="Float64"),
            "segment_labels": [seg[y] for y, _ in rows],
        }
    )
    layout = DataLayout(data)
    write_parquet(manifest, layout.manifest)
    write_parquet(pd.DataFrame({"index": range(4), "name": names}), layout.classes)
    return names


def test_zero_shot_scores_are_the_cosines_and_evaluate_reads_the_run(data, models, tmp_path):
    from transformers import AutoTokenizer, ClapModel, CLIPModel

    from models.evaluation.evaluate_run import evaluate_run
    from models.evaluation.zero_shot import ZeroShotConfig, run_zero_shot
    from models.training.checkpoint import load_checkpoint

    names = label_set(data)
    cfg = ZeroShotConfig(data, tmp_path / "runs", allow_download=False, device="cpu")
    result = run_zero_shot(cfg)
    net, _ = load_checkpoint(cfg.seed_dir() / "best.pt")
    clip, clap = FeatureStore.open(data, "clip"), FeatureStore.open(data, "clap")
    ids = IDS[:2]
    v, a = torch.from_numpy(clip.gather(ids)), torch.from_numpy(clap.gather(ids))
    sv, sa = net.scores(a, v)
    cosines = []
    for model_class, folder, template, rows in (
        (CLIPModel, models["clip"], "a photo of {}", v),
        (ClapModel, models["clap"], "the sound of {}", a),
    ):
        tokens = AutoTokenizer.from_pretrained(str(folder))(
            [template.format(n) for n in names[:-1]], padding=True, return_tensors="pt"
        )
        with torch.inference_mode():
            out = model_class.from_pretrained(str(folder)).eval().get_text_features(**tokens)
        text = getattr(out, "pooler_output", out)
        cos = torch.nn.functional.cosine_similarity(rows[:, :, None], text[None, None], dim=-1)
        cosines.append(cos)
    torch.testing.assert_close(sv, cosines[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sa, cosines[1], rtol=1e-5, atol=1e-6)
    pv, pa = cosines[0].argmax(-1), cosines[1].argmax(-1)
    expected = torch.where(pv == pa, pv, len(names) - 1).numpy()
    labels = np.array([[0] * 5 + [3] * 5, [1] * 10])
    assert result["test_accuracy"] == pytest.approx((expected == labels).mean())
    again = evaluate_run(run=cfg.seed_dir(), device="cpu")
    assert again["accuracy"]["mean"] == pytest.approx(result["test_accuracy"])
    assert run_zero_shot(cfg)["reused"]


def test_export_release_writes_the_clip_and_clap_files(data, tmp_path):
    import h5py

    from pipeline.stages.release.export_release import ExportReleaseConfig, run_export_release

    label_set(data)
    out = tmp_path / "release"
    run_export_release(ExportReleaseConfig(out, data, dtype="float32", progress=False))
    for name, file in (("clip", "visual_feature_clip.h5"), ("clap", "audio_feature_clap.h5")):
        with h5py.File(out / file, "r") as f:
            rows = f["avadataset"][...]
        store = FeatureStore.open(data, name)
        # annotation rows: train IDS[0], val IDS[1], test IDS[0], IDS[1]; the broken clip dropped
        np.testing.assert_array_equal(rows, store.gather([IDS[0], IDS[1], IDS[0], IDS[1]]))


def test_features_table_has_the_clip_clap_and_zero_shot_rows(data, tmp_path):
    from models.reports.table import TableConfig, run_table

    label_set(data)
    only = ("a-clap", "v-clip", "av-clap-clip", "zero-shot")
    cfg = TableConfig(
        str(data), "features", run_dir=str(tmp_path), epochs=1, device="cpu", only=only
    )
    summary = run_table(cfg, progress=False)
    assert sorted(r["key"] for r in summary["rows"]) == sorted(only)
    assert all(r["status"] == "ok" for r in summary["rows"]), summary["rows"]
    assert "| zero-shot CLAP + CLIP (no training) | – | – | – |" in summary["markdown"]


def test_bench_rows_have_baseline_and_fraction_of_peak(models):
    from transformers import ClapConfig, CLIPConfig

    from pipeline.bench.foundation import bench_clap, bench_clip
    from pipeline.bench.run import row_cells

    peak = {"fp32": 50.0}  # GFLOP/s given, not measured (the probe takes seconds)
    clip_cfg, clap_cfg = (
        c.from_pretrained(str(models[n])) for c, n in ((CLIPConfig, "clip"), (ClapConfig, "clap"))
    )
    clip = bench_clip(config=clip_cfg, frames=10, batch=5, peak_gflops=50.0)
    clap = bench_clap(config=clap_cfg, seconds=10, batch=10, naive_seconds=1, peak_gflops=50.0)
    for name, res, unit in (("clip", clip, "frames"), ("clap", clap, "seconds")):
        assert res[f"optimised_{unit}_per_s"] > 0 and res[f"naive_{unit}_per_s"] > 0
        fraction = res["optimised_gflops"] / res["matmul_peak_gflops"]
        assert res["optimised_gflops"] > 0 and res["fraction_of_peak"] == pytest.approx(
            fraction, abs=1e-3
        )
        cells = row_cells(name, res, peak)
        assert "one per forward pass" in cells["baseline"] and "GFLOP/s" in cells["peak"]


def test_one_decode_serves_frame_backbones_and_the_waveform(data, models):
    """VGG-19's scaled frames and CLIP's frames prepared by its own processor come from one
    ffmpeg pass (two outputs); the waveform from the audio."""
    from transformers import CLIPImageProcessor

    from pipeline.backbones.base import Request, decode_inputs
    from pipeline.backbones.clip_backbone import ProcessorFrames

    path = data / "clips" / f"{IDS[0]}.mp4"  # 48 x 32: the crop matters
    plan = np.asarray(frame_plan(load_segments(data), IDS[0])).reshape(-1)
    processor = CLIPImageProcessor.from_pretrained(str(models["clip"]))
    side = (CLIP_SIDE, CLIP_SIDE)
    asked = {
        "vgg19": (plan, Request("frames", size=side)),
        "clip": (plan, Request("frames", size=side, prepare=ProcessorFrames(processor))),
        "clap": (None, Request("waveform", rate=RATE)),
    }
    out = decode_inputs(path, None, asked)
    np.testing.assert_array_equal(out["vgg19"], decode_frames(path, CLIP_SIDE)[plan])
    native = decode_frames(path)[plan]
    expected = processor(images=list(native), do_rescale=False, do_normalize=False)
    expected = np.asarray(expected["pixel_values"]).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(out["clip"], expected)
    assert not np.array_equal(out["clip"], out["vgg19"])  # cropped, not squeezed
    np.testing.assert_array_equal(out["clap"], decode_seconds(path))


def fresh_copy(data: Path, folder: Path) -> Path:
    """The module's segmented data folder without its feature stores."""
    shutil.copytree(data, folder, ignore=shutil.ignore_patterns("features"))
    return folder


def test_four_backbones_decode_each_clip_once(data, models, tmp_path, monkeypatch):
    """FEATURES=audio,visual,clip,clap: one ffmpeg pass over a clip's video serves VGG-19 and
    CLIP, one over its audio serves CLAP, VGGish reads the segments' patches: every store written."""
    copy = fresh_copy(data, tmp_path / "data")
    log, path = counting_ffmpeg(tmp_path)
    monkeypatch.setenv("PATH", path)
    cfg = config(
        copy,
        models,
        ("audio", "visual", "clip", "clap"),
        frame_size=CLIP_SIDE,
        allow_random_weights=True,
    )
    summary = run_features(cfg)
    assert not summary["errors"], summary["errors"]
    calls = log.read_text().splitlines()
    for clip_id in IDS[:2]:
        mine = [c for c in calls if f"{clip_id}.mp4" in c]
        video = [c for c in mine if "0:v:0" in c]
        audio = [c for c in mine if "0:a:0" in c]
        assert len(video) == 1 and len(audio) == 1 and len(mine) == 2, mine
    # VGGish reads the patches the segments stage made before the last clip was broken
    assert set(FeatureStore.open(copy, "audio").clip_ids) == set(IDS)
    for name in ("visual", "visual_vec", "clip", "clap"):
        store = FeatureStore.open(copy, name)
        assert set(store.clip_ids) == set(IDS[:2]) and IDS[2] in store.meta["failed"], name
    # other CLIP weights: that store is refused naming the difference, the others are reused
    other = {**models, "clip": tiny_clip(tmp_path / "clip-other", seed=1)}
    again = run_features(
        config(copy, other, cfg.features, frame_size=CLIP_SIDE, allow_random_weights=True)
    )
    assert list(again["errors"]) == ["clip"] and "weights sha256" in again["errors"]["clip"]
    assert all(again["stores"][n].get("already_complete") for n in ("audio", "visual", "clap"))


def test_random_small_clip_store_trains_and_runs_zero_shot(data, models, tmp_path):
    """No CLIP weights at hand, random allowed: the small default config's 64-d store; the
    models size themselves to it (``visual=clip:64``), zero-shot rebuilds the same random model,
    and every report says RANDOM."""
    from models.evaluation.evaluate_run import evaluate_run, format_evaluation
    from models.reports.table import TableConfig, run_table

    label_set(data)
    copy = fresh_copy(data, tmp_path / "data")
    cfg = config(copy, models, ("clip",), allow_random_weights=True)
    cfg.clip_weights = str(tmp_path / "no-clip-here")
    summary = run_features(cfg)
    assert not summary["errors"], summary["errors"]
    store = FeatureStore.open(copy, "clip")
    assert store.is_random and store.row_shape == (10, 64)
    shutil.copytree(data / "features" / "clap", copy / "features" / "clap")
    only = ("v-clip", "zero-shot")
    runs = tmp_path / "runs"
    table = TableConfig(str(copy), "features", run_dir=str(runs), epochs=1, device="cpu", only=only)
    rows = {r["key"]: r for r in run_table(table, progress=False)["rows"]}
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert rows["v-clip"]["random_features"]
    assert "random" in (runs / "tables" / "features.md").read_text().lower()
    trained = next(runs.glob("supervised-v-*/seed-*"))
    config_json = json.loads((trained / "config.json").read_text())
    assert config_json["model"]["visual"] == "clip:64"
    for run in (trained, runs / "zero-shot" / "seed-0"):
        result = evaluate_run(run=run, device="cpu")
        assert "RANDOM WEIGHTS" in format_evaluation(result)
