"""Model registry: ``build_model(name, num_classes=29, **options)`` is the one way to get a network.

Names: ``a``, ``v``, ``v_att``, ``av``, ``av_att``, ``dmrn``, ``dmrfe`` (AVE reference 3).
Common options: ``broadcast`` ("paper" | "release", attention models), ``lstm_hidden`` (128),
``mil`` (None | "mean" | "max": the pooling used when the network is trained weakly; the network is
the same, per-second logits out). DMRN/DMRFE: ``num_blocks`` (1), ``shared_blocks`` (False; True as in
the release), ``swap_residual`` (False; True as in the release). Other families (the fusion zoo,
ED-TCN, AVDLN) add themselves with ``@register("name")``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from models.attention import AudioGuidedAttention
from models.dmrn import DMRN, EnsembleClassifier
from models.localization import Concat, LocalizationNet, MLPHead
from models.weak import MIL_MODES

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice")
        MODELS[name] = builder
        return builder

    return wrap


def build_model(name: str, num_classes: int = 29, **options: Any) -> nn.Module:
    """Build a registered network; ``model.config`` records name, classes and options."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    mil = options.get("mil")
    if mil is not None and mil not in MIL_MODES:
        raise ValueError(f"mil must be one of {MIL_MODES} or None, got {mil!r}")
    model = MODELS[name](num_classes=num_classes, **options)
    model.config = {"name": name, "num_classes": num_classes, **options}
    return model


def _net(
    num_classes,
    audio,
    visual,
    attend,
    fusion,
    classifier,
    broadcast="paper",
    lstm_hidden=128,
    mil=None,
) -> LocalizationNet:
    attention = AudioGuidedAttention(broadcast=broadcast) if attend else None
    return LocalizationNet(
        classifier, audio, visual, attention, fusion, lstm_hidden=lstm_hidden, mil=mil
    )


@register("a")
def audio_only(
    num_classes: int = 29, lstm_hidden: int = 128, mil: str | None = None
) -> LocalizationNet:
    head = MLPHead(2 * lstm_hidden, num_classes)
    return _net(num_classes, True, False, False, None, head, lstm_hidden=lstm_hidden, mil=mil)


@register("v")
def visual_only(
    num_classes: int = 29, lstm_hidden: int = 128, mil: str | None = None
) -> LocalizationNet:
    head = MLPHead(2 * lstm_hidden, num_classes)
    return _net(num_classes, False, True, False, None, head, lstm_hidden=lstm_hidden, mil=mil)


@register("v_att")
def visual_attended(
    num_classes: int = 29, broadcast: str = "paper", lstm_hidden: int = 128, mil: str | None = None
) -> LocalizationNet:
    head = MLPHead(2 * lstm_hidden, num_classes)
    return _net(num_classes, False, True, True, None, head, broadcast, lstm_hidden, mil)


@register("av")
def audio_visual(
    num_classes: int = 29, lstm_hidden: int = 128, mil: str | None = None
) -> LocalizationNet:
    head = MLPHead(4 * lstm_hidden, num_classes)
    return _net(num_classes, True, True, False, Concat(), head, lstm_hidden=lstm_hidden, mil=mil)


@register("av_att")
def audio_visual_attended(
    num_classes: int = 29, broadcast: str = "paper", lstm_hidden: int = 128, mil: str | None = None
) -> LocalizationNet:
    head = MLPHead(4 * lstm_hidden, num_classes)
    return _net(num_classes, True, True, True, Concat(), head, broadcast, lstm_hidden, mil)


@register("dmrn")
def dmrn(
    num_classes: int = 29,
    broadcast: str = "paper",
    lstm_hidden: int = 128,
    num_blocks: int = 1,
    shared_blocks: bool = False,
    swap_residual: bool = False,
    mil: str | None = None,
) -> LocalizationNet:
    dim = 2 * lstm_hidden
    fusion = DMRN(dim, num_blocks, shared_blocks, swap_residual)
    return _net(
        num_classes,
        True,
        True,
        True,
        fusion,
        nn.Linear(dim, num_classes),
        broadcast,
        lstm_hidden,
        mil,
    )


@register("dmrfe")
def dmrfe(
    num_classes: int = 29,
    broadcast: str = "paper",
    lstm_hidden: int = 128,
    num_blocks: int = 1,
    shared_blocks: bool = False,
    swap_residual: bool = False,
    mil: str | None = None,
) -> LocalizationNet:
    dim = 2 * lstm_hidden
    fusion = DMRN(dim, num_blocks, shared_blocks, swap_residual, return_branches=True)
    head = EnsembleClassifier(dim, num_classes)
    return _net(num_classes, True, True, True, fusion, head, broadcast, lstm_hidden, mil)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# families that add themselves with @register (imported last: they import ``register``): the fusion
# zoo, ED-TCN, supplementary attentions, the later literature (psp, cmbs) and ours (avel-net)
from models import avelnet, cmbs, edtcn, fusion_nets, psp, supplementary  # noqa: E402,F401
