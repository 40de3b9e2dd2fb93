"""C3D: the network against an independent conv3d forward, the two public weight layouts, the
extractor against independently decoded frames, and the features stage filling `visual` and `c3d`
from one decoding pass per clip."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from pipeline.backbones.c3d import (
    CONV_PARAMETERS,
    MMACTION2,
    MMACTION2_FILE,
    PICKLE,
    WeightsError,
    build_c3d,
    c3d_plan,
)
from pipeline.backbones.c3d_backbone import extract_c3d
from pipeline.backbones.vgg19 import build_vgg19_pool5
from pipeline.backbones.visual import extract_visual
from pipeline.core.store import FeatureStore, StoreWriter
from pipeline.stages.features.core import FeaturesConfig
from pipeline.stages.features.stage import format_summary, run_features
from pipeline.stages.segments import frame_plan, load_segments
from tests.support import media
from tests.support.media import make_clip, segmented_set

W, H, FPS = 96, 64, 16
CROP = 32  # C3D crop side for the fast tests: pool5 is 1 x 2 x 2 (112 gives 1 x 4 x 4)
# The port's layers, written out independently: (name, in, out, pooling after it or None).
LAYERS = [
    ("conv1", 3, 64, ((1, 2, 2), (1, 2, 2), (0, 0, 0))),
    ("conv2", 64, 128, ((2, 2, 2), (2, 2, 2), (0, 0, 0))),
    ("conv3a", 128, 256, None),
    ("conv3b", 256, 256, ((2, 2, 2), (2, 2, 2), (0, 0, 0))),
    ("conv4a", 256, 512, None),
    ("conv4b", 512, 512, ((2, 2, 2), (2, 2, 2), (0, 0, 0))),
    ("conv5a", 512, 512, None),
    ("conv5b", 512, 512, ((2, 2, 2), (2, 2, 2), (0, 1, 1))),
]
FC = {"fc6": (4096, 8192), "fc7": (4096, 4096), "fc8": (487, 4096)}


def functional_pool5(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """C3D up to pool5 with torch.nn.functional only, from the port's tensor names."""
    for name, _, _, pool in LAYERS:
        x = F.relu(F.conv3d(x, state[f"{name}.weight"], state[f"{name}.bias"], padding=1))
        if pool is not None:
            x = F.max_pool3d(x, kernel_size=pool[0], stride=pool[1], padding=pool[2])
    return x


def random_port_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors named and shaped as in the port's ``c3d.pickle`` (fc layers included)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, cin, cout, _ in LAYERS:
        std = (2.0 / (27 * cin)) ** 0.5
        state[f"{name}.weight"] = torch.randn((cout, cin, 3, 3, 3), generator=gen) * std
        state[f"{name}.bias"] = torch.randn((cout,), generator=gen) * 0.01
    for name, (out, inp) in FC.items():
        state[f"{name}.weight"] = torch.randn((out, inp), generator=gen) * 0.01
        state[f"{name}.bias"] = torch.randn((out,), generator=gen) * 0.01
    return state


def mmaction2_layout(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """The same tensors under mmaction2's C3D backbone names (``conv1a.conv.weight``, no fc8)."""
    rename = {"conv1": "conv1a", "conv2": "conv2a"}
    out = {}
    for key, value in state.items():
        layer, kind = key.split(".")
        if layer == "fc8":
            continue
        name = layer if layer.startswith("fc") else f"{rename.get(layer, layer)}.conv"
        out[f"{prefix}{name}.{kind}"] = value
    return out


@pytest.fixture(scope="module")
def port_state() -> dict[str, torch.Tensor]:
    return random_port_state()


def test_network_equals_functional_forward(port_state) -> None:
    model, record = build_c3d("random", allow_random=True, seed=3)
    assert record.is_random and sum(p.numel() for p in model.parameters()) == CONV_PARAMETERS
    assert CONV_PARAMETERS == 27_655_936
    ours = {k: v for k, v in port_state.items() if not k.startswith("fc")}
    model.load_state_dict(ours, strict=True)
    x = torch.randn((2, 3, 16, 32, 48), generator=torch.Generator().manual_seed(1)) * 50
    with torch.inference_mode():
        got, want = model(x), functional_pool5(port_state, x)
        assert got.shape == want.shape == (2, 512, 1, 2, 2)
        rel = (got - want).abs().max() / want.abs().max()
        assert rel < 1e-5, f"max relative error {rel:.2e}"
        # A 16 x 112 x 112 clip gives pool5 512 x 1 x 4 x 4 (= 8192 = fc6's input).
        assert model(torch.zeros((1, 3, 16, 112, 112))).shape == (1, 512, 1, 4, 4)


def test_public_weight_layouts_load(tmp_path: Path, port_state) -> None:
    pickle_path = tmp_path / "cache" / "c3d.pickle"
    pickle_path.parent.mkdir()
    torch.save(port_state, pickle_path)
    wrapped = tmp_path / "mm.pth"  # mmaction2 checkpoint: under state_dict, backbone. prefix
    torch.save({"meta": {}, "state_dict": mmaction2_layout(port_state, "backbone.")}, wrapped)
    plain = tmp_path / "mm_plain.pth"
    torch.save(mmaction2_layout(port_state), plain)
    for weights, layout, expected in (
        ("pickle", "pickle", PICKLE),
        (str(pickle_path), "pickle", PICKLE),
        (str(wrapped), "mmaction2", MMACTION2),
        (str(plain), "mmaction2", MMACTION2),
    ):
        model, record = build_c3d(weights, cache_dir=pickle_path.parent)
        assert record.layout == layout and not record.is_random
        assert (record.resize, record.crop, record.mean) == (
            expected.resize,
            expected.crop,
            expected.mean,
        )
        assert len(record.sha256) == 64 and Path(record.source).is_file()
        loaded = model.state_dict()
        assert len(loaded) == 16
        for key, value in loaded.items():
            assert torch.equal(value, port_state[key]), key
    assert "200x112" in PICKLE.meta()["preprocessing"]
    assert "171x128" in MMACTION2.meta()["preprocessing"]
    # The named mmaction2 file is checked against the sha256 prefix in its name.
    torch.save({}, pickle_path.parent / MMACTION2_FILE)
    with pytest.raises(WeightsError, match="dcc47ddc"):
        build_c3d("mmaction2", cache_dir=pickle_path.parent)
    # Missing, misshapen and unknown tensors are all named.
    bad = dict(port_state)
    del bad["conv3b.weight"]
    bad["conv1.bias"] = torch.zeros(65)
    bad["extra.weight"] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad.pickle")
    with pytest.raises(WeightsError) as err:
        build_c3d(str(tmp_path / "bad.pickle"))
    for name in ("conv3b.weight", "conv1.bias", "extra.weight"):
        assert name in str(err.value)


def test_missing_weights_are_loud(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="--allow-random-weights"):
        build_c3d("random")
    with pytest.raises(WeightsError, match="download.openmmlab.com"):
        build_c3d("mmaction2", cache_dir=tmp_path)
    with pytest.raises(WeightsError, match="not found"):
        build_c3d(str(tmp_path / "absent.pickle"))


def test_c3d_plan() -> None:
    plan16 = np.arange(160).reshape(10, 16)
    assert np.array_equal(c3d_plan(plan16), plan16)
    plan2 = np.arange(0, 250, 12.5).astype(int).reshape(10, 2)
    # release-rule clip of 250 frames: floor(l * 25 + i * 25 / 16)
    expected = np.array([[s * 25 + (i * 25) // 16 for i in range(16)] for s in range(10)])
    assert np.array_equal(c3d_plan(plan2, 250, "release"), expected)
    assert np.array_equal(c3d_plan(plan2, 250, "time"), np.repeat(plan2, 8, axis=1))


def independent_clips(clip: Path, plan: np.ndarray, width: int, height: int) -> np.ndarray:
    """Every frame decoded at full size (yuv420p), the planned ones taken in numpy, then scaled in
    a separate ffmpeg call (swscale bilinear, the documented resize) -> (N, height, width, 3)."""
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(clip), "-fps_mode", "passthrough"]
        + ["-f", "rawvideo", "-pix_fmt", "yuv420p", "pipe:1"],
        check=True,
        capture_output=True,
    ).stdout
    frame_bytes = W * H * 3 // 2
    every = np.frombuffer(raw, np.uint8).reshape(-1, frame_bytes)
    chosen = every[plan.reshape(-1)]
    rgb = subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{W}x{H}"]
        + ["-i", "pipe:0", "-vf", f"scale={width}:{height}:flags=bilinear"]
        + ["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
        input=chosen.tobytes(),
        check=True,
        capture_output=True,
    ).stdout
    return np.frombuffer(rgb, np.uint8).reshape(-1, height, width, 3)


def test_extractor_equals_network_on_independent_frames(tmp_path: Path, port_state) -> None:
    clip = make_clip(tmp_path / "clip.mp4", duration=10, fps=FPS, size=(W, H), audio=False)
    torch.save(mmaction2_layout(port_state), tmp_path / "mm.pth")
    model, record = build_c3d(str(tmp_path / "mm.pth"))
    record = record.scaled(CROP)
    plan3 = np.arange(160).reshape(10, 16)  # 160 frames at 16 fps: the release rule at 16
    width, height = record.resize
    frames = independent_clips(clip, plan3, width, height).astype(np.float32)
    top, left = (height - CROP) // 2, (width - CROP) // 2
    x = frames[:, top : top + CROP, left : left + CROP] - np.array([104.0, 117.0, 128.0])
    x = torch.from_numpy(x.reshape(10, 16, CROP, CROP, 3).transpose(0, 4, 1, 2, 3).copy())
    with torch.inference_mode():
        want = functional_pool5(port_state, x.float()).mean(2).permute(0, 2, 3, 1).numpy()

    vgg_model, vgg_weights = build_vgg19_pool5("random", allow_random=True, seed=0)
    plan = plan3[:, ::8]  # 2 VGG-19 frames per second, decoded in the same pass
    ((clip_id, out),) = list(
        extract_c3d(
            [("c", clip, plan, plan3)],
            (model, record),
            (vgg_model, vgg_weights),
            batch_size=7,
            c3d_batch=3,
            num_workers=1,
            vgg_size=32,
        )
    )
    assert clip_id == "c" and out["c3d_maps"].shape == (10, 2, 2, 512)
    rel = np.abs(out["c3d_maps"] - want).max() / np.abs(want).max()
    assert rel < 1e-5, f"max relative error {rel:.2e}"
    # The VGG-19 maps of the shared pass equal the VGG-19 extractor's.
    ((_, alone),) = list(
        extract_visual([("c", clip, plan)], vgg_model, vgg_weights, num_workers=0, size=32)
    )
    assert np.abs(out["visual"] - alone).max() / np.abs(alone).max() < 1e-5
    # A clip that cannot be decoded is an error string, not an exception.
    ((_, err),) = list(
        extract_c3d([("x", tmp_path / "absent.mp4", None, plan3)], (model, record), num_workers=0)
    )
    assert isinstance(err, str) and "absent.mp4" in err


IDS = ["c3d_a______", "c3d_b______", "c3d_bad____"]


@pytest.fixture(scope="module")
def segmented(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("c3ddata")
    return segmented_set(d, IDS, fps=[8, 5, 5], sizes=[(48, 32), (30, 30), (30, 30)])


@pytest.fixture
def counting_ffmpeg(tmp_path: Path, monkeypatch) -> Path:
    """The real ffmpeg behind a wrapper that logs every command line (to count decoding passes)."""
    log, path = media.counting_ffmpeg(tmp_path)
    monkeypatch.setenv("PATH", path)
    return log


def test_features_visual_and_c3d_in_one_pass(segmented: Path, counting_ffmpeg: Path) -> None:
    cfg = FeaturesConfig(
        segmented,
        features=("visual", "c3d"),
        dtype="float32",
        frame_size=32,
        c3d_crop=CROP,
        c3d_maps=True,
        workers=0,
        allow_random_weights=True,
        allow_download=False,
        shard_size=2,
        progress=False,
    )
    summary = run_features(cfg)
    assert not summary["errors"], summary["errors"]
    assert "RANDOM WEIGHTS" in format_summary(summary)
    calls = counting_ffmpeg.read_text().splitlines()
    for clip_id in IDS:
        assert sum(f"{clip_id}.mp4" in c for c in calls) == 1, clip_id  # one decode per clip
    stores = {
        n: FeatureStore.open(segmented, n) for n in ("visual", "visual_vec", "c3d", "c3d_maps")
    }
    assert stores["c3d"].row_shape == (10, 512) and stores["c3d_maps"].row_shape == (10, 2, 2, 512)
    for store in stores.values():
        assert len(store) == 2 and IDS[2] in store.meta["failed"] and store.is_random
    meta = stores["c3d"].meta
    assert "center crop 32x32" in meta["preprocessing"] and meta["weights"]["sha256"] == "random"
    assert meta["frames_per_segment"] == 2 and meta["random_weights"]
    # The stores hold what the extractor gives for the same clips and plans.
    model, record = build_c3d("random", allow_random=True)
    vgg = build_vgg19_pool5("random", allow_random=True, seed=0)
    segments = load_segments(segmented)
    for clip_id in IDS[:1]:
        plan = frame_plan(segments, clip_id)
        first = segments[segments["clip_id"] == clip_id].iloc[0]
        plan3 = c3d_plan(plan, int(first["num_frames"]), str(first["frame_rule"]))
        ((_, out),) = list(
            extract_c3d(
                [(clip_id, segmented / "clips" / f"{clip_id}.mp4", plan, plan3)],
                (model, record.scaled(CROP)),
                vgg,
                num_workers=0,
                vgg_size=32,
            )
        )
        np.testing.assert_allclose(stores["c3d_maps"].get(clip_id), out["c3d_maps"], rtol=1e-5)
        np.testing.assert_allclose(
            stores["c3d"].get(clip_id), out["c3d_maps"].mean(axis=(1, 2)), rtol=1e-4, atol=1e-6
        )
        np.testing.assert_allclose(
            stores["visual"].get(clip_id), out["visual"], rtol=1e-4, atol=1e-6
        )
    again = run_features(cfg)  # finished stores are not rewritten
    assert all(r.get("already_complete") for r in again["stores"].values())


def test_features_c3d_refuses_without_weights(segmented: Path, tmp_path: Path) -> None:
    missing = tmp_path / "c3d-missing.pickle"
    cfg = FeaturesConfig(
        segmented,
        features=("c3d",),
        c3d_weights=str(missing),
        c3d_crop=CROP,
        allow_download=False,
        progress=False,
        force=True,
    )
    summary = run_features(cfg)
    assert str(missing) in summary["errors"]["c3d"] and "c3d" not in summary["stores"]


def test_export_release_writes_the_c3d_file(tmp_path: Path) -> None:
    import h5py

    from pipeline.stages.release.export_release import ExportReleaseConfig, run_export_release
    from tests.support.release_set import SPLITS, annotation_rows, build_manifest, first_ids

    rows = annotation_rows()
    data = build_manifest(tmp_path, rows, SPLITS, tmp_path / "data")
    ids = first_ids(rows)
    rng = np.random.default_rng(2)
    values = {
        "audio": rng.random((len(ids), 10, 128)).astype(np.float32),
        "c3d": rng.random((len(ids), 10, 512)).astype(np.float32),
    }
    for name, array in values.items():
        writer = StoreWriter.open(data, name, ids, array.shape[1:], "float32", 8, {})
        for shard, shard_ids in writer.pending_shards():
            writer.write_shard(shard, {y: array[ids.index(y)] for y in shard_ids})
        writer.finalize()
    out = tmp_path / "out"
    summary = run_export_release(ExportReleaseConfig(out_dir=out, data_dir=data, progress=False))
    assert "visual_feature_c3d.h5" in summary["written"]
    table = pd.read_csv(out / "avel_rows.csv")
    with h5py.File(out / "visual_feature_c3d.h5", "r") as f:
        exported = f["avadataset"][...]
    assert exported.shape == (len(table), 10, 512)
    expected = values["c3d"][[ids.index(y) for y in table["youtube_id"]]]
    np.testing.assert_array_equal(exported, expected)


def test_bench_c3d_small() -> None:
    from pipeline.bench.c3d import bench_c3d, c3d_flops

    model, _ = build_c3d("random", allow_random=True)
    counted = []
    for m in model.modules():
        if isinstance(m, torch.nn.Conv3d):
            m.register_forward_hook(
                lambda mod, x, y: counted.append(2 * y.numel() * mod.in_channels * 27)
            )
    with torch.inference_mode():
        model(torch.zeros((1, 3, 16, 48, 48)))
    assert c3d_flops(48) == sum(counted)
    res = bench_c3d(crop=CROP, model_clips=2, clips_per_pass=2, e2e_clips=0)
    assert res["optimised_frames_per_s"] > 0 and res["naive_frames_per_s"] > 0
    assert 0 < res["fraction_of_peak"] and res["flops_per_clip"] == c3d_flops(CROP)
