"""Shared pieces of the later-literature networks (``psp``, ``cmbs``, ``avel-net``).

``SegmentNet``: the encoder of our builder (audio-guided attention over the pool5 regions, one
BiLSTM per modality, AVE reference 3) with the interface the trainer and evaluator expect:
``forward(audio, visual)`` gives per-second logits (B, T, C), ``forward_outputs`` gives them in a
dict beside whatever an extra loss needs, ``extra_loss(outputs, labels)`` is added by the trainer.

Decoupled prediction (CMBS, avel-net): an event head gives one event-vs-background logit per second
(B, T) and a class head one set of C-1 class logits per clip. They are combined into per-second
log-probabilities over the C classes (background last): log p(bg) = log(1 - s_t),
log p(c) = log s_t + log softmax(k)_c with s_t = sigmoid(e_t). The argmax is background when
1 - s_t > s_t * max_c softmax(k)_c, which is the papers' "event if s_t > 0.5, class = argmax k" rule
whenever the class head is confident, and a valid input to the trainer's cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.networks.blocks.attention import AudioGuidedAttention, regions
from models.networks.blocks.lstm import BiLSTM
from models.networks.blocks.mil import mil_pool


class SegmentNet(nn.Module):
    """Audio (B,T,128) + visual maps (B,T,7,7,512) -> attended visual, audio and visual LSTM states."""

    stores = ("audio", "visual")

    def __init__(self, broadcast: str = "paper", lstm_hidden: int = 128, mil: str | None = None):
        super().__init__()
        self.attention = AudioGuidedAttention(broadcast=broadcast)
        self.lstm_audio = BiLSTM(128, lstm_hidden)
        self.lstm_video = BiLSTM(512, lstm_hidden)
        self.dim = 2 * lstm_hidden
        self.mil = mil
        self.config: dict = {}

    def encode(self, audio: torch.Tensor, visual: torch.Tensor):
        attended, _ = self.attention(audio, regions(visual))
        return attended, self.lstm_audio(audio), self.lstm_video(attended)

    def attention_weights(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        return self.attention.weights(audio, regions(visual))

    def forward_outputs(self, audio: torch.Tensor, visual: torch.Tensor) -> dict:
        raise NotImplementedError

    def forward(self, audio: torch.Tensor | None = None, visual: torch.Tensor | None = None):
        return self.forward_outputs(audio, visual)["logits"]

    def video_logits(self, segment_logits: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        return mil_pool(segment_logits, mode or self.mil or "mean")


def decoupled_log_probs(event_logits: torch.Tensor, class_logits: torch.Tensor) -> torch.Tensor:
    """(B,T) event logits + (B,C-1) or (B,T,C-1) class logits -> (B,T,C) log-probs, background last."""
    if class_logits.dim() == 2:
        class_logits = class_logits.unsqueeze(1).expand(-1, event_logits.shape[1], -1)
    log_event = F.logsigmoid(event_logits).unsqueeze(-1) + F.log_softmax(class_logits, -1)
    return torch.cat([log_event, F.logsigmoid(-event_logits).unsqueeze(-1)], -1)


def decoupled_loss(
    event_logits: torch.Tensor, class_logits: torch.Tensor, labels: dict, background: int
) -> torch.Tensor:
    """BCE of the event head + CE of the class head (clips with an event only).

    Supervised: per-second event targets. Weak (``segment_labels`` None): background-only videos
    push every second to background, the others need at least one event second (MIL max).
    """
    seg, video = labels.get("segment_labels"), labels["video_labels"]
    has_class = video != background
    if seg is not None:
        is_event = (seg != background).float()
        loss = F.binary_cross_entropy_with_logits(event_logits, is_event)
        has_class = has_class & (is_event.sum(1) > 0)
    else:
        loss = event_logits.new_zeros(())
        if (~has_class).any():
            bg = event_logits[~has_class]
            loss = loss + F.binary_cross_entropy_with_logits(bg, torch.zeros_like(bg))
        if has_class.any():
            top = event_logits[has_class].max(1).values
            loss = loss + F.binary_cross_entropy_with_logits(top, torch.ones_like(top))
    if has_class.any():
        loss = loss + F.cross_entropy(class_logits[has_class], video[has_class])
    return loss


def topk_mean(scores: torch.Tensor, k: int) -> torch.Tensor:
    """(B,T,C) -> (B,C): mean of the k largest scores over time (CMBS's class activation pooling)."""
    return scores.topk(min(k, scores.shape[1]), dim=1).values.mean(1)
