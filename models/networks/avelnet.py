"""``avel-net``: our network; decoupled event and class heads on audio-guided attention and late
fusion, with an audio-visual agreement score trained by a supervised contrastive term.

Per second t (audio a_t, pool5 map V_t):
- audio-guided attention gives the attended visual vector c_t; one 128-hidden BiLSTM per modality
  gives h_a, h_v (256-d each); late fusion f_t = ReLU(Linear 512->256 [h_a; h_v]), dropout;
- agreement: per-second projections z_a = norm(MLP(a_t)), z_v = norm(MLP(c_t)) (64-d, unit length)
  and their cosine s_t; the event logit is e_t = MLP(f_t) + kappa (s_t - mu) (kappa, mu learned),
  so "do sound and picture agree now?" reaches the event head directly;
- class head: MLP on the max over time of f (C-1 event classes); per-second log-probabilities as in
  ``models.networks.blocks.decoupled`` (background last).
``extra_loss`` (supervised): BCE of the event head, CE of the class head, and ``contrastive_weight``
(1.0) times a supervised contrastive term between the segments of each video: with S_ij = z_a,i .
z_v,j / ``temperature`` (0.1), every event second i is an anchor whose positive is the other
modality's same second (``positives="second"``, default) or every event second of the video
(``positives="event"``), and whose negatives are the video's other seconds, background ones included;
audio and visual anchors both (InfoNCE over the 10 seconds of the clip). Weak training uses the event
head's MIL form and the class head (no contrastive term: it needs event seconds).
Trained like every network here: float32 features, selection on val, seeded runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.networks.blocks.decoupled import SegmentNet, decoupled_log_probs, decoupled_loss
from models.networks.registry import register_network

POSITIVES = ("second", "event")


def segment_contrastive(
    z_a: torch.Tensor,
    z_v: torch.Tensor,
    event: torch.Tensor,
    temperature: float = 0.1,
    positives: str = "second",
) -> torch.Tensor:
    """Supervised InfoNCE between the audio and visual segments of each video.

    ``z_a``, ``z_v``: (B,T,D) unit vectors; ``event``: (B,T) bool. Anchors are event seconds.
    """
    if positives not in POSITIVES:
        raise ValueError(f"positives must be one of {POSITIVES}, got {positives!r}")
    if not event.any():
        return z_a.new_zeros(())
    sim = torch.einsum("bid,bjd->bij", z_a, z_v) / temperature  # rows audio, columns visual
    t = sim.shape[1]
    if positives == "second":
        pos = torch.eye(t, dtype=torch.bool, device=sim.device).expand_as(sim) & event[:, :, None]
    else:
        pos = event[:, :, None] & event[:, None, :]
    pos = pos.float()
    loss_a = -(F.log_softmax(sim, 2) * pos).sum(2) / pos.sum(2).clamp_min(1)  # audio anchors
    loss_v = -(F.log_softmax(sim, 1) * pos).sum(1) / pos.sum(1).clamp_min(1)  # visual anchors
    return ((loss_a + loss_v) * 0.5)[event].mean()


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))


class AvelNet(SegmentNet):
    def __init__(
        self,
        num_classes: int = 29,
        broadcast: str = "paper",
        lstm_hidden: int = 128,
        embed_dim: int = 64,
        dropout: float = 0.2,
        contrastive_weight: float = 1.0,
        temperature: float = 0.1,
        positives: str = "second",
        mil: str | None = None,
    ):
        super().__init__(broadcast, lstm_hidden, mil)
        if positives not in POSITIVES:
            raise ValueError(f"positives must be one of {POSITIVES}, got {positives!r}")
        d = self.dim
        self.num_classes = num_classes
        self.contrastive_weight, self.temperature, self.positives = (
            contrastive_weight,
            temperature,
            positives,
        )
        self.fuse = nn.Linear(2 * d, d)
        self.dropout = nn.Dropout(dropout)
        self.project_audio = _mlp(128, 128, embed_dim)
        self.project_visual = _mlp(512, 128, embed_dim)
        self.event_head = _mlp(d, 64, 1)
        self.agreement_scale = nn.Parameter(torch.tensor(5.0))
        self.agreement_shift = nn.Parameter(torch.tensor(0.5))
        self.class_head = _mlp(d, 64, num_classes - 1)

    def forward_outputs(self, audio: torch.Tensor, visual: torch.Tensor) -> dict:
        attended, h_a, h_v = self.encode(audio, visual)
        fused = self.dropout(F.relu(self.fuse(torch.cat([h_a, h_v], -1))))
        z_a = F.normalize(self.project_audio(audio), dim=-1)
        z_v = F.normalize(self.project_visual(attended), dim=-1)
        agreement = (z_a * z_v).sum(-1)
        event_logits = self.event_head(fused).squeeze(-1) + self.agreement_scale * (
            agreement - self.agreement_shift
        )
        class_logits = self.class_head(fused.max(1).values)
        return {
            "logits": decoupled_log_probs(event_logits, class_logits),
            "event_logits": event_logits,
            "class_logits": class_logits,
            "z_audio": z_a,
            "z_visual": z_v,
            "agreement": agreement,
        }

    def extra_loss(self, outputs: dict, labels: dict) -> torch.Tensor:
        background = self.num_classes - 1
        loss = decoupled_loss(outputs["event_logits"], outputs["class_logits"], labels, background)
        seg = labels.get("segment_labels")
        if seg is not None and self.contrastive_weight:
            loss = loss + self.contrastive_weight * segment_contrastive(
                outputs["z_audio"],
                outputs["z_visual"],
                seg != background,
                self.temperature,
                self.positives,
            )
        return loss


@register_network("avel-net")
def avel_net(
    num_classes: int = 29,
    broadcast: str = "paper",
    lstm_hidden: int = 128,
    embed_dim: int = 64,
    dropout: float = 0.2,
    contrastive_weight: float = 1.0,
    temperature: float = 0.1,
    positives: str = "second",
    mil: str | None = None,
) -> AvelNet:
    return AvelNet(
        num_classes,
        broadcast,
        lstm_hidden,
        embed_dim,
        dropout,
        contrastive_weight,
        temperature,
        positives,
        mil,
    )
