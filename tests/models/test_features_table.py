"""Visual feature sets (model option ``visual``) and ``avel table features``: V and A+V trained on
VGG-19, C3D and both concatenated, side by side, on a small data folder with a real ``c3d`` store."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import models
from models.data.ave import AVEDataset, model_inputs
from models.data.synthetic import make_synthetic_store
from models.networks.registry import count_parameters
from models.reports.table import TABLES
from pipeline.cli import main as avel
from pipeline.core.store import FeatureStore, StoreWriter

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A synthetic AVE-shaped folder whose ``c3d`` store is different from ``visual_vec``."""
    d = tmp_path_factory.mktemp("features_table")
    make_synthetic_store(
        d, 40, num_classes=3, splits=(0.6, 0.2, 0.2), shard_size=16, stores=("audio", "visual_vec")
    )
    vec = FeatureStore.open(d, "visual_vec")
    ids = vec.clip_ids
    writer = StoreWriter.open(d, "c3d", ids, (10, 512), "float32", 16, {"random_weights": True})
    rng = np.random.default_rng(5)
    for shard, shard_ids in writer.pending_shards():
        writer.write_shard(
            shard, {c: vec.get(c)[:, ::-1] + rng.standard_normal((10, 512)) for c in shard_ids}
        )
    writer.finalize()
    return d


def test_visual_option_reads_the_chosen_stores(data_dir):
    v_c3d = models.build_model("v", num_classes=4, visual="c3d")
    both = models.build_model("av", num_classes=4, visual="vgg19+c3d")
    assert v_c3d.stores == ("c3d",) and both.stores == ("audio", "visual_vec", "c3d")
    # Concatenation widens only the visual BiLSTM's input: 512 more inputs, 4 gates x 128 x 2 dirs.
    extra = count_parameters(both) - count_parameters(models.build_model("av", num_classes=4))
    assert extra == 512 * 4 * 128 * 2
    assert count_parameters(v_c3d) == count_parameters(models.build_model("v", num_classes=4))
    data = AVEDataset(data_dir, "train", both.stores)
    batch = data.batch([0, 1])
    audio, visual = model_inputs(batch, "cpu")
    assert visual.shape == (2, 10, 1024)
    torch.testing.assert_close(visual[..., :512], batch["visual_vec"])
    torch.testing.assert_close(visual[..., 512:], batch["c3d"])
    assert both(audio, visual).shape == (2, 10, 4)
    with pytest.raises(ValueError, match="visual must be one of"):
        models.build_model("v", visual="i3d")
    with pytest.raises(ValueError, match="attend=false"):
        models.build_model("gmu", position="late", visual="c3d")
    assert models.build_model("gmu", position="early", attend=False, visual="c3d").stores == (
        "audio",
        "c3d",
    )
    assert models.build_model("edtcn", features="av", visual="vgg19+c3d").stores == (
        "audio",
        "visual_vec",
        "c3d",
    )


def test_features_table_end_to_end(data_dir, tmp_path):
    runs = tmp_path / "runs"
    keys = [e.key for e in TABLES["features"]]
    vgg_c3d = ["a", "v-vgg19", "v-c3d", "v-vgg19+c3d", "av-vgg19", "av-c3d", "av-vgg19+c3d"]
    assert [k for k in keys if "clip" not in k and "clap" not in k and k != "zero-shot"] == vgg_c3d
    args = ["table", "features", "--data-dir", str(data_dir), "--run-dir", str(runs)]
    assert avel([*args, "--seeds", "1", "--epochs", "1", "--batch-size", "16"]) == 0
    csv = pd.read_csv(runs / "tables" / "features.csv")
    assert csv["key"].tolist() == keys
    assert (csv.set_index("key").loc[vgg_c3d, "status"] == "ok").all()
    skipped = csv[~csv["key"].isin(vgg_c3d)]["status"]  # no clip/clap stores in this data folder
    assert skipped.str.contains("FEATURES=clip,clap").all()
    assert csv.set_index("key").loc[["a", "v-vgg19", "av-vgg19"], "paper"].tolist() == [
        59.5,
        55.3,
        71.4,
    ]
    rows = csv.set_index("key")
    for key, stores, visual in (
        ("v-c3d", ["c3d"], "c3d"),
        ("av-vgg19+c3d", ["audio", "visual_vec", "c3d"], "vgg19+c3d"),
        ("av-vgg19", ["audio", "visual_vec"], None),
    ):
        config = json.loads(
            (runs / rows.loc[key, "experiment"] / "seed-1" / "config.json").read_text()
        )
        assert config["data"]["stores"] == stores and config["model"].get("visual") == visual
    assert rows.loc["av-vgg19+c3d", "parameters"] - rows.loc["av-vgg19", "parameters"] == 512 * 1024
    markdown = (runs / "tables" / "features.md").read_text()
    assert "| model | VGG-19 | C3D | VGG-19 + C3D | CLIP | VGG-19 + CLIP |" in markdown
    assert "| A+V |" in markdown and "(paper 71.4)" in markdown
    assert "oracle video class" in markdown  # the reference rows under the table
