"""The supplementary material's attentions (AVE reference 3): visual-guided audio attention over the
VGGish pool5 map and audio-visual co-attention. Both read the ``audio_maps`` store (10, 6, 4, 512) per
video (``make features AUDIO_MAPS=1``), flattened to 24 regions of 512.

The attention has the paper's form (``models.networks.blocks.attention.AudioGuidedAttention``, reused with the roles
swapped): U_r = ReLU(Linear 512->512 (region)), U_g = ReLU(Linear D_g->512 (guide));
x = w^T tanh(W_r U_r + W_g U_g 1^T), alpha = softmax over the regions, attended = sum_i alpha_i r_i on
the raw pool5 vectors. For the audio map the attention hidden size is the number of regions, 24, as
the visual one's is 49 (``broadcast="release"`` therefore also type-checks).

- ``v_att_audio``: the audio input of each second is the audio map attended with the visual guide
  (the 512-d 7x7 average of the same second, store ``visual_vec``), then a BiLSTM (512 -> 256) and
  the A head; ``with_visual=True`` adds the visual BiLSTM and concatenates as A+V.
- ``co_att``: visual attention guided by the audio embedding (the paper's V-att) and audio attention
  guided by the visual 7x7 average (``guide="parallel"``, default) or by the attended visual vector
  (``guide="alternating"``, in the manner of Lu et al. 2016's alternating co-attention); both
  attended vectors (512 each) go through their own BiLSTM and are concatenated into the A+V head.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from models.networks.blocks.attention import AudioGuidedAttention, global_average, regions
from models.networks.blocks.lstm import BiLSTM
from models.networks.blocks.mil import mil_pool
from models.networks.localization import MLPHead
from models.networks.registry import register_network

AUDIO_MAP_REGIONS, AUDIO_MAP_DIM = 24, 512
GUIDES = ("parallel", "alternating")


def visual_guided_audio_attention(guide_dim: int = 512, broadcast: str = "paper"):
    """Attention over the 24 VGGish pool5 regions guided by a ``guide_dim`` visual vector."""
    return AudioGuidedAttention(
        audio_dim=guide_dim,
        visual_dim=AUDIO_MAP_DIM,
        hidden=512,
        attention_hidden=AUDIO_MAP_REGIONS,
        regions=AUDIO_MAP_REGIONS,
        broadcast=broadcast,
    )


class _Supplementary(nn.Module):
    mil: str | None

    def video_logits(self, segment_logits: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        return mil_pool(segment_logits, mode or self.mil or "mean")


class AudioAttentionNet(_Supplementary):
    """Visual-guided audio attention (A-att; with ``with_visual`` A-att+V)."""

    def __init__(
        self,
        num_classes: int = 29,
        with_visual: bool = False,
        broadcast: str = "paper",
        lstm_hidden: int = 128,
        mil: str | None = None,
    ):
        super().__init__()
        self.with_visual, self.mil = with_visual, mil
        self.audio_attention = visual_guided_audio_attention(broadcast=broadcast)
        self.lstm_audio = BiLSTM(AUDIO_MAP_DIM, lstm_hidden)
        self.lstm_video = BiLSTM(512, lstm_hidden) if with_visual else None
        self.classifier = MLPHead((2 if with_visual else 1) * 2 * lstm_hidden, num_classes)
        self.config: dict[str, Any] = {}

    @property
    def stores(self) -> tuple[str, ...]:
        return ("visual_vec", "audio_maps")

    def audio_attention_weights(self, visual: torch.Tensor, audio_maps: torch.Tensor):
        """(B, T, 24) weights over the VGGish pool5 regions."""
        return self.audio_attention.weights(global_average(visual), regions(audio_maps))

    def forward(
        self, audio: torch.Tensor | None, visual: torch.Tensor, audio_maps: torch.Tensor
    ) -> torch.Tensor:
        guide = global_average(visual)
        attended, _ = self.audio_attention(guide, regions(audio_maps))
        h = self.lstm_audio(attended)
        if self.lstm_video is not None:
            h = torch.cat([h, self.lstm_video(guide)], dim=-1)
        return self.classifier(h)


class CoAttentionNet(_Supplementary):
    """Audio-visual co-attention: both modalities attended, both attended vectors classified."""

    def __init__(
        self,
        num_classes: int = 29,
        guide: str = "parallel",
        broadcast: str = "paper",
        lstm_hidden: int = 128,
        mil: str | None = None,
    ):
        super().__init__()
        if guide not in GUIDES:
            raise ValueError(f"guide must be one of {GUIDES}, got {guide!r}")
        self.guide, self.mil = guide, mil
        self.attention = AudioGuidedAttention(broadcast=broadcast)
        self.audio_attention = visual_guided_audio_attention(broadcast=broadcast)
        self.lstm_audio = BiLSTM(AUDIO_MAP_DIM, lstm_hidden)
        self.lstm_video = BiLSTM(512, lstm_hidden)
        self.classifier = MLPHead(4 * lstm_hidden, num_classes)
        self.config: dict[str, Any] = {}

    @property
    def stores(self) -> tuple[str, ...]:
        return ("audio", "visual", "audio_maps")

    def attention_weights(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """(B, T, 49) audio-guided visual attention weights."""
        return self.attention.weights(audio, regions(visual))

    def attend(self, audio, visual, audio_maps):
        """Attended visual (B,T,512), attended audio (B,T,512) and both weight maps."""
        visual = regions(visual)
        v_att, alpha_v = self.attention(audio, visual)
        guide = visual.mean(dim=2) if self.guide == "parallel" else v_att
        a_att, alpha_a = self.audio_attention(guide, regions(audio_maps))
        return v_att, a_att, alpha_v, alpha_a

    def forward(
        self, audio: torch.Tensor, visual: torch.Tensor, audio_maps: torch.Tensor
    ) -> torch.Tensor:
        v_att, a_att, _, _ = self.attend(audio, visual, audio_maps)
        return self.classifier(torch.cat([self.lstm_audio(a_att), self.lstm_video(v_att)], dim=-1))


@register_network("v_att_audio")
def v_att_audio(
    num_classes: int = 29,
    with_visual: bool = False,
    broadcast: str = "paper",
    lstm_hidden: int = 128,
    mil: str | None = None,
) -> AudioAttentionNet:
    return AudioAttentionNet(num_classes, with_visual, broadcast, lstm_hidden, mil)


@register_network("co_att")
def co_att(
    num_classes: int = 29,
    guide: str = "parallel",
    broadcast: str = "paper",
    lstm_hidden: int = 128,
    mil: str | None = None,
) -> CoAttentionNet:
    return CoAttentionNet(num_classes, guide, broadcast, lstm_hidden, mil)
