"""ED-TCN baseline (Lea et al., CVPR 2017, "Temporal convolutional networks for action segmentation
and detection"; AVE reference 3 and 5: 46.9 % with V features).

Encoder: ``levels`` times [Conv1d(k) -> spatial dropout -> normalised ReLU -> max-pool 2];
decoder: the mirror, [upsample x2 -> Conv1d(k) -> spatial dropout -> normalised ReLU]; a per-second
Linear to C classes (softmax in the loss). Choices for the 10-step AVE clips:

- two levels with channels (64, 96) as in Lea et al.; kernel 3 (their long filters are for 15-30 fps
  frame features; one step here is one second, so 3 steps cover 3 s at the input and 12 s at the
  deepest level);
- pooling uses ``ceil_mode`` (10 -> 5 -> 3) and every upsampling is cropped back to the length the
  matching encoder level had (3 -> 6 -> 5 -> 10), so any T works and the output has T steps;
- normalised ReLU: ReLU(x) / (max over channels of ReLU(x) + 1e-5) per step, as in the paper;
  spatial dropout 0.3 (whole channels) as in their code;
- ``features``: ``"visual"`` (default; the 512-d 7x7 average, the paper's V features), ``"audio"``
  (128) or ``"av"`` (both concatenated, 640).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.data.ave import visual_features
from models.networks.blocks.attention import global_average
from models.networks.blocks.mil import mil_pool
from models.networks.registry import register_network

FEATURES = {"visual": 512, "audio": 128, "av": 640}


class NormReLU(nn.Module):
    """ReLU normalised by its per-step maximum over channels (Lea et al. 2017)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        x = F.relu(x)
        return x / (x.amax(dim=1, keepdim=True) + 1e-5)


class EDTCN(nn.Module):
    """Encoder-decoder temporal convolutional network with per-step logits (B, T, C)."""

    def __init__(
        self,
        num_classes: int = 29,
        features: str = "visual",
        channels: Sequence[int] = (64, 96),
        kernel_size: int = 3,
        dropout: float = 0.3,
        mil: str | None = None,
        visual: str = "vgg19",
    ):
        super().__init__()
        if features not in FEATURES:
            raise ValueError(f"features must be one of {sorted(FEATURES)}, got {features!r}")
        self.visual_stores, width = visual_features(visual)
        if kernel_size % 2 != 1:
            raise ValueError(
                f"kernel_size must be odd (same-length convolutions), got {kernel_size}"
            )
        self.features, self.mil = features, mil
        pad = kernel_size // 2
        in_dim = FEATURES[features] + (width - 512 if features != "audio" else 0)
        widths = [in_dim, *channels]
        self.encoder = nn.ModuleList(
            nn.Conv1d(i, o, kernel_size, padding=pad)
            for i, o in zip(widths[:-1], widths[1:], strict=True)
        )
        dec_out = list(channels[::-1])  # (96, 64): the mirror of the encoder
        dec_in = [channels[-1], *dec_out[:-1]]
        self.decoder = nn.ModuleList(
            nn.Conv1d(i, o, kernel_size, padding=pad) for i, o in zip(dec_in, dec_out, strict=True)
        )
        self.dropout = nn.Dropout1d(dropout)
        self.act = NormReLU()
        self.classifier = nn.Linear(channels[0], num_classes)
        self.config: dict[str, Any] = {}

    @property
    def stores(self) -> tuple[str, ...]:
        return {
            "visual": self.visual_stores,
            "audio": ("audio",),
            "av": ("audio", *self.visual_stores),
        }[self.features]

    def _input(self, audio: torch.Tensor | None, visual: torch.Tensor | None) -> torch.Tensor:
        if self.features == "audio":
            return audio
        v = global_average(visual)
        return v if self.features == "visual" else torch.cat([audio, v], dim=-1)

    def forward(self, audio: torch.Tensor | None = None, visual: torch.Tensor | None = None):
        x = self._input(audio, visual).transpose(1, 2)  # B, D, T
        lengths = []
        for conv in self.encoder:
            lengths.append(x.shape[-1])
            x = F.max_pool1d(self.act(self.dropout(conv(x))), 2, ceil_mode=True)
        for conv, length in zip(self.decoder, reversed(lengths), strict=True):
            x = F.interpolate(x, scale_factor=2, mode="nearest")[..., :length]
            x = self.act(self.dropout(conv(x)))
        return self.classifier(x.transpose(1, 2))

    def video_logits(self, segment_logits: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        return mil_pool(segment_logits, mode or self.mil or "mean")


@register_network("edtcn")
def edtcn(
    num_classes: int = 29,
    features: str = "visual",
    channels: Sequence[int] = (64, 96),
    kernel_size: int = 3,
    dropout: float = 0.3,
    mil: str | None = None,
    visual: str = "vgg19",
) -> EDTCN:
    return EDTCN(num_classes, features, tuple(channels), kernel_size, dropout, mil, visual)
