"""VGG-19 pool5 extractor: decoder parity, Keras-h5 conversion, bad clips, weights handling, GPU."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.backbones.base import spatial_mean
from pipeline.backbones.frames import FrameDecodeError, count_frames, decode_planned
from pipeline.backbones.vgg19 import (
    KERAS,
    TORCHVISION_FILE,
    WeightsError,
    build_vgg19_pool5,
    convert_keras_vgg19,
    default_cache_dirs,
)
from pipeline.backbones.visual import extract_visual
from tests.support.media import make_clip

W, H, FPS = 96, 64, 8


def release_plan(n: int, per_second: int) -> np.ndarray:
    """The release's frame rule (AVE reference 2.1) for ``per_second`` frames, written independently."""
    interval = n // 10
    return np.array(
        [
            [int(np.floor(s * interval + i * interval / per_second)) for i in range(per_second)]
            for s in range(10)
        ]
    )


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("vgg19_clips")
    corrupt = d / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    return {
        "good": make_clip(d / "good.mp4", 10, FPS, (W, H), audio=False),
        "short": make_clip(d / "short.mp4", 5, FPS, (W, H), audio=False),
        "corrupt": corrupt,
    }


@pytest.fixture(scope="session")
def random_vgg() -> tuple[torch.nn.Module, object]:
    return build_vgg19_pool5("random", allow_random=True, seed=0)


def independent_frames(
    clip: Path, plan: np.ndarray | None, per_second: int
) -> tuple[np.ndarray, int]:
    """Decode every frame at full size (raw yuv420p), sample by the rule in numpy, then scale the
    chosen frames to 224x224 in a separate ffmpeg call (same swscale bilinear as the extractor)."""
    raw = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            str(clip),
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "yuv420p",
            "pipe:1",
        ],
        check=True,
        capture_output=True,
    ).stdout
    frame_bytes = W * H * 3 // 2
    n = len(raw) // frame_bytes
    every = np.frombuffer(raw, np.uint8).reshape(n, frame_bytes)
    plan = release_plan(n, per_second) if plan is None else plan
    chosen = every[plan.reshape(-1)]
    rgb = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "yuv420p",
            "-s",
            f"{W}x{H}",
            "-i",
            "pipe:0",
            "-vf",
            "scale=224:224:flags=bilinear",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "pipe:1",
        ],
        input=chosen.tobytes(),
        check=True,
        capture_output=True,
    ).stdout
    return np.frombuffer(rgb, np.uint8).reshape(-1, 224, 224, 3), n


def test_count_frames(clips: dict[str, Path]) -> None:
    assert (
        count_frames(clips["good"])
        == independent_frames(clips["good"], np.zeros((1, 1), int), 1)[1]
    )
    assert (
        count_frames(clips["short"])
        == independent_frames(clips["short"], np.zeros((1, 1), int), 1)[1]
    )
    with pytest.raises(FrameDecodeError, match="corrupt.mp4"):
        count_frames(clips["corrupt"])


@pytest.mark.slow
def test_parity_with_independent_decoding(clips: dict[str, Path], random_vgg) -> None:
    model, weights = random_vgg
    per_second = 2
    reference_frames, n = independent_frames(clips["good"], None, per_second)
    plan = release_plan(count_frames(clips["good"]), per_second)
    assert plan.max() < n

    frames, inverse = decode_planned(clips["good"], plan)
    np.testing.assert_array_equal(frames[inverse], reference_frames)

    with torch.inference_mode():
        pool5 = torch.cat(
            [
                model(weights.preprocess(reference_frames[k : k + 5]).contiguous())
                for k in range(0, len(reference_frames), 5)
            ]
        )
    expected = pool5.reshape(10, per_second, 512, 7, 7).mean(1).permute(0, 2, 3, 1).numpy()

    ((clip_id, maps),) = list(
        extract_visual(
            [("clip-1", clips["good"], plan)], model, weights, batch_size=8, num_workers=1
        )
    )
    assert clip_id == "clip-1"
    assert (
        isinstance(maps, np.ndarray) and maps.shape == (10, 7, 7, 512) and maps.dtype == np.float32
    )
    rel = np.abs(maps - expected).max() / np.abs(expected).max()
    assert rel < 1e-4, f"max relative error {rel:.2e}"
    vec = spatial_mean(maps)
    assert vec.shape == (10, 512)
    np.testing.assert_allclose(
        vec, expected.mean(axis=(1, 2)), rtol=1e-4, atol=1e-6 * np.abs(vec).max()
    )


def test_bad_clips_do_not_stop_the_batch(clips: dict[str, Path], random_vgg) -> None:
    """Corrupt clip and a short clip planned as if it had 10 s -> error strings; a short clip with a
    plan from its real frame count -> maps; batching across clips does not change any result."""
    model, weights = random_vgg
    size = 32  # pool5 1x1: this test is about the pipeline, not the resolution
    good_plan = release_plan(count_frames(clips["good"]), 2)
    short_plan = release_plan(count_frames(clips["short"]), 2)
    items = [
        ("good-a", clips["good"], good_plan),
        ("corrupt", clips["corrupt"], good_plan),
        ("short-overplanned", clips["short"], good_plan),
        ("short", clips["short"], short_plan),
        ("missing", clips["good"].with_name("absent.mp4"), good_plan),
        ("good-b", clips["good"], good_plan[:, ::-1].copy()),
    ]
    out = list(extract_visual(items, model, weights, batch_size=7, num_workers=2, size=size))
    assert [y for y, _ in out] == [y for y, _, _ in items]
    results = dict(out)
    assert "corrupt.mp4" in results["corrupt"]
    assert "planned frames" in results["short-overplanned"]
    assert "absent.mp4" in results["missing"]
    for key in ("good-a", "short", "good-b"):
        assert isinstance(results[key], np.ndarray) and results[key].shape == (10, 1, 1, 512)
    # The same second averaged in another frame order is the same map.
    np.testing.assert_allclose(results["good-b"], results["good-a"], rtol=1e-5, atol=1e-6)
    # Per-clip, one frame per batch, in-process decoding: same maps as the cross-clip batches.
    for key in ("good-a", "short"):
        item = next(it for it in items if it[0] == key)
        ((_, alone),) = list(
            extract_visual([item], model, weights, batch_size=1, num_workers=0, size=size)
        )
        scale = np.abs(alone).max()
        assert np.abs(alone - results[key]).max() / scale < 1e-5


KERAS_SCRIPT = """
import sys
import numpy as np
import tensorflow as tf
tf.config.set_visible_devices([], "GPU")
tf.keras.utils.set_random_seed(0)
out = sys.argv[1]
model = tf.keras.applications.VGG19(weights=None, include_top=False, input_shape=(224, 224, 3))
model.save(out + "/vgg19_full.h5")
model.save_weights(out + "/vgg19.weights.h5")
image = np.random.default_rng(1).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
x = tf.keras.applications.vgg19.preprocess_input(image.astype(np.float32))
np.savez(out + "/io.npz", image=image, x=x, pool5=model(x, training=False).numpy())
"""


@pytest.mark.slow
def test_keras_h5_conversion(tmp_path: Path) -> None:
    """A random Keras VGG19 notop model (TF in a subprocess: TF and torch in one process can crash)
    saved as h5 (full model and weights-only) converts to the same pool5 in torch."""
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("needs the `tf` extra (tensorflow) to write Keras h5 files")
    proc = subprocess.run(
        [sys.executable, "-c", KERAS_SCRIPT, str(tmp_path)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    io = np.load(tmp_path / "io.npz")
    x = KERAS.preprocess(io["image"])
    np.testing.assert_allclose(x.permute(0, 2, 3, 1).numpy(), io["x"], rtol=0, atol=1e-4)
    expected = io["pool5"][0]  # (7, 7, 512)
    for path in (tmp_path / "vgg19_full.h5", tmp_path / "vgg19.weights.h5"):
        state = convert_keras_vgg19(path)
        assert len(state) == 32
        model, record = build_vgg19_pool5(str(path))
        assert record.channel_order == "BGR" and record.source == str(path) and not record.is_random
        with torch.inference_mode():
            got = model(x.contiguous())[0].permute(1, 2, 0).numpy()
        rel = np.abs(got - expected).max() / np.abs(expected).max()
        assert rel < 1e-4, f"{path.name}: max relative error {rel:.2e}"


def test_weights_resolution(tmp_path: Path, random_vgg) -> None:
    with pytest.raises(WeightsError, match="allow-random-weights"):
        build_vgg19_pool5("random")
    if not any((d / TORCHVISION_FILE).is_file() for d in default_cache_dirs()):
        with pytest.raises(WeightsError, match=TORCHVISION_FILE) as err:
            build_vgg19_pool5("torchvision", cache_dir=tmp_path)
        assert "--allow-random-weights" in str(err.value)
    # A torchvision-layout file under the official name but with other contents fails its checksum.
    model, _ = random_vgg
    state = {f"features.{k}": v for k, v in model.state_dict().items()}
    torch.save(state, tmp_path / TORCHVISION_FILE)
    with pytest.raises(WeightsError, match="dcbb9e9d"):
        build_vgg19_pool5("torchvision", cache_dir=tmp_path)
    # The same file given as a path loads (the user's choice), with torchvision preprocessing.
    own = tmp_path / "mine.pth"
    (tmp_path / TORCHVISION_FILE).rename(own)
    loaded, record = build_vgg19_pool5(str(own))
    assert record.channel_order == "RGB" and len(record.sha256) == 64
    torch.testing.assert_close(loaded[34].weight, model[34].weight)


def _gpu_items(clips: dict[str, Path], copies: int) -> list:
    plan = release_plan(count_frames(clips["good"]), 16)
    return [(f"clip-{k}", clips["good"], plan) for k in range(copies)]


@pytest.mark.gpu
@pytest.mark.parametrize(("precision", "bound"), [("bf16", 5e-2), ("fp16", 1e-2)])
def test_gpu_reduced_precision_error(clips: dict[str, Path], precision: str, bound: float) -> None:
    """pool5 error of autocast against fp32 (max abs error / max abs value); the rule picks
    the fastest precision under 1e-2 as the GPU default, so the figure is printed for the README."""
    try:
        model, weights = build_vgg19_pool5("torchvision")
    except WeightsError:
        model, weights = build_vgg19_pool5("random", allow_random=True)
    items = _gpu_items(clips, 2)
    ref = dict(
        extract_visual(items, model, weights, device="cuda", precision="fp32", num_workers=2)
    )
    low = dict(
        extract_visual(items, model, weights, device="cuda", precision=precision, num_workers=2)
    )
    for key, maps in ref.items():
        rel = np.abs(low[key] - maps).max() / np.abs(maps).max()
        print(f"{precision} vs fp32 ({weights.name}): pool5 max relative error {rel:.2e}")
        assert rel < bound, f"{precision}: pool5 max relative error {rel:.2e} against fp32"


@pytest.mark.gpu
def test_gpu_throughput_sanity(clips: dict[str, Path]) -> None:
    model, weights = build_vgg19_pool5("random", allow_random=True)
    items = _gpu_items(clips, 24)
    list(extract_visual(items[:2], model, weights, device="cuda", precision="bf16", num_workers=2))
    start = time.perf_counter()
    out = list(
        extract_visual(
            items, model, weights, device="cuda", precision="bf16", batch_size=128, num_workers=4
        )
    )
    frames_per_s = len(items) * 160 / (time.perf_counter() - start)
    assert all(isinstance(m, np.ndarray) for _, m in out)
    assert frames_per_s > 200, f"only {frames_per_s:.0f} frames/s on the GPU"


@pytest.mark.slow
def test_bench_visual_small(tmp_path: Path) -> None:
    """The benchmark runs both paths and reports positive rates and ratios (tiny frames: speed only)."""
    from pipeline.bench.visual import bench_visual, format_bench

    res = bench_visual(n_clips=1, per_second=1, size=32, model_frames=2, work_dir=tmp_path)
    assert res["planned_frames"] == 10
    for side in ("optimised", "naive"):
        for key in ("decode_frames_per_s", "vgg19_frames_per_s", "clips_per_s", "peak_pss_mib"):
            assert res[side][key] > 0, (side, key)
    assert set(res["speedup"]) == {"decode_frames_per_s", "vgg19_frames_per_s", "clips_per_s"}
    assert "end-to-end clips/s" in format_bench(res)


def test_cpu_bf16_where_native_else_refused(clips: dict[str, Path], random_vgg) -> None:
    """bf16 on the CPU runs where the CPU has it (pool5 within the auto bound of fp32) and is
    refused, naming the missing flags, where it does not; fp16 needs CUDA."""
    from pipeline.backbones.precision import CPU_BF16_FLAGS, ERROR_BOUND, cpu_flags, native_bf16_cpu

    model, weights = random_vgg
    n = count_frames(clips["good"])
    items = [("good", clips["good"], release_plan(n, 1))]
    kwargs = {"num_workers": 0, "size": 64}
    if not native_bf16_cpu():
        assert not set(CPU_BF16_FLAGS) & cpu_flags() or not torch.backends.mkldnn.is_available()
        with pytest.raises(ValueError, match="avx512_bf16"):
            list(extract_visual(items, model, weights, precision="bf16", **kwargs))
        return
    [(_, ref)] = list(extract_visual(items, model, weights, precision="fp32", **kwargs))
    [(_, low)] = list(extract_visual(items, model, weights, precision="bf16", **kwargs))
    rel = np.linalg.norm(low - ref) / np.linalg.norm(ref)
    assert 0 < rel < ERROR_BOUND, rel  # bf16 really ran (not bit-equal) and stays in the bound
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        list(extract_visual(items, model, weights, precision="fp16", **kwargs))


def test_precision_probe_and_auto_choice(random_vgg) -> None:
    """The probe measures both precisions on the real network; auto takes bf16 only when native,
    within the error bound and at least MIN_SPEEDUP faster."""
    from pipeline.backbones.precision import ERROR_BOUND, MIN_SPEEDUP, choose_precision
    from pipeline.backbones.vgg19 import probe_vgg19_precision

    model, weights = random_vgg
    probe = probe_vgg19_precision(model, weights, "cpu", "bf16", frames=2, size=64)
    assert probe["fp32_per_s"] > 0 and probe["error_bound"] == ERROR_BOUND
    if probe["native"]:
        assert 0 < probe["relative_error"] < ERROR_BOUND and probe["reduced_per_s"] > 0
        assert probe["speedup_min"] <= probe["speedup"]
        fast = probe["speedup_min"] >= MIN_SPEEDUP
        assert choose_precision(probe) == ("bf16" if fast else "fp32")
        faster = {**probe, "speedup": MIN_SPEEDUP + 1, "speedup_min": MIN_SPEEDUP}
        assert choose_precision(faster) == "bf16"
        assert choose_precision({**faster, "speedup_min": 0.9 * MIN_SPEEDUP}) == "fp32"
        assert choose_precision({**faster, "relative_error": 2 * ERROR_BOUND}) == "fp32"
    else:
        assert choose_precision(probe) == "fp32"
