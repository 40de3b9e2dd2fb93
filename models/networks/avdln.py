"""AVDLN: the audio-visual distance learning network of the AVE paper (cross-modality localization).

Two branches embed one second of each modality into a shared 64-d space (AVE reference 3):

- visual: Linear 512->128, LeakyReLU(0.3), Linear 128->64 (input: pool5 averaged over the 7x7 grid)
- audio:  Linear 128->128, LeakyReLU(0.3), Linear 128->64 (input: the VGGish embedding)

D is the Euclidean distance between the two embeddings, computed as the release's Keras ``Lambda``
does: ``sqrt(max(sum((v - a)^2), 1e-7))`` (the floor keeps the gradient finite at D = 0).
Training minimises the contrastive loss ``mean[y D^2 + (1 - y) max(margin - D, 0)^2]``, margin 2.0.
98,688 parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from models.networks.registry import register_network

VISUAL_DIM = 512
AUDIO_DIM = 128
EMBED_DIM = 64
HIDDEN_VISUAL = 128
HIDDEN_AUDIO = 128
LEAKY_SLOPE = 0.3
MARGIN = 2.0
KERAS_EPSILON = 1e-7
NUM_PARAMETERS = 98_688


def euclidean_distance(
    x: torch.Tensor, y: torch.Tensor, eps: float = KERAS_EPSILON
) -> torch.Tensor:
    """Row-wise Euclidean distance over the last axis, floored like Keras' ``K.epsilon()``."""
    return torch.sqrt(torch.clamp(((x - y) ** 2).sum(-1), min=eps))


def contrastive_loss(
    distance: torch.Tensor, y: torch.Tensor, margin: float = MARGIN
) -> torch.Tensor:
    """``mean[y D^2 + (1 - y) max(margin - D, 0)^2]``; y = 1 for matching pairs, 0 otherwise."""
    y = y.to(distance.dtype)
    return (y * distance**2 + (1 - y) * torch.clamp(margin - distance, min=0) ** 2).mean()


class AVDLN(nn.Module):
    """Audio-visual distance learning network (Tian et al., ECCV 2018)."""

    name = "avdln"

    def __init__(
        self,
        visual_dim: int = VISUAL_DIM,
        audio_dim: int = AUDIO_DIM,
        embed_dim: int = EMBED_DIM,
        margin: float = MARGIN,
    ):
        super().__init__()
        self.margin = float(margin)
        self.visual = nn.Sequential(
            nn.Linear(visual_dim, HIDDEN_VISUAL),
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Linear(HIDDEN_VISUAL, embed_dim),
        )
        self.audio = nn.Sequential(
            nn.Linear(audio_dim, HIDDEN_AUDIO),
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Linear(HIDDEN_AUDIO, embed_dim),
        )

    def embed_visual(self, visual: torch.Tensor) -> torch.Tensor:
        return self.visual(visual)

    def embed_audio(self, audio: torch.Tensor) -> torch.Tensor:
        return self.audio(audio)

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Distance between each visual vector and the audio vector at the same position."""
        return euclidean_distance(self.embed_visual(visual), self.embed_audio(audio))

    def loss(self, visual: torch.Tensor, audio: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return contrastive_loss(self(visual, audio), y, self.margin)


@register_network("avdln", task="crossmodal")
def build_avdln(**options) -> AVDLN:
    """Builder for the registry: ``build_avdln()`` is the paper's network."""
    return AVDLN(**options)
