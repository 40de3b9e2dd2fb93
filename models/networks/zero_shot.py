"""The training-free zero-shot localizer (the open-vocabulary AVE setting): per second, the class
whose prompt is closest (cosine) to the CLIP image embedding and the class closest to the CLAP
audio embedding; an event of that class where the two agree, background otherwise.

The class prompts' text embeddings (CLIP's and CLAP's text towers, :mod:`models.evaluation.zero_shot`)
are buffers of the network, so a run folder's ``best.pt`` holds everything and ``avel evaluate
--run`` reads it like any trained run.
"""

from __future__ import annotations

import torch
from torch import nn

from models.networks.registry import register_network

#: Logits of the decision: the agreed class gets its mean cosine (in [-1, 1]), background
#: ``AGREED_BACKGROUND`` below it; without agreement background gets 0 and every class ``OTHER``.
AGREED_BACKGROUND, OTHER = -2.0, -3.0


def cosine(features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """(B, T, D) features x (C, D) text embeddings -> (B, T, C) cosine similarities."""
    f = nn.functional.normalize(features.float(), dim=-1)
    t = nn.functional.normalize(text.float(), dim=-1)
    return f @ t.T


class ZeroShotNet(nn.Module):
    """Scores from both modalities; the decision rule of the module docstring."""

    def __init__(
        self,
        num_classes: int,
        visual_dim: int,
        audio_dim: int,
        visual_store: str = "clip",
        audio_store: str = "clap",
    ) -> None:
        super().__init__()
        events = num_classes - 1
        self.num_classes = num_classes
        self.register_buffer("text_visual", torch.zeros(events, visual_dim))
        self.register_buffer("text_audio", torch.zeros(events, audio_dim))
        self.store_names = (audio_store, visual_store)

    @property
    def stores(self) -> tuple[str, ...]:
        return self.store_names

    def scores(
        self, audio: torch.Tensor, visual: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(visual scores, audio scores): (B, T, C - 1) cosine similarities to the class prompts."""
        return cosine(visual, self.text_visual), cosine(audio, self.text_audio)

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        sv, sa = self.scores(audio, visual)
        pv, pa = sv.argmax(-1), sa.argmax(-1)
        agree = pv == pa
        event = ((sv + sa) / 2).gather(-1, pv.unsqueeze(-1)).squeeze(-1)
        logits = sv.new_full((*sv.shape[:2], self.num_classes), OTHER)
        logits.scatter_(-1, pv.unsqueeze(-1), torch.where(agree, event, OTHER).unsqueeze(-1))
        logits[..., -1] = torch.where(agree, AGREED_BACKGROUND, 0.0)
        return logits

    def video_logits(self, segment_logits: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        return segment_logits.mean(1)


@register_network("zero_shot")
def zero_shot(
    num_classes: int = 29,
    visual_dim: int = 768,
    audio_dim: int = 512,
    visual_store: str = "clip",
    audio_store: str = "clap",
) -> ZeroShotNet:
    return ZeroShotNet(num_classes, visual_dim, audio_dim, visual_store, audio_store)
