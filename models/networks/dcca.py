"""DCCA baseline for cross-modality localization.

Deep Canonical Correlation Analysis: G. Andrew, R. Arora, J. Bilmes, K. Livescu, "Deep Canonical
Correlation Analysis", ICML 2013. Two networks f(visual), g(audio) are trained to maximise the total
canonical correlation of their outputs; after training, linear CCA on the training outputs maps both
into a shared space, where matching is done by Euclidean distance (AVE reference 3).

Choices made here (the AVE paper does not state its DCCA configuration):

- Branches: Linear in->hidden, LeakyReLU(0.3), Linear hidden->hidden, LeakyReLU(0.3),
  Linear hidden->out_dim with hidden 256 and out_dim 64. Andrew et al. used sigmoid-like units and
  full-batch L-BFGS; we use LeakyReLU (as AVDLN does) and minibatch Adam, which needs batches well
  above out_dim (default batch 256 for DCCA instead of the release's 8).
- Loss: minus the sum of the top ``top_k`` singular values of T = S11^-1/2 S12 S22^-1/2 (``top_k``
  = out_dim by default, i.e. the total correlation), with regularised covariances
  S11 = H1'H1/(m-1) + r I (r = 1e-3), computed in float64.
- Trained on the same positive pairs as AVDLN (event seconds, audio and visual of the same second);
  negatives are not used (CCA has no notion of them).
- After training, ``fit_projection`` solves linear CCA on the training outputs and stores the
  centring vectors and the top-k projection matrices as buffers, so a checkpoint is self-contained.
"""

from __future__ import annotations

import torch
from torch import nn

from models.networks.avdln import AUDIO_DIM, LEAKY_SLOPE, VISUAL_DIM, euclidean_distance
from models.networks.registry import register_network


def _branch(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden),
        nn.LeakyReLU(LEAKY_SLOPE),
        nn.Linear(hidden, hidden),
        nn.LeakyReLU(LEAKY_SLOPE),
        nn.Linear(hidden, out_dim),
    )


def _inv_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    values = torch.clamp(values, min=1e-12)
    return vectors @ torch.diag(values**-0.5) @ vectors.T


def _whitened_cross(h1: torch.Tensor, h2: torch.Tensor, reg: float) -> tuple[torch.Tensor, ...]:
    """Centre both views; return T = S11^-1/2 S12 S22^-1/2, S11^-1/2, S22^-1/2, and the means."""
    h1, h2 = h1.double(), h2.double()
    m = h1.shape[0]
    if m < 2:
        raise ValueError("CCA needs at least two pairs per batch")
    mean1, mean2 = h1.mean(0), h2.mean(0)
    c1, c2 = h1 - mean1, h2 - mean2
    eye1 = torch.eye(h1.shape[1], dtype=h1.dtype, device=h1.device)
    eye2 = torch.eye(h2.shape[1], dtype=h2.dtype, device=h2.device)
    s11 = c1.T @ c1 / (m - 1) + reg * eye1
    s22 = c2.T @ c2 / (m - 1) + reg * eye2
    s12 = c1.T @ c2 / (m - 1)
    w1, w2 = _inv_sqrt(s11), _inv_sqrt(s22)
    return w1 @ s12 @ w2, w1, w2, mean1, mean2


def cca_loss(h1: torch.Tensor, h2: torch.Tensor, top_k: int, reg: float = 1e-3) -> torch.Tensor:
    """Minus the sum of the top-k canonical correlations of two views (rows are pairs)."""
    t = _whitened_cross(h1, h2, reg)[0]
    singular = torch.linalg.svdvals(t)
    return -singular[:top_k].sum().to(h1.dtype)


class DCCA(nn.Module):
    """Two MLPs trained with the CCA objective; distances are measured in the CCA space."""

    name = "dcca"

    def __init__(
        self,
        visual_dim: int = VISUAL_DIM,
        audio_dim: int = AUDIO_DIM,
        hidden: int = 256,
        out_dim: int = 64,
        top_k: int | None = None,
        reg: float = 1e-3,
    ):
        super().__init__()
        self.top_k = int(top_k or out_dim)
        if not 1 <= self.top_k <= out_dim:
            raise ValueError(f"top_k {self.top_k} must lie in 1..out_dim ({out_dim})")
        self.reg = float(reg)
        self.visual = _branch(visual_dim, hidden, out_dim)
        self.audio = _branch(audio_dim, hidden, out_dim)
        self.register_buffer("mean_visual", torch.zeros(out_dim))
        self.register_buffer("mean_audio", torch.zeros(out_dim))
        self.register_buffer("proj_visual", torch.eye(out_dim)[:, : self.top_k].clone())
        self.register_buffer("proj_audio", torch.eye(out_dim)[:, : self.top_k].clone())
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def loss(
        self, visual: torch.Tensor, audio: torch.Tensor, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """CCA loss on the positive pairs of the batch (``y`` = 1); negatives are ignored."""
        if y is not None:
            keep = y > 0.5
            visual, audio = visual[keep], audio[keep]
        return cca_loss(self.visual(visual), self.audio(audio), self.top_k, self.reg)

    @torch.no_grad()
    def fit_projection(self, visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Linear CCA on the network outputs of (positive) training pairs; returns the correlations."""
        h1, h2 = self.visual(visual), self.audio(audio)
        t, w1, w2, mean1, mean2 = _whitened_cross(h1, h2, self.reg)
        u, s, vh = torch.linalg.svd(t)
        k = self.top_k
        self.mean_visual.copy_(mean1.float())
        self.mean_audio.copy_(mean2.float())
        self.proj_visual.copy_((w1 @ u[:, :k]).float())
        self.proj_audio.copy_((w2 @ vh.T[:, :k]).float())
        self.fitted.fill_(True)
        return s[:k].float()

    def embed_visual(self, visual: torch.Tensor) -> torch.Tensor:
        return (self.visual(visual) - self.mean_visual) @ self.proj_visual

    def embed_audio(self, audio: torch.Tensor) -> torch.Tensor:
        return (self.audio(audio) - self.mean_audio) @ self.proj_audio

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return euclidean_distance(self.embed_visual(visual), self.embed_audio(audio))


@register_network("dcca", task="crossmodal")
def build_dcca(**options) -> DCCA:
    return DCCA(**options)
