"""Run the rehearsal: annotations -> download -> segments -> audio features -> training on audio,
visual features on a sample; each stage killed (SIGKILL, whole process group) part-way and resumed.

Every stage runs as the ``avel`` command a user runs (``python -m pipeline.cli ...``), in its own
process group, with its process tree's memory (PSS) sampled. A stage is killed once its own output
shows ``kill_at`` of its work done (download: clips, segments: receipts, features: shards,
training: epochs; annotations: after a fixed delay), then run again to the end. The report
(``RUN_DIR/report.{json,md}``) gives per stage the wall time of both runs, throughput, peak memory
and where it was killed; the download ledger against the injected faults (per ID: nothing lost,
nothing misclassified); and the projected time for full AVE visual features at 16 frames per second
on this CPU and per GPU.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.bench.peak import cores, tree_pss_kib
from pipeline.core.io import atomic_path, write_json
from pipeline.core.layout import DataLayout
from pipeline.rehearsal.inputs import (
    AVE_ROWS,
    AVE_VIDEOS,
    EXPECTED,
    FaultServer,
    fault_plan,
    generated_ave,
    make_sources,
    offsets,
    read_ave,
    subset,
    write_segments_csv,
)
from pipeline.stages.download.ledger import load_ledger

#: VGG-19 frames/s assumed for one current GPU when no GPU was measured (fp16, 224 px; the bench's
#: GPU rows replace it with a measurement): a projection, labelled as such in the report.
ASSUMED_GPU_FRAMES_PER_S = 2000.0
#: CPU cores decoding for that GPU in the projection (a typical GPU node share).
ASSUMED_GPU_HOST_CORES = 16


@dataclass
class RehearsalConfig:
    data_dir: Path = Path("data/rehearsal")
    run_dir: Path = Path("runs/rehearsal")
    clips: int | None = 400  # annotation rows (None or 0: every row)
    ave_annotations: Path | None = None  # the real Annotations.txt; None: a generated AVE-like list
    ave_splits: Path | None = None  # folder of the split lists (txt or the release's h5)
    seed: int = 0
    workers: int = 4  # download workers
    epochs: int = 5  # training on audio
    visual_sample: int = 2  # clips whose visual features are extracted (timed)
    frame_size: int = 224  # visual frame side of the sample (smaller only for tests)
    precision: str = "fp32"  # of the audio features and the visual sample (the stage default)
    kill: bool = True
    kill_at: float = 0.4
    shard_size: int | None = None  # audio store shard size (default: ~8 shards, to kill between)
    timeout: float = 3600.0  # per stage run
    mix: dict[str, float] | None = (
        None  # fault shares (default pipeline.rehearsal.inputs.DEFAULT_MIX)
    )
    progress: bool = True


@dataclass
class StageRun:
    name: str
    argv: list[str]
    seconds: float = 0.0
    killed_at: float | None = None  # fraction done when killed (None: not killed)
    killed_after_s: float | None = None
    resumed_seconds: float = 0.0
    returncodes: list[int] = field(default_factory=list)
    peak_mib: float = 0.0
    items: int = 0
    unit: str = ""

    @property
    def throughput(self) -> float:
        return self.items / max(self.seconds + self.resumed_seconds, 1e-9)


def _say(cfg: RehearsalConfig, text: str) -> None:
    if cfg.progress:
        print(f"[rehearsal] {text}", file=sys.stderr, flush=True)


def _run(
    argv: list[str], log: Path, timeout: float, done: Callable[[], float] | None, kill_at: float
) -> tuple[int, float, float, float | None]:
    """Run ``avel argv`` (own process group); kill it once ``done() >= kill_at``.
    Returns (returncode, seconds, peak PSS MiB, fraction done when killed or None)."""
    cmd = [sys.executable, "-m", "pipeline.cli", *argv]
    start = time.perf_counter()
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(cmd, stdout=out, stderr=out, start_new_session=True)
    peak, killed, polls = 0, None, 0
    while proc.poll() is None:
        if polls % 5 == 0:  # a PSS sample costs ~10 ms of kernel time: every 0.25 s, ~4% of a core
            peak = max(peak, tree_pss_kib(proc.pid))
        polls += 1
        if done is not None and killed is None:
            fraction = done()
            if fraction >= kill_at:
                os.killpg(proc.pid, signal.SIGKILL)
                killed = fraction
        if time.perf_counter() - start > timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise TimeoutError(f"{' '.join(argv[:2])}: still running after {timeout:.0f} s")
        time.sleep(0.05)
    return proc.returncode, time.perf_counter() - start, peak / 1024, killed


def run_stage(
    cfg: RehearsalConfig,
    stage: StageRun,
    done: Callable[[], float],
    delay_kill: float | None = None,
) -> StageRun:
    """Run one stage, killed part-way (when ``cfg.kill``) and resumed to the end."""
    log = cfg.run_dir / "logs" / f"{stage.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    if cfg.kill:
        began = time.perf_counter()

        def when() -> float:
            if delay_kill is not None:
                return 1.0 if time.perf_counter() - began >= delay_kill else 0.0
            return done()

        rc, sec, peak, killed = _run(stage.argv, log, cfg.timeout, when, cfg.kill_at)
        stage.returncodes.append(rc)
        stage.seconds, stage.peak_mib = sec, peak
        if killed is not None:
            stage.killed_after_s = round(sec, 2)
            stage.killed_at = None if delay_kill is not None else round(killed, 3)
            _say(cfg, f"{stage.name}: killed after {sec:.1f} s; resuming")
            rc, sec, peak, _ = _run(stage.argv, log, cfg.timeout, None, 1.0)
            stage.returncodes.append(rc)
            stage.resumed_seconds, stage.peak_mib = sec, max(stage.peak_mib, peak)
    else:
        rc, sec, peak, _ = _run(stage.argv, log, cfg.timeout, None, 1.0)
        stage.returncodes.append(rc)
        stage.seconds, stage.peak_mib = sec, peak
    if stage.returncodes[-1] != 0:
        raise RuntimeError(
            f"rehearsal stage {stage.name} failed (exit {stage.returncodes[-1]}); see {log}"
        )
    _say(cfg, f"{stage.name}: done in {stage.seconds + stage.resumed_seconds:.1f} s")
    return stage


def ledger_check(data_dir: Path, plan: dict[str, str]) -> dict[str, Any]:
    """The download ledger against the injected faults: counts per fault and status, the IDs that
    are missing from the ledger and those whose status is not the expected one."""
    ledger = load_ledger(data_dir)
    status = dict(zip(ledger["clip_id"], ledger["status"], strict=True))
    table: dict[str, dict[str, int]] = {}
    wrong, lost = [], []
    for y, fault in plan.items():
        got = status.get(y)
        if got is None:
            lost.append(y)
            continue
        table.setdefault(fault, {}).setdefault(got, 0)
        table[fault][got] += 1
        if got != EXPECTED[fault]:
            wrong.append({"id": y, "injected": fault, "expected": EXPECTED[fault], "ledger": got})
    injected = {f: sum(v == f for v in plan.values()) for f in EXPECTED}
    expected = {}
    for fault, n in injected.items():
        expected[EXPECTED[fault]] = expected.get(EXPECTED[fault], 0) + n
    counts = ledger["status"].value_counts().to_dict()
    return {
        "injected": injected,
        "expected_status_counts": expected,
        "ledger_status_counts": {k: int(v) for k, v in counts.items()},
        "by_fault": table,
        "lost": lost,
        "misclassified": wrong,
        "extra_in_ledger": sorted(set(status) - set(plan)),
        "exact": not lost and not wrong and set(status) == set(plan),
    }


def _count(folder: Path, pattern: str) -> int:
    return sum(1 for _ in folder.glob(pattern)) if folder.is_dir() else 0


def project_visual(
    sample: dict[str, Any], decode: dict[str, float], ok_share: float
) -> dict[str, Any]:
    """Projected time for AVE's visual features at 16 frames per second: the network at the
    sample's VGG-19 rate, decoding at ``decode`` (the probe on an AVE-like 320x240 25 fps clip; the
    rehearsal's own sources are small)."""
    clips = round(AVE_VIDEOS * ok_share)
    frames = clips * 160
    net = sample["optimised"]["vgg19_frames_per_s"]
    decode_clips_per_core = decode["clips_per_s"] / decode["processes"]
    cpu_hours = max(frames / net, clips / (decode_clips_per_core * cores())) / 3600
    gpu_net_hours = frames / ASSUMED_GPU_FRAMES_PER_S / 3600
    gpu_decode_hours = clips / (decode_clips_per_core * ASSUMED_GPU_HOST_CORES) / 3600
    return {
        "clips": clips,
        "frames": frames,
        "cpu_vgg19_frames_per_s": net,
        "cpu_precision": sample["precision"],
        "decode_clips_per_s_per_core": round(decode_clips_per_core, 3),
        "cpu_hours": round(cpu_hours, 1),
        "gpu_assumed_frames_per_s": ASSUMED_GPU_FRAMES_PER_S,
        "gpu_host_cores": ASSUMED_GPU_HOST_CORES,
        "gpu_hours": round(max(gpu_net_hours, gpu_decode_hours), 2),
        "gpu_bound": "decoding" if gpu_decode_hours > gpu_net_hours else "network",
    }


def run_rehearsal(cfg: RehearsalConfig) -> dict[str, Any]:
    """Build the inputs, serve them, run every stage with its kill-and-resume; write the report."""
    from pipeline.backbones.frames import count_frames
    from pipeline.bench.peak import decode_probe
    from pipeline.bench.visual import bench_visual, make_bench_clips

    cfg.data_dir, cfg.run_dir = Path(cfg.data_dir), Path(cfg.run_dir)
    started = time.perf_counter()
    work = cfg.data_dir / "inputs"
    if cfg.ave_annotations is not None:
        splits = cfg.ave_splits or Path(cfg.ave_annotations).parent / "splits"
        ave = read_ave(Path(cfg.ave_annotations), Path(splits))
    else:
        ave = generated_ave(AVE_ROWS if not cfg.clips else cfg.clips, cfg.seed)
    ave = subset(ave, cfg.clips)
    paths = ave.write(work / "ave")
    ids = ave.unique_ids
    offs = offsets(ids, cfg.seed)
    write_segments_csv(work / "segments.csv", offs)
    plan = fault_plan(ids, cfg.mix, seed=cfg.seed)
    t0 = time.perf_counter()
    sources = make_sources(work / "sources", cfg.seed)
    _say(
        cfg,
        f"{len(ave.lines)} rows, {len(ids)} videos ({ave.source}); sources in {time.perf_counter() - t0:.1f} s",
    )
    layout = DataLayout(cfg.data_dir)
    ok_ids = [y for y, f in plan.items() if EXPECTED[f] == "ok"]
    d = ["--data-dir", str(cfg.data_dir)]
    stages: list[StageRun] = []
    report: dict[str, Any] = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "rows": len(ave.lines),
        "videos": len(ids),
        "repeated_ids": len(ave.lines) - len(ids),
        "ids_starting_with_dash": sum(y.startswith("-") for y in ids),
        "source": ave.source,
        "machine": {"cores": cores(), "load_before": round(os.getloadavg()[0], 2)},
    }
    server = FaultServer(work / "sources", ave, plan, sources).start()
    try:
        ann = StageRun(
            "annotations",
            [
                "annotations",
                *d,
                "--ave-annotations",
                str(paths["annotations"]),
                "--ave-splits",
                str(work / "ave"),
                "--audioset-csv",
                str(work / "segments.csv"),
            ],
            items=len(ave.lines),
            unit="rows",
        )
        stages.append(run_stage(cfg, ann, lambda: 0.0, delay_kill=1.0))
        dl = StageRun(
            "download",
            [
                "download",
                *d,
                "--url-template",
                f"{server.base_url}/{{youtube_id}}.mp4",
                "--workers",
                str(cfg.workers),
                "--sleep",
                "0",
                "--backoff",
                "0.2",
                "--rate-limit-pause",
                "0.5",
                "--max-rate-limited",
                "20",
                "--retries",
                "3",
            ],
            items=len(ids),
            unit="videos",
        )
        stages.append(
            run_stage(cfg, dl, lambda: _count(layout.clips, "*.mp4") / max(len(ok_ids), 1))
        )
        report["rate_limited_answers_served"] = server.limited_answers
    finally:
        server.stop()
    report["ledger"] = ledger_check(cfg.data_dir, plan)
    _say(cfg, f"ledger exact: {report['ledger']['exact']}")
    seg = StageRun("segments", ["segments", *d, "--frames-per-segment", "16"], items=len(ok_ids))
    seg.unit = "clips"
    stages.append(
        run_stage(cfg, seg, lambda: _count(layout.segments, "*.patches.npy") / max(len(ok_ids), 1))
    )
    shard_size = cfg.shard_size or max(2, -(-len(ok_ids) // 8))  # default: ~8 shards
    shards = max(1, -(-len(ok_ids) // shard_size))
    feat = StageRun(
        "features (audio)",
        [
            "features",
            *d,
            "--features",
            "audio",
            "--allow-random-weights",
            "--no-download",
            "--precision",
            cfg.precision,
            "--shard-size",
            str(shard_size),
        ],
        items=len(ok_ids),
        unit="clips",
    )
    stages.append(
        run_stage(
            cfg,
            feat,
            lambda: _count(layout.store("audio"), "shard-*.npy") / shards,
        )
    )
    name = "rehearsal-audio"
    seed_dir = cfg.run_dir / "train" / name / "seed-1"
    train = StageRun(
        "train (audio, supervised)",
        [
            "train",
            "supervised",
            *d,
            "--model",
            "a",
            "--epochs",
            str(cfg.epochs),
            "--seeds",
            "1",
            "--run-dir",
            str(cfg.run_dir / "train"),
            "--name",
            name,
            "--device",
            "cpu",
        ],
        items=cfg.epochs,
        unit="epochs",
    )

    def epochs_done() -> float:
        path = seed_dir / "metrics.jsonl"
        lines = path.read_text().splitlines() if path.is_file() else []
        return len(lines) / max(cfg.epochs, 1)

    stages.append(run_stage(cfg, train, epochs_done))
    config = seed_dir / "config.json"
    if config.is_file():  # throughput in training clips (epochs x train clips, both runs' work)
        train.items = cfg.epochs * json.loads(config.read_text())["data"]["train_samples"]
        train.unit = "training clips"
    metrics = seed_dir / "metrics.json"
    if metrics.is_file():
        m = json.loads(metrics.read_text())
        report["training"] = {k: m.get(k) for k in ("test_accuracy", "val_accuracy", "best_epoch")}

    sample = [layout.clip(y) for y in ok_ids[: cfg.visual_sample] if layout.clip(y).is_file()]
    _say(cfg, f"visual features on a sample of {len(sample)} clips")
    t0 = time.perf_counter()
    visual = bench_visual(
        clips=sample,
        per_second=1,
        size=cfg.frame_size,
        precision=cfg.precision,
        batch_size=16,
        num_workers=min(2, cores()),
        model_frames=2,
        naive=False,
    )
    visual_seconds = time.perf_counter() - t0
    report["visual_sample"] = {
        "clips": len(sample),
        "seconds": round(visual_seconds, 1),
        "frames_in_clip": [count_frames(p) for p in sample],
        **{k: visual[k] for k in ("precision", "optimised", "decode_probe", "precision_probes")},
    }
    ok_share = len(ok_ids) / max(len(ids), 1)
    ave_like = decode_probe(make_bench_clips(work / "ave-like-clip", 1)[0])
    report["visual_sample"]["decode_probe_ave_like"] = ave_like
    report["projection"] = project_visual(visual, ave_like, ok_share)
    report["stages"] = [{**asdict(s), "throughput": round(s.throughput, 3)} for s in stages]
    report["machine"]["load_after"] = round(os.getloadavg()[0], 2)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["ok"] = report["ledger"]["exact"] and all(s.returncodes[-1] == 0 for s in stages)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    write_json(report, cfg.run_dir / "report.json")
    with atomic_path(cfg.run_dir / "report.md") as tmp:
        tmp.write_text(format_report(report))
    return report


def format_report(report: dict[str, Any]) -> str:
    """The rehearsal report for people (markdown)."""
    led = report["ledger"]
    lines = [
        f"Rehearsal: {report['rows']} annotation rows, {report['videos']} videos "
        f"({report['repeated_ids']} repeated IDs, {report['ids_starting_with_dash']} starting with '-'); "
        f"{report['source']}",
        f"{report['machine']['cores']} cores, load average {report['machine']['load_before']} "
        f"before, {report['machine']['load_after']} after; {report['seconds']:.0f} s in all",
        "",
        "| stage | wall s (first run + resume) | killed at | throughput | peak memory MiB |",
        "|---|---|---|---|---|",
    ]
    for s in report["stages"]:
        if s["killed_at"] is not None:
            killed = f"{100 * s['killed_at']:.0f}% done ({s['killed_after_s']:.1f} s)"
        elif s["killed_after_s"] is not None:
            killed = f"after {s['killed_after_s']:.1f} s"
        else:
            killed = "not killed"
        lines.append(
            f"| {s['name']} | {s['seconds']:.1f} + {s['resumed_seconds']:.1f} | {killed} | "
            f"{s['throughput']:.2f} {s['unit']}/s | {s['peak_mib']:.0f} |"
        )
    lines += [
        "",
        f"Ledger against the injected faults: {'EXACT' if led['exact'] else 'MISMATCH'} "
        f"(lost {len(led['lost'])}, misclassified {len(led['misclassified'])})",
        "",
        "| injected | videos | expected status | ledger |",
        "|---|---|---|---|",
    ]
    for fault, n in led["injected"].items():
        got = ", ".join(f"{k} {v}" for k, v in sorted(led["by_fault"].get(fault, {}).items()))
        lines.append(f"| {fault} | {n} | {EXPECTED[fault]} | {got or '-'} |")
    lines.append(
        f"\nLedger status counts {led['ledger_status_counts']}; expected {led['expected_status_counts']}; "
        f"429 answers served {report.get('rate_limited_answers_served')}"
    )
    if "training" in report:
        t = report["training"]
        lines.append(
            f"Training on audio (model a): best epoch {t['best_epoch']}, val {t['val_accuracy']:.3f}, "
            f"test {t['test_accuracy']:.3f} (random-weight VGGish unless its weights are cached)"
        )
    v, p = report["visual_sample"], report["projection"]
    lines += [
        f"Visual sample: {v['clips']} clips, VGG-19 {v['precision']} "
        f"{v['optimised']['vgg19_frames_per_s']:.2f} frames/s, decode "
        f"{v['decode_probe']['clips_per_s']:.2f} clips/s on {v['decode_probe']['processes']} processes "
        f"(its 128x96 sources; an AVE-like 320x240 25 fps clip: "
        f"{v['decode_probe_ave_like']['clips_per_s']:.2f} clips/s)",
        f"Projected AVE visual features at 16 frames/s ({p['clips']} clips, {p['frames']} frames): "
        f"this CPU {p['cpu_hours']:.1f} h; one GPU at an assumed {p['gpu_assumed_frames_per_s']:.0f} "
        f"frames/s with {p['gpu_host_cores']} decoding cores {p['gpu_hours']:.2f} h "
        f"({p['gpu_bound']}-bound)",
    ]
    return "\n".join(lines) + "\n"
