"""``psp``: positive sample propagation (Zhou, Zheng, Zhong, Guo, Wang, "Positive Sample Propagation
along the Audio-Visual Event Line", CVPR 2021), on our builder.

Network: our encoder (audio-guided attention over the pool5 regions, one 128-hidden BiLSTM per
modality, as in ``av_att``) gives 256-d audio and visual states; the PSP block then
- projects each modality twice (Linear 256->256 without bias, ReLU, dropout 0.1),
- scores every visual second against every audio second (scaled dot product, ReLU),
- row-normalises the similarities (L1), prunes those below ``threshold`` (0.099, about 1/T) and
  renormalises, for both directions,
- propagates: v' = v + S_va a_2, a' = a + S_av v_1 (residual cross-modal features), then
  Linear 256->256 without bias, ReLU, dropout and a shared LayerNorm;
- fuses (v' + a') / 2 and classifies every second: Linear 256->64 ReLU Linear 64->C (no biases).
The audio-visual pair similarity (AVPS) loss, ``avps_weight`` (100 as published) times the MSE between
the L1-normalised ReLU cosine similarity of v'_t and a'_t and the target 1/n_event on event seconds,
0 elsewhere, is added in supervised training (``extra_loss``). Weak training uses the same network
with the trainer's MIL pooling (the paper's separate weak variant is not reproduced).

Choices: the public code projects audio (128->256->128) and attended visual (512->256->128) with
bias-free linear layers before the LSTMs; our builder's encoders take the raw features, as every other
network of this package does.
Defects of the public code (github.com/jasongief/PSP_CVPR_2021) that we do not reproduce:
- stale similarity targets: its data loader keeps one AVPS target buffer for all batches and only
  writes the event seconds of each batch, so background seconds inherit earlier clips' targets;
  we compute the targets from each batch's labels;
- checkpoints saved on the test split's accuracy (we select on val only);
- training accuracy computed on the last batch only, and shuffling flag reset after the first batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.networks.blocks.decoupled import SegmentNet
from models.networks.registry import register_network


class PSPBlock(nn.Module):
    """Positive sample propagation between audio and visual LSTM states (B, T, D)."""

    def __init__(
        self, dim: int = 256, hidden: int = 256, threshold: float = 0.099, dropout: float = 0.1
    ):
        super().__init__()
        self.threshold = threshold
        self.v_L1 = nn.Linear(dim, hidden, bias=False)
        self.v_L2 = nn.Linear(dim, hidden, bias=False)
        self.a_L1 = nn.Linear(dim, hidden, bias=False)
        self.a_L2 = nn.Linear(dim, hidden, bias=False)
        self.v_fc = nn.Linear(dim, dim, bias=False)
        self.a_fc = nn.Linear(dim, dim, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(dim, eps=1e-6)

    def _prune(self, sim: torch.Tensor) -> torch.Tensor:
        sim = sim / (sim.sum(-1, keepdim=True) + 1e-8)
        sim = sim * (sim > self.threshold)
        return sim / (sim.sum(-1, keepdim=True) + 1e-8)

    def forward(self, h_a: torch.Tensor, h_v: torch.Tensor):
        v1, v2 = (self.dropout(F.relu(f(h_v))) for f in (self.v_L1, self.v_L2))
        a1, a2 = (self.dropout(F.relu(f(h_a))) for f in (self.a_L1, self.a_L2))
        sim = F.relu(torch.bmm(v2, a1.transpose(1, 2)) / v2.shape[-1] ** 0.5)  # rows: visual
        v_psp = h_v + torch.bmm(self._prune(sim), a2)
        a_psp = h_a + torch.bmm(self._prune(sim.transpose(1, 2)), v1)
        v_psp = self.layer_norm(self.dropout(F.relu(self.v_fc(v_psp))))
        a_psp = self.layer_norm(self.dropout(F.relu(self.a_fc(a_psp))))
        return (v_psp + a_psp) * 0.5, v_psp, a_psp


def avps_loss(similarity: torch.Tensor, segment_labels: torch.Tensor, background: int):
    """MSE between the L1-normalised ReLU similarity (B,T) and 1/n_event on event seconds."""
    sim = F.relu(similarity)
    sim = sim / (sim.sum(-1, keepdim=True) + 1e-8)
    event = (segment_labels != background).float()
    target = event / event.sum(-1, keepdim=True).clamp_min(1.0)
    return F.mse_loss(sim, target)


class PSPNet(SegmentNet):
    def __init__(
        self,
        num_classes: int = 29,
        broadcast: str = "paper",
        lstm_hidden: int = 128,
        threshold: float = 0.099,
        avps_weight: float = 100.0,
        mil: str | None = None,
    ):
        super().__init__(broadcast, lstm_hidden, mil)
        self.num_classes = num_classes
        self.avps_weight = avps_weight
        self.psp = PSPBlock(self.dim, self.dim, threshold)
        self.L1 = nn.Linear(self.dim, 64, bias=False)
        self.L2 = nn.Linear(64, num_classes, bias=False)

    def forward_outputs(self, audio: torch.Tensor, visual: torch.Tensor) -> dict:
        _, h_a, h_v = self.encode(audio, visual)
        fused, v_psp, a_psp = self.psp(h_a, h_v)
        similarity = F.cosine_similarity(v_psp, a_psp, dim=-1)
        return {"logits": self.L2(F.relu(self.L1(fused))), "similarity": similarity}

    def extra_loss(self, outputs: dict, labels: dict) -> torch.Tensor:
        seg = labels.get("segment_labels")
        if seg is None or not self.avps_weight:
            return outputs["logits"].new_zeros(())
        return self.avps_weight * avps_loss(outputs["similarity"], seg, self.num_classes - 1)


@register_network("psp")
def psp(
    num_classes: int = 29,
    broadcast: str = "paper",
    lstm_hidden: int = 128,
    threshold: float = 0.099,
    avps_weight: float = 100.0,
    mil: str | None = None,
) -> PSPNet:
    return PSPNet(num_classes, broadcast, lstm_hidden, threshold, avps_weight, mil)
