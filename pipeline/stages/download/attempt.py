"""One download attempt in a process of its own: a wall-clock limit, and no orphans.

The attempt (yt-dlp, its ffmpeg children, the ffprobe checks) runs in a child process forked from a
forkserver, in a new process group. The stage waits at most ``timeout`` seconds for it, then kills
the whole group: a stalled server becomes ``transient/timeout`` within the limit, whatever phase it
stalls in. The child holds one end of a pipe to the stage; when the stage dies (even by SIGKILL) the
pipe closes and the child kills its group, so no ffmpeg is left downloading.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path

from pipeline.stages.download.classify import OK, TRANSIENT, UNUSABLE, Outcome, classify_exception
from pipeline.stages.download.fetch import (
    FetchOptions,
    fetch_clip_info,
    source_seconds,
    source_streams,
)
from pipeline.stages.download.validate import DURATION_TOLERANCE, ClipCheck, check_clip

#: How a failed validation is recorded: length/stream problems are the video's; short files retry.
#: A missing stream counts against the video only when the whole source lacks it too (see
#: :data:`STREAM_OF`): a transfer cut short can leave a clip without its video.
CHECK_STATUS = {
    "no_audio": UNUSABLE,
    "no_video": UNUSABLE,
    "wrong_length": UNUSABLE,
    "truncated": TRANSIENT,
    "undecodable": TRANSIENT,
}
_REASON_CHARS = 2000
#: The stream a failed check says is missing.
STREAM_OF = {"no_audio": "audio", "no_video": "video"}


@dataclass(frozen=True)
class AttemptResult:
    """What one attempt came to; ``path`` and ``check`` are set for a valid clip."""

    outcome: Outcome
    path: Path | None = None
    check: ClipCheck | None = None


def _context() -> multiprocessing.context.BaseContext:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])  # yt-dlp and the checks imported once, not per attempt
    return ctx


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


class Attempts:
    """Starts attempts and keeps their processes, so a stopping stage can kill them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: dict[int, multiprocessing.process.BaseProcess] = {}
        self.stopping = False

    def run(
        self,
        url: str,
        start: float,
        end: float,
        expected: float,
        workdir: Path,
        opts: FetchOptions,
        timeout: float,
    ) -> AttemptResult:
        """Download and check one clip in a child process; kill it after ``timeout`` seconds."""
        ctx = _context()
        mine, theirs = ctx.Pipe(duplex=True)
        proc = ctx.Process(
            target=_child,
            args=(theirs, url, float(start), float(end), float(expected), str(workdir), opts),
            name=f"avel-download-{workdir.name}",
            daemon=True,
        )
        with self._lock:
            if self.stopping:
                return AttemptResult(Outcome(TRANSIENT, "stopped", "the run is stopping"))
            proc.start()
            self._live[proc.pid] = proc
        theirs.close()
        message = None
        try:
            ready = wait([mine, proc.sentinel], timeout=timeout)
            with contextlib.suppress(EOFError, OSError):
                if mine in ready or mine.poll(0):
                    message = mine.recv()
            if message is not None:
                proc.join(timeout=10)  # it exits right after answering
            timed_out = not ready
        finally:
            if proc.is_alive():  # stalled, or the run is stopping: the group goes, ffmpeg with it
                _kill_group(proc.pid)
            proc.join()
            mine.close()
            with self._lock:
                self._live.pop(proc.pid, None)
        if timed_out:
            return AttemptResult(
                Outcome(
                    TRANSIENT,
                    "timeout",
                    f"no complete clip within {timeout:g} s (transfer timeout, --transfer-timeout)",
                )
            )
        if self.stopping and message is None:
            return AttemptResult(Outcome(TRANSIENT, "stopped", "the run is stopping"))
        if message is None:
            return AttemptResult(
                Outcome(TRANSIENT, "error", f"the download process died (exit {proc.exitcode})")
            )
        outcome = Outcome(**message["outcome"])
        check = ClipCheck(**message["check"]) if message.get("check") else None
        path = Path(message["path"]) if message.get("path") else None
        return AttemptResult(outcome, path, check)

    def kill_all(self) -> None:
        """Stop starting attempts and kill every running one with its children."""
        with self._lock:
            self.stopping = True
            for pid, proc in self._live.items():
                if proc.is_alive():
                    _kill_group(pid)


def _forget_forkserver() -> None:
    """In a forked copy of a stage: start a forkserver of its own when needed (the parent's is not
    this process's child, and holding its pipe would keep it alive)."""
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    if server is None or getattr(server, "_forkserver_pid", None) is None:
        return
    with contextlib.suppress(OSError, TypeError):
        os.close(server._forkserver_alive_fd)
    server._forkserver_pid = server._forkserver_address = server._forkserver_alive_fd = None
    server._lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_forkserver)


# ----------------------------------------------------------------------------- the child


def _die_with_group(*_: object) -> None:
    os.killpg(0, signal.SIGKILL)


def _lifeline(conn: Connection) -> None:
    """Block until the stage's end of the pipe closes (the stage died), then kill the group."""
    with contextlib.suppress(EOFError, OSError):
        while True:
            conn.recv()  # the stage never sends; returns only by EOF
    _die_with_group()


def _child(
    conn: Connection,
    url: str,
    start: float,
    end: float,
    expected: float,
    workdir: str,
    opts: FetchOptions,
) -> None:
    os.setpgid(0, 0)  # ffmpeg children join this group; the stage kills it as one
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, _die_with_group)
    threading.Thread(target=_lifeline, args=(conn,), daemon=True).start()
    result = attempt(url, start, end, expected, Path(workdir), opts)
    reason = result.outcome.reason[:_REASON_CHARS]
    conn.send(
        {
            "outcome": dict(asdict(result.outcome), reason=reason),
            "path": str(result.path) if result.path else None,
            "check": asdict(result.check) if result.check else None,
        }
    )


def attempt(
    url: str, start: float, end: float, expected: float, workdir: Path, opts: FetchOptions
) -> AttemptResult:
    """Fetch ``[start, end)`` of ``url`` into ``workdir`` and check it (in this process)."""
    try:
        produced, info = fetch_clip_info(url, start, end, workdir, opts)
    except Exception as exc:  # noqa: BLE001 - every failure is classified and recorded
        return AttemptResult(classify_exception(exc))
    check = check_clip(produced, expected)
    if check.ok:
        return AttemptResult(Outcome(OK, "ok", ""), produced, check)
    if check.kind in STREAM_OF:
        streams = source_streams(info)
        if streams is None or STREAM_OF[check.kind] in streams:  # not the content's fault
            has = "" if streams is None else f"the source has a {STREAM_OF[check.kind]} stream: "
            return AttemptResult(
                Outcome(TRANSIENT, check.kind, f"{check.problem} ({has}a transfer cut short?)"),
                None,
                check,
            )
    if check.kind == "truncated":
        seconds = source_seconds(info)
        if seconds is not None and seconds < end - DURATION_TOLERANCE:
            return AttemptResult(
                Outcome(
                    UNUSABLE,
                    "source_too_short",
                    f"the source is {seconds:.2f} s long; the clip needs {start:.2f}-{end:.2f} s "
                    f"({end - start:.2f} s, up to {end:.2f} s of the source); got: {check.problem}",
                ),
                None,
                check,
            )
    return AttemptResult(
        Outcome(CHECK_STATUS.get(check.kind, TRANSIENT), check.kind, check.problem or ""),
        None,
        check,
    )
