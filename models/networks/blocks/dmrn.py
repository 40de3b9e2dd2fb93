"""Dual multimodal residual fusion (AVE reference 3; Tian et al. ECCV 2018, Sec. 3.3).

DMRN block: U_a, U_v = Linear(256,256) -> tanh -> Linear(256,256);
m = (U_a(h_a) + U_v(h_v)) / 2; h_a' = tanh(h_a + m); h_v' = tanh(h_v + m); output (h_a' + h_v') / 2.
Blocks can be stacked (``num_blocks``; the paper finds one best). Choices, documented:

- ``shared=True`` applies one block's weights ``num_blocks`` times (as the release's ``TBMRF_Net``
  does); the default gives every stacked block its own weights.
- ``swap_residual=True`` reproduces the release, which adds the *visual* residual to the audio
  branch and vice versa. With one block the fused output is identical either way; stacked blocks differ.

DMRFE (the paper's ensemble variant, our reading of the reference): the same residual fusion, but the
audio branch h_a' and the visual branch h_v' each get their own classifier and the two predicted
probabilities are averaged; the model then outputs log-probabilities (valid logits for softmax/CE).
"""

from __future__ import annotations

import torch
from torch import nn


def _transform(dim: int) -> nn.Sequential:
    # indices 0 and 2 match the release's nn.Sequential(Linear, Tanh, Linear)
    return nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, dim))


class DMRNBlock(nn.Module):
    def __init__(self, dim: int = 256, swap_residual: bool = False):
        super().__init__()
        self.swap_residual = swap_residual
        self.U_a = _transform(dim)
        self.U_v = _transform(dim)

    def forward(self, h_a: torch.Tensor, h_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = (self.U_a(h_a) + self.U_v(h_v)) * 0.5
        res_a, res_v = (h_v, h_a) if self.swap_residual else (h_a, h_v)
        return torch.tanh(res_a + m), torch.tanh(res_v + m)


class DMRN(nn.Module):
    """Stack of DMRN blocks; ``forward`` returns the fused (h_a' + h_v') / 2, or both branches."""

    def __init__(
        self,
        dim: int = 256,
        num_blocks: int = 1,
        shared: bool = False,
        swap_residual: bool = False,
        return_branches: bool = False,
    ):
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.num_blocks = num_blocks
        self.shared = shared
        self.return_branches = return_branches
        n_modules = 1 if shared else num_blocks
        self.blocks = nn.ModuleList(DMRNBlock(dim, swap_residual) for _ in range(n_modules))
        self.output_dim = dim

    def forward(self, h_a: torch.Tensor, h_v: torch.Tensor):
        for i in range(self.num_blocks):
            h_a, h_v = self.blocks[0 if self.shared else i](h_a, h_v)
        if self.return_branches:
            return h_a, h_v
        return (h_a + h_v) * 0.5


class EnsembleClassifier(nn.Module):
    """DMRFE's output: one classifier per branch, probabilities averaged, returned as log-probs."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.classifier_a = nn.Linear(dim, num_classes)
        self.classifier_v = nn.Linear(dim, num_classes)

    def forward(self, branches: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        h_a, h_v = branches
        p = (
            torch.softmax(self.classifier_a(h_a), -1) + torch.softmax(self.classifier_v(h_v), -1)
        ) * 0.5
        return torch.log(p.clamp_min(1e-12))
