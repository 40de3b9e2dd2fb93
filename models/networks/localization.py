"""Supervised/weak event localization networks: A, V, V-att, A+V, A+V-att, DMRN, DMRFE.

One generic ``LocalizationNet``: per-modality encoders (audio-guided attention or global average for
the visual map, then a BiLSTM per modality), an optional fusion of the 256-d LSTM states, and a
classifier giving per-second logits (B, T, num_classes). The builders in ``models.networks.registry`` pin the
variants of the paper (AVE reference 3); the fusion zoo plugs other ``fusion``/``classifier`` modules in.

Names follow the release so its checkpoints map by prefix (see ``models.release.names``):
``attention.affine_*`` <- ``affine_*``, ``lstm_audio``/``lstm_video`` unchanged,
``classifier.L1``/``classifier.L2`` <- ``L1``/``L2`` (att_Net), ``fusion.blocks.0.U_a|U_v`` <- ``U_a|U_v``
and ``classifier`` <- ``L2`` (TBMRF_Net).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from models.data.ave import audio_features, visual_features
from models.networks.blocks.attention import AudioGuidedAttention, global_average, regions
from models.networks.blocks.dmrn import DMRN, EnsembleClassifier
from models.networks.blocks.lstm import BiLSTM
from models.networks.blocks.mil import mil_pool
from models.networks.registry import register_network


class Concat(nn.Module):
    """Late fusion by concatenation of the LSTM states."""

    def forward(self, h_a: torch.Tensor, h_v: torch.Tensor) -> torch.Tensor:
        return torch.cat([h_a, h_v], dim=-1)


class MLPHead(nn.Module):
    """ReLU -> Linear(in, 64) -> ReLU -> Linear(64, C): the A / V / A+V(-att) classifier."""

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 64):
        super().__init__()
        self.relu = nn.ReLU()
        self.L1 = nn.Linear(in_dim, hidden)
        self.L2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.L2(self.relu(self.L1(self.relu(x))))


class LocalizationNet(nn.Module):
    """Per-second classifier over audio (B,T,128) and visual maps (B,T,7,7,512) or vectors (B,T,512)."""

    def __init__(
        self,
        classifier: nn.Module,
        use_audio: bool = True,
        use_visual: bool = True,
        attention: AudioGuidedAttention | None = None,
        fusion: nn.Module | None = None,
        audio_dim: int = 128,
        visual_dim: int = 512,
        lstm_hidden: int = 128,
        mil: str | None = None,
        config: dict[str, Any] | None = None,
        visual: str = "vgg19",
        audio: str = "vggish",
    ):
        super().__init__()
        if visual != "vgg19" and attention is not None:
            raise ValueError(
                f"visual={visual!r} gives vectors; the audio-guided attention needs the VGG-19 maps"
            )
        self.visual_stores, width = visual_features(visual)
        visual_dim = width if visual != "vgg19" else visual_dim
        if audio != "vggish" and attention is not None:
            raise ValueError(f"audio={audio!r}: the audio-guided attention needs VGGish's audio")
        self.audio_store, audio_width = audio_features(audio)
        audio_dim = audio_width if audio != "vggish" else audio_dim
        if not (use_audio or use_visual):
            raise ValueError("a localization network needs at least one modality")
        if use_audio and use_visual and fusion is None:
            raise ValueError("two modalities need a fusion module")
        self.use_audio, self.use_visual = use_audio, use_visual
        self.attention = attention
        self.lstm_audio = BiLSTM(audio_dim, lstm_hidden) if use_audio else None
        self.lstm_video = BiLSTM(visual_dim, lstm_hidden) if use_visual else None
        self.fusion = fusion
        self.classifier = classifier
        self.mil = mil
        self.config: dict[str, Any] = dict(config or {})

    @property
    def stores(self) -> tuple[str, ...]:
        """Feature stores this network reads: maps only when it attends, else the 512-d vectors."""
        out = []
        if self.use_audio or self.attention is not None:
            out.append(self.audio_store)
        if self.use_visual:
            out += ["visual"] if self.attention is not None else list(self.visual_stores)
        return tuple(out)

    def visual_input(self, audio: torch.Tensor | None, visual: torch.Tensor) -> torch.Tensor:
        if self.attention is not None:
            attended, _ = self.attention(audio, regions(visual))
            return attended
        return global_average(visual)

    def attention_weights(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """(B, T, 49) audio-guided attention weights; raises for networks without attention."""
        if self.attention is None:
            raise ValueError(
                f"model {self.config.get('name', '?')!r} has no audio-guided attention"
            )
        return self.attention.weights(audio, regions(visual))

    def forward(
        self, audio: torch.Tensor | None = None, visual: torch.Tensor | None = None
    ) -> torch.Tensor:
        h_a = self.lstm_audio(audio) if self.use_audio else None
        h_v = self.lstm_video(self.visual_input(audio, visual)) if self.use_visual else None
        if h_a is not None and h_v is not None:
            features = self.fusion(h_a, h_v)
        else:
            features = h_a if h_a is not None else h_v
        return self.classifier(features)

    def video_logits(self, segment_logits: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        """MIL pooling of per-second logits for weak supervision (``mode`` defaults to ``self.mil``)."""
        return mil_pool(segment_logits, mode or self.mil or "mean")


# The paper's variants (AVE reference 3).
def _net(
    num_classes,
    audio,
    visual,
    attend,
    fusion,
    classifier,
    broadcast="paper",
    lstm_hidden=128,
    mil=None,
    features="vgg19",
    audio_features="vggish",
) -> LocalizationNet:
    attention = AudioGuidedAttention(broadcast=broadcast) if attend else None
    return LocalizationNet(
        classifier,
        audio,
        visual,
        attention,
        fusion,
        lstm_hidden=lstm_hidden,
        mil=mil,
        visual=features,
        audio=audio_features,
    )


@register_network("a")
def audio_only(
    num_classes: int = 29, lstm_hidden: int = 128, mil: str | None = None, audio: str = "vggish"
) -> LocalizationNet:
    head = MLPHead(2 * lstm_hidden, num_classes)
    return _net(
        num_classes,
        True,
        False,
        False,
        None,
        head,
        lstm_hidden=lstm_hidden,
        mil=mil,
        audio_features=audio,
    )


@register_network("v")
def visual_only(
    num_classes: int = 29, lstm_hidden: int = 128, mil: str | None = None, visual: str = "vgg19"
) -> LocalizationNet:
    head = MLPHead(2 * lstm_hidden, num_classes)
    return _net(
        num_classes,
        False,
        True,
        False,
        None,
        head,
        lstm_hidden=lstm_hidden,
        mil=mil,
        features=visual,
    )


@register_network("v_att")
def visual_attended(
    num_classes: int = 29, broadcast: str = "paper", lstm_hidden: int = 128, mil: str | None = None
) -> LocalizationNet:
    head = MLPHead(2 * lstm_hidden, num_classes)
    return _net(num_classes, False, True, True, None, head, broadcast, lstm_hidden, mil)


@register_network("av")
def audio_visual(
    num_classes: int = 29,
    lstm_hidden: int = 128,
    mil: str | None = None,
    visual: str = "vgg19",
    audio: str = "vggish",
) -> LocalizationNet:
    head = MLPHead(4 * lstm_hidden, num_classes)
    return _net(
        num_classes,
        True,
        True,
        False,
        Concat(),
        head,
        lstm_hidden=lstm_hidden,
        mil=mil,
        features=visual,
        audio_features=audio,
    )


@register_network("av_att")
def audio_visual_attended(
    num_classes: int = 29, broadcast: str = "paper", lstm_hidden: int = 128, mil: str | None = None
) -> LocalizationNet:
    head = MLPHead(4 * lstm_hidden, num_classes)
    return _net(num_classes, True, True, True, Concat(), head, broadcast, lstm_hidden, mil)


@register_network("dmrn")
def dmrn(
    num_classes: int = 29,
    broadcast: str = "paper",
    lstm_hidden: int = 128,
    num_blocks: int = 1,
    shared_blocks: bool = False,
    swap_residual: bool = False,
    mil: str | None = None,
) -> LocalizationNet:
    dim = 2 * lstm_hidden
    fusion = DMRN(dim, num_blocks, shared_blocks, swap_residual)
    return _net(
        num_classes,
        True,
        True,
        True,
        fusion,
        nn.Linear(dim, num_classes),
        broadcast,
        lstm_hidden,
        mil,
    )


@register_network("dmrfe")
def dmrfe(
    num_classes: int = 29,
    broadcast: str = "paper",
    lstm_hidden: int = 128,
    num_blocks: int = 1,
    shared_blocks: bool = False,
    swap_residual: bool = False,
    mil: str | None = None,
) -> LocalizationNet:
    dim = 2 * lstm_hidden
    fusion = DMRN(dim, num_blocks, shared_blocks, swap_residual, return_branches=True)
    head = EnsembleClassifier(dim, num_classes)
    return _net(num_classes, True, True, True, fusion, head, broadcast, lstm_hidden, mil)
