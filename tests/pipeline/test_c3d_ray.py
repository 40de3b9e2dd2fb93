"""`avel features --engine ray`: every backbone (VGGish, VGG-19, C3D, and CLIP and CLAP where
transformers is installed) on the Ray executor gives the local executor's stores, bitwise (one
frame decode per clip shared by VGG-19, C3D and CLIP; the waveform with its declared shape)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'avel[ray]')")
pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'avel[ray]')")

from pipeline.core.store import FeatureStore  # noqa: E402
from pipeline.stages.features.core import FeaturesConfig  # noqa: E402
from pipeline.stages.features.stage import run_features  # noqa: E402
from tests.support.media import segmented_set  # noqa: E402

pytestmark = pytest.mark.slow  # starting Ray costs ~10-20 s on 2 cores
IDS = ["c3r_a______", "c3r_b______", "c3r_bad____"]


@pytest.fixture(scope="module")
def segmented(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("c3d_ray")
    return segmented_set(d, IDS, fps=[5, 4, 4], sizes=[(48, 32), (30, 30), (30, 30)])


def foundation_models(root: Path) -> dict[str, str]:
    """Tiny CLIP and CLAP folders (save_pretrained) when transformers is installed, else none."""
    from tests.support.foundation import tiny_clap, tiny_clip  # sets HF_HUB_OFFLINE first

    try:
        import transformers  # noqa: F401
    except ImportError:
        return {}

    return {"clip": str(tiny_clip(root / "clip")), "clap": str(tiny_clap(root / "clap"))}


def config(
    data: Path, engine: str, precision: str, models: dict[str, str] | None = None
) -> FeaturesConfig:
    models = models or {}
    return FeaturesConfig(
        data,
        features=("audio", "visual", "c3d", *models),
        clip_weights=models.get("clip", "openai/clip-vit-large-patch14"),
        clap_weights=models.get("clap", "laion/clap-htsat-unfused"),
        dtype="float32",
        device="cpu",
        precision=precision,
        frame_size=32,
        c3d_crop=32,
        workers=0,
        allow_random_weights=True,
        allow_download=False,
        shard_size=2,
        batch_size=20,
        progress=False,
        engine=engine,
    )


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_every_backbone_gives_equal_stores_on_both_executors(
    local_ray, segmented, tmp_path, precision
):
    """The same driver on the local and the Ray executor: the same clips go through each network
    together, so the stores are bitwise equal, in fp32 and with bf16 asked."""
    from pipeline.backbones.precision import native_bf16_cpu

    if precision == "bf16" and not native_bf16_cpu():
        pytest.skip("this CPU has no native bf16 (avx512_bf16/amx_bf16)")
    local, distributed = tmp_path / "local", tmp_path / "ray"
    for target in (local, distributed):
        shutil.copytree(segmented, target, ignore=shutil.ignore_patterns("features"))
    # CLIP and CLAP (fp32 only: their tiny models are not what bf16 is about)
    models = foundation_models(tmp_path / "models") if precision == "fp32" else {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a Ray actor with num_cpus=1 runs one torch thread
    try:
        assert not run_features(config(local, "local", precision, models))["errors"]
    finally:
        torch.set_num_threads(threads)
    summary = run_features(config(distributed, "ray", precision, models))
    assert not summary["errors"], summary["errors"]
    for name in ("audio", "c3d", "visual", "visual_vec", *models):
        assert summary["stores"][name]["complete"]
        left, right = FeatureStore.open(local, name), FeatureStore.open(distributed, name)
        assert left.clip_ids == right.clip_ids and set(IDS[:2]) <= set(left.clip_ids)
        np.testing.assert_array_equal(left.gather(left.clip_ids), right.gather(left.clip_ids))
        assert set(right.meta["failed"]) == set(left.meta["failed"])
        assert right.meta["engine"] == "ray" and left.meta["engine"] == "local"
        assert left.meta["identity"] == right.meta["identity"]
        assert right.meta["precision"] == precision
    assert set(FeatureStore.open(local, "c3d").meta["failed"]) == {IDS[2]}
    again = run_features(config(distributed, "ray", precision, models))
    assert all(r.get("already_complete") for r in again["stores"].values())
