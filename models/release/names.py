"""Where the release's PyTorch-0.3 tensors go in our networks (for importing its checkpoints).

The release's ``att_Net`` (``models.py`` and ``models_weakly.py``) and ``TBMRF_Net``
(``models_fusion.py``) keep every layer at top level; ours nest them. ``to_ours(arch, key)`` renames a
release state-dict key; the options that make our network compute what the release computes are in
``RELEASE_OPTIONS`` (attention broadcast quirk, DMRN's swapped residual branches, shared blocks, MIL max).
"""

from __future__ import annotations

_ATT = {
    "affine_": "attention.affine_",
    "lstm_": "lstm_",
    "L1.": "classifier.L1.",
    "L2.": "classifier.L2.",
}
_DMRN = {
    "affine_": "attention.affine_",
    "lstm_": "lstm_",
    "U_a.": "fusion.blocks.0.U_a.",
    "U_v.": "fusion.blocks.0.U_v.",
    "L2.": "classifier.",
}

PREFIXES = {"av_att": _ATT, "av_att_weak": _ATT, "dmrn": _DMRN}
RELEASE_MODEL = {"av_att": "av_att", "av_att_weak": "av_att", "dmrn": "dmrn"}
RELEASE_OPTIONS = {
    "av_att": {"broadcast": "release"},
    "av_att_weak": {"broadcast": "release", "mil": "max"},
    "dmrn": {"broadcast": "release", "swap_residual": True, "shared_blocks": True},
}


def to_ours(arch: str, key: str) -> str:
    """Our state-dict key for a release key; KeyError when the key has no place in our network."""
    for old, new in PREFIXES[arch].items():
        if key.startswith(old):
            return new + key[len(old) :]
    raise KeyError(f"{arch}: release tensor {key!r} has no counterpart in avel's network")
