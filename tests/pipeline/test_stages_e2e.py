"""`make download` (loopback) -> `make segments` -> `make features FEATURES=audio`, through the Makefile."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.backbones.vggish import random_vggish
from pipeline.core.store import FeatureStore
from pipeline.demo.server import LoopbackServer
from pipeline.stages.segments import load_patches, load_segments
from tests.support.ave_inputs import OFFSET, write_ave_inputs
from tests.support.media import make_clip

ROOT = Path(__file__).resolve().parents[2]
IDS = ["-e2eDash_01", "e2eFast__02", "e2eGone__03"]


def make(target: str, *args: str, data: Path) -> subprocess.CompletedProcess:
    cmd = [
        "make",
        "-s",
        "-o",
        ".venv/.installed-run",
        target,
        f"AVEL={sys.executable} -m pipeline.cli",
        f"DATA_DIR={data}",
        *args,
    ]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"make {target}:\n{out.stdout}\n{out.stderr}"
    return out


def test_download_segments_features_through_make(tmp_path):
    served = tmp_path / "served"
    make_clip(served / f"{IDS[0]}.mp4", duration=14, fps=8, size=(64, 48), faststart=False)
    make_clip(
        served / f"{IDS[1]}.mp4", duration=14, fps=8, size=(64, 48), sample_rate=44100, channels=2
    )
    data = tmp_path / "data"
    inputs = write_ave_inputs(tmp_path / "inputs", IDS, {v: OFFSET for v in IDS})
    make(
        "annotations",
        f"AVE_ANNOTATIONS={inputs['annotations']}",
        f"AVE_SPLITS={inputs['splits']}",
        f"AUDIOSET_CSV={inputs['csv']}",
        data=data,
    )
    with LoopbackServer(served) as server:
        server.route(f"{IDS[2]}.mp4", status=404)
        make(
            "download",
            f"URL_TEMPLATE={server.base_url}/{{youtube_id}}.mp4",
            "WORKERS=2",
            "SLEEP=0",
            "BACKOFF=0.05",
            data=data,
        )
    seg = make("segments", "FRAMES_PER_SEGMENT=4", "WORKERS=2", data=data)
    assert "segmented: 2" in seg.stdout, seg.stdout
    table = load_segments(data)
    assert set(table["clip_id"]) == set(IDS[:2])
    assert (table["num_frames"] == 80).all() and (table["frame_rule"] == "release").all()
    assert [list(v) for v in table[table["second"] == 3]["frame_indices"]] == [[24, 26, 28, 30]] * 2
    feats = make("features", "FEATURES=audio", "ALLOW_RANDOM_WEIGHTS=1", "NO_DOWNLOAD=1", data=data)
    assert "RANDOM WEIGHTS" in feats.stdout, feats.stdout
    store = FeatureStore.open(data, "audio")
    assert store.is_random and sorted(store.clip_ids) == sorted(IDS[:2])
    model = random_vggish(seed=0).eval()
    with torch.inference_mode():
        for clip_id in IDS[:2]:
            expected = model(torch.from_numpy(load_patches(data, clip_id))).numpy()
            np.testing.assert_allclose(store.get(clip_id), expected, rtol=1e-3, atol=1e-5)  # f16
    rerun = make("segments", "FRAMES_PER_SEGMENT=4", data=data)
    assert "already done: 2" in rerun.stdout
    assert pd.read_parquet(data / "segments_failed.parquet").empty
