"""Training throughput (clips/s per epoch) and peak RAM on a full-size AVE-shaped store.

``bench_training()`` writes (or reuses) a synthetic store of 4,143 rows with random values in the
real layout (visual maps float16, ~2 GiB), trains one seed for ``epochs`` epochs and returns a dict.
Peak RAM is the process's resident set sampled during training and evaluation (store generation
excluded): ``peak_rss_gib`` includes the memory-mapped store pages the process touched (file-backed,
reclaimable), ``peak_anon_rss_gib`` only its own allocations. ``python -m pipeline.bench.training`` prints it.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from pathlib import Path


def _rss_bytes(field: str = "VmRSS") -> int:
    """Resident memory from /proc/self/status: ``VmRSS`` (all, incl. mapped store pages) or ``RssAnon``."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


class _PeakRSS:
    def __init__(self, interval: float = 0.05):
        self.peak, self.interval, self._stop = _rss_bytes(), interval, threading.Event()
        self.peak_anon = _rss_bytes("RssAnon")
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, _rss_bytes())
            self.peak_anon = max(self.peak_anon, _rss_bytes("RssAnon"))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())
        self.peak_anon = max(self.peak_anon, _rss_bytes("RssAnon"))


def bench_training(
    data_dir: str | Path | None = None,
    rows: int = 4143,
    model: str = "av_att",
    epochs: int = 1,
    batch_size: int = 64,
    device: str = "auto",
    visual_dtype: str = "float16",
    seed: int = 0,
) -> dict:
    """Train ``model`` on a synthetic full-size store; returns throughput and memory figures."""
    import torch

    from models.data.synthetic import make_synthetic_store
    from models.training.engine import TrainConfig, train_seed
    from pipeline.core.device import resolve_device

    tmp = None
    if data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="avel-bench-")
        data_dir = tmp.name
    data_dir = Path(data_dir)
    t0 = time.time()
    if not (data_dir / "features" / "visual" / "meta.json").is_file():
        splits = (3339, 402, 402)  # the AVE localization split sizes
        make_synthetic_store(
            data_dir, rows, seed=seed, splits=splits, visual_dtype=visual_dtype, shard_size=128
        )
    generate = time.time() - t0
    store_bytes = sum(f.stat().st_size for f in (data_dir / "features").rglob("*.npy"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    cfg = TrainConfig(
        str(data_dir),
        model=model,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        run_dir=str(data_dir / "runs"),
        device=str(dev),
    )
    with _PeakRSS() as rss:
        t1 = time.time()
        train_seed(cfg, force=True, progress=False)
        total = time.time() - t1
    history = [
        json.loads(line) for line in (cfg.seed_dir() / "metrics.jsonl").read_text().splitlines()
    ]
    result = {
        "model": model,
        "rows": rows,
        "epochs": epochs,
        "batch_size": batch_size,
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "visual_dtype": visual_dtype,
        "train_clips": json.loads((cfg.seed_dir() / "config.json").read_text())["data"][
            "train_samples"
        ],
        "clips_per_second": [round(h["clips_per_second"], 2) for h in history],
        "epoch_seconds": [round(h["seconds"], 2) for h in history],
        "total_seconds_incl_eval": round(total, 2),
        "store_generate_seconds": round(generate, 2),
        "store_gib": round(store_bytes / 2**30, 3),
        "peak_rss_gib": round(rss.peak / 2**30, 3),
        "peak_anon_rss_gib": round(rss.peak_anon / 2**30, 3),
        "gpu_peak_gib": round(torch.cuda.max_memory_allocated(dev) / 2**30, 3)
        if dev.type == "cuda"
        else None,
    }
    if tmp is not None:
        tmp.cleanup()
    return result


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--rows", type=int, default=4143)
    p.add_argument("--model", default="av_att")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    a = p.parse_args()
    print(
        json.dumps(
            bench_training(a.data_dir, a.rows, a.model, a.epochs, a.batch_size, a.device), indent=2
        )
    )
