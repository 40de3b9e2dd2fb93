"""VGGish: frontend parity with the reference golden file, TF checkpoint -> torch parity,
PCA postprocessor, weights cache; a network test with the official weights (skipped offline)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.backbones import vggish as V

SHARED = Path(os.environ.get("AVEL_SHARED", Path(__file__).resolve().parents[2].parent / "shared"))
GOLDEN = SHARED / "reference" / "vggish_frontend_golden.npz"


def _tone(
    seconds: float, rate: int, channels: int = 1, seed: int = 0, noise: float = 0.01
) -> np.ndarray:
    """A two-tone signal with a little noise, (samples,) or (samples, channels) float32."""
    t = np.arange(int(round(seconds * rate))) / rate
    rng = np.random.default_rng(seed)
    x = 0.4 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 2500 * t)
    x = x + noise * rng.standard_normal(t.size)
    return (
        np.stack([x] * channels, axis=1).astype(np.float32)
        if channels > 1
        else x.astype(np.float32)
    )


# --------------------------------------------------------------------------- frontend


@pytest.fixture(scope="module")
def golden():
    if not GOLDEN.is_file():
        pytest.skip(f"reference golden file not found at {GOLDEN} (set AVEL_SHARED)")
    with np.load(GOLDEN) as data:
        return {k: data[k] for k in data.files}


def test_frontend_matches_golden(golden):
    assert np.abs(V.mel_matrix() - golden["mel_matrix"]).max() < 1e-4
    full = V.log_mel_spectrogram(golden["waveform_16k"])
    assert full.shape == golden["log_mel_full"].shape == (998, 64)
    assert np.abs(full - golden["log_mel_full"]).max() < 1e-4
    patches = V.log_mel_patches(golden["waveform_16k"], 16000)
    assert patches.dtype == np.float32 and patches.shape == (10, 96, 64)
    assert np.abs(patches - golden["patches_per_second"]).max() < 1e-4


def test_standard_framing_hops_096_s(golden):
    full = golden["log_mel_full"]
    patches = V.log_mel_patches(golden["waveform_16k"], 16000, framing="standard")
    assert patches.shape == (1 + (full.shape[0] - 96) // 96, 96, 64) == (10, 96, 64)
    for k in (0, 5, 9):
        assert np.abs(patches[k] - full[96 * k : 96 * k + 96]).max() < 1e-4


def test_mel_matrix_structure():
    m = V.mel_matrix()
    assert m.shape == (257, 64)
    assert np.all(m[0] == 0) and m.min() >= 0 and m.max() <= 1
    assert np.all(m.max(axis=0) > 0.5)  # every band has a peak near 1


def test_resampled_stereo_44k1_matches_16k_input():
    x44 = _tone(3.5, 44100, channels=2, noise=0.0)
    x16 = _tone(3.5, 16000, noise=0.0)
    ave = V.log_mel_patches(x44, 44100)
    std = V.log_mel_patches(x44, 44100, framing="standard")
    # 3.5 s: 3 whole seconds (+0.5 s, too short for a patch); 56,000 samples -> 348 frames -> 3
    assert ave.shape == (3, 96, 64) and std.shape == (3, 96, 64)
    ref = V.log_mel_patches(x16, 16000)
    # The same tones through a high-quality resampler: near-identical log-mel patches.
    assert np.median(np.abs(ave - ref)) < 1e-3 and np.abs(ave - ref).max() < 0.05


def test_channel_mean_and_int16_scaling():
    mono = _tone(1.2, 16000)
    stereo = np.stack([mono, 0.5 * mono], axis=1)
    np.testing.assert_allclose(
        V.log_mel_patches(stereo, 16000), V.log_mel_patches(0.75 * mono, 16000), atol=1e-5
    )
    pcm = np.round(mono * 32767).astype(np.int16)
    np.testing.assert_allclose(
        V.log_mel_patches(pcm, 16000),
        V.log_mel_patches(pcm.astype(np.float64) / 32768.0, 16000),
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="channels, samples"):
        V.log_mel_patches(stereo.T, 16000)
    with pytest.raises(ValueError, match="framing"):
        V.log_mel_patches(mono, 16000, framing="centre")


def test_short_audio_framing():
    # Standard framing: < 0.975 s (15,600 samples at 16 kHz) gives no patch.
    assert V.log_mel_patches(np.zeros(15599, np.float32), 16000, "standard").shape == (0, 96, 64)
    assert V.log_mel_patches(np.zeros(15600, np.float32), 16000, "standard").shape == (1, 96, 64)
    # AVE framing: no padding; a second yields a patch only with >= 15,600 samples of it.
    assert V.log_mel_patches(_tone(0.5, 16000), 16000).shape == (0, 96, 64)
    assert V.log_mel_patches(np.zeros(0, np.float32), 16000).shape == (0, 96, 64)
    assert V.log_mel_patches(np.zeros(100, np.float32), 16000, "standard").shape == (0, 96, 64)
    x = _tone(10.0, 16000)
    full = V.log_mel_patches(x, 16000)
    almost = V.log_mel_patches(x[: 9 * 16000 + 15600], 16000)
    assert almost.shape == (10, 96, 64)
    np.testing.assert_array_equal(almost, full)  # the last patch reads only 0.975 s
    assert V.log_mel_patches(x[: 9 * 16000 + 15599], 16000).shape == (9, 96, 64)


# --------------------------------------------------------------------------- network


def test_parameter_count_and_shapes():
    with torch.device("meta"):  # shapes only, no 72 M random numbers
        model = V.VGGish()
        x = torch.zeros(2, 96, 64)
    assert sum(p.numel() for p in model.parameters()) == V.NUM_PARAMETERS == 72_141_184
    with torch.no_grad():
        assert model.pool5(x).shape == (2, 6, 4, 512)
        assert model(x.unsqueeze(1), output="raw").shape == (2, 128)
    with pytest.raises(ValueError, match="pca"):
        model(x, output="pca")
    with pytest.raises(ValueError, match="96, 64"):
        model(torch.zeros(2, 64, 96, device="meta"))


def _build_tf_vggish(tf, slim, fc2_relu: bool):
    """The AudioSet TF-slim VGGish graph (fc2_relu=True: the 2017 graph used by the AVE release)."""
    init_w = tf.compat.v1.variance_scaling_initializer(scale=1.0, distribution="uniform", seed=1)
    init_b = tf.compat.v1.random_uniform_initializer(-0.05, 0.05, seed=2)
    with (
        slim.arg_scope(
            [slim.conv2d, slim.fully_connected],
            weights_initializer=init_w,
            biases_initializer=init_b,
            activation_fn=tf.nn.relu,
            trainable=False,
        ),
        slim.arg_scope([slim.conv2d], kernel_size=[3, 3], stride=1, padding="SAME"),
        slim.arg_scope([slim.max_pool2d], kernel_size=[2, 2], stride=2, padding="SAME"),
        tf.compat.v1.variable_scope("vggish"),
    ):
        features = tf.compat.v1.placeholder(tf.float32, (None, 96, 64), name="input_features")
        net = tf.reshape(features, [-1, 96, 64, 1])
        net = slim.conv2d(net, 64, scope="conv1")
        net = slim.max_pool2d(net, scope="pool1")
        net = slim.conv2d(net, 128, scope="conv2")
        net = slim.max_pool2d(net, scope="pool2")
        net = slim.repeat(net, 2, slim.conv2d, 256, scope="conv3")
        net = slim.max_pool2d(net, scope="pool3")
        net = slim.repeat(net, 2, slim.conv2d, 512, scope="conv4")
        pool5 = slim.max_pool2d(net, scope="pool4")
        net = slim.flatten(pool5)
        net = slim.repeat(net, 2, slim.fully_connected, 4096, scope="fc1")
        net = slim.fully_connected(
            net, 128, scope="fc2", activation_fn=tf.nn.relu if fc2_relu else None
        )
        return tf.identity(net, name="embedding"), pool5


@pytest.fixture(scope="session")
def tf_reference(tmp_path_factory):
    """A random VGGish checkpoint in the official V1 format and the TF graphs' outputs on it."""
    tf = pytest.importorskip("tensorflow")
    slim = pytest.importorskip("tf_slim")
    folder = tmp_path_factory.mktemp("vggish_tf")
    ckpt = folder / "vggish_model.ckpt"
    patches = V.log_mel_patches(_tone(4.0, 16000, seed=3), 16000)
    feed = {"vggish/input_features:0": patches}
    out = {"ckpt": ckpt, "patches": patches}
    # Current upstream graph (raw fc2) writes the checkpoint; tf_slim's deprecations are muted.
    with warnings.catch_warnings(), tf.Graph().as_default():
        warnings.simplefilter("ignore")
        _, pool5 = _build_tf_vggish(tf, slim, fc2_relu=False)
        saver = tf.compat.v1.train.Saver(write_version=tf.compat.v1.train.SaverDef.V1)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, str(ckpt), write_meta_graph=False)
            out["raw"], out["pool5"] = sess.run(["vggish/embedding:0", pool5], feed)
    # The 2017 graph (ReLU on fc2, used by the AVE release) restores the same file.
    with warnings.catch_warnings(), tf.Graph().as_default():
        warnings.simplefilter("ignore")
        _build_tf_vggish(tf, slim, fc2_relu=True)
        with tf.compat.v1.Session() as sess:
            tf.compat.v1.train.Saver().restore(sess, str(ckpt))
            out["ave"] = sess.run("vggish/embedding:0", feed)
    assert ckpt.is_file(), "the V1 format is a single file"
    return out


@pytest.fixture(scope="session")
def converted(tf_reference, tmp_path_factory):
    cache = tmp_path_factory.mktemp("vggish_cache")
    return V.ensure_vggish_weights(cache, checkpoint=tf_reference["ckpt"], allow_download=False)


def test_converted_checkpoint_matches_tf_graph(tf_reference, converted):
    model = V.load_vggish(converted.path).eval()
    x = torch.from_numpy(tf_reference["patches"])
    assert tf_reference["raw"].std() > 0.05 and (tf_reference["ave"] > 0).mean() > 0.1
    with torch.no_grad():
        raw = model(x, output="raw").numpy()
        ave = model(x, output="ave").numpy()
        pool5 = model.pool5(x).numpy()
    diffs = {k: np.abs(v - tf_reference[k]).max() for k, v in (("raw", raw), ("ave", ave))}
    print(
        f"\ntorch vs TF-slim max abs: {diffs}, pool5 {np.abs(pool5 - tf_reference['pool5']).max()}"
    )
    assert diffs["raw"] < 1e-4 and diffs["ave"] < 1e-4
    assert pool5.shape == tf_reference["pool5"].shape == (len(x), 6, 4, 512)
    assert np.abs(pool5 - tf_reference["pool5"]).max() < 1e-4


def test_weights_record_and_cache_reuse(tf_reference, converted):
    record = json.loads(converted.path.with_suffix(".json").read_text())
    from pipeline.core.fetch import sha256_file

    assert record["sha256"] == converted.sha256 == sha256_file(converted.path)
    assert record["source_sha256"] == sha256_file(tf_reference["ckpt"])
    assert record["source"] == str(tf_reference["ckpt"].resolve())
    mtime = converted.path.stat().st_mtime_ns
    again = V.ensure_vggish_weights(
        converted.path.parent, tf_reference["ckpt"], allow_download=False
    )
    cached = V.ensure_vggish_weights(converted.path.parent, allow_download=False)
    assert again.sha256 == cached.sha256 == converted.sha256
    assert converted.path.stat().st_mtime_ns == mtime, "cached weights were rewritten"
    meta = V.load_vggish(converted.path).weights_info.with_mode("raw", "standard").to_dict()
    assert meta["weights"]["sha256"] == converted.sha256 and not meta["weights"]["random"]
    assert meta["output"] == "raw" and meta["preprocessing"]["framing"] == "standard"


def test_convert_vggish_cli(tf_reference, converted, tmp_path, capsys):
    from pipeline.cli import main

    assert main(["convert-vggish", "--data-dir", str(tmp_path), "--no-download"]) == 1
    captured = capsys.readouterr()
    assert "--allow-random-weights" in captured.err and "error" not in captured.out
    args = ["--weights-dir", str(converted.path.parent), "--checkpoint", str(tf_reference["ckpt"])]
    assert main(["convert-vggish", "--data-dir", str(tmp_path), *args]) == 0
    assert converted.sha256 in capsys.readouterr().out


def test_missing_and_bad_weights_say_what_to_do(tmp_path):
    with pytest.raises(V.VGGishWeightsError, match="--allow-random-weights"):
        V.ensure_vggish_weights(tmp_path / "empty", allow_download=False)
    with pytest.raises(V.VGGishWeightsError, match="not found"):
        V.ensure_vggish_weights(tmp_path, checkpoint=tmp_path / "nope.ckpt")
    pt = tmp_path / "vggish_model.pt"
    torch.save({"x": torch.zeros(1)}, pt)
    pt.with_suffix(".json").write_text(
        json.dumps({"format": "avel-vggish-torch-state-dict-v1", "sha256": "0" * 64})
    )
    with pytest.raises(V.VGGishWeightsError, match="corrupt"):
        V.load_vggish(pt)
    pt.with_suffix(".json").unlink()
    with pytest.raises(V.VGGishWeightsError, match="not VGGish weights"):
        V.load_vggish(pt)
    random = V.random_vggish(seed=3)
    assert random.weights_info.is_random and "RANDOM" in random.weights_info.describe()
    assert random.weights_info.to_dict()["weights"]["sha256"] == "random"


def test_checkpoint_with_wrong_variables_is_rejected(tmp_path):
    tf = pytest.importorskip("tensorflow")
    ckpt = tmp_path / "other.ckpt"
    with tf.Graph().as_default():
        with tf.compat.v1.variable_scope("vggish/conv1"):
            tf.compat.v1.get_variable("weights", shape=[3, 3, 1, 32])
        saver = tf.compat.v1.train.Saver(write_version=tf.compat.v1.train.SaverDef.V1)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, str(ckpt), write_meta_graph=False)
    with pytest.raises(V.VGGishWeightsError, match=r"conv1/weights has shape .*missing vggish/fc2"):
        V.convert_tf_checkpoint(ckpt, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


# --------------------------------------------------------------------------- PCA


def _numpy_postprocess(emb: np.ndarray, eigen: np.ndarray, means: np.ndarray) -> np.ndarray:
    pca = (eigen @ (emb.T - means.reshape(-1, 1))).T
    return ((np.clip(pca, -2.0, 2.0) + 2.0) * (255.0 / 4.0)).astype(np.uint8)


def test_pca_postprocessor_matches_numpy_formula(tmp_path):
    rng = np.random.default_rng(7)
    eigen, _ = np.linalg.qr(rng.standard_normal((128, 128)))
    means = rng.normal(0, 0.3, size=(128, 1))  # upstream stores the means as a column
    params = tmp_path / "vggish_pca_params.npz"
    np.savez(params, pca_eigen_vectors=eigen, pca_means=means)
    emb = rng.normal(0, 1.2, size=(50, 128)).astype(np.float32)  # some values clip at +-2
    expected = _numpy_postprocess(emb.astype(np.float64), eigen, means)
    got = V.Postprocessor(params)(torch.from_numpy(emb))
    assert got.dtype == torch.uint8
    np.testing.assert_array_equal(got.numpy(), expected)
    assert 0 < (expected == 0).mean() < 0.5 and (expected == 255).any()

    model = V.random_vggish(seed=1, pca_params=params).eval()
    x = torch.from_numpy(V.log_mel_patches(_tone(2.0, 16000), 16000))
    with torch.no_grad():
        raw = model(x, output="raw").numpy()
        pca = model(x, output="pca").numpy()
    np.testing.assert_array_equal(pca, _numpy_postprocess(raw.astype(np.float64), eigen, means))
    info = model.weights_info.with_mode("pca")
    assert info.to_dict()["pca_sha256"] == info.pca_sha256 and info.pca_sha256 is not None


# --------------------------------------------------------------------------- official weights


@pytest.mark.network  # runs with --run-network or AVEL_NETWORK_TESTS=1 (tests/conftest.py)
def test_official_weights_smoke_statistics(tmp_path_factory):
    """Upstream smoke test: 3 s 1 kHz sine -> raw mean ~0.000657, std ~0.343; postprocessed
    mean ~126.0, std ~89.3 (10% tolerance; the mean near 0 is checked against 10% of the std)."""
    pytest.importorskip("tensorflow")
    from pipeline.core.fetch import fetch

    cache = Path(os.environ.get("AVEL_WEIGHTS_CACHE", tmp_path_factory.mktemp("official")))
    info = V.ensure_vggish_weights(cache)
    pca = fetch(V.VGGISH_PCA_PARAMS_URL, cache)
    model = V.load_vggish(info.path, pca_params=pca).eval()
    t = np.arange(3 * 16000) / 16000
    patches = V.log_mel_patches(np.sin(2 * np.pi * 1000 * t), 16000, framing="standard")
    with torch.no_grad():
        raw = model(torch.from_numpy(patches), output="raw").numpy()
        post = model(torch.from_numpy(patches), output="pca").numpy().astype(np.float64)
    print(
        f"\nVGGish smoke: {info.describe()}\n raw mean {raw.mean():.6f} std {raw.std():.4f}"
        f"\n postprocessed mean {post.mean():.2f} std {post.std():.2f}"
    )
    assert abs(raw.mean() - 0.000657) < 0.1 * 0.343
    assert abs(raw.std() - 0.343) < 0.1 * 0.343
    assert abs(post.mean() - 126.0) < 0.1 * 126.0
    assert abs(post.std() - 89.3) < 0.1 * 89.3


def test_checkpoint_digest_covers_every_part(tmp_path):
    """A TF checkpoint given as a prefix (index + data files) has one digest over its parts."""
    import hashlib

    from pipeline.core.fetch import sha256_file

    (tmp_path / "model.ckpt.index").write_bytes(b"index")
    (tmp_path / "model.ckpt.data-00000-of-00001").write_bytes(b"data")
    digest = sha256_file(tmp_path / "model.ckpt", parts=True)
    expected = hashlib.sha256()
    for name, body in (("model.ckpt.data-00000-of-00001", b"data"), ("model.ckpt.index", b"index")):
        expected.update(name.encode() + b"\0" + hashlib.sha256(body).hexdigest().encode())
    assert digest == expected.hexdigest()
    (tmp_path / "model.ckpt.index").write_bytes(b"other index")
    assert sha256_file(tmp_path / "model.ckpt", parts=True) != digest
    single = tmp_path / "model.ckpt.index"
    assert sha256_file(single, parts=True) == sha256_file(single)
    assert sha256_file(single, algorithm="md5") == hashlib.md5(b"other index").hexdigest()
    with pytest.raises(FileNotFoundError):
        sha256_file(tmp_path / "absent.ckpt", parts=True)


def test_bf16_embeddings_on_a_native_cpu_within_bound(tmp_path):
    """VGGish under bf16 autocast (where the CPU has it) stays within the auto bound of fp32; the
    probe reports the same figure; fp16 on the CPU is refused."""
    from pipeline.backbones.base import BackboneError
    from pipeline.backbones.precision import ERROR_BOUND, native_bf16_cpu, relative_error
    from pipeline.backbones.vggish_backbone import VGGishBackbone
    from pipeline.backbones.vggish_model import probe_vggish_precision
    from pipeline.stages.features.core import FeaturesConfig

    def backbone(precision: str) -> VGGishBackbone:
        cfg = FeaturesConfig(
            tmp_path, precision=precision, allow_random_weights=True, allow_download=False
        )
        b = VGGishBackbone(cfg, tmp_path / "weights", 16)
        b.prepare("cpu")
        b.load("cpu")
        return b

    patches = np.random.default_rng(0).standard_normal((10, 96, 64)).astype(np.float32)
    ref = backbone("fp32").run([{"patches": patches}])[0]["audio"]
    with pytest.raises(BackboneError, match="fp16"):
        backbone("fp16")
    if not native_bf16_cpu():
        pytest.skip("this CPU has no native bf16 (avx512_bf16/amx_bf16)")
    low = backbone("bf16").run([{"patches": patches}])[0]["audio"]
    rel = relative_error(torch.from_numpy(low), torch.from_numpy(ref))
    assert 0 < rel < ERROR_BOUND
    probe = probe_vggish_precision(V.random_vggish(seed=0).eval(), "cpu", "bf16", patches=4)
    assert 0 < probe["relative_error"] < ERROR_BOUND
