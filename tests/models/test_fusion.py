"""The comparison suite: fusion zoo at three positions, ED-TCN, supplementary attentions, tables.

Modules are checked on random tensors (shapes, parameter counts, fitting a random labelling); every
table configuration is built by name; the networks are trained on a tiny synthetic store written by
the real ``StoreWriter`` (with the ``audio_maps`` store for the supplementary attentions), and
``avel table`` runs end to end with two seeds and resumes.
"""

from __future__ import annotations

import json
import subprocess

import matplotlib.image
import pandas as pd
import pytest
import torch
from torch import nn

import models
from models.data.ave import AVEDataset, model_inputs
from models.data.synthetic import make_synthetic_store
from models.evaluation.evaluate_run import run_evaluate
from models.networks import count_parameters
from models.networks.blocks.fusion import FUSIONS, build_fusion
from models.networks.edtcn import EDTCN
from models.networks.supplementary import visual_guided_audio_attention
from models.reports.attention_maps import run_attention_maps
from models.reports.table import TABLES, TableConfig, run_table
from models.training.checkpoint import load_checkpoint
from models.training.engine import TrainConfig, train_seed
from pipeline.cli import main as avel
from pipeline.core.store import ROW_SHAPES

torch.set_num_threads(1)

POSITIONS = ("early", "late", "decision")
LSTM = {d: 2 * (4 * 128 * (d + 128) + 8 * 128) for d in (128, 256, 512, 640)}
ATTENTION = 378_929  # AVE reference 3
AV_ATT = 1_335_246  # AVE reference 3


def _head(d: int, c: int = 29) -> int:
    return d * 64 + 64 + 64 * c + c


#: Per-second row of every store a model may read (``clip``: the default ViT-L/14's 768).
ROWS = {**{name: shape[1:] for name, shape in ROW_SHAPES.items()}, "clip": (768,)}


def _inputs(model: nn.Module, batch: int = 2, t: int = 10):
    """Random rows of every store the model reads, assembled as the data loader does."""
    g = torch.Generator().manual_seed(0)
    rows = {name: torch.randn(batch, t, *ROWS[name], generator=g) for name in model.stores}
    return model_inputs(rows, "cpu")


@pytest.mark.parametrize("name", sorted(FUSIONS))
def test_fusion_module_shapes_at_each_position(name):
    for dim_a, dim_v, dim in ((128, 512, 256), (256, 256, 256), (29, 29, 29)):
        fuse = build_fusion(name, dim_a, dim_v, dim)
        out = fuse(torch.randn(3, 10, dim_a), torch.randn(3, 10, dim_v))
        expected = dim_a + dim_v if name == "concat" else dim
        assert out.shape == (3, 10, expected) and fuse.output_dim == expected


def test_fusion_parameter_counts_follow_the_documented_choices():
    n = count_parameters
    assert n(build_fusion("additive", 256, 256, 256)) == 0 == n(build_fusion("max", 29, 29, 29))
    assert n(build_fusion("additive", 128, 512, 256)) == 129 * 256 + 513 * 256
    assert n(build_fusion("concat", 128, 512, 256)) == 0
    assert n(build_fusion("gated", 256, 256, 256)) == 2 * 257 * 256
    assert n(build_fusion("bilinear", 256, 256, 256)) == 3 * 257 * 256
    assert n(build_fusion("gated_bilinear", 256, 256, 256)) == 3 * 257 * 256 + 513 * 256
    assert n(build_fusion("gmu", 128, 512, 256)) == (128 + 512 + 640) * 256
    assert n(build_fusion("mrn", 256, 256, 256)) == 4 * 257 * 256
    assert n(build_fusion("mrn", 256, 256, 256, num_blocks=2)) == 8 * 257 * 256


@pytest.mark.parametrize("name", sorted(FUSIONS))
def test_fusion_module_fits_a_random_labelling(name):
    torch.manual_seed(0)
    x_a, x_v = torch.randn(32, 12), torch.randn(32, 20)
    y = torch.randint(0, 4, (32,))
    fuse = build_fusion(name, 12, 20, 32)
    head = nn.Sequential(nn.ReLU(), nn.Linear(fuse.output_dim, 64), nn.ReLU(), nn.Linear(64, 4))
    opt = torch.optim.Adam([*fuse.parameters(), *head.parameters()], lr=1e-2)
    for _ in range(100):
        loss = nn.functional.cross_entropy(head(fuse(x_a, x_v)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    accuracy = (head(fuse(x_a, x_v)).argmax(-1) == y).float().mean().item()
    assert accuracy == 1.0, f"{name}: {accuracy}"


def _configurations():
    return sorted(
        {(e.model, json.dumps(e.options, sort_keys=True)) for t in TABLES.values() for e in t}
    )


@pytest.mark.parametrize("model,options", _configurations())
def test_every_table_configuration_builds_and_runs(model, options):
    net = models.build_model(model, num_classes=29, **json.loads(options))
    logits = net(*_inputs(net))
    assert logits.shape == (2, 10, 29)
    assert net.video_logits(logits).shape == (2, 29)
    print(f"{model} {options}: {count_parameters(net):,} parameters")


def test_position_parameter_counts():
    n = count_parameters
    states = ATTENTION + LSTM[128] + LSTM[512]
    assert n(models.build_model("concat", position="late")) == AV_ATT
    assert n(models.build_model("additive", position="late")) == states + _head(256)
    assert n(models.build_model("gmu", position="late")) == states + 4 * 256 * 256 + _head(256)
    # decision: two per-modality heads, the fusion in the 29-d logit space
    assert n(models.build_model("additive", position="decision")) == states + 2 * _head(256)
    concat_decision = states + 2 * _head(256) + 58 * 29 + 29
    assert n(models.build_model("concat", position="decision")) == concat_decision
    # early: fusion of audio (128) and attended visual (512), one BiLSTM on the fused sequence
    early_add = ATTENTION + (129 + 513) * 256 + LSTM[256] + _head(256)
    assert n(models.build_model("additive", position="early")) == early_add
    assert n(models.build_model("concat", position="early")) == ATTENTION + LSTM[640] + _head(256)
    no_att = models.build_model("gmu", position="early", attend=False)
    assert no_att.stores == ("audio", "visual_vec")
    with pytest.raises(ValueError, match="position"):
        models.build_model("gmu", position="middle")


def test_edtcn_keeps_any_length_and_counts_parameters():
    net = EDTCN(29).eval()
    for t in (10, 7, 16, 1):
        assert net(None, torch.randn(2, t, 512)).shape == (2, t, 29)
    convs = (512 * 64 * 3 + 64) + (64 * 96 * 3 + 96) + (96 * 96 * 3 + 96) + (96 * 64 * 3 + 64)
    assert count_parameters(net) == convs + 64 * 29 + 29
    assert models.build_model("edtcn", features="av").stores == ("audio", "visual_vec")
    # a per-second model: changing second 0 changes nearby seconds only through the receptive field
    x = torch.randn(1, 10, 512)
    y = x.clone()
    y[0, 0] += 10
    assert not torch.allclose(net(None, x)[0, 0], net(None, y)[0, 0])


def test_supplementary_attention_weights():
    att = visual_guided_audio_attention()
    assert count_parameters(att) == 2 * (512 * 512 + 512) + 2 * 512 * 24 + 24
    guide, maps = torch.randn(2, 10, 512), torch.randn(2, 10, 24, 512)
    attended, alpha = att(guide, maps)
    assert attended.shape == (2, 10, 512) and alpha.shape == (2, 10, 24)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(2, 10))
    torch.testing.assert_close(attended, torch.einsum("btr,btrd->btd", alpha, maps))
    co = models.build_model("co_att", guide="alternating", broadcast="release")
    audio, visual, audio_maps = _inputs(co)
    v_att, a_att, alpha_v, alpha_a = co.attend(audio, visual, audio_maps)
    assert alpha_v.shape == (2, 10, 49) and alpha_a.shape == (2, 10, 24)
    assert v_att.shape == a_att.shape == (2, 10, 512)


# ---------------------------------------------------------------- training on a tiny synthetic store


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ave-fusion")
    make_synthetic_store(
        root,
        10,
        num_classes=3,
        splits=(0.6, 0.2, 0.2),
        signal=2.0,
        noise=0.5,
        shard_size=8,
        stores=("audio", "visual", "visual_vec", "audio_maps"),
    )
    return root


def _overfit(
    model: nn.Module, data_dir, steps: int, lr: float = 1e-2
) -> tuple[float, float, float]:
    """Full-batch Adam on the training split: first loss, last loss, final train segment accuracy."""
    train = AVEDataset(data_dir, "train", model.stores)
    batch = train.batch(range(len(train)))
    inputs, target = model_inputs(batch, "cpu"), batch["segment_labels"].reshape(-1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        logits = model(*inputs)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        accuracy = (model(*inputs).argmax(-1).reshape(-1) == target).float().mean().item()
    return losses[0], losses[-1], accuracy


@pytest.mark.parametrize("method", sorted(FUSIONS))
def test_fusion_overfits_the_tiny_store_at_every_position(method, data_dir):
    # the 7x7 average instead of the attention keeps this fast; the attended path is trained below
    for position in POSITIONS:
        torch.manual_seed(0)
        net = models.build_model(method, num_classes=4, position=position, attend=False)
        first, last, accuracy = _overfit(net, data_dir, 30)
        assert last < first / 3 and accuracy >= 0.9, (
            f"{method} {position}: {first}->{last}, {accuracy}"
        )


@pytest.mark.parametrize(
    "model,options,steps,lr",
    [
        ("edtcn", {"dropout": 0.0}, 300, 1e-2),
        ("v_att_audio", {}, 40, 3e-3),
        ("co_att", {}, 30, 3e-3),
    ],
)
def test_edtcn_and_supplementary_models_overfit_the_tiny_store(model, options, steps, lr, data_dir):
    torch.manual_seed(0)
    net = models.build_model(model, num_classes=4, **options)
    first, last, accuracy = _overfit(net, data_dir, steps, lr)
    assert last < first / 4 and accuracy == 1.0, f"{model}: {first}->{last}, {accuracy}"


@pytest.mark.parametrize("model,options", [("gmu", {"position": "early"}), ("co_att", {})])
def test_trainer_trains_fusion_and_audio_map_models(model, options, data_dir, tmp_path):
    cfg = TrainConfig(
        str(data_dir),
        model=model,
        epochs=10,
        batch_size=2,
        lr=3e-3,
        eval_every=5,
        run_dir=str(tmp_path),
        model_options=options,
    )
    metrics = train_seed(cfg, progress=False)
    suffix = "".join(f"-{k}-{v}" for k, v in options.items())  # options name the experiment
    assert cfg.seed_dir() == tmp_path / f"supervised-{model}{suffix}" / "seed-1"
    epochs = [
        json.loads(line) for line in (cfg.seed_dir() / "metrics.jsonl").read_text().splitlines()
    ]
    assert len(epochs) == 10 and epochs[-1]["loss"] < epochs[0]["loss"] / 2, epochs
    assert metrics["best_epoch"] in (5, 10)
    # the reported test accuracy is the saved best checkpoint's, re-evaluated from the folder
    again = run_evaluate(cfg.seed_dir(), "test", device="cpu")
    assert metrics["test_accuracy"] == again["accuracy"] and again["epoch"] == metrics["best_epoch"]
    restored, _ = load_checkpoint(cfg.seed_dir() / "best.pt")
    assert restored.config == {"name": model, "num_classes": 4, **options}
    assert json.loads((cfg.seed_dir() / "config.json").read_text())["data"]["stores"] == list(
        restored.stores
    )
    # the attention-maps stage draws the visual attention of these networks too
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
    picture = run_attention_maps(cfg.seed_dir(), video, clip=clip, out=tmp_path / "maps.png")
    assert matplotlib.image.imread(picture).shape[1] > 1000


def test_fusion_table_lists_every_method_at_every_position(capsys):
    fusion = {e.key: e for e in TABLES["fusion"]}
    assert len(fusion) == 8 * 3 + 2
    assert fusion["gmu-late"].model == "gmu" and fusion["gmu-late"].options == {"position": "late"}
    assert fusion["concat-late"].model == "av_att" and fusion["concat-late"].paper == 72.7
    assert (fusion["dmrn"].paper, fusion["dmrfe"].paper) == (73.1, 73.3)
    assert {e.key: e.paper for e in TABLES["weak"]}["av_att"] == 66.7
    assert avel(["table", "fusion", "--list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 26 and listed[0].split()[:2] == ["additive-early", "additive"]
    with pytest.raises(ValueError, match="no configuration"):
        TableConfig("data", "fusion", only=("gmu-middle",))


def test_table_runs_two_seeds_resumes_and_skips_missing_stores(data_dir, tmp_path):
    runs = tmp_path / "runs"
    args = [
        "table",
        "models",
        "--data-dir",
        str(data_dir),
        "--run-dir",
        str(runs),
        "--seeds",
        "1,2",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--only",
        "a,edtcn",
    ]
    assert avel(args) == 0
    csv = pd.read_csv(runs / "tables" / "models.csv")
    assert csv["key"].tolist() == ["a", "edtcn"] and csv["paper"].tolist() == [59.5, 46.9]
    assert (csv["status"] == "ok").all() and (csv["seeds"] == 2).all()
    assert (csv["reused_seeds"] == 0).all()
    assert csv.loc[1, "parameters"] == count_parameters(models.build_model("edtcn", num_classes=4))
    for key, experiment in (("a", "supervised-a"), ("edtcn", "supervised-edtcn")):
        row = csv[csv["key"] == key].iloc[0]
        accs = [
            json.loads((runs / experiment / f"seed-{s}" / "metrics.json").read_text())[
                "test_accuracy"
            ]
            * 100
            for s in (1, 2)
        ]
        assert row["test_mean"] == pytest.approx(sum(accs) / 2, abs=1e-3)
        assert row["test_std"] == pytest.approx(abs(accs[0] - accs[1]) / 2**0.5, abs=1e-3)
    markdown = (runs / "tables" / "models.md").read_text()
    assert "ED-TCN (V features)" in markdown and "46.9" in markdown and "±" in markdown
    # second call: nothing retrained
    summary = run_table(
        TableConfig(
            str(data_dir), "models", (1, 2), str(runs), epochs=2, batch_size=16, only=("a", "edtcn")
        ),
        progress=False,
    )
    assert summary["trained"] == 0 and summary["reused"] == 4
    # other settings never silently overwrite finished runs
    assert avel([*args[:8], "--epochs", "1", "--batch-size", "16", "--only", "a"]) == 1
    assert (
        "epochs" in json.loads((runs / "tables" / "models.json").read_text())["rows"][0]["status"]
    )
    assert (
        json.loads((runs / "supervised-a" / "seed-1" / "metrics.json").read_text())["epochs"] == 2
    )
    # a data folder without the audio_maps store: the supplementary rows are skipped, named
    bare = tmp_path / "bare"
    make_synthetic_store(bare, 10, num_classes=2, splits=(0.6, 0.2, 0.2), shard_size=8)
    summary = run_table(
        TableConfig(
            str(bare), "models", (1,), str(runs), epochs=1, batch_size=16, only=("co_att",)
        ),
        progress=False,
    )
    assert summary["skipped"] == ["co_att"] and summary["trained"] == 0
    assert "AUDIO_MAPS=1" in (runs / "tables" / "models.md").read_text()


@pytest.mark.gpu
@pytest.mark.parametrize(
    "model,options", [("gmu", {"position": "decision"}), ("co_att", {}), ("edtcn", {})]
)
def test_trains_on_cuda(model, options, data_dir, tmp_path):
    cfg = TrainConfig(
        str(data_dir),
        model=model,
        epochs=2,
        batch_size=4,
        device="cuda",
        run_dir=str(tmp_path),
        model_options=options,
    )
    metrics = train_seed(cfg, progress=False)
    assert metrics["device"].startswith("cuda")
    again = run_evaluate(cfg.seed_dir(), "test", device="cuda")
    assert metrics["test_accuracy"] == pytest.approx(
        again["accuracy"], abs=1 / metrics["test_segments"]
    )
