"""Download stage, offline: real yt-dlp and ffmpeg against a loopback HTTP server with Range support."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from pipeline.cli import main as avel
from pipeline.demo.server import LoopbackServer
from pipeline.stages.download import (
    DownloadConfig,
    classify_exception,
    format_summary,
    load_ledger,
    run_download,
)
from tests.support.ave_inputs import OFFSET, make_manifest, write_ave_inputs
from tests.support.media import duration, make_clip, stream_types

ROOT = Path(__file__).resolve().parents[2]
SOURCE_SECONDS = 14.0

# IDs (11 characters of [A-Za-z0-9_-]) and what the server does with them.
DASH = "-dash_1Stxy"  # starts with '-', no +faststart (moov at the end)
FAST = "fastStart_2"  # +faststart
GONE = "gone404_abc"
LIMITED = "limited_429"
FORBIDDEN = "forbid__403"
TRUNCATED = "truncated_1"
NO_AUDIO = "noAudio_xyz"
SLOW = "slowServe_1"
NO_OFFSET = "noOffset_99"


@pytest.fixture(scope="session")
def sources(tmp_path_factory) -> Path:
    """The served folder: 14 s testsrc+sine clips (64x48, 8 fps)."""
    root = tmp_path_factory.mktemp("served")
    common = dict(duration=SOURCE_SECONDS, fps=8, size=(64, 48))
    make_clip(root / f"{DASH}.mp4", faststart=False, **common)
    make_clip(root / f"{FAST}.mp4", faststart=True, **common)
    for vid in (TRUNCATED, SLOW):  # same bytes, served with their own behaviour
        shutil.copyfile(root / f"{FAST}.mp4", root / f"{vid}.mp4")
    make_clip(root / f"{NO_AUDIO}.mp4", audio=False, **common)
    return root


@pytest.fixture
def server(sources):
    with LoopbackServer(sources) as srv:
        srv.route(f"{GONE}.mp4", status=404)
        srv.route(f"{LIMITED}.mp4", status=429)
        srv.route(f"{FORBIDDEN}.mp4", status=403)
        size = (sources / f"{TRUNCATED}.mp4").stat().st_size
        srv.route(f"{TRUNCATED}.mp4", truncate_at=size // 3)
        yield srv


def config(data_dir: Path, server: LoopbackServer | None, **kw) -> DownloadConfig:
    base = server.base_url if server else "http://127.0.0.1:9"
    options = dict(
        data_dir=data_dir,
        url_template=base + "/{youtube_id}.mp4",
        workers=2,
        sleep=0.0,
        retries=2,
        backoff=0.05,
        rate_limit_pause=0.05,
        max_rate_limited=20,
        socket_timeout=10.0,
        progress=False,
    )
    options.update(kw)
    return DownloadConfig(**options)


def ledger_rows(data_dir: Path) -> dict[str, dict]:
    return {r["clip_id"]: r for r in load_ledger(data_dir).to_dict("records")}


def media_requests(server: LoopbackServer, vid: str) -> int:
    return len(server.requests_for(f"{vid}.mp4"))


def test_range_download_exact_cuts_and_idempotent_rerun(tmp_path, server):
    data = tmp_path / "data"
    # DASH twice: a video shared by two samples; FAST cut from 0 s (no seek, still re-encoded)
    make_manifest(data, [DASH, FAST, DASH], offsets={FAST: (0.0, 10.0)})
    summary = run_download(config(data, server))
    assert summary["exit_code"] == 0
    assert summary["this_run"]["downloaded"] == 2 and summary["videos"] == 2
    for vid in (DASH, FAST):
        clip = data / "clips" / f"{vid}.mp4"
        assert abs(duration(clip) - 10.0) < 0.02, (vid, duration(clip))
        assert sorted(stream_types(clip)) == ["audio", "video"]
        # range requests actually reached the server (the cut was fetched, not a local file)
        assert any(r.range for r in server.requests_for(f"{vid}.mp4"))
    rows = ledger_rows(data)
    assert {rows[v]["status"] for v in (DASH, FAST)} == {"ok"}
    assert rows[DASH]["bytes"] == (data / "clips" / f"{DASH}.mp4").stat().st_size
    assert abs(rows[FAST]["duration"] - 10.0) < 0.02
    assert not any((data / "clips" / ".partial").glob("*"))

    before = len(server.requests)
    again = run_download(config(data, server))
    assert len(server.requests) == before, "a second run must not touch the network"
    assert again["this_run"]["new_ok"] == 0 and again["this_run"]["already_ok"] == 2
    assert again["status"]["ok"] == 2 and again["exit_code"] == 0

    # killed between the rename and the ledger update: the valid file is adopted, a bad one redone
    (data / "clips" / "status.parquet").unlink()
    clip = data / "clips" / f"{FAST}.mp4"
    clip.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    third = run_download(config(data, server))
    assert third["this_run"]["adopted"] == 1 and third["this_run"]["downloaded"] == 1
    assert len(server.requests_for(f"{DASH}.mp4")) == len(
        [r for r in server.requests[:before] if r.path == f"{DASH}.mp4"]
    )
    assert abs(duration(clip) - 10.0) < 0.02 and ledger_rows(data)[FAST]["status"] == "ok"


def test_resume_on_a_data_folder_of_the_previous_version(tmp_path, server):
    """A ledger the previous version wrote (key column ``youtube_id``): a resumed run skips what
    it says is done, without a request, and saves it keyed ``clip_id`` with the source beside."""
    from tests.support.previous_version import key_columns, write_previous_version

    data = tmp_path / "data"
    make_manifest(data, [DASH, FAST, GONE])
    first = run_download(config(data, server))
    assert first["status"]["ok"] == 2 and first["status"]["unavailable"] == 1
    done = load_ledger(data)
    write_previous_version(data)
    ledger = data / "clips" / "status.parquet"
    assert key_columns(ledger) == {"youtube_id"}
    before = len(server.requests)
    again = run_download(config(data, server))
    assert len(server.requests) == before, "nothing may be downloaded again"
    assert again["this_run"]["already_ok"] == 2 and again["this_run"]["skipped_permanent"] == 1
    assert key_columns(ledger) == {"clip_id", "youtube_id"}
    pd.testing.assert_frame_equal(load_ledger(data), done)  # attempts, bytes, times: all kept
    assert list(done["youtube_id"]) == list(done["clip_id"])  # AVE: the clip is the video


def test_failure_classes_summary_and_retries(tmp_path, server):
    data = tmp_path / "data"
    ids = [FAST, GONE, LIMITED, FORBIDDEN, TRUNCATED, NO_AUDIO, NO_OFFSET]
    make_manifest(data, ids, without_offset=(NO_OFFSET,))
    summary = run_download(config(data, server))
    # finished, but three clips are still transient: exit 5, not 0, so a script can tell
    assert summary["exit_code"] == 5, summary["stopped"]
    assert "NOT FINISHED: 3 clips are still transient" in format_summary(summary)
    rows = ledger_rows(data)
    expected = {
        FAST: ("ok", "ok"),
        GONE: ("unavailable", "http_404"),
        LIMITED: ("transient", "rate_limited"),
        FORBIDDEN: ("transient", "http_403"),
        TRUNCATED: ("transient", "truncated"),
        NO_AUDIO: ("unusable", "no_audio"),
        NO_OFFSET: ("unavailable", "no_offset"),
    }
    assert {v: (rows[v]["status"], rows[v]["kind"]) for v in ids} == expected
    assert "no audio stream" in rows[NO_AUDIO]["reason"]
    assert "no AudioSet offset known" in rows[NO_OFFSET]["reason"]
    assert "404" in rows[GONE]["reason"]
    # transient failures were retried within the run, permanent ones were not
    assert rows[LIMITED]["attempts"] == 2 and rows[FORBIDDEN]["attempts"] == 2
    assert rows[GONE]["attempts"] == 1 and rows[NO_AUDIO]["attempts"] == 1
    assert media_requests(server, NO_OFFSET) == 0
    clips = data / "clips"
    assert sorted(p.name for p in clips.glob("*.mp4")) == [f"{FAST}.mp4"]
    assert not any((clips / ".partial").glob("*"))

    # summary numbers agree with the ledger
    assert summary["status"] == {
        "ok": 1,
        "unavailable": 2,
        "unusable": 1,
        "transient": 3,
        "pending": 0,
    }
    assert summary["availability"] == pytest.approx(1 / 7)
    assert summary["this_run"]["downloaded"] == 1 and summary["this_run"]["no_offset"] == 1
    assert sum(r["count"] for r in summary["top_failures"]) == 6
    assert summary["this_run"]["rate_limited_answers"] == 2
    text = format_summary(summary)
    assert "availability: 14.3%" in text and "transient/rate_limited" in text

    # second run: ok and permanent failures are skipped, transient ones are retried
    counts = {v: media_requests(server, v) for v in ids}
    again = run_download(config(data, server, retries=1))
    assert again["this_run"]["skipped_permanent"] == 2 and again["this_run"]["no_offset"] == 1
    assert again["this_run"]["already_ok"] == 1
    assert media_requests(server, GONE) == counts[GONE]
    assert media_requests(server, FAST) == counts[FAST]
    assert media_requests(server, FORBIDDEN) > counts[FORBIDDEN]
    assert ledger_rows(data)[FORBIDDEN]["attempts"] == 3

    # --retry-failed retries the permanent ones too (never the IDs without an offset)
    run_download(config(data, server, retries=1, retry_failed=True))
    assert media_requests(server, GONE) == counts[GONE] + 1
    assert media_requests(server, NO_OFFSET) == 0


def test_rate_limiting_stops_cleanly_with_advice(tmp_path, sources):
    data = tmp_path / "data"
    ids = ["limitAAAAAA", "limitBBBBBB", "limitCCCCCC", "limitDDDDDD"]
    make_manifest(data, ids)
    with LoopbackServer(sources) as srv:
        for vid in ids:
            srv.route(f"{vid}.mp4", status=429)
        summary = run_download(config(data, srv, workers=1, retries=5, max_rate_limited=3))
    assert summary["exit_code"] == 3
    assert "rate-limited answers in a row" in summary["stopped"]
    assert summary["this_run"]["rate_limited_answers"] == 3
    statuses = load_ledger(data).set_index("clip_id")["status"]
    assert (statuses == "pending").sum() == 3 and (statuses == "transient").sum() == 1
    text = format_summary(summary)
    assert "STOPPED" in text and "--cookies" in text and "Wait" in text


def test_classifier_reads_youtube_reasons():
    """YouTube's reasons come as ExtractorError messages inside DownloadError (built as yt-dlp does)."""
    from yt_dlp.utils import DownloadError, ExtractorError, GeoRestrictedError

    def wrapped(cause: Exception) -> DownloadError:
        return DownloadError(f"ERROR: {cause}", (type(cause), cause, None))

    cases = {
        "[youtube] x: Sign in to confirm you're not a bot. Use --cookies": (
            "transient",
            "rate_limited",
        ),
        "[youtube] x: This content isn't available, try again later.": (
            "transient",
            "rate_limited",
        ),
        "[youtube] x: Private video. Sign in if you've been granted access": (
            "unavailable",
            "private",
        ),
        "[youtube] x: Video unavailable. This video is no longer available because the YouTube "
        "account associated with this video has been terminated.": (
            "unavailable",
            "account_terminated",
        ),
        "[youtube] x: Video unavailable. This video has been removed by the uploader": (
            "unavailable",
            "removed",
        ),
        "[youtube] x: Video unavailable": ("unavailable", "unavailable"),
    }
    for message, want in cases.items():
        out = classify_exception(wrapped(ExtractorError(message, expected=True)))
        assert (out.status, out.kind) == want, message
        assert out.rate_limited == (want[1] == "rate_limited")
    geo = classify_exception(
        wrapped(GeoRestrictedError("The uploader has not made this video available"))
    )
    assert (geo.status, geo.kind) == ("unavailable", "geo_blocked")
    full = classify_exception(wrapped(OSError(28, "No space left on device")))
    assert full.systemic


def test_from_dir_ingestion(tmp_path):
    data = tmp_path / "data"
    ids = [DASH, FAST, NO_AUDIO, "missing_zip"]
    make_manifest(data, ids, without_offset=(FAST,))  # ingestion needs no offset
    zip_dir = tmp_path / "AVE_Dataset" / "AVE"
    make_clip(zip_dir / f"{DASH}.mp4", duration=10.0, fps=8)
    make_clip(zip_dir / f"{NO_AUDIO}.mp4", duration=10.0, fps=8, audio=False)
    for vid in (FAST, "notInManife"):
        shutil.copyfile(zip_dir / f"{DASH}.mp4", zip_dir / f"{vid}.mp4")
    trial = run_download(config(data, None, from_dir=tmp_path / "AVE_Dataset", limit=1))
    assert trial["videos"] == 1 and trial["this_run"]["ingested"] == 1
    summary = run_download(config(data, None, from_dir=tmp_path / "AVE_Dataset"))
    assert summary["exit_code"] == 0 and summary["mode"] == "from-dir"
    rows = ledger_rows(data)
    assert rows[DASH]["status"] == rows[FAST]["status"] == "ok"
    assert rows[DASH]["source"] == "from-dir"
    assert (rows[NO_AUDIO]["status"], rows[NO_AUDIO]["kind"]) == ("unusable", "no_audio")
    assert rows["missing_zip"]["status"] == "pending"
    assert summary["this_run"]["ingested"] == 1 and summary["this_run"]["already_ok"] == 1
    assert summary["this_run"]["not_in_from_dir"] == 1
    assert sorted(p.name for p in (data / "clips").glob("*.mp4")) == sorted(
        f"{v}.mp4" for v in (DASH, FAST)
    )
    assert not (data / "clips" / "notInManife.mp4").exists()
    # a second ingestion is a no-op
    again = run_download(config(data, None, from_dir=tmp_path / "AVE_Dataset"))
    assert again["this_run"]["new_ok"] == 0 and again["this_run"]["already_ok"] == 2


def _download_in_new_session(cfg: DownloadConfig) -> None:
    os.setsid()  # its own process group: the kill reaches its ffmpeg children too
    os._exit(run_download(cfg)["exit_code"])


def test_sigkill_mid_download_then_resume(tmp_path, sources):
    data = tmp_path / "data"
    make_manifest(data, [SLOW])
    size = (sources / f"{SLOW}.mp4").stat().st_size
    with LoopbackServer(sources) as srv:
        srv.route(f"{SLOW}.mp4", bytes_per_second=size / 20)  # ~20 s to serve the file
        # a forked run (modules already imported: no interpreter start-up on a busy machine)
        proc = multiprocessing.get_context("fork").Process(
            target=_download_in_new_session, args=(config(data, srv, workers=1),)
        )
        proc.start()
        try:
            deadline = time.monotonic() + 30
            while not any(r.range for r in srv.requests_for(f"{SLOW}.mp4")):  # ffmpeg is reading
                assert time.monotonic() < deadline and proc.is_alive(), "download never started"
                time.sleep(0.1)
            time.sleep(1.0)
            assert any((data / "clips" / ".partial").rglob("*")), "no partial output to kill"
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the run and its ffmpeg child, mid-download
            proc.join()
        assert proc.exitcode == -signal.SIGKILL
        assert not (data / "clips" / f"{SLOW}.mp4").exists()
        assert ledger_rows(data)[SLOW]["status"] == "pending"  # the ledger is readable and honest
        assert any((data / "clips" / ".partial").rglob("*"))  # the half file is there, not counted

        srv.route(f"{SLOW}.mp4")  # the server is fast again
        summary = run_download(config(data, srv))
    assert summary["exit_code"] == 0 and summary["this_run"]["downloaded"] == 1
    assert ledger_rows(data)[SLOW]["status"] == "ok"
    assert abs(duration(data / "clips" / f"{SLOW}.mp4") - 10.0) < 0.02
    assert not any((data / "clips" / ".partial").glob("*"))
    left = {p.name for p in (data / "clips").iterdir()}
    assert left == {f"{SLOW}.mp4", ".partial", "status.parquet", ".download.lock"}


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_download_rebuilds_small_ave_manifest(tmp_path, server):
    """`make annotations` + `make download URL_TEMPLATE=...` through the real Makefile and CLI."""
    data = tmp_path / "data"
    ids = [DASH, FAST, GONE, NO_OFFSET, DASH]
    offsets = {v: OFFSET for v in ids if v != NO_OFFSET}
    inputs = write_ave_inputs(tmp_path / "inputs", ids, offsets)
    stamp = "-o", ".venv/.installed-run"  # the venv is already set up: don't (re)install
    common = [f"AVEL={sys.executable} -m pipeline.cli", f"DATA_DIR={data}"]
    ann = subprocess.run(
        [
            "make",
            "-s",
            *stamp,
            "annotations",
            *common,
            f"AVE_ANNOTATIONS={inputs['annotations']}",
            f"AVE_SPLITS={inputs['splits']}",
            f"AUDIOSET_CSV={inputs['csv']}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ann.returncode == 0, ann.stdout + ann.stderr
    down = subprocess.run(
        [
            "make",
            "-s",
            *stamp,
            "download",
            *common,
            f"URL_TEMPLATE={server.base_url}/{{youtube_id}}.mp4",
            "WORKERS=2",
            "SLEEP=0",
            "BACKOFF=0.05",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert down.returncode == 0, down.stdout + down.stderr
    assert "ok 2" in down.stdout and "unavailable 2" in down.stdout, down.stdout
    ledger = load_ledger(data)
    assert len(ledger) == 4 and set(ledger["status"]) == {"ok", "unavailable"}
    manifest = pd.read_parquet(data / "manifest.parquet")
    for vid in set(manifest["youtube_id"]) - {GONE, NO_OFFSET}:
        assert abs(duration(data / "clips" / f"{vid}.mp4") - 10.0) < 0.02


def test_stalled_server_is_a_transient_timeout(tmp_path, sources):
    data = tmp_path / "data"
    make_manifest(data, ["stalled_abc"])
    with LoopbackServer(sources) as srv:
        srv.route("stalled_abc.mp4", delay=4.0, file=sources / f"{FAST}.mp4")
        summary = run_download(config(data, srv, retries=1, socket_timeout=1.0))
    row = ledger_rows(data)["stalled_abc"]
    assert (row["status"], row["kind"]) == ("transient", "network"), row["reason"]
    assert "timed out" in row["reason"].lower()
    assert summary["exit_code"] == 5 and not (data / "clips" / "stalled_abc.mp4").exists()


def test_cli_errors_go_to_stderr(tmp_path, capsys):
    assert avel(["download", "--data-dir", str(tmp_path / "none"), "--no-progress"]) == 2
    out = capsys.readouterr()
    assert out.err.startswith("error: ") and "manifest" in out.err and out.out == ""


# ----------------------------------------------------------------------------- faults


def test_stalled_transfer_is_a_timeout_within_the_transfer_timeout(tmp_path, sources):
    """The server answers at once, then trickles the media: the socket timeout never fires; the
    transfer timeout ends the attempt and records it as a timeout, not as a truncated clip."""
    data = tmp_path / "data"
    make_manifest(data, ["trickle_abc"])
    size = (sources / f"{FAST}.mp4").stat().st_size
    with LoopbackServer(sources) as srv:
        srv.route("trickle_abc.mp4", file=sources / f"{FAST}.mp4", bytes_per_second=size / 120)
        began = time.monotonic()
        summary = run_download(config(data, srv, retries=1, transfer_timeout=4.0))
        took = time.monotonic() - began
        assert any(r.range for r in srv.requests_for("trickle_abc.mp4")), "ffmpeg never read"
    row = ledger_rows(data)["trickle_abc"]
    assert (row["status"], row["kind"]) == ("transient", "timeout"), row["reason"]
    assert "4 s" in row["reason"] and "--transfer-timeout" in row["reason"]
    assert took < 4.0 + 10.0, f"the attempt ran {took:.1f} s past a 4 s transfer timeout"
    assert summary["exit_code"] == 5
    assert not any((data / "clips" / ".partial").glob("*"))


def test_source_shorter_than_its_range_is_unusable_and_not_retried(tmp_path, sources):
    data = tmp_path / "data"
    short = "short6_abcd"
    make_clip(sources.parent / "short" / f"{short}.mp4", duration=6.0, fps=8)
    make_manifest(data, [short])  # AudioSet range 2.5-12.5 s of a 6 s video
    with LoopbackServer(sources.parent / "short") as srv:
        summary = run_download(config(data, srv, retries=3))
        row = ledger_rows(data)[short]
        assert (row["status"], row["kind"]) == ("unusable", "source_too_short"), row["reason"]
        assert "6.00 s long" in row["reason"] and "2.50-12.50 s" in row["reason"]
        assert row["attempts"] == 1 and summary["exit_code"] == 0
        before = media_requests(srv, short)
        again = run_download(config(data, srv))
        assert media_requests(srv, short) == before, "a permanent failure is not downloaded again"
        assert again["this_run"]["skipped_permanent"] == 1


def test_from_dir_checks_the_decoded_length_not_the_header(tmp_path):
    from tests.support.media import stretch_header

    data = tmp_path / "data"
    liar, honest = "liarHeader1", "honestClip1"
    make_manifest(data, [liar, honest])
    zip_dir = tmp_path / "AVE"
    make_clip(tmp_path / "six.mp4", duration=6.0, fps=8)
    stretch_header(tmp_path / "six.mp4", zip_dir / f"{liar}.mp4", 10.0 / 6.0)
    make_clip(zip_dir / f"{honest}.mp4", duration=10.0, fps=8)
    assert abs(duration(zip_dir / f"{liar}.mp4") - 10.0) < 0.01  # the header says 10 s
    summary = run_download(config(data, None, from_dir=zip_dir))
    rows = ledger_rows(data)
    assert rows[honest]["status"] == "ok"
    assert (rows[liar]["status"], rows[liar]["kind"]) == ("unusable", "truncated")
    assert "decodes to 6.000 s of video" in rows[liar]["reason"]
    assert not (data / "clips" / f"{liar}.mp4").exists() and summary["exit_code"] == 0


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live (non-zombie) processes whose arguments contain ``text``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(cmdline)
    return found


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs Linux /proc")
def test_sigkill_of_the_command_leaves_no_ffmpeg_running(tmp_path, sources):
    data = tmp_path / "data"
    make_manifest(data, [SLOW])
    size = (sources / f"{SLOW}.mp4").stat().st_size
    with LoopbackServer(sources) as srv:
        srv.route(f"{SLOW}.mp4", bytes_per_second=size / 60)  # ~60 s to serve the file
        cmd = [sys.executable, "-m", "pipeline.cli", "download", "--data-dir", str(data)]
        cmd += ["--url-template", srv.base_url + "/{youtube_id}.mp4", "--sleep", "0"]
        proc = subprocess.Popen(cmd + ["--no-progress"], cwd=ROOT, stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            partial = str(data / "clips" / ".partial")
            while not any("ffmpeg" in c for c in _processes_mentioning(partial)):
                assert time.monotonic() < deadline and proc.poll() is None, "ffmpeg never started"
                time.sleep(0.1)
        finally:
            proc.kill()  # SIGKILL of `avel download` alone, mid-transfer
            proc.wait()
        deadline = time.monotonic() + 10
        while _processes_mentioning(partial) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _processes_mentioning(partial) == [], "children of the killed run still running"
    assert ledger_rows(data)[SLOW]["status"] == "pending"


def test_disk_full_stops_with_one_line_and_a_rerun_finishes(tmp_path, server, capsys):
    from tests.support.disk import fill, small_disk

    data = tmp_path / "data"
    make_manifest(data, [DASH, FAST])
    with small_disk(data / "clips", "4m") as clips:
        args = ["download", "--data-dir", str(data), "--url-template"]
        args += [server.base_url + "/{youtube_id}.mp4", "--sleep", "0", "--backoff", "0.05"]
        args += ["--no-progress"]
        filler = fill(clips, leave=48 * 1024)  # the ledger fits, a clip does not
        assert avel(args) == 4
        out = capsys.readouterr().out
        lines = [line for line in out.splitlines() if "disk full" in line]
        assert len(lines) == 1 and str(clips) in lines[0] and "free" in lines[0], out
        rows = ledger_rows(data)
        # nothing recorded against the videos: the disk was full, not the clips bad
        assert {rows[v]["status"] for v in (DASH, FAST)} == {"pending"}, rows
        assert not list(clips.glob("*.mp4")) and not any((clips / ".partial").glob("*"))

        filler.unlink()  # space freed: the same command finishes the work
        assert avel(args) == 0
        rows = ledger_rows(data)
        assert {rows[v]["status"] for v in (DASH, FAST)} == {"ok"}
        assert all(abs(duration(clips / f"{v}.mp4") - 10.0) < 0.02 for v in (DASH, FAST))


def _cli_without_packaged_deno(args: list[str], tmp_path: Path, hide_wheel: bool):
    """`avel` in a fresh Python with only ffmpeg/ffprobe on PATH (no venv activated), optionally
    as if the deno wheel were not installed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("ffmpeg", "ffprobe"):
        if not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(shutil.which(tool))
    hide = "sys.modules['deno'] = None; " if hide_wheel else ""
    code = f"import sys; {hide}from pipeline.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PATH")}
    env["PATH"] = str(bin_dir)
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_youtube_needs_a_js_runtime_and_finds_the_packaged_deno(tmp_path):
    from pipeline.stages.download.fetch import FetchOptions, find_js_runtime, ydl_params

    data = tmp_path / "data"
    make_manifest(data, [FAST])
    args = ["download", "--data-dir", str(data), "--limit", "0", "--no-progress"]
    # no runtime anywhere: stop before any download, one line saying what to install
    none = _cli_without_packaged_deno(args, tmp_path, hide_wheel=True)
    assert none.returncode == 2, none.stdout + none.stderr
    assert none.stderr.count("\n") == 1 and "pip install deno" in none.stderr, none.stderr
    assert not (data / "clips" / "status.parquet").exists()
    # a loopback (non-YouTube) source needs none
    loop = args + ["--url-template", "http://127.0.0.1:9/{youtube_id}.mp4"]
    assert _cli_without_packaged_deno(loop, tmp_path, hide_wheel=True).returncode == 0
    # the deno wheel (a dependency) is found through its package, venv not activated, PATH bare
    found = _cli_without_packaged_deno(args, tmp_path, hide_wheel=False)
    assert found.returncode == 0, found.stderr
    runtime = find_js_runtime()
    assert runtime is not None and runtime[0] == "deno" and Path(runtime[1]).is_file()
    params = ydl_params(0, 10, tmp_path, FetchOptions(js_runtime=runtime))
    assert params["js_runtimes"] == {"deno": {"path": runtime[1]}}


def test_clip_cut_from_another_range_is_not_already_ok(tmp_path, server):
    """The manifest is rebuilt with other AudioSet offsets: the old clip is stale, not "ok"."""
    data = tmp_path / "data"
    make_manifest(data, [FAST])  # 2.5-12.5 s
    assert run_download(config(data, server))["this_run"]["downloaded"] == 1
    assert ledger_rows(data)[FAST]["range"] == "2.500-12.500"
    old = (data / "clips" / f"{FAST}.mp4").read_bytes()
    make_manifest(data, [FAST], offsets={FAST: (0.0, 10.0)})
    summary = run_download(config(data, server))
    assert summary["this_run"]["range_changed"] == 1 and summary["this_run"]["downloaded"] == 1
    row = ledger_rows(data)[FAST]
    assert (row["status"], row["range"]) == ("ok", "0.000-10.000")
    assert (data / "clips" / ".stale" / f"{FAST}.2.500-12.500.mp4").read_bytes() == old  # kept
    assert (data / "clips" / f"{FAST}.mp4").read_bytes() != old
    assert run_download(config(data, server))["this_run"]["already_ok"] == 1
