"""The fusion zoo at the paper's three positions, registered as ``build_model(METHOD, position=...)``.

METHOD is one of ``models.networks.blocks.fusion.FUSIONS`` (additive, max, gated, bilinear, gated_bilinear, gmu,
concat, mrn); DMRN/DMRFE are the ``dmrn``/``dmrfe`` models (late, as in the paper). Positions
(AVE reference 3; every variant sees the same features, with audio-guided visual attention unless
``attend=False``, which uses the 7x7 average instead):

- ``early``: fuse the pretrained audio (128) and the attended visual vector (512) per second into
  ``dim`` (default 256; Concatenation: 640), then one BiLSTM (hidden 128 per direction) and the A+V-att
  head (ReLU, Linear(256, 64), ReLU, Linear(64, C)).
- ``late`` (default): a BiLSTM per modality, fuse the two 256-d states into ``dim`` (default 256;
  Concatenation: 512), then the same head on ``dim``. ``concat`` late is the paper's A+V-att.
- ``decision``: a BiLSTM and a head per modality give per-second logits (C each); the fusion acts on
  the two logit vectors with ``dim`` = C, so its output is the logits (Concatenation: 2C, and GMU:
  tanh-bounded, are followed by a Linear to C). Logits rather than probabilities, so that the output
  stays a valid input for the cross-entropy loss.

Other options: ``broadcast`` (attention, see ``models.networks.blocks.attention``), ``lstm_hidden``, ``mil`` (weak),
and the method's own options (``rank`` for the bilinear pair, ``num_blocks``/``stream`` for MRN).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from models.data.ave import visual_features
from models.networks.blocks.attention import AudioGuidedAttention, global_average, regions
from models.networks.blocks.fusion import FUSIONS, build_fusion
from models.networks.blocks.lstm import BiLSTM
from models.networks.blocks.mil import mil_pool
from models.networks.localization import LocalizationNet, MLPHead
from models.networks.registry import register_network

POSITIONS = ("early", "late", "decision")
AUDIO_DIM, VISUAL_DIM = 128, 512


class EarlyFusionNet(nn.Module):
    """Fusion of the per-second input features, one BiLSTM on the fused sequence, a head."""

    def __init__(
        self,
        fusion: nn.Module,
        classifier: nn.Module,
        attention: AudioGuidedAttention | None = None,
        lstm_hidden: int = 128,
        mil: str | None = None,
        visual_stores: tuple[str, ...] = ("visual_vec",),
    ):
        super().__init__()
        self.attention = attention
        self.visual_stores = visual_stores
        self.fusion = fusion
        self.lstm = BiLSTM(fusion.output_dim, lstm_hidden)
        self.classifier = classifier
        self.mil = mil
        self.config: dict[str, Any] = {}

    @property
    def stores(self) -> tuple[str, ...]:
        return ("audio", "visual") if self.attention is not None else ("audio", *self.visual_stores)

    def attention_weights(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        if self.attention is None:
            raise ValueError(
                f"model {self.config.get('name', '?')!r} has no audio-guided attention"
            )
        return self.attention.weights(audio, regions(visual))

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        if self.attention is not None:
            visual, _ = self.attention(audio, regions(visual))
        else:
            visual = global_average(visual)
        return self.classifier(self.lstm(self.fusion(audio, visual)))

    def video_logits(self, segment_logits: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        return mil_pool(segment_logits, mode or self.mil or "mean")


class DecisionFusion(nn.Module):
    """Per-modality heads on the LSTM states, then a fusion of the two logit vectors."""

    def __init__(self, fusion: nn.Module, num_classes: int, state_dim: int = 256):
        super().__init__()
        self.head_a = MLPHead(state_dim, num_classes)
        self.head_v = MLPHead(state_dim, num_classes)
        self.fuse = fusion
        logits = fusion.output_dim == num_classes and not getattr(fusion, "bounded", False)
        self.out = nn.Identity() if logits else nn.Linear(fusion.output_dim, num_classes)
        self.output_dim = num_classes

    def forward(self, h_a: torch.Tensor, h_v: torch.Tensor) -> torch.Tensor:
        return self.out(self.fuse(self.head_a(h_a), self.head_v(h_v)))


def fusion_model(
    method: str,
    num_classes: int = 29,
    position: str = "late",
    dim: int | None = None,
    attend: bool = True,
    broadcast: str = "paper",
    lstm_hidden: int = 128,
    mil: str | None = None,
    visual: str = "vgg19",
    **fusion_options: Any,
) -> nn.Module:
    """Build fusion ``method`` at ``position`` (see the module docstring for the architecture);
    ``visual`` (with ``attend=False``): the visual vectors, ``models.data.ave.VISUAL_FEATURES``."""
    if position not in POSITIONS:
        raise ValueError(f"position must be one of {POSITIONS}, got {position!r}")
    if attend and visual != "vgg19":
        raise ValueError(f"visual={visual!r} gives vectors: pass attend=false")
    attention = AudioGuidedAttention(broadcast=broadcast) if attend else None
    state = 2 * lstm_hidden
    if position == "early":
        stores, width = visual_features(visual)
        width = VISUAL_DIM if visual == "vgg19" else width
        fuse = build_fusion(method, AUDIO_DIM, width, dim or 256, **fusion_options)
        head = MLPHead(state, num_classes)
        return EarlyFusionNet(fuse, head, attention, lstm_hidden, mil, stores)
    if position == "late":
        fuse = build_fusion(method, state, state, dim or state, **fusion_options)
        head: nn.Module = MLPHead(fuse.output_dim, num_classes)
    else:
        if dim is not None and dim != num_classes:
            raise ValueError(f"decision fusion works in the class space: dim must be {num_classes}")
        fuse = DecisionFusion(
            build_fusion(method, num_classes, num_classes, num_classes, **fusion_options),
            num_classes,
            state,
        )
        head = nn.Identity()
    return LocalizationNet(
        head, True, True, attention, fuse, lstm_hidden=lstm_hidden, mil=mil, visual=visual
    )


for _method in FUSIONS:
    register_network(_method)(partial(fusion_model, _method))
