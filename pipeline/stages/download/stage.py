"""The download stage: manifest clips -> validated ``DATA_DIR/clips/<clip_id>.mp4`` (AVE: clip_id = youtube_id).

The ledger's rows are keyed by ``clip_id``; its ``youtube_id`` column names the source video.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import shutil
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.core.io import DiskFullError, disk_full_error, free_bytes, is_disk_full
from pipeline.core.layout import DataLayout
from pipeline.core.manifest import CLIP_SECONDS, clip_ids, load_manifest
from pipeline.core.media import require_ffmpeg
from pipeline.stages.download.attempt import Attempts
from pipeline.stages.download.classify import (
    OK,
    PENDING,
    PERMANENT,
    STATUSES,
    TRANSIENT,
    UNAVAILABLE,
    UNUSABLE,
    Outcome,
    SetupError,
    SystemicError,
    classify_exception,
)
from pipeline.stages.download.fetch import (
    DEFAULT_FORMAT,
    DEFAULT_URL_TEMPLATE,
    JS_RUNTIME_ADVICE,
    FetchOptions,
    check_url_template,
    find_js_runtime,
    is_youtube,
    source_url,
)
from pipeline.stages.download.ledger import Ledger
from pipeline.stages.download.validate import ClipCheck, check_clip

NO_OFFSET = "no_offset"
#: Exit codes: finished, bad input/environment, stopped on rate limiting, stopped on a systemic
#: error (disk full, ...), finished but some clips are still transient (run it again later).
EXIT_OK, EXIT_SETUP, EXIT_RATE_LIMITED, EXIT_SYSTEMIC, EXIT_TRANSIENT = 0, 2, 3, 4, 5
#: Below this many free bytes, a failed attempt is taken for a full disk, not for the video.
LOW_SPACE = 1 << 20

RATE_LIMIT_ADVICE = (
    "the site is rate-limiting this session. Wait (YouTube's limit lasts up to an hour), then run "
    "the same command again (it resumes), with a longer --sleep, fewer --workers, or --cookies FILE "
    "(cookies.txt exported from a logged-in browser)."
)


@dataclass
class DownloadConfig:
    data_dir: Path = Path("data")
    url_template: str = DEFAULT_URL_TEMPLATE
    from_dir: Path | None = None  # ingest existing <clip_id>.mp4 clips instead of downloading
    workers: int = 4
    sleep: float = 5.0  # polite pause (s, jittered) before each request of a worker
    rate_limit: str | None = None
    cookies: str | None = None
    limit: int | None = None  # only the first N unique IDs of the manifest
    num_shards: int = 1  # with shard_index: only clips k of the (limited) list with k % K == i
    shard_index: int = 0
    retry_failed: bool = False  # also retry permanent failures (unavailable/unusable)
    format: str = DEFAULT_FORMAT
    max_rate_limited: int = 5  # consecutive rate-limited answers before stopping
    rate_limit_pause: float = 300.0  # first pause of every worker on rate limiting (doubles)
    retries: int = 3  # attempts per video per run for transient failures
    backoff: float = 10.0  # base of the exponential back-off between attempts (s)
    socket_timeout: float = 30.0  # one network read (yt-dlp's own requests)
    transfer_timeout: float = 300.0  # one whole attempt: fetch, cut and check (s)
    js_runtime: str = "auto"  # JavaScript runtime for YouTube: auto, or a deno/node/bun path
    progress: bool = True


@dataclass(slots=True)
class Video:
    youtube_id: str  # the source video (fills {youtube_id} of the URL template)
    start: float | None
    end: float | None
    clip_id: str | None = None  # the clip's key (file name, ledger row); None = youtube_id

    @property
    def key(self) -> str:
        return self.clip_id or self.youtube_id

    @property
    def range(self) -> str:
        """``start-end`` of the source, as the ledger records it ("" without offsets)."""
        if self.start is None or self.end is None:
            return ""
        return f"{float(self.start):.3f}-{float(self.end):.3f}"

    @property
    def expected(self) -> float:
        if self.start is None or self.end is None:
            return float(CLIP_SECONDS)
        return float(self.end) - float(self.start)


@dataclass
class RunState:
    """Shared by the workers: pauses on rate limiting, the stop flag and this run's counts."""

    max_rate_limited: int
    pause: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    resume_at: float = 0.0
    consecutive_limited: int = 0
    stop_reason: str | None = None
    exit_code: int = EXIT_OK
    counts: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    def stop(self, reason: str, code: int) -> None:
        with self.lock:
            if self.stop_reason is None:
                self.stop_reason, self.exit_code = reason, code

    @property
    def stopped(self) -> bool:
        return self.stop_reason is not None

    def sleep(self, seconds: float) -> bool:
        """Sleep unless stopped; False when the run stopped meanwhile."""
        end = time.monotonic() + seconds
        while not self.stopped and time.monotonic() < end:
            time.sleep(min(0.2, max(0.0, end - time.monotonic())))
        return not self.stopped

    def wait_turn(self) -> bool:
        """Block while every worker is paused for rate limiting; False when stopped."""
        while not self.stopped:
            delay = self.resume_at - time.monotonic()
            if delay <= 0:
                return True
            time.sleep(min(0.2, delay))
        return False

    def rate_limited(self, reason: str) -> None:
        with self.lock:
            self.consecutive_limited += 1
            self.counts["rate_limited_answers"] += 1
            n = self.consecutive_limited
            if n >= self.max_rate_limited:
                if self.stop_reason is None:
                    self.stop_reason = f"{n} rate-limited answers in a row (last: {reason})"
                    self.exit_code = EXIT_RATE_LIMITED
                return
            pause = self.pause * 2 ** (n - 1) * random.uniform(1.0, 1.25)
            self.resume_at = max(self.resume_at, time.monotonic() + pause)
            self.notes.append(f"rate limited ({reason[:120]}): all workers pause {pause:.1f} s")

    def answered(self) -> None:
        with self.lock:
            self.consecutive_limited = 0


class Stage:
    """One run of the download stage over a data folder."""

    def __init__(self, cfg: DownloadConfig, js_runtime: tuple[str, str] | None = None) -> None:
        self.cfg = cfg
        self.layout = DataLayout(cfg.data_dir)
        self.clips = self.layout.clips
        self.partial = self.clips / ".partial"
        self.ledger = Ledger(self.layout.ledger)
        self.state = RunState(cfg.max_rate_limited, cfg.rate_limit_pause)
        self.fetch_opts = FetchOptions(
            cfg.format, cfg.cookies, cfg.rate_limit, cfg.socket_timeout, js_runtime
        )
        self.attempts = Attempts()

    def clip_path(self, clip_id: str) -> Path:
        return self.layout.clip(clip_id)

    # ----------------------------------------------------------------- one video

    def _accept(
        self, video: Video, produced: Path, check: ClipCheck, source: str, attempts: int
    ) -> None:
        os.replace(produced, self.clip_path(video.key))
        self.ledger.update(
            video.key,
            OK,
            "ok",
            "",
            attempts=attempts,
            bytes=check.bytes,
            duration=check.duration,
            source=source,
            range=video.range if source == "download" else "",
        )

    def disk_full(self) -> DiskFullError | None:
        """The disk-full error when the clips' file system is (nearly) full, else None."""
        free = free_bytes(self.partial)
        return disk_full_error(self.clips) if free is not None and free < LOW_SPACE else None

    def _attempt(self, video: Video) -> tuple[Outcome, Path | None, ClipCheck | None]:
        """One download try (its own process, at most ``transfer_timeout`` s); returns the outcome
        and, when valid, the produced file. A failure on a full disk is the disk's, not the video's."""
        workdir = self.partial / f"{video.key}.{uuid.uuid4().hex[:8]}"
        url = source_url(self.cfg.url_template, video.youtube_id, video.start, video.end)
        result = self.attempts.run(
            url,
            video.start,
            video.end,
            video.expected,
            workdir,
            self.fetch_opts,
            self.cfg.transfer_timeout,
        )
        if result.outcome.status != OK:
            full = self.disk_full()  # measured before the partial files are removed
            shutil.rmtree(workdir, ignore_errors=True)
            if full is not None or result.outcome.kind == "disk_full":
                full = full or disk_full_error(self.clips)
                return Outcome(TRANSIENT, "disk_full", str(full), systemic=True), None, None
        return result.outcome, result.path, result.check

    def download(self, video: Video) -> str:
        """Download one video with retries; record the result; return its ledger status."""
        cfg, state = self.cfg, self.state
        outcome: Outcome | None = None
        attempts = 0
        for attempt in range(max(1, cfg.retries)):
            if not state.wait_turn():
                break
            if cfg.sleep > 0 and not state.sleep(cfg.sleep * random.uniform(0.5, 1.5)):
                break
            if not state.wait_turn():
                break
            attempts += 1
            outcome, produced, check = self._attempt(video)
            if outcome.status == OK:
                try:
                    self._accept(video, produced, check, "download", attempts)
                finally:
                    shutil.rmtree(produced.parent, ignore_errors=True)
                state.answered()
                return OK
            if outcome.systemic:
                self.stop_systemic(outcome.reason)
                return (
                    self.ledger.status(video.key) or PENDING
                )  # not the video's fault: not recorded
            if outcome.kind == "stopped" and state.stopped:
                return self.ledger.status(video.key) or PENDING
            if outcome.rate_limited:
                state.rate_limited(outcome.reason)
            elif outcome.status in PERMANENT:
                state.answered()
                break
            if attempt + 1 < cfg.retries:
                if not state.sleep(cfg.backoff * 2**attempt * random.uniform(0.5, 1.5)):
                    break
        if outcome is None:  # stopped before trying: stays as it was
            return self.ledger.status(video.key) or PENDING
        self.ledger.update(
            video.key,
            outcome.status,
            outcome.kind,
            outcome.reason,
            attempts=attempts,
            source="download",
        )
        return outcome.status

    def stop_systemic(self, reason: str) -> None:
        """Stop the run (disk full, ...): no new attempts, the running ones killed."""
        self.state.stop(reason, EXIT_SYSTEMIC)
        self.attempts.kill_all()

    def ingest(self, video: Video, source: Path) -> str:
        """Validate an existing clip from ``--from-dir`` (its decoded length, not its header's) and
        copy it in; return its status. A bad local copy is ``unusable`` (a download may still work)."""
        check = check_clip(source, video.expected)
        if not check.ok:
            status = UNUSABLE
            self.ledger.update(
                video.key,
                status,
                check.kind,
                f"{source}: {check.problem}",
                attempts=1,
                source="from-dir",
            )
            return status
        workdir = self.partial / f"{video.key}.{uuid.uuid4().hex[:8]}"
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            copy = workdir / "clip.mp4"
            shutil.copyfile(source, copy)
            self._accept(video, copy, check, "from-dir", 1)
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full_error(self.clips) from exc
            raise
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return OK

    def adopt(self, video: Video) -> bool:
        """A clip file exists but the ledger does not say ok (e.g. killed before recording it)."""
        path = self.clip_path(video.key)
        check = check_clip(path, video.expected)
        if check.ok:
            self.ledger.update(
                video.key,
                OK,
                "ok",
                "",
                bytes=check.bytes,
                duration=check.duration,
                source="existing file",
            )
            return True
        path.unlink(missing_ok=True)
        return False

    # ----------------------------------------------------------------- the run

    def plan(
        self, videos: list[Video], from_files: dict[str, Path] | None
    ) -> list[tuple[str, Video]]:
        """Decide per video: skip, record, or queue a job (``download``/``ingest``/``adopt``)."""
        jobs: list[tuple[str, Video]] = []
        counts = self.state.counts
        present = self.layout.clips_present()  # keys were checked as file names with the manifest
        for video in videos:
            row = self.ledger.get(video.key) or {}
            status, kind, source = row.get("status"), row.get("kind"), row.get("source") or ""
            have_file = video.key in present
            cut_from = row.get("range") or ""
            if status == OK and have_file and cut_from and video.range and cut_from != video.range:
                # the manifest asks for another part of the source: the clip is stale. It is set
                # aside (kept, not deleted) and the new range downloaded.
                stale = self.clips / ".stale" / f"{video.key}.{cut_from}.mp4"
                stale.parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.clip_path(video.key), stale)
                self.ledger.update(
                    video.key,
                    PENDING,
                    "range_changed",
                    f"the clip was cut at {cut_from} s, the manifest now asks {video.range} s "
                    f"(old clip kept as {stale})",
                    source="manifest",
                )
                counts["range_changed"] += 1
                status, have_file = PENDING, False
            if status == OK and have_file:
                counts["already_ok"] += 1
                continue
            if have_file:
                jobs.append(("adopt", video))
                continue
            if from_files is not None:
                if video.key in from_files:
                    jobs.append(("ingest", video))
                else:
                    counts["not_in_from_dir"] += 1
                continue
            if video.start is None or video.end is None:
                if status != UNAVAILABLE or kind != NO_OFFSET:
                    self.ledger.update(
                        video.key,
                        UNAVAILABLE,
                        NO_OFFSET,
                        "no AudioSet offset known: the ID is absent from the AudioSet segment CSVs "
                        "given to `make annotations`",
                        source="manifest",
                    )
                counts["no_offset"] += 1
                continue
            retryable = (
                self.cfg.retry_failed or kind == NO_OFFSET or source == "from-dir"
            )  # a clip offset is known now / the local copy was bad, the network one may be fine
            if status in PERMANENT and not retryable:
                counts["skipped_permanent"] += 1
                continue
            jobs.append(("download", video))
        return jobs

    def run(self, videos: list[Video], from_files: dict[str, Path] | None) -> dict:
        self.clips.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.partial, ignore_errors=True)  # leftovers of a killed run
        for stale in self.clips.glob(f".{self.ledger.path.name}.*"):  # a ledger write cut short
            stale.unlink(missing_ok=True)
        self.ledger.ensure({v.key: v.youtube_id for v in videos})
        jobs = self.plan(videos, from_files)
        run_counts: Counter = Counter()
        self.state.counts["queued"] = len(jobs)

        def work(job: tuple[str, Video]) -> tuple[str, str]:
            try:
                return run_job(job)
            except Exception as exc:  # noqa: BLE001 - one bad video is recorded, not fatal
                if is_disk_full(exc):  # the machine's problem: stop, record nothing for the video
                    full = exc if isinstance(exc, DiskFullError) else disk_full_error(self.clips)
                    self.stop_systemic(str(full))
                    return job[0], "disk full"
                outcome = classify_exception(exc)
                if outcome.systemic:
                    self.stop_systemic(outcome.reason)
                reason = f"{type(exc).__name__}: {exc}"
                with contextlib.suppress(Exception):
                    self.ledger.update(job[1].key, TRANSIENT, outcome.kind, reason)
                self.state.notes.append(f"{job[1].key}: {reason}")
                return job[0], TRANSIENT

        def run_job(job: tuple[str, Video]) -> tuple[str, str]:
            action, video = job
            if self.state.stopped:
                return action, "not started"
            if action == "adopt":
                if self.adopt(video):
                    return action, OK
                action = "download"  # the file was invalid and is gone: do what a fresh run would
                if from_files is not None:
                    if video.key not in from_files:
                        return "ingest", "not in --from-dir"
                    action = "ingest"
            if action == "ingest":
                return action, self.ingest(video, from_files[video.key])
            if video.start is None or video.end is None:
                return action, "no offset"
            return action, self.download(video)

        bar = None
        if self.cfg.progress and jobs:
            from tqdm import tqdm

            bar = tqdm(
                total=len(jobs), unit="video", desc="download" if from_files is None else "ingest"
            )
        seen_notes = 0
        with ThreadPoolExecutor(max_workers=max(1, self.cfg.workers)) as pool:
            futures: set[Future] = set()
            try:
                window = 4 * max(1, self.cfg.workers)
                for future in _windowed(pool, work, jobs, futures, window, self.state):
                    action, status = future.result()
                    run_counts[f"{action}:{status}"] += 1
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(
                            ok=sum(v for k, v in run_counts.items() if k.endswith(":ok"))
                        )
                    for note in self.state.notes[seen_notes:]:
                        (bar.write if bar is not None else _stderr)(note)
                    seen_notes = len(self.state.notes)
            except KeyboardInterrupt:
                self.state.stop("interrupted (Ctrl-C)", 130)
                for f in futures:
                    f.cancel()
                self.attempts.kill_all()
                raise
            finally:
                if bar is not None:
                    bar.close()
        jobs.clear()  # 2 M clips are 2 M jobs: freed before the ledger is folded
        try:
            self.ledger.close()  # the run's journal folded into status.parquet
        except DiskFullError as exc:  # the journal keeps every result; the next run folds it
            self.stop_systemic(str(exc))
        return self.summarise(videos, run_counts)

    def summarise(self, videos: list[Video], run_counts: Counter) -> dict:
        table = self.ledger.table()
        if len(table) != len(videos):  # the ledger holds every video of the run (ensure)
            table = table[table["clip_id"].isin([v.key for v in videos])]
        by_status = {s: int((table["status"] == s).sum()) for s in STATUSES}
        tried = by_status[OK] + by_status[UNAVAILABLE] + by_status[UNUSABLE] + by_status[TRANSIENT]
        failed = table[table["status"].isin([UNAVAILABLE, UNUSABLE, TRANSIENT])]
        top = []
        for (status, kind), group in failed.groupby(["status", "kind"], sort=False):
            top.append(
                {
                    "status": status,
                    "kind": kind,
                    "count": int(len(group)),
                    "example": str(group["reason"].iloc[0])[:160],
                }
            )
        top.sort(key=lambda r: -r["count"])
        new_ok = sum(v for k, v in run_counts.items() if k.endswith(":ok"))
        exit_code = self.state.exit_code
        if exit_code == EXIT_OK and by_status[TRANSIENT]:
            exit_code = EXIT_TRANSIENT  # finished, but not done: a script must be able to tell
        return {
            "videos": len(videos),
            "status": by_status,
            "availability": (by_status[OK] / tried) if tried else None,
            "this_run": {
                "queued": self.state.counts["queued"],
                "downloaded": run_counts["download:ok"],
                "ingested": run_counts["ingest:ok"],
                "adopted": run_counts["adopt:ok"],
                "new_ok": new_ok,
                "already_ok": self.state.counts["already_ok"],
                "skipped_permanent": self.state.counts["skipped_permanent"],
                "no_offset": self.state.counts["no_offset"],
                "not_in_from_dir": self.state.counts["not_in_from_dir"],
                "range_changed": self.state.counts["range_changed"],
                "rate_limited_answers": self.state.counts["rate_limited_answers"],
                "results": dict(sorted(run_counts.items())),
            },
            "top_failures": top[:10],
            "stopped": self.state.stop_reason,
            "exit_code": exit_code,
            "ledger": str(self.ledger.path),
            "clips_dir": str(self.clips),
        }


def _windowed(
    pool: ThreadPoolExecutor,
    fn: Callable,
    items: list,
    pending: set[Future],
    window: int,
    state: RunState,
) -> Iterator[Future]:
    """Futures of ``fn`` over ``items`` as they finish, at most ``window`` submitted at a time
    (``pending`` holds them), none once the run has stopped: memory and time follow the window
    and the work done, not the list (2 M clips are 2 M jobs)."""
    for item in items:
        if state.stopped:
            break
        while len(pending) >= window:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            pending.difference_update(done)
            yield from done
        pending.add(pool.submit(fn, item))
    while pending:
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        pending.difference_update(done)
        yield from done


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def manifest_videos(
    data_dir: Path, limit: int | None = None, num_shards: int = 1, shard_index: int = 0
) -> list[Video]:
    """Unique clips of the manifest (``clip_id``; AVE: YouTube IDs) in first-appearance order, with
    their source video and offsets; the first ``limit``, then every ``num_shards``-th from
    ``shard_index``."""
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"--shard-index {shard_index} outside 0..{num_shards - 1}")
    manifest = load_manifest(data_dir, columns=["youtube_id", "clip_id", "clip_start", "clip_end"])
    columns = [
        manifest["youtube_id"].astype(str).tolist(),
        *(
            manifest[c].astype("Float64").to_numpy(float, na_value=np.nan).tolist()
            if c in manifest.columns
            else [np.nan] * len(manifest)  # a manifest without offsets: none is known
            for c in ("clip_start", "clip_end")
        ),
        clip_ids(manifest).tolist(),
    ]
    del manifest  # 2 M rows: the Python objects of the clips below are what stays
    videos, seen = [], set()
    for v, s, e, k in zip(*columns, strict=True):
        if k not in seen:  # the first row of a clip (AVE: samples share a video)
            seen.add(k)
            videos.append(Video(v, None if s != s else s, None if e != e else e, k))
    videos = videos[:limit] if limit is not None else videos
    return videos[shard_index::num_shards]


def index_from_dir(folder: Path) -> dict[str, Path]:
    """``<clip_id>.mp4`` files anywhere under ``folder`` (the AVE zip nests them in AVE/)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"--from-dir {folder}: not a folder")
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*.mp4")):
        if not path.name.startswith("."):
            found.setdefault(path.stem, path)
    return found


@contextlib.contextmanager
def _exclusive(clips: Path):
    """One download run per data folder at a time (the lock dies with the process)."""
    clips.mkdir(parents=True, exist_ok=True)
    with open(clips / ".download.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemicError(f"another `avel download` is running on {clips}") from None
        yield


def js_runtime_for(cfg: DownloadConfig) -> tuple[str, str] | None:
    """The JavaScript runtime the downloads use; a :class:`SystemicError` (one line saying what
    to install) when YouTube is the source and there is none."""
    if cfg.from_dir:
        return None
    found = find_js_runtime(cfg.js_runtime)
    if found is None and cfg.js_runtime != "auto":
        raise SetupError(
            f"--js-runtime {cfg.js_runtime}: not a deno, node (>= 22) or bun executable that "
            "yt-dlp supports"
        )
    if found is None and is_youtube(cfg.url_template):
        raise SetupError(JS_RUNTIME_ADVICE)
    return found


def check_config(cfg: DownloadConfig) -> None:
    """Refuse option values that make no sense, before anything starts (``SetupError``)."""
    at_least = {
        "workers": 1,
        "num_shards": 1,
        "retries": 1,
        "max_rate_limited": 1,
        "limit": 0,
        "shard_index": 0,
        "sleep": 0,
        "backoff": 0,
        "rate_limit_pause": 0,
    }
    for name, low in at_least.items():
        value = getattr(cfg, name)
        if value is not None and not value >= low:  # NaN fails too
            raise SetupError(f"--{name.replace('_', '-')} {value}: must be at least {low}")
    for name in ("socket_timeout", "transfer_timeout"):
        value = getattr(cfg, name)
        if not 0 < value < float("inf"):
            raise SetupError(f"--{name.replace('_', '-')} {value}: must be a positive number")
    if not cfg.from_dir:
        try:
            check_url_template(cfg.url_template)
        except ValueError as exc:
            raise SetupError(f"--url-template: {exc}") from None


def run_download(cfg: DownloadConfig) -> dict:
    """Download (or ingest) every manifest video; return the summary (``exit_code`` inside)."""
    cfg.data_dir = Path(cfg.data_dir)
    check_config(cfg)
    require_ffmpeg()
    js_runtime = js_runtime_for(cfg)
    videos = manifest_videos(cfg.data_dir, cfg.limit, cfg.num_shards, cfg.shard_index)
    from_files = index_from_dir(Path(cfg.from_dir)) if cfg.from_dir else None
    if cfg.rate_limit:
        from pipeline.stages.download.fetch import ydl_params

        ydl_params(0, 1, Path("."), FetchOptions(rate_limit=cfg.rate_limit))  # validates the value
    if cfg.cookies and not Path(cfg.cookies).is_file():
        raise FileNotFoundError(f"--cookies {cfg.cookies}: file not found")
    with _exclusive(DataLayout(cfg.data_dir).clips):
        stage = Stage(cfg, js_runtime)
        summary = stage.run(videos, from_files)
    summary["mode"] = "from-dir" if from_files is not None else "download"
    if from_files is not None:
        summary["from_dir"] = str(cfg.from_dir)
    return summary
