"""The AVE feature release's file layout (Tian et al. 2018), shared by import and export.

Every file holds one dataset ``avadataset`` (the order files: ``order``); rows follow Annotations.txt
(one per annotation row). The background-only videos of the release live in the ``*_noisy.h5`` files
and become ids ``noisy-NNNN`` in the feature stores and rows of ``DATA_DIR/extra_background.parquet``.
"""

from __future__ import annotations

from pipeline.core.manifest import SPLITS

KEY = "avadataset"
ORDER_KEY = "order"
SEGMENTS = 10
NOISY_PREFIX = "noisy-"

#: Feature files of the release: store name -> (file, noisy file, row shape).
FEATURE_FILES = {
    "audio": ("audio_feature.h5", "audio_feature_noisy.h5", (SEGMENTS, 128)),
    "visual": ("visual_feature.h5", "visual_feature_noisy.h5", (SEGMENTS, 7, 7, 512)),
    "visual_vec": ("visual_feature_vec.h5", None, (SEGMENTS, 512)),
}
#: What ``export-release`` writes: the release's feature files plus avel's own, in the same layout
#: (``visual_feature_c3d.h5``: the C3D pool5 vectors (N, 10, 512); ``visual_feature_clip.h5``: CLIP
#: image embeddings (N, 10, D), D from the model, ``None`` below; ``audio_feature_clap.h5``: CLAP
#: audio embeddings (N, 10, 512)), for repositories that read them.
EXPORT_FILES: dict[str, tuple[str, str | None, tuple[int | None, ...]]] = {
    **FEATURE_FILES,
    "c3d": ("visual_feature_c3d.h5", None, (SEGMENTS, 512)),
    "clip": ("visual_feature_clip.h5", None, (SEGMENTS, None)),
    "clap": ("audio_feature_clap.h5", None, (SEGMENTS, 512)),
}
LABEL_FILES = ("labels.h5", "labels_closs.h5", "mil_labels.h5", "labels_noisy.h5")
#: ``{split}_order.h5`` (the localization splits) and ``{split}_order_match.h5`` (cross-modality).
ORDER_FILES = tuple(f"{s}_order{m}.h5" for m in ("", "_match") for s in SPLITS)


def noisy_id(i: int) -> str:
    """Store id of row ``i`` of the release's ``*_noisy.h5`` files."""
    return f"{NOISY_PREFIX}{i:04d}"


def order_file_column(name: str) -> tuple[str, str]:
    """``train_order_match.h5`` -> (``train``, ``match_split``): the split and its manifest column."""
    split = name.split("_order")[0]
    return split, ("match_split" if name.endswith("_match.h5") else "split")
