"""Temporal encoders: one-layer bidirectional LSTM, 128 hidden units per direction (AVE reference 3).

``BiLSTM`` *is* an ``nn.LSTM`` (same parameter names as the release's ``lstm_audio``/``lstm_video``)
whose forward returns only the per-step outputs (B, T, 2*hidden), starting from zero states.
"""

from __future__ import annotations

import torch
from torch import nn


class BiLSTM(nn.LSTM):
    """Bidirectional, batch-first LSTM returning the outputs (B, T, 2*hidden)."""

    def __init__(self, input_dim: int, hidden: int = 128, layers: int = 1):
        super().__init__(input_dim, hidden, layers, batch_first=True, bidirectional=True)

    @property
    def output_dim(self) -> int:
        return 2 * self.hidden_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out, _ = super().forward(x)
        return out
