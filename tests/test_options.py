"""Options are declared once: the features CLI's flags, defaults and help come from FeaturesConfig."""

from __future__ import annotations

from dataclasses import fields

from pipeline.cli import build_parser
from pipeline.core.options import cli_fields, config_from
from pipeline.stages.features.core import FeaturesConfig


def test_features_flags_are_the_config_and_its_defaults():
    parser = build_parser()
    args = parser.parse_args(["features"])
    assert config_from(FeaturesConfig, args) == FeaturesConfig()  # every default, one source
    offered = {f.name for _, f in cli_fields(FeaturesConfig)}
    internal = {f.name for f in fields(FeaturesConfig) if f.metadata.get("cli") is False}
    assert offered | internal == {f.name for f in fields(FeaturesConfig)}
    assert FeaturesConfig().features == ("audio", "visual") and FeaturesConfig().precision == "fp32"
    text = parser._subparsers._group_actions[0].choices["features"].format_help()
    assert "(default fp32)" in text and "(default audio,visual)" in text


def test_flags_reach_the_config():
    args = build_parser().parse_args(
        ["features", "--features", "visual,c3d", "--no-download", "--precision", "bf16",
         "--address", "auto", "--batch-size", "8"]
    )  # fmt: skip
    cfg = config_from(FeaturesConfig, args)
    assert cfg.features == ("visual", "c3d") and cfg.allow_download is False
    assert cfg.precision == "bf16" and cfg.ray_address == "auto" and cfg.batch_size == 8
