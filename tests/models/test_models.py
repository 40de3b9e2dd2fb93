"""Localization networks: parameter counts (AVE reference 3), shapes, options, release names."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import models
from models.evaluation.metrics import segment_metrics
from models.networks import count_parameters
from models.networks.blocks.attention import AudioGuidedAttention
from models.networks.blocks.dmrn import DMRN
from models.networks.blocks.mil import mil_pool
from models.release.names import RELEASE_MODEL, RELEASE_OPTIONS, to_ours

torch.set_num_threads(1)


def _lstm(i: int, h: int = 128) -> int:  # one bidirectional layer, two bias vectors per gate set
    return 2 * (4 * h * (i + h) + 8 * h)


ATTENTION = 378_929  # AVE reference 3
HEAD1, HEAD2 = 256 * 64 + 64 + 64 * 29 + 29, 512 * 64 + 64 + 64 * 29 + 29


def test_reference_parameter_counts():
    assert count_parameters(models.build_model("av_att")) == 1_335_246
    assert count_parameters(models.build_model("dmrn")) == 1_571_150
    assert count_parameters(AudioGuidedAttention()) == ATTENTION


def test_variant_counts_consistent_with_building_blocks():
    assert count_parameters(models.build_model("a")) == _lstm(128) + HEAD1
    assert count_parameters(models.build_model("v")) == _lstm(512) + HEAD1
    assert count_parameters(models.build_model("v_att")) == ATTENTION + _lstm(512) + HEAD1
    assert count_parameters(models.build_model("av")) == _lstm(128) + _lstm(512) + HEAD2
    av_att = ATTENTION + _lstm(128) + _lstm(512) + HEAD2
    assert count_parameters(models.build_model("av_att")) == av_att
    assert (
        count_parameters(models.build_model("dmrn"))
        == av_att - HEAD2 + 4 * (256 * 256 + 256) + 256 * 29 + 29
    )
    assert (
        count_parameters(models.build_model("dmrn", num_blocks=2, shared_blocks=True)) == 1_571_150
    )


@pytest.mark.parametrize("name", ["a", "v", "v_att", "av", "av_att", "dmrn", "dmrfe"])
def test_shapes(name):
    torch.manual_seed(0)
    model = models.build_model(name, num_classes=29)
    audio = torch.randn(3, 10, 128)
    maps = torch.randn(3, 10, 7, 7, 512)
    visual = maps if "visual" in model.stores else maps.mean((2, 3))
    logits = model(audio, visual)
    assert logits.shape == (3, 10, 29)
    assert model.video_logits(logits).shape == (3, 29)
    assert model.config["name"] == name


def test_unknown_model_and_option():
    with pytest.raises(ValueError, match="unknown model"):
        models.build_model("nope")
    with pytest.raises(TypeError):
        models.build_model("a", broadcast="release")
    with pytest.raises(ValueError, match="mil"):
        models.build_model("av_att", mil="sum")


def test_attention_is_a_distribution_and_release_broadcast_differs():
    torch.manual_seed(0)
    paper = AudioGuidedAttention()
    release = AudioGuidedAttention(broadcast="release")
    release.load_state_dict(paper.state_dict())
    audio, visual = torch.randn(2, 10, 128), torch.randn(2, 10, 49, 512)
    a_paper, a_release = paper.weights(audio, visual), release.weights(audio, visual)
    assert a_paper.shape == (2, 10, 49)
    torch.testing.assert_close(a_paper.sum(-1), torch.ones(2, 10))
    assert not torch.allclose(a_paper, a_release)
    # independent check of the paper formula for one second
    u_v = torch.relu(paper.affine_video(visual[0, 0]))
    u_a = torch.relu(paper.affine_audio(audio[0, 0]))
    x = paper.affine_h(torch.tanh(paper.affine_v(u_v) + paper.affine_g(u_a)[None, :])).squeeze(-1)
    torch.testing.assert_close(a_paper[0, 0], torch.softmax(x, -1))
    attended, _ = paper(audio, visual)
    torch.testing.assert_close(attended[0, 0], a_paper[0, 0] @ visual[0, 0])
    with pytest.raises(ValueError, match="release"):
        AudioGuidedAttention(attention_hidden=32, broadcast="release")


def test_dmrn_swapped_residuals_only_matter_when_stacked():
    torch.manual_seed(0)
    h_a, h_v = torch.randn(2, 10, 256), torch.randn(2, 10, 256)
    one, one_swapped = DMRN(), DMRN(swap_residual=True)
    one_swapped.load_state_dict(one.state_dict())
    torch.testing.assert_close(one(h_a, h_v), one_swapped(h_a, h_v))
    two, two_swapped = (
        DMRN(num_blocks=2, shared=True),
        DMRN(num_blocks=2, shared=True, swap_residual=True),
    )
    two_swapped.load_state_dict(two.state_dict())
    assert not torch.allclose(two(h_a, h_v), two_swapped(h_a, h_v))
    m = (one.blocks[0].U_a(h_a) + one.blocks[0].U_v(h_v)) / 2
    torch.testing.assert_close(one(h_a, h_v), (torch.tanh(h_a + m) + torch.tanh(h_v + m)) / 2)


def test_mil_pooling():
    x = torch.arange(2 * 10 * 3, dtype=torch.float32).reshape(2, 10, 3)
    torch.testing.assert_close(mil_pool(x, "mean"), x.mean(1))
    torch.testing.assert_close(mil_pool(x, "max"), x[:, -1])


class _AttNet(nn.Module):  # the release's att_Net layer names and sizes (AVE reference 3)
    def __init__(self, fusion: bool = False):
        super().__init__()
        self.lstm_audio = nn.LSTM(128, 128, 1, batch_first=True, bidirectional=True)
        self.lstm_video = nn.LSTM(512, 128, 1, batch_first=True, bidirectional=True)
        self.affine_audio, self.affine_video = nn.Linear(128, 512), nn.Linear(512, 512)
        self.affine_v, self.affine_g = (
            nn.Linear(512, 49, bias=False),
            nn.Linear(512, 49, bias=False),
        )
        self.affine_h = nn.Linear(49, 1, bias=False)
        if fusion:
            self.U_v = nn.Sequential(nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 256))
            self.U_a = nn.Sequential(nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 256))
            self.L2 = nn.Linear(256, 29)
        else:
            self.L1, self.L2 = nn.Linear(512, 64), nn.Linear(64, 29)


@pytest.mark.parametrize("arch", ["av_att", "av_att_weak", "dmrn"])
def test_release_layer_names_map_onto_ours(arch):
    release = _AttNet(fusion=arch == "dmrn").state_dict()
    ours = models.build_model(RELEASE_MODEL[arch], **RELEASE_OPTIONS[arch])
    mapped = {to_ours(arch, k): v for k, v in release.items()}
    assert set(mapped) == set(ours.state_dict())
    ours.load_state_dict(mapped)  # shapes agree


def test_segment_metrics_counts_background():
    names = ["x", "y", "bg"]
    target = np.array([[0, 0, 2, 2], [1, 2, 2, 2]])
    pred = np.array([[0, 1, 2, 2], [1, 2, 0, 2]])
    m = segment_metrics(pred, target, names)
    assert m["accuracy"] == 6 / 8 and m["segments"] == 8
    assert m["per_class_accuracy"] == {"x": 0.5, "y": 1.0, "bg": 4 / 5}
    assert np.asarray(m["confusion"]).sum() == 8


def test_release_loss_is_soft_margin_on_softmax():
    from models.training.localization import loss_fn

    torch.manual_seed(0)
    logits, target = torch.randn(4, 10, 29), torch.randint(0, 29, (4, 10))
    p = torch.softmax(logits, -1).reshape(-1, 29)
    y = nn.functional.one_hot(target.reshape(-1), 29).float()
    manual = (
        -(y * nn.functional.logsigmoid(p) + (1 - y) * nn.functional.logsigmoid(-p)).mean(-1).mean()
    )
    torch.testing.assert_close(loss_fn(logits, target, "release", 29), manual)
    torch.testing.assert_close(
        loss_fn(logits, target, "ce", 29),
        nn.functional.cross_entropy(logits.reshape(-1, 29), target.reshape(-1)),
    )


def test_build_model_reaches_crossmodal_networks():
    import models

    avdln = models.build_model("avdln")
    assert sum(p.numel() for p in avdln.parameters()) == 98_688
    assert {"avdln", "dcca", "dmrn"} <= set(models.model_names())
