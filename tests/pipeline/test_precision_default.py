"""Features do not depend on the host's speed: fp32 by default on every device, reduced precision
only when asked, and the precision decision tested both ways by injecting the probe's outcome."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipeline.backbones.precision import ERROR_BOUND, MIN_SPEEDUP, decide_precision
from pipeline.core.store import FeatureStore
from pipeline.stages.features.core import FeaturesConfig
from pipeline.stages.features.stage import format_summary, run_features
from pipeline.stages.segments import SegmentsConfig, run_segments
from tests.support.media import make_clip

#: What a CPU with fast bf16 measures (an AMD EPYC: bf16 1.85x faster) and one where it is slow.
FAST = {
    "precision": "bf16",
    "native": True,
    "error_bound": ERROR_BOUND,
    "min_speedup": MIN_SPEEDUP,
    "speedup": 1.85,
    "speedup_min": 1.8,
    "relative_error": 6.2e-3,
}
SLOW = {**FAST, "speedup": 0.55, "speedup_min": 0.5}


def never(_precision: str) -> dict:
    raise AssertionError("the probe must not run")


@pytest.mark.parametrize("figures", [FAST, SLOW], ids=["bf16-fast", "bf16-slow"])
def test_default_fp32_whatever_the_probe_says(figures):
    precision, probe, advice = decide_precision("fp32", "cpu", never, known=figures)
    assert precision == "fp32" and probe is None
    if figures is FAST:  # advice, never a silent change
        assert "x1.85 faster" in advice and "6.2e-03" in advice and "--precision bf16" in advice
    else:
        assert advice == ""


@pytest.mark.parametrize(("figures", "chosen"), [(FAST, "bf16"), (SLOW, "fp32")])
def test_auto_takes_what_the_injected_probe_measured(figures, chosen):
    precision, probe, _ = decide_precision("auto", "cpu", lambda p: figures, has_native=True)
    assert precision == chosen and probe == figures
    # without native reduced precision auto never measures and stays fp32
    assert decide_precision("auto", "cpu", never, has_native=False)[0] == "fp32"
    # figures measured before decide without measuring again
    assert decide_precision("auto", "cpu", never, known=figures, has_native=True)[0] == chosen


def test_stores_say_fp32_on_a_host_where_bf16_measured_faster(tmp_path):
    """A data folder on a host whose probe said bf16 is 1.85x faster (the figures the stage keeps
    in features/precision.json): the default still writes fp32 stores and the summary advises."""
    data = tmp_path / "data"
    clip_id = "prec_a_____"
    make_clip(data / "clips" / f"{clip_id}.mp4", duration=10, fps=2, size=(32, 32))
    pd.DataFrame({"sample": [0], "youtube_id": [clip_id]}).to_parquet(data / "manifest.parquet")
    run_segments(SegmentsConfig(data, frames_per_segment=1, workers=1, progress=False))
    (data / "features").mkdir(parents=True)
    known = {"vggish|cpu": FAST, "vgg19|32|cpu": FAST}
    (data / "features" / "precision.json").write_text(json.dumps(known))
    cfg = FeaturesConfig(
        data, frame_size=32, workers=0, allow_random_weights=True, allow_download=False,
        progress=False, device="cpu",
    )  # fmt: skip
    summary = run_features(cfg)
    assert not summary["errors"], summary["errors"]
    for name in ("audio", "visual", "visual_vec"):
        store = FeatureStore.open(data, name)
        assert store.meta["precision"] == "fp32" and store.meta["identity"]["precision"] == "fp32"
    text = format_summary(summary)
    assert "advice: vggish: bf16 measured x1.85 faster" in text, text
    assert "advice: vgg19: bf16 measured x1.85 faster" in text, text
