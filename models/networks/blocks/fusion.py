"""The fusion zoo of the AVE paper's comparison (AVE reference 3), as plain two-input modules.

Every module maps audio (B, T, Da) and visual (B, T, Dv) to a fused (B, T, ``output_dim``) and is
used unchanged at the three positions of the paper (see ``models.networks.fusion_zoo``): *early* on the
pretrained features (audio 128, attended visual 512), *late* on the 256-d BiLSTM states, *decision*
on the per-modality logits. ``dim`` is the common/output width chosen by the position's builder
(early 256, late 256, decision = number of classes). DMRN and DMRFE live in ``models.networks.blocks.dmrn``.

Shared choice: when a parameter-free method (Additive, Max-pooling) or a gate needs both inputs in
one width and an input is not ``dim`` wide, that input goes through its own ``Linear(D, dim)``; when
both already are ``dim`` wide (late, decision) the method adds no projection and no parameters.
"""

from __future__ import annotations

import torch
from torch import nn


def _project(in_dim: int, dim: int) -> nn.Module:
    return nn.Identity() if in_dim == dim else nn.Linear(in_dim, dim)


class Additive(nn.Module):
    """Additive fusion h = P_a x_a + P_v x_v (Kiela et al., AAAI 2018, "Efficient large-scale
    multi-modal classification"; the AVE paper's "Additive").

    Choices: element-wise sum (not mean); P_* is the identity when the input is already ``dim`` wide,
    else a learned ``Linear(D, dim)``.
    """

    def __init__(self, dim_a: int, dim_v: int, dim: int):
        super().__init__()
        self.proj_a, self.proj_v = _project(dim_a, dim), _project(dim_v, dim)
        self.output_dim = dim

    def forward(self, x_a: torch.Tensor, x_v: torch.Tensor) -> torch.Tensor:
        return self.proj_a(x_a) + self.proj_v(x_v)


class MaxPool(nn.Module):
    """Max-pooling fusion h = max(P_a x_a, P_v x_v) element-wise (Kiela et al., AAAI 2018).

    Choices: as ``Additive`` (projection only where an input is not ``dim`` wide).
    """

    def __init__(self, dim_a: int, dim_v: int, dim: int):
        super().__init__()
        self.proj_a, self.proj_v = _project(dim_a, dim), _project(dim_v, dim)
        self.output_dim = dim

    def forward(self, x_a: torch.Tensor, x_v: torch.Tensor) -> torch.Tensor:
        return torch.maximum(self.proj_a(x_a), self.proj_v(x_v))


class Gated(nn.Module):
    """Gated fusion: each modality gates the other (Kiela et al., AAAI 2018, gating in the manner of
    gated linear units / context gating).

    h = P_a x_a * sigmoid(G_v x_v) + P_v x_v * sigmoid(G_a x_a).
    Choices (our reading): symmetric cross-gating (both directions, summed) rather than one fixed
    gating direction; gates ``Linear(D, dim)`` with bias; P_* as in ``Additive``.
    """

    def __init__(self, dim_a: int, dim_v: int, dim: int):
        super().__init__()
        self.proj_a, self.proj_v = _project(dim_a, dim), _project(dim_v, dim)
        self.gate_a, self.gate_v = nn.Linear(dim_a, dim), nn.Linear(dim_v, dim)
        self.output_dim = dim

    def forward(self, x_a: torch.Tensor, x_v: torch.Tensor) -> torch.Tensor:
        audio_gated = self.proj_a(x_a) * torch.sigmoid(self.gate_v(x_v))
        visual_gated = self.proj_v(x_v) * torch.sigmoid(self.gate_a(x_a))
        return audio_gated + visual_gated


class Bilinear(nn.Module):
    """Multimodal bilinear fusion, **low-rank (factorised)**: h = P(tanh(U x_a) * tanh(V x_v)) + b
    (Hadamard-product low-rank bilinear pooling, Kim et al., ICLR 2017, as used by Kiela et al.,
    AAAI 2018 for their bilinear fusion).

    Choices: a full bilinear map (Da x Dv x dim, 16.8 M weights late) is replaced by rank ``rank``
    (default 256) factors U: Da->rank, V: Dv->rank (with bias), tanh on each factor, output
    projection P: rank->dim with bias.
    """

    def __init__(self, dim_a: int, dim_v: int, dim: int, rank: int = 256):
        super().__init__()
        self.U, self.V = nn.Linear(dim_a, rank), nn.Linear(dim_v, rank)
        self.P = nn.Linear(rank, dim)
        self.output_dim = dim

    def interaction(self, x_a: torch.Tensor, x_v: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.U(x_a)) * torch.tanh(self.V(x_v))

    def forward(self, x_a: torch.Tensor, x_v: torch.Tensor) -> torch.Tensor:
        return self.P(self.interaction(x_a, x_v))


class GatedBilinear(Bilinear):
    """Gated multimodal bilinear fusion (Kiela et al., AAAI 2018, "bilinear-gated").

    h = P((tanh(U x_a) * tanh(V x_v)) * sigmoid(G [x_a; x_v])) + b.
    Choices (our reading): the low-rank bilinear interaction of ``Bilinear`` (rank 256) is gated
    element-wise, in the rank space, by a sigmoid of a ``Linear(Da + Dv, rank)`` of both inputs.
    """

    def __init__(self, dim_a: int, dim_v: int, dim: int, rank: int = 256):
        super().__init__(dim_a, dim_v, dim, rank)
        self.G = nn.Linear(dim_a + dim_v, rank)

    def forward(self, x_a: torch.Tensor, x_v: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.G(torch.cat([x_a, x_v], dim=-1)))
        return self.P(self.interaction(x_a, x_v) * gate)


class GMU(nn.Module):
    """Gated Multimodal Unit (Arevalo et al., ICLR workshop 2017, "Gated multimodal units for
    information fusion").

    h_a = tanh(W_a x_a), h_v = tanh(W_v x_v), z = sigmoid(W_z [x_a; x_v]), h = z * h_a + (1 - z) * h_v.
    Choices: the bimodal unit of the paper, without biases (as its equations), hidden ``dim``.
    Its output is tanh-bounded, so at the decision position a Linear(C, C) turns it into logits.
    """

    bounded = True

    def __init__(self, dim_a: int, dim_v: int, dim: int):
        super().__init__()
        self.W_a = nn.Linear(dim_a, dim, bias=False)
        self.W_v = nn.Linear(dim_v, dim, bias=False)
        self.W_z = nn.Linear(dim_a + dim_v, dim, bias=False)
        self.output_dim = dim

    def forward(self, x_a: torch.Tensor, x_v: torch.Tensor) -> torch.Tensor:
        z = torch.sigmoid(self.W_z(torch.cat([x_a, x_v], dim=-1)))
        return z * torch.tanh(self.W_a(x_a)) + (1 - z) * torch.tanh(self.W_v(x_v))


class Concatenation(nn.Module):
    """Concatenation [x_a; x_v] (the A+V / A+V-att models of Tian et al., ECCV 2018; Kiela et al.
    2018's baseline). No parameters; ``output_dim`` = Da + Dv (``dim`` is ignored)."""

    def __init__(self, dim_a: int, dim_v: int, dim: int | None = None):
        super().__init__()
        self.output_dim = dim_a + dim_v

    def forward(self, x_a: torch.Tensor, x_v: torch.Tensor) -> torch.Tensor:
        return torch.cat([x_a, x_v], dim=-1)


class MRN(nn.Module):
    """Multimodal Residual Network (Kim et al., NIPS 2016, "Multimodal residual learning for visual QA").

    Learning block l: H_l = W_l H_{l-1} + tanh(Q_l H_{l-1}) * tanh(W2_l tanh(W1_l y)), H_0 = x.
    Choices: the residual stream x is the audio (``stream="audio"``, the question's role in MRN;
    ``"visual"`` swaps the roles), the other modality y enters every block; the shortcut W_l is a
    linear projection (as in MRN, it maps the stream to ``dim``); ``num_blocks`` 1 (MRN used 3 for
    VQA; the AVE paper found one residual block best for DMRN), all widths ``dim``, biases on.
    """

    def __init__(
        self, dim_a: int, dim_v: int, dim: int, num_blocks: int = 1, stream: str = "audio"
    ):
        super().__init__()
        if stream not in ("audio", "visual"):
            raise ValueError(f"MRN stream must be 'audio' or 'visual', got {stream!r}")
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.stream = stream
        d_x, d_y = (dim_a, dim_v) if stream == "audio" else (dim_v, dim_a)
        self.shortcut = nn.ModuleList()
        self.Q = nn.ModuleList()
        self.W1 = nn.ModuleList()
        self.W2 = nn.ModuleList()
        for i in range(num_blocks):
            d_in = d_x if i == 0 else dim
            self.shortcut.append(nn.Linear(d_in, dim))
            self.Q.append(nn.Linear(d_in, dim))
            self.W1.append(nn.Linear(d_y, dim))
            self.W2.append(nn.Linear(dim, dim))
        self.output_dim = dim

    def forward(self, x_a: torch.Tensor, x_v: torch.Tensor) -> torch.Tensor:
        h, y = (x_a, x_v) if self.stream == "audio" else (x_v, x_a)
        for shortcut, q, w1, w2 in zip(self.shortcut, self.Q, self.W1, self.W2, strict=True):
            h = shortcut(h) + torch.tanh(q(h)) * torch.tanh(w2(torch.tanh(w1(y))))
        return h


#: name -> module class; the constructor is ``cls(dim_a, dim_v, dim, **options)``.
FUSIONS: dict[str, type[nn.Module]] = {
    "additive": Additive,
    "max": MaxPool,
    "gated": Gated,
    "bilinear": Bilinear,
    "gated_bilinear": GatedBilinear,
    "gmu": GMU,
    "concat": Concatenation,
    "mrn": MRN,
}


def build_fusion(name: str, dim_a: int, dim_v: int, dim: int, **options) -> nn.Module:
    if name not in FUSIONS:
        raise ValueError(f"unknown fusion {name!r}; choose one of {sorted(FUSIONS)}")
    return FUSIONS[name](dim_a, dim_v, dim, **options)
