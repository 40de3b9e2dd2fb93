"""Audio-guided visual attention (AVE reference 3; Tian et al. ECCV 2018, Sec. 3.2).

Per second t: U_v = ReLU(affine_video(V_t)) per region, U_a = ReLU(affine_audio(a_t));
x = affine_h(tanh(affine_v(U_v) + affine_g(U_a))) over the 49 regions, alpha = softmax(x),
c_t = sum_i alpha_i V_t,i on the raw pool5 vectors. Submodule names follow the release's ``att_Net``
(``affine_audio``, ``affine_video``, ``affine_v``, ``affine_g``, ``affine_h``) so its tensors map 1:1.

``broadcast="paper"`` (default) adds the audio hidden vector to every region's hidden vector.
``broadcast="release"`` reproduces the release code, which adds audio hidden unit i to every hidden
unit of region i; it only type-checks because the hidden size equals the number of regions (49).
"""

from __future__ import annotations

import torch
from torch import nn

BROADCASTS = ("paper", "release")


class AudioGuidedAttention(nn.Module):
    """Attends over the regions of a visual map with the audio of the same second."""

    def __init__(
        self,
        audio_dim: int = 128,
        visual_dim: int = 512,
        hidden: int = 512,
        attention_hidden: int = 49,
        regions: int = 49,
        broadcast: str = "paper",
    ):
        super().__init__()
        if broadcast not in BROADCASTS:
            raise ValueError(f"broadcast must be one of {BROADCASTS}, got {broadcast!r}")
        if broadcast == "release" and attention_hidden != regions:
            raise ValueError(
                "broadcast='release' needs attention_hidden == regions (the release's quirk only "
                f"type-checks then); got {attention_hidden} vs {regions}"
            )
        self.broadcast = broadcast
        self.regions = regions
        self.affine_audio = nn.Linear(audio_dim, hidden)
        self.affine_video = nn.Linear(visual_dim, hidden)
        self.affine_v = nn.Linear(hidden, attention_hidden, bias=False)
        self.affine_g = nn.Linear(hidden, attention_hidden, bias=False)
        self.affine_h = nn.Linear(attention_hidden, 1, bias=False)
        self.relu = nn.ReLU()

    def weights(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """Attention weights (B, T, R) for audio (B, T, Da) and visual regions (B, T, R, Dv)."""
        u_v = self.relu(self.affine_video(visual))  # B,T,R,H
        u_a = self.relu(self.affine_audio(audio))  # B,T,H
        g = self.affine_g(u_a)  # B,T,K
        g = g.unsqueeze(-1) if self.broadcast == "release" else g.unsqueeze(-2)
        z = self.affine_h(torch.tanh(self.affine_v(u_v) + g)).squeeze(-1)  # B,T,R
        return torch.softmax(z, dim=-1)

    def forward(
        self, audio: torch.Tensor, visual: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attended visual vectors (B, T, Dv) and the weights (B, T, R)."""
        alpha = self.weights(audio, visual)
        attended = torch.einsum("btr,btrd->btd", alpha, visual)
        return attended, alpha


def regions(visual: torch.Tensor) -> torch.Tensor:
    """(B, T, H, W, D) NHWC maps -> (B, T, H*W, D); (B, T, R, D) passes through."""
    if visual.dim() == 5:
        b, t, h, w, d = visual.shape
        return visual.reshape(b, t, h * w, d)
    if visual.dim() != 4:
        raise ValueError(
            f"visual features must be (B,T,H,W,D) or (B,T,R,D), got {tuple(visual.shape)}"
        )
    return visual


def global_average(visual: torch.Tensor) -> torch.Tensor:
    """The 'V' models' visual input: the mean of the regions, (B, T, D). (B, T, D) passes through."""
    return visual if visual.dim() == 3 else regions(visual).mean(dim=2)
