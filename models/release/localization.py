"""The release's trained localization networks (AV_att, AV_att_weak, DMRN) as avel networks.

``release_spec(arch)`` lists every tensor the release's network holds (name -> shape; AVE reference 3
and the release's ``models.py`` / ``models_weakly.py`` / ``models_fusion.py``), ``check_release_tensors``
refuses a checkpoint that lacks, misshapes or adds a tensor (naming every one), and
``load_release_model`` renames the tensors onto ``build_model(...)`` with the release's quirks
switched on (``models.release.names``): the attention's audio broadcast, MIL max over time
(AV_att_weak), DMRN's shared block weights and swapped residual branches (``TBMRF_Net.nb_block``
blocks). The release's networks end in a softmax; ours return the logits before it, so per-second
argmax (the evaluation) and probabilities are the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.release.unpickler import (
    ReleaseCheckpoint,
    ReleaseCheckpointError,
    read_release_checkpoint,
)

ARCHS = ("av_att", "av_att_weak", "dmrn")
#: The class each release file pickled (module path as recorded in the pickle).
RELEASE_CLASS = {
    "av_att": "models.att_Net",
    "av_att_weak": "models_weakly.att_Net",
    "dmrn": "models_fusion.TBMRF_Net",
}
#: Where each file sits in the release (``YapengTian/AVE-ECCV18``).
RELEASE_FILE = {
    "av_att": "model/AV_att.pt",
    "av_att_weak": "model/AV_att_weak.pt",
    "dmrn": "DMRN.pt",
}

AUDIO_DIM, VISUAL_DIM, LSTM_HIDDEN, ATT_HIDDEN, REGIONS, HEAD_HIDDEN = 128, 512, 128, 512, 49, 64


def _lstm(prefix: str, input_dim: int) -> dict[str, tuple[int, ...]]:
    gates = 4 * LSTM_HIDDEN
    out: dict[str, tuple[int, ...]] = {}
    for suffix in ("", "_reverse"):
        out[f"{prefix}.weight_ih_l0{suffix}"] = (gates, input_dim)
        out[f"{prefix}.weight_hh_l0{suffix}"] = (gates, LSTM_HIDDEN)
        out[f"{prefix}.bias_ih_l0{suffix}"] = (gates,)
        out[f"{prefix}.bias_hh_l0{suffix}"] = (gates,)
    return out


def release_spec(arch: str, num_classes: int = 29) -> dict[str, tuple[int, ...]]:
    """Every tensor of the release's network for ``arch``: dotted name -> shape."""
    if arch not in ARCHS:
        raise ValueError(f"unknown release architecture {arch!r}; choose one of {ARCHS}")
    spec = {
        **_lstm("lstm_audio", AUDIO_DIM),
        **_lstm("lstm_video", VISUAL_DIM),
        "affine_audio.weight": (ATT_HIDDEN, AUDIO_DIM),
        "affine_audio.bias": (ATT_HIDDEN,),
        "affine_video.weight": (ATT_HIDDEN, VISUAL_DIM),
        "affine_video.bias": (ATT_HIDDEN,),
        "affine_v.weight": (REGIONS, ATT_HIDDEN),
        "affine_g.weight": (REGIONS, ATT_HIDDEN),
        "affine_h.weight": (1, REGIONS),
    }
    fused = 2 * LSTM_HIDDEN
    if arch == "dmrn":
        for branch in ("U_a", "U_v"):  # Sequential(Linear, Tanh, Linear)
            for i in (0, 2):
                spec[f"{branch}.{i}.weight"] = (fused, fused)
                spec[f"{branch}.{i}.bias"] = (fused,)
        spec["L2.weight"] = (num_classes, fused)
    else:
        spec["L1.weight"] = (HEAD_HIDDEN, 2 * fused)
        spec["L1.bias"] = (HEAD_HIDDEN,)
        spec["L2.weight"] = (num_classes, HEAD_HIDDEN)
    spec["L2.bias"] = (num_classes,)
    return spec


def _num_classes(ckpt: ReleaseCheckpoint) -> int:
    bias = ckpt.tensors.get("L2.bias")
    return int(bias.shape[0]) if bias is not None and bias.dim() == 1 and bias.numel() > 1 else 29


def check_release_tensors(arch: str, ckpt: ReleaseCheckpoint) -> dict[str, tuple[int, ...]]:
    """The spec the checkpoint fits; raises naming every missing, misshapen or unexpected tensor."""
    expected_class = RELEASE_CLASS[arch]
    found = ckpt.release_class
    if found in RELEASE_CLASS.values() and found != expected_class:
        other = next(a for a, c in RELEASE_CLASS.items() if c == found)
        raise ReleaseCheckpointError(
            f"{ckpt.path}: holds the release's {found} ({RELEASE_FILE[other]}), not "
            f"{expected_class}; import it with --arch {other}"
        )
    spec = release_spec(arch, _num_classes(ckpt))
    problems = []
    missing = [n for n in spec if n not in ckpt.tensors]
    if missing:
        problems.append("missing: " + ", ".join(missing))
    misshapen = [
        f"{n} (found {tuple(ckpt.tensors[n].shape)}, expected {shape})"
        for n, shape in spec.items()
        if n in ckpt.tensors and tuple(ckpt.tensors[n].shape) != shape
    ]
    if misshapen:
        problems.append("misshapen: " + ", ".join(misshapen))
    unexpected = sorted(set(ckpt.tensors) - set(spec))
    if unexpected:
        problems.append("unexpected: " + ", ".join(unexpected))
    if problems:
        raise ReleaseCheckpointError(
            f"{ckpt.path} ({found or 'state dict'}) does not fit the release's {arch} network "
            f"({expected_class}, {RELEASE_FILE[arch]}):\n  " + "\n  ".join(problems)
        )
    return spec


def release_options(arch: str, ckpt: ReleaseCheckpoint) -> tuple[str, dict[str, Any]]:
    """(our model name, builder options) that compute what the release's network computes."""
    from models.release.names import RELEASE_MODEL, RELEASE_OPTIONS

    options = dict(RELEASE_OPTIONS[arch])
    if arch == "dmrn":
        blocks = ckpt.attributes.get("nb_block", 1)
        if not isinstance(blocks, int) or blocks < 1:
            raise ReleaseCheckpointError(f"{ckpt.path}: TBMRF_Net.nb_block is {blocks!r}")
        options["num_blocks"] = blocks
    return RELEASE_MODEL[arch], options


def build_release_model(arch: str, ckpt: ReleaseCheckpoint):
    """Our network with the checkpoint's tensors (checked first), in eval mode."""
    check_release_tensors(arch, ckpt)
    import torch

    from models import build_model
    from models.release.names import to_ours

    name, options = release_options(arch, ckpt)
    model = build_model(name, num_classes=_num_classes(ckpt), **options)
    ours = model.state_dict()
    state: dict[str, torch.Tensor] = {}
    problems = []
    for key, tensor in ckpt.tensors.items():
        try:
            target = to_ours(arch, key)
        except KeyError as exc:
            problems.append(str(exc.args[0]))
            continue
        if target not in ours or ours[target].shape != tensor.shape:
            problems.append(
                f"{key} -> {target}: no such tensor of shape {tuple(tensor.shape)} in ours"
            )
            continue
        state[target] = tensor.to(ours[target].dtype)
    left = sorted(set(ours) - set(state))
    if left:
        problems.append("ours not filled: " + ", ".join(left))
    if problems:
        raise ReleaseCheckpointError(
            f"{ckpt.path}: cannot map onto avel's {name}:\n  " + "\n  ".join(problems)
        )
    model.load_state_dict(state, strict=True)
    return model.eval()


def resolve_arch(arch: str, ckpt: ReleaseCheckpoint) -> str:
    """``arch``, or for ``"auto"`` the one whose class the pickle records (``models.att_Net``...)."""
    if arch != "auto":
        if arch not in ARCHS:
            raise ValueError(f"unknown release architecture {arch!r}; choose one of {ARCHS}")
        return arch
    for name, release_class in RELEASE_CLASS.items():
        if ckpt.release_class == release_class:
            return name
    raise ReleaseCheckpointError(
        f"{ckpt.path}: holds {ckpt.release_class or 'a state dict'}, none of the release's "
        f"{', '.join(RELEASE_CLASS.values())}; name the network with --arch {'|'.join(ARCHS)}"
    )


def load_release_model(path: str | Path, arch: str = "auto"):
    """Read a release checkpoint; return (our network, the checkpoint record, the arch)."""
    ckpt = read_release_checkpoint(path)
    arch = resolve_arch(arch, ckpt)
    return build_release_model(arch, ckpt), ckpt, arch
