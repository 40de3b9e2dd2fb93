"""Training throughput (clips/s per epoch) and peak RAM on a full-size AVE-shaped store, against the
release's loop, with the step's profile and its fraction of the machine's matmul peak.

``bench_training()`` writes (or reuses) a synthetic store of 4,143 rows with random values in the
real layout (visual maps float16, ~2 GiB), trains one seed for ``epochs`` epochs and returns a dict.
The naive baseline (:func:`naive_release_loop`) is the release's training loop: every batch read from
the float64 h5 files (``export-release --dtype float64``), oneDNN LSTMs, the same network and Adam.
The profile (:func:`step_profile`) counts the FLOPs of one training step (FlopCounterMode) and lists
where its CPU time goes; achieved GFLOP/s over the matmul probe is the fraction of peak.
Peak RAM is the process's resident set sampled during training and evaluation (store generation
excluded): ``peak_rss_gib`` includes the memory-mapped store pages the process touched (file-backed,
reclaimable), ``peak_anon_rss_gib`` only its own allocations. ``python -m pipeline.bench.training`` prints it.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import Callable
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


def naive_release_loop(
    h5_dir: Path, stores: tuple[str, ...], model: str, batches: int, batch_size: int, seed: int = 0
) -> dict:
    """The release's loop: per batch, sorted random train rows read from the float64 h5 files,
    converted to float32 tensors, forward/backward/Adam (oneDNN LSTMs, as PyTorch picks them)."""
    import h5py
    import numpy as np
    import torch

    from models.networks import build_model
    from pipeline.stages.release.layout import FEATURE_FILES, KEY, ORDER_KEY

    with h5py.File(h5_dir / "train_order.h5", "r") as f:
        order = np.asarray(f[ORDER_KEY][()], np.int64)
    with h5py.File(h5_dir / "labels.h5", "r") as f:
        num_classes = int(f[KEY].shape[-1])
    torch.manual_seed(seed)
    net = build_model(model, num_classes=num_classes)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    files = {n: h5py.File(h5_dir / FEATURE_FILES[n][0], "r") for n in stores}
    labels = h5py.File(h5_dir / "labels.h5", "r")
    clips, start = 0, time.perf_counter()
    try:
        for _ in range(batches):
            idx = np.sort(rng.choice(order, size=min(batch_size, len(order)), replace=False))
            x = {n: torch.from_numpy(f[KEY][idx]).float() for n, f in files.items()}
            y = torch.from_numpy(labels[KEY][idx]).argmax(-1)
            visual = x.get("visual", x.get("visual_vec"))
            logits = net(x.get("audio"), visual)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, num_classes), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            clips += len(idx)
    finally:
        for f in (*files.values(), labels):
            f.close()
    return {"clips_per_second": round(clips / (time.perf_counter() - start), 2), "batches": batches}


def step_profile(data_dir: Path, model: str, batch_size: int, seed: int = 0) -> dict:
    """One training step of the optimised path on an in-memory batch: FLOPs per clip, step time
    (best of 3), and the ops that take the time, with oneDNN LSTMs and with the plain ones."""
    import torch

    from models.data.ave import AVEDataset, model_inputs
    from models.networks import build_model
    from models.training.speed import native_cpu_lstm
    from pipeline.bench.peak import counted_flops, top_ops

    torch.manual_seed(seed)
    probe = build_model(model, num_classes=2)
    train = AVEDataset(data_dir, "train", probe.stores, in_memory=True)
    net = build_model(model, num_classes=train.num_classes)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    batch = train.batch(list(range(min(batch_size, len(train)))))
    n = len(batch["segment_labels"])

    def step() -> None:
        logits = net(*model_inputs(batch, "cpu"))
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, train.num_classes), batch["segment_labels"].reshape(-1)
        )
        opt.zero_grad()
        loss.backward()
        opt.step()

    def forward() -> None:
        with torch.no_grad():
            net(*model_inputs(batch, "cpu"))

    def best(fn) -> float:
        fn()
        times = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    out: dict = {"clips": n, "flops_per_clip": counted_flops(step) / n}
    out["forward_flops_per_clip"] = counted_flops(forward) / n
    out["forward_s"] = best(forward)
    out["step_onednn_lstm_s"] = best(step)
    with native_cpu_lstm(net, "cpu"):
        out["step_s"] = best(step)
        out["top_ops"] = top_ops(step)
    out["backward_over_forward"] = round((out["step_s"] - out["forward_s"]) / out["forward_s"], 2)
    return out


def bench_crossmodal(
    device: str = "cpu",
    quick: bool = False,
    model: str = "avdln",
    pairs: int = 8192,
    batch_size: int = 8,
    seed: int = 0,
) -> dict:
    """Cross-modal training steps (AVDLN, batch 8 as in the release) on random pairs: the trainer's
    settings (float32 tensors made once, ``models.training.speed`` threads) against the naive loop
    (float64 arrays converted per batch, all torch threads), and FLOPs per pair."""
    import numpy as np
    import torch

    from models.networks import build_model
    from models.training.speed import default_threads, training_threads
    from pipeline.bench.peak import counted_flops, top_ops
    from pipeline.core.device import resolve_device

    dev = resolve_device(device)
    steps = 64 if quick else 256
    rng = np.random.default_rng(seed)
    v64 = rng.standard_normal((pairs, 512))
    a64 = rng.standard_normal((pairs, 128))
    y64 = (rng.random(pairs) < 0.5).astype(np.float64)
    order = rng.permutation(pairs)

    def loop(net, opt, batch: Callable[[np.ndarray], tuple]) -> float:
        start = time.perf_counter()
        for k in range(steps):
            idx = order[(k * batch_size) % pairs :][:batch_size]
            loss = net.loss(*batch(idx))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return steps * batch_size / (time.perf_counter() - start)

    def fresh():
        torch.manual_seed(seed)
        net = build_model(model).to(dev)
        return net, torch.optim.Adam(net.parameters(), lr=1e-3)

    def naive_batch(idx: np.ndarray) -> tuple:
        return tuple(torch.from_numpy(x[idx]).float().to(dev) for x in (v64, a64, y64))

    net, opt = fresh()
    naive_rate = loop(net, opt, naive_batch)
    naive_threads = torch.get_num_threads()
    v, a, y = (torch.from_numpy(x).float().to(dev) for x in (v64, a64, y64))

    def fast_batch(idx: np.ndarray) -> tuple:
        t = torch.from_numpy(idx).to(dev)
        return v[t], a[t], y[t]

    with training_threads(dev, default_threads("crossmodal")) as threads:  # as the trainer
        net, opt = fresh()
        rate = loop(net, opt, fast_batch)
        one = fast_batch(order[:batch_size])
        flops = counted_flops(lambda: net.loss(*one).backward()) / batch_size
        ops = top_ops(lambda: loop(net, opt, fast_batch)) if dev.type == "cpu" else []
    return {
        "model": model,
        "batch_size": batch_size,
        "device": str(dev),
        "threads": threads,
        "pairs_per_second": round(rate, 1),
        "flops_per_pair": flops,
        "naive": {"pairs_per_second": round(naive_rate, 1), "threads": naive_threads},
        "top_ops": ops,
    }


def bench_training(
    data_dir: str | Path | None = None,
    rows: int = 4143,
    model: str = "av_att",
    epochs: int = 1,
    batch_size: int = 64,
    device: str = "auto",
    visual_dtype: str = "float16",
    seed: int = 0,
    naive: bool = True,
    naive_batches: int = 4,
    threads: int | None = None,
    profile: bool = True,
) -> dict:
    """Train ``model`` on a synthetic full-size store; returns throughput and memory figures, the
    naive baseline (the release's loop on float64 h5 files) and the step profile (CPU)."""
    import torch

    from models.data.synthetic import make_synthetic_store
    from models.training.engine import TrainConfig, train_seed
    from models.training.speed import default_threads, training_threads
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
        threads=threads,
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
        "torch_threads": json.loads((cfg.seed_dir() / "config.json").read_text())["torch_threads"],
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
    if naive:
        from pipeline.stages.release.export_release import ExportReleaseConfig, run_export_release

        h5_dir = data_dir / "release-float64"
        if not (h5_dir / "avel_export.json").is_file():
            run_export_release(
                ExportReleaseConfig(h5_dir, data_dir, dtype="float64", progress=False)
            )
        stores = tuple(json.loads((cfg.seed_dir() / "config.json").read_text())["data"]["stores"])
        result["naive"] = naive_release_loop(h5_dir, stores, model, naive_batches, batch_size, seed)
    if dev.type == "cpu" and profile:
        with training_threads(dev, threads or default_threads("supervised")):
            result["profile"] = step_profile(data_dir, model, batch_size, seed)
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
