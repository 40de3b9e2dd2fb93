"""``avel convert-vggish``: fetch (or take) the official VGGish TF checkpoint and convert it once
into the cached torch state dict under DATA_DIR/weights/vggish (needs the ``tf`` extra)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pipeline.core.layout import DataLayout


@dataclasses.dataclass
class ConvertVGGishConfig:
    data_dir: Path
    vggish_checkpoint: str | None = None  # local path or URL; None: cache, else the public URL
    weights_dir: Path | None = None  # default DATA_DIR/weights/vggish
    allow_download: bool = True


def run_convert_vggish(cfg: ConvertVGGishConfig) -> dict:
    """Make sure converted VGGish weights exist; return their record."""
    from pipeline.backbones.vggish_weights import ensure_vggish_weights

    cache = Path(cfg.weights_dir) if cfg.weights_dir else DataLayout(cfg.data_dir).weights("vggish")
    info = ensure_vggish_weights(cache, cfg.vggish_checkpoint, allow_download=cfg.allow_download)
    return {"path": str(info.path), **info.to_dict()["weights"]}
