"""The demo's pretrained-weights path, on loopback: files in the official formats (a random TF-slim
VGGish checkpoint, a random torchvision VGG-19 .pth) fetched, checked, converted and cached; a bad
checksum or an unreachable server falls back to RANDOM with the reason; the features stage gets the
files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.models  # noqa: F401  (before TensorFlow: importing it after TF crashes)

from pipeline.backbones.vgg19 import TORCHVISION_FILE, build_vgg19_pool5, vgg19_features
from pipeline.backbones.vggish_weights import load_vggish
from pipeline.core.fetch import sha256_file
from pipeline.demo.run import DemoConfig, demo_steps
from pipeline.demo.server import LoopbackServer
from pipeline.demo.weights import OFFICIAL, WeightSource, cached_weights, fetch_weights
from tests.pipeline.test_vggish import tf_reference  # noqa: F401  (a session fixture)
from tests.support.make import make


@pytest.fixture
def no_home_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep this machine's torch hub / Keras caches out of the lookup."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tf_reference) -> dict:  # noqa: F811
    root = tmp_path_factory.mktemp("official")
    ckpt = root / "vggish_model.ckpt"
    ckpt.write_bytes(Path(tf_reference["ckpt"]).read_bytes())
    torch.manual_seed(0)
    vgg = vgg19_features()
    torch.save({f"features.{k}": v for k, v in vgg.state_dict().items()}, root / TORCHVISION_FILE)
    return {"root": root, "vgg": vgg, "reference": tf_reference}


def _sources(base: str, root: Path, **digests: str) -> dict[str, WeightSource]:
    files = {"vggish": "vggish_model.ckpt", "vgg19": TORCHVISION_FILE}
    return {
        name: WeightSource(f"{base}/{file}", sha256=digests.get(name) or sha256_file(root / file))
        for name, file in files.items()
    }


def test_official_sources_carry_checksums() -> None:
    assert OFFICIAL["vgg19"].url.endswith(TORCHVISION_FILE) and OFFICIAL["vgg19"].sha256
    assert OFFICIAL["vggish"].url.endswith("vggish_model.ckpt") and OFFICIAL["vggish"].md5


def test_fetch_check_convert_cache(served: dict, tmp_path: Path, no_home_caches) -> None:
    data = tmp_path / "data"
    with LoopbackServer(served["root"]) as server:
        sources = _sources(server.base_url, served["root"])
        paths, problems = fetch_weights(data, sources, log=lambda _: None)
        assert problems == {}
        assert paths["vgg19"] == data / "weights" / "vgg19" / TORCHVISION_FILE
        assert paths["vggish"] == data / "weights" / "vggish" / "vggish_model.pt"
        fetched = len(server.requests)
        assert fetched == 2
        # second time: everything from the cache, no request
        again, problems = fetch_weights(data, sources, log=lambda _: None)
        assert again == paths and problems == {} and len(server.requests) == fetched
    assert cached_weights(data) == paths
    # the converted VGGish computes the TF graph's embedding; VGG-19 holds the served tensors
    model = load_vggish(paths["vggish"]).eval()
    with torch.no_grad():
        ave = model(torch.from_numpy(served["reference"]["patches"]), output="ave").numpy()
    np.testing.assert_allclose(ave, served["reference"]["ave"], rtol=1e-4, atol=1e-4)
    vgg, record = build_vgg19_pool5(str(paths["vgg19"]))
    torch.testing.assert_close(vgg[34].weight, served["vgg"][34].weight)
    assert record.sha256 == sha256_file(served["root"] / TORCHVISION_FILE)
    # the demo hands both files to the features stage, with no random fallback
    args = next(s for s in demo_steps(DemoConfig(data_dir=data), paths) if s.name == "features")
    assert "--allow-random-weights" not in args.args
    assert args.args[args.args.index("--vgg19-weights") + 1] == str(paths["vgg19"])
    assert args.args[args.args.index("--vggish-checkpoint") + 1] == str(paths["vggish"])


def test_bad_checksum_and_unreachable_fall_back_with_the_reason(
    served: dict, tmp_path: Path, no_home_caches
) -> None:
    with LoopbackServer(served["root"]) as server:
        sources = _sources(server.base_url, served["root"], vgg19="0" * 64, vggish="1" * 64)
        paths, problems = fetch_weights(tmp_path / "a", sources, log=lambda _: None)
    assert paths == {"vggish": None, "vgg19": None}
    assert all("does not match" in why for why in problems.values()), problems
    assert not list((tmp_path / "a" / "weights").rglob("*.*"))  # nothing that failed is kept
    stopped = server.base_url  # the server is gone: nothing listens there now
    paths, problems = fetch_weights(
        tmp_path / "b", _sources(stopped, served["root"]), log=lambda _: None
    )
    assert paths == {"vggish": None, "vgg19": None}
    assert all("could not download" in why for why in problems.values()), problems
    steps = demo_steps(DemoConfig(data_dir=tmp_path / "b"), paths)
    assert "--allow-random-weights" in next(s for s in steps if s.name == "features").args


def test_make_convert_vggish_on_the_official_format(served: dict, tmp_path: Path) -> None:
    """`make convert-vggish` turns a checkpoint in the official format into the cached weights."""
    ckpt = served["root"] / "vggish_model.ckpt"
    out = make("convert-vggish", f"DATA_DIR={tmp_path / 'd a t a'}", f"VGGISH_CHECKPOINT={ckpt}")
    converted = tmp_path / "d a t a" / "weights" / "vggish" / "vggish_model.pt"
    assert "VGGish weights ready" in out.stdout and converted.is_file()
    assert f"source sha256 {sha256_file(ckpt, parts=True)}" in out.stdout
