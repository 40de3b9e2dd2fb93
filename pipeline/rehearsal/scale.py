"""The scale rehearsal (``avel rehearsal --scale audioset``, ``make rehearsal SCALE=audioset``):
AudioSet-size metadata generated offline (:mod:`.audioset`) through every metadata path without
media, each path in a process of its own, timed, with its peak memory (the largest resident set of
its process tree, from ``wait4`` in a small launcher: a child forked from this process would count
this process's memory as its own).

Paths, at the list's size (AudioSet: 2,084,348 rows) and, where the cost per clip is the point,
at AVE's size (4,143 rows) in the same run:

- annotations: the three segment CSVs and the class list -> manifest (``avel annotations``);
- download, first run: every clip planned and queued, the ledger created; the loopback source
  answers HTTP 429 at once, so the run stops (exit 3) without a clip (``avel download``);
- download, second run (full size only): the same on the full ledger (what a resumed run pays);
- download, end to end: the first ``tried`` clips tried against a source answering 404
  (``--limit``); clips per second between the run's first and last ledger update, so the run's
  start-up and its end (fold, summary) are left out;
- ledger updates: a stream of injected outcomes, each update timed, the journal folded at the end;
- feature store: plan, fill the even shards, resume the rest and finish, merge (the index from
  the receipts), open (:mod:`.probes`);
- training's join of the manifest and the store (``AVEDataset``) and one batch;
- segments, at AVE's size and at ``segment_clips`` clips (a segmented clip is three files, so not
  at the list's size): the folder as the stage leaves it (receipts written), the stage's run over
  it (nothing to decode: the tables rebuilt from every receipt), and the features driver's
  planning of the visual store on its table, up to the Ray engine's work table; the report gives
  each per clip and scaled to the list's size.

The report (``RUN_DIR/report.{json,md}``) has per path the rows, wall time, peak memory and its
own figures.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipeline.bench.peak import cores
from pipeline.core.io import atomic_path, write_json
from pipeline.core.layout import DataLayout
from pipeline.demo.server import LoopbackServer
from pipeline.rehearsal.audioset import AUDIOSET_LISTS, AUDIOSET_ROWS, write_audioset
from pipeline.rehearsal.inputs import AVE_ROWS

#: The folder marker of a data folder this rehearsal made (and may remove when it runs again).
MARKER = ".scale-rehearsal"


@dataclass
class ScaleConfig:
    data_dir: Path = Path("data/rehearsal-audioset")
    run_dir: Path = Path("runs/rehearsal-audioset")
    rows: int = AUDIOSET_ROWS  # rows of the generated lists
    small: int = AVE_ROWS  # the size every per-clip cost is compared with
    seed: int = 0
    updates: int | None = None  # per ledger stream (default: a quarter of the rows and 1%)
    tried: int = 48  # clips tried end to end (0: skip)
    workers: int = 4
    shard_size: int = 256
    segment_clips: int = 100_000  # segmented clips at full size (0: no segments paths)
    timeout: float = 3600.0  # per path
    progress: bool = True


@dataclass
class PathRun:
    name: str
    size: str  # "full" or "small"
    rows: int
    seconds: float
    peak_mib: float
    returncode: int
    detail: dict[str, Any]


def _say(cfg: ScaleConfig, text: str) -> None:
    if cfg.progress:
        print(f"[scale] {text}", file=sys.stderr, flush=True)


#: Runs a command and writes its peak resident memory (KiB, from wait4) to a file: started small,
#: so the command's figure is its own, not the rehearsal's (a fork counts its parent's pages).
_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _run(argv: list[str], log: Path, timeout: float) -> tuple[int, float, float, str]:
    """Run ``argv`` (own process group, killed after ``timeout`` s); returns its exit code, wall
    seconds, peak resident MiB and the last line of its output."""
    out, peak = log.with_suffix(".out"), log.with_suffix(".peak")
    peak.unlink(missing_ok=True)
    with open(out, "w") as stdout, open(log, "a") as stderr:
        stderr.write(f"\n$ {' '.join(argv)}\n")
        stderr.flush()
        start = time.perf_counter()
        cmd = [sys.executable, "-c", _LAUNCHER, str(peak), *argv]
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, start_new_session=True)
        timer = threading.Timer(timeout, os.killpg, (proc.pid, signal.SIGKILL))
        timer.start()
        try:
            proc.wait()
        finally:
            timer.cancel()
        seconds = time.perf_counter() - start
    kib = int(peak.read_text()) if peak.is_file() else 0
    lines = out.read_text().strip().splitlines()
    return proc.returncode, seconds, kib / 1024, lines[-1] if lines else ""


def _fresh(folder: Path) -> Path:
    """An empty data folder of this rehearsal (one it made before is removed, nothing else)."""
    if folder.exists():
        if not (folder / MARKER).is_file():
            raise RuntimeError(
                f"{folder} exists and is not a scale-rehearsal folder: pass another --data-dir"
            )
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / MARKER).write_text("made by avel rehearsal --scale; removed when it runs again\n")
    return folder


def _inputs(cfg: ScaleConfig, rows: int) -> dict[str, Path]:
    """The generated lists of ``rows`` rows (made once per size and seed)."""
    folder = cfg.data_dir / f"inputs-{rows}-seed{cfg.seed}"
    done = folder / "done.json"
    names = [*AUDIOSET_LISTS, "class_labels_indices.csv"]
    if not done.is_file():
        write_audioset(folder, rows, cfg.seed)
        write_json({"rows": rows, "seed": cfg.seed}, done)
    return {name: folder / name for name in names}


def _first_ids(data_dir: Path, count: int) -> list[str]:
    """The source IDs of the manifest's first ``count`` rows (the first clips a run tries)."""
    batches = pq.ParquetFile(DataLayout(data_dir).manifest).iter_batches(
        count, columns=["youtube_id"]
    )
    return [str(v) for v in next(batches).column(0).to_pylist()]


class Runner:
    """Runs the paths of one rehearsal and keeps their records."""

    def __init__(self, cfg: ScaleConfig) -> None:
        self.cfg = cfg
        self.runs: list[PathRun] = []
        self.logs = cfg.run_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def avel(self, name: str, size: str, rows: int, argv: list[str], want: int = 0) -> PathRun:
        return self._path(name, size, rows, [sys.executable, "-m", "pipeline.cli", *argv], want)

    def probe(self, name: str, size: str, rows: int, probe: str, **args: Any) -> PathRun:
        argv = [sys.executable, "-m", "pipeline.rehearsal.probes", probe, json.dumps(args)]
        return self._path(name, size, rows, argv, 0)

    def _path(self, name: str, size: str, rows: int, argv: list[str], want: int) -> PathRun:
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        log = self.logs / f"{len(self.runs):02d}-{slug}-{size}.log"
        rc, seconds, peak, last = _run(argv, log, self.cfg.timeout)
        if rc != want:
            raise RuntimeError(
                f"scale rehearsal: {name} ({size}) exited {rc}, not {want}; see {log}"
            )
        detail = json.loads(last) if last.startswith("{") else {}
        run = PathRun(name, size, rows, round(seconds, 2), round(peak), rc, detail)
        self.runs.append(run)
        _say(self.cfg, f"{name} ({rows:,} rows): {seconds:.1f} s, {peak:.0f} MiB")
        return run


def run_scale(cfg: ScaleConfig) -> dict[str, Any]:
    """Generate the lists, run every path at both sizes, write the report; returns it."""
    cfg.data_dir, cfg.run_dir = Path(cfg.data_dir), Path(cfg.run_dir)
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    sizes = {"small": min(cfg.small, cfg.rows), "full": cfg.rows}
    updates = cfg.updates or cfg.rows // 4 + cfg.rows // 100 + 1
    runner = Runner(cfg)
    t0 = time.perf_counter()
    inputs = {size: _inputs(cfg, rows) for size, rows in sizes.items()}
    generated = round(time.perf_counter() - t0, 1)
    _say(cfg, f"inputs ready in {generated} s")
    folders = {size: _fresh(cfg.data_dir / size) for size in sizes}
    source = cfg.data_dir / "empty-source"  # no file: every clip is answered 404 or 429
    source.mkdir(exist_ok=True)
    with LoopbackServer(source) as limited, LoopbackServer(source) as gone:
        for size, rows in sizes.items():
            d = ["--data-dir", str(folders[size])]
            lists = ",".join(str(inputs[size][n]) for n in AUDIOSET_LISTS)
            labels = str(inputs[size]["class_labels_indices.csv"])
            runner.avel(
                "annotations",
                size,
                rows,
                ["annotations", *d, "--clip-list", lists, "--clip-list-format", "audioset"]
                + ["--class-labels", labels],
            )
            for yid in _first_ids(folders[size], 8 * cfg.workers):
                limited.route(f"{yid}.mp4", status=429, body="Too Many Requests")
            common = [*d, "--workers", str(cfg.workers), "--sleep", "0", "--retries", "1"]
            common += ["--backoff", "0", "--no-progress"]
            stop = ["--url-template", limited.base_url + "/{youtube_id}.mp4"]
            stop += ["--max-rate-limited", "1", "--rate-limit-pause", "0.1"]
            runner.avel("download, first run", size, rows, ["download", *common, *stop], want=3)
            if size == "full":  # what every resumed run pays
                runner.avel("download, second run", size, rows, ["download", *common, *stop], 3)
            if cfg.tried:
                argv = ["download", *common, "--url-template", gone.base_url + "/{youtube_id}.mp4"]
                argv += ["--limit", str(cfg.tried)]
                run = runner.avel(f"download, {cfg.tried} clips tried", size, rows, argv)
                run.detail = clips_per_second(folders[size], cfg.tried)
            runner.probe(
                "ledger updates", size, rows, "ledger", data_dir=str(folders[size]), updates=updates
            )
        full = str(folders["full"])
        for step in ("plan", "fill", "resume", "merge", "open"):
            runner.probe(
                f"store {step}",
                "full",
                sizes["full"],
                "store",
                data_dir=full,
                step=step,
                shard_size=cfg.shard_size,
            )
        runner.probe("training join", "full", sizes["full"], "join", data_dir=full)
    if cfg.segment_clips:
        segment_paths(cfg, runner, folders, {**sizes, "full": min(cfg.segment_clips, cfg.rows)})
    report = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "sizes": sizes,
        "updates_per_stream": updates,
        "inputs_seconds": generated,
        "machine": {
            "cores": cores(),
            "load_before": round(load_before, 2),
            "load_after": round(os.getloadavg()[0], 2),
        },
        "paths": [asdict(r) for r in runner.runs],
        "ledger": ledger_summary(runner.runs),
        "end_to_end": end_to_end(runner.runs),
        "per_clip": per_clip(runner.runs, sizes["full"]),
        "seconds": round(time.perf_counter() - started, 1),
    }
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    write_json(report, cfg.run_dir / "report.json")
    with atomic_path(cfg.run_dir / "report.md") as tmp:
        tmp.write_text(format_scale_report(report))
    return report


#: The segments paths, in the order they run at each size.
SEGMENT_PATHS = ("segments: receipts written", "segments table from receipts", "features plan")


def segment_paths(
    cfg: ScaleConfig, runner: Runner, folders: dict[str, Path], clips: dict[str, int]
) -> None:
    """The segments paths at each size: a folder of segmented clips from the first ``clips`` of
    the size's manifest, the stage's run over it, the features driver's planning on its table."""
    for size, count in clips.items():
        folder = str(_fresh(cfg.data_dir / f"segments-{size}"))
        source = str(folders[size])
        receipts, table, plan = SEGMENT_PATHS
        runner.probe(
            receipts, size, count, "receipts", source_dir=source, data_dir=folder, clips=count
        )
        runner.probe(table, size, count, "segments", data_dir=folder)
        runner.probe(plan, size, count, "features_plan", data_dir=folder, shard_size=cfg.shard_size)


def per_clip(runs: list[PathRun], rows: int) -> dict[str, Any]:
    """Per segments path: what one more clip adds (wall µs, peak KiB: full minus small over the
    clips between), and the full run's figures carried on to ``rows`` clips at that rate."""
    out: dict[str, Any] = {}
    for name in SEGMENT_PATHS:
        at = {r.size: r for r in runs if r.name == name}
        if not {"small", "full"} <= set(at) or at["full"].rows <= at["small"].rows:
            continue
        small, full = at["small"], at["full"]
        more = full.rows - small.rows
        us = (full.seconds - small.seconds) / more * 1e6
        kib = (full.peak_mib - small.peak_mib) * 1024 / more
        out[name] = {
            "us_per_clip": round(us),
            "kib_per_clip": round(kib, 1),
            "scaled_s": round(full.seconds + us * (rows - full.rows) / 1e6),
            "scaled_gib": round((full.peak_mib + kib * (rows - full.rows) / 1024) / 1024, 1),
        }
        if "disk_mib" in full.detail:  # the folder written: its memory is the setup's, not a run's
            disk = full.detail["disk_mib"] / full.rows * rows / 1024
            out[name] = {**out[name], "scaled_gib": None, "scaled_disk_gib": round(disk, 1)}
    return out


def ledger_summary(runs: list[PathRun]) -> dict[str, Any]:
    """One clip's update at both sizes and their ratios (full over small)."""
    by_size = {r.size: r.detail for r in runs if r.name == "ledger updates"}
    small, full = by_size.get("small", {}), by_size.get("full", {})
    out: dict[str, Any] = {"small": small, "full": full}
    for key in ("update_median_us", "update_mean_us"):
        if small.get(key) and full.get(key):
            out[f"ratio_{key[7:-3]}"] = round(full[key] / small[key], 2)
    return out


def clips_per_second(data_dir: Path, tried: int) -> dict[str, Any]:
    """Rate of the run that tried the manifest's first ``tried`` clips, from their ledger times:
    (clips - 1) over the span from the first result to the last."""
    from pipeline.core.manifest import clip_ids, load_manifest
    from pipeline.stages.download.ledger import load_ledger

    first = clip_ids(load_manifest(data_dir, columns=["clip_id", "youtube_id"]).head(tried))
    ledger = load_ledger(data_dir)
    times = ledger.loc[ledger["clip_id"].isin(first), "updated_at"]
    span = (times.max() - times.min()).total_seconds()
    return {"clips": int(len(times)), "clips_per_s": round((len(times) - 1) / span, 3)}


def end_to_end(runs: list[PathRun]) -> dict[str, Any]:
    """Clips per second of the end-to-end runs, per size, and their ratio (small over full)."""
    out: dict[str, Any] = {}
    for run in runs:
        if "clips_per_s" in run.detail:
            out[run.size] = {"clips_per_s": run.detail["clips_per_s"], "rows": run.rows}
    if "small" in out and "full" in out and out["full"]["clips_per_s"] > 0:
        out["ratio"] = round(out["small"]["clips_per_s"] / out["full"]["clips_per_s"], 2)
    return out


def _notes(run: dict[str, Any]) -> str:
    d = run["detail"]
    if run["name"] == "ledger updates":
        return (
            f"{d['updates']:,} updates: median {d['update_median_us']:.0f} µs, mean "
            f"{d['update_mean_us']:.0f} µs, p99 {d['update_p99_us']:.0f} µs, max "
            f"{d['update_max_ms']:.0f} ms ({d['folds_during_stream']} folds); open "
            f"{d['open_s']} s, fold at close {d['fold_at_close_s']} s"
        )
    if run["name"].startswith("store"):
        return ", ".join(f"{k} {v}" for k, v in d.items() if k != "seconds")
    if run["name"] == "features plan":
        return (
            f"{d['groups']:,} groups of whole clips; "
            + ", ".join(f"{k[:-2]} {v}" for k, v in d.items() if k.endswith("_s") and v)
            + f"; Ray work table {d['ray_table_mib']} MiB"
        )
    if run["name"].startswith("segments"):
        return ", ".join(f"{k} {v:,}" for k, v in d.items() if k != "seconds")
    if run["name"] == "training join":
        return (
            f"{d['samples']:,} train samples joined in {d['join_s']} s; batch of {d['batch_rows']}"
        )
    if "clips_per_s" in d:
        return (
            f"{d['clips']} clips answered 404: {d['clips_per_s']} clips/s from first to last result"
        )
    return ""


def format_scale_report(report: dict[str, Any]) -> str:
    """The scale rehearsal's report for people (markdown)."""
    m, sizes = report["machine"], report["sizes"]
    lines = [
        f"Scale rehearsal: AudioSet-format lists of {sizes['full']:,} rows (and {sizes['small']:,} "
        f"for comparison), 527 classes, generated offline in {report['inputs_seconds']} s; "
        f"{m['cores']} cores, load average {m['load_before']} before, {m['load_after']} after; "
        f"{report['seconds']:.0f} s in all",
        "",
        "| path | rows | wall s | peak MiB | figures |",
        "|---|---|---|---|---|",
    ]
    for run in report["paths"]:
        lines.append(
            f"| {run['name']} | {run['rows']:,} | {run['seconds']:.1f} | {run['peak_mib']:.0f} | "
            f"{_notes(run)} |"
        )
    led = report["ledger"]
    if "ratio_median" in led:
        lines += [
            "",
            f"One clip's ledger update, {sizes['full']:,} rows over {sizes['small']:,} rows (same "
            f"run, same stream): median x{led['ratio_median']}, mean with the folds "
            f"x{led['ratio_mean']}.",
        ]
    e2e = report["end_to_end"]
    if "ratio" in e2e:
        lines.append(
            f"Download end to end against 404 answers: {e2e['small']['clips_per_s']} clips/s at "
            f"{sizes['small']:,} rows, {e2e['full']['clips_per_s']} clips/s at {sizes['full']:,} "
            f"rows (small over full x{e2e['ratio']}; 1 = no slower at full size)."
        )
    for name, g in report.get("per_clip", {}).items():
        if g.get("scaled_disk_gib") is not None:
            lines.append(
                f"{name}: +{g['us_per_clip']} µs a clip; at {sizes['full']:,} clips that is "
                f"~{g['scaled_s']:,} s and ~{g['scaled_disk_gib']} GiB on disk."
            )
            continue
        lines.append(
            f"{name}: +{g['us_per_clip']} µs and +{g['kib_per_clip']} KiB of peak a clip "
            f"(between the two sizes); at {sizes['full']:,} clips that is ~{g['scaled_s']:,} s "
            f"and ~{g['scaled_gib']} GiB."
        )
    return "\n".join(lines) + "\n"
