"""Multiple-instance pooling for weak supervision (AVE reference 3).

Per-second logits m_t (B, T, C) -> video logits g(m_1..m_T) (B, C); the video prediction is
softmax(g). ``mean`` follows the paper (default); ``max`` follows the release code.
"""

from __future__ import annotations

import torch

MIL_MODES = ("mean", "max")


def mil_pool(segment_logits: torch.Tensor, mode: str = "mean") -> torch.Tensor:
    if mode == "mean":
        return segment_logits.mean(dim=1)
    if mode == "max":
        return segment_logits.max(dim=1).values
    raise ValueError(f"MIL pooling must be one of {MIL_MODES}, got {mode!r}")
