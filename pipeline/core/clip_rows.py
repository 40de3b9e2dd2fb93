"""The segments table (one row per clip and second) grouped by clip once, for the per-clip work
that reads it at any size (fingerprints, frame plans): no pandas group per clip."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


class ClipRows:
    """The segments table grouped by clip once: clip IDs in order of first appearance, and each
    clip's rows (sorted by second) as a slice of the re-ordered columns; a column's Python values
    are read once for every clip (not one pandas group per clip)."""

    def __init__(self, segments: pd.DataFrame) -> None:
        codes, uniques = pd.factorize(segments["clip_id"].astype(str), sort=False)
        order = np.lexsort((segments["second"].to_numpy(), codes))
        self.table = segments.iloc[order]
        counts = np.bincount(codes, minlength=len(uniques))
        self.ends = np.cumsum(counts)
        self.starts = self.ends - counts
        self.ids = [str(c) for c in uniques]
        self._columns: dict[str, Any] = {}

    @classmethod
    def of(cls, segments: pd.DataFrame | ClipRows) -> ClipRows:
        return segments if isinstance(segments, ClipRows) else cls(segments)

    def column(self, name: str) -> Any:
        """The column's values in clip-and-second order (numpy scalars as pandas gives them)."""
        if name not in self._columns:
            values = self.table[name]
            self._columns[name] = values.tolist() if name == "frame_indices" else values.array
        return self._columns[name]

    def clip_values(self, name: str, k: int) -> Any:
        """Clip ``k``'s value of a per-clip column, or its list of per-second frame indices."""
        values = self.column(name)
        if name == "frame_indices":
            return values[self.starts[k] : self.ends[k]]
        return values[self.starts[k]]

    def frame_plans(self) -> dict[str, np.ndarray]:
        """Clip ID -> its (10, F) planned frame indices."""
        plans = self.column("frame_indices")
        return {
            clip_id: np.asarray(plans[self.starts[k] : self.ends[k]], dtype=np.int64)
            for k, clip_id in enumerate(self.ids)
        }
