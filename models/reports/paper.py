"""The published numbers avel compares against, in one place (AVE reference 5 and the later papers).

Test-split figures in percent. ``SUPERVISED``/``WEAK``: the AVE paper's segment accuracy per network
name of ``models.networks``; ``FUSION``: its fusion comparison; ``SOTA``: later methods;
``CROSSMODAL``: A2V / V2A accuracy of the cross-modality task; ``PAPER_ACCURACY``: the paper's
figure for each released checkpoint (``models.release.localization.ARCHS``).
"""

from __future__ import annotations

#: Supervised segment accuracy (%), AVE paper, by network name.
SUPERVISED = {
    "a": 59.5,
    "v": 55.3,
    "v_att": 58.6,
    "av": 71.4,
    "av_att": 72.7,
    "dmrn": 73.1,
    "dmrfe": 73.3,
    "edtcn": 46.9,
}
#: Weakly-supervised segment accuracy (%), AVE paper, by network name.
WEAK = {"a": 53.4, "v": 52.9, "v_att": 55.6, "av": 63.7, "av_att": 66.7}
#: Supervised segment accuracy (%) with other visual features (supplementary Tables 4-5: C3D, VGG-19 +
#: C3D), by table key. Left empty: those figures are not in the reference we work from, and a number
#: is never guessed; the VGG-19 rows of ``avel table features`` carry the main table's A / V / A+V.
FEATURES: dict[str, float] = {}
#: Later methods' supervised segment accuracy (%): PSP (Zhou et al. 2021), CMBS (Xia & Zhao 2022).
SOTA = {"psp": 77.8, "cmbs": 79.3}
#: Cross-modality localization (%), AVE paper: model -> (A2V, V2A).
CROSSMODAL = {"avdln": (44.8, 35.6), "dcca": (34.8, 34.1)}
#: The paper's test segment accuracy (%) of each released checkpoint.
PAPER_ACCURACY = {
    "av_att": SUPERVISED["av_att"],
    "av_att_weak": WEAK["av_att"],
    "dmrn": SUPERVISED["dmrn"],
}


def crossmodal_reference() -> str:
    """``paper AVDLN 44.8 / 35.6, DCCA 34.8 / 34.1`` (A2V / V2A)."""
    return "paper " + ", ".join(
        f"{name.upper()} {a2v} / {v2a}" for name, (a2v, v2a) in CROSSMODAL.items()
    )
