"""The download ledger: append-only updates, the journal folded into status.parquet, readers that
see one table, earlier versions read and converted, and a SIGKILL at any moment losing nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from pipeline.stages.download.ledger import (
    COMPACT_MIN,
    Ledger,
    journal_path,
    read_journal,
    read_ledger,
)
from tests.support.paths import REPO

IDS = [f"clip{i:05d}" for i in range(50)]


def _fresh(path: Path, ids: list[str] = IDS) -> Ledger:
    ledger = Ledger(path)
    ledger.ensure({c: f"src-{c}" for c in ids})
    return ledger


def test_an_update_appends_a_line_and_readers_see_it(tmp_path: Path) -> None:
    path = tmp_path / "status.parquet"
    ledger = _fresh(path)
    stamp = path.stat().st_ino, path.stat().st_mtime_ns
    ledger.update(IDS[3], "ok", "ok", attempts=2, bytes=1234, duration=10.0, source="download")
    ledger.update(IDS[4], "unavailable", "http_404", "HTTP Error 404", attempts=1)
    ledger.update(IDS[4], "unavailable", "http_404", "HTTP Error 404", attempts=1)
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == stamp, "the table was rewritten"
    assert read_journal(journal_path(path))[1] == 3
    table = read_ledger(path).set_index("clip_id")
    assert len(table) == len(IDS)
    assert table.loc[IDS[3], ["status", "bytes", "attempts"]].tolist() == ["ok", 1234, 2]
    assert table.loc[IDS[4], "attempts"] == 2 and table.loc[IDS[4], "youtube_id"] == f"src-{IDS[4]}"
    assert (table.drop(index=[IDS[3], IDS[4]])["status"] == "pending").all()
    # another process's view, the writer's own and the table after folding: one table
    pd.testing.assert_frame_equal(Ledger(path).table(), read_ledger(path))
    before = read_ledger(path)
    ledger.close()
    assert not journal_path(path).exists()
    pd.testing.assert_frame_equal(pd.read_parquet(path), before)
    assert Ledger(path).get(IDS[3])["bytes"] == 1234


def test_the_journal_is_folded_in_after_a_quarter_table_of_updates(tmp_path: Path) -> None:
    path = tmp_path / "status.parquet"
    ledger = _fresh(path)
    for i in range(COMPACT_MIN - 1):
        ledger.update(IDS[i % len(IDS)], "transient", "timeout", f"try {i}", attempts=1)
    assert read_journal(journal_path(path))[1] == COMPACT_MIN - 1
    ledger.update(IDS[0], "ok", "ok", source="download")
    assert not journal_path(path).exists()  # folded into the table
    table = pd.read_parquet(path).set_index("clip_id")
    assert table.loc[IDS[0], "status"] == "ok"
    assert table["attempts"].sum() == COMPACT_MIN - 1


def test_ensure_adds_only_new_clips_and_fills_missing_sources(tmp_path: Path) -> None:
    path = tmp_path / "status.parquet"
    ledger = _fresh(path, IDS[:10])
    ledger.update(IDS[0], "ok", "ok", source="download")
    stamp = path.stat().st_mtime_ns
    ledger.ensure({c: f"src-{c}" for c in IDS[:10]})  # nothing new: nothing written
    assert path.stat().st_mtime_ns == stamp
    ledger.ensure({c: f"src-{c}" for c in IDS[:12]})
    table = read_ledger(path).set_index("clip_id")
    assert len(table) == 12 and table.loc[IDS[0], "status"] == "ok"
    assert table.loc[IDS[11], "youtube_id"] == f"src-{IDS[11]}"


def test_a_line_cut_short_is_ignored_and_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "status.parquet"
    ledger = _fresh(path)
    ledger.update(IDS[1], "ok", "ok", source="download")
    journal = journal_path(path)
    whole = journal.read_bytes()
    with open(journal, "ab") as f:  # what a kill in the middle of a write leaves
        f.write(whole[: len(whole) // 2].replace(IDS[1].encode(), IDS[2].encode()))
    table = read_ledger(path).set_index("clip_id")
    assert table.loc[IDS[1], "status"] == "ok" and table.loc[IDS[2], "status"] == "pending"
    again = Ledger(path)
    assert journal.read_bytes() == whole  # the next writer cuts the torn tail off
    again.update(IDS[2], "ok", "ok", source="download")
    assert read_ledger(path).set_index("clip_id").loc[IDS[2], "status"] == "ok"


def test_a_damaged_line_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "status.parquet"
    ledger = _fresh(path)
    ledger.update(IDS[1], "ok", "ok")
    ledger.update(IDS[2], "ok", "ok")
    journal = journal_path(path)
    journal.write_bytes(journal.read_bytes().replace(b'"ok"', b'"ko"', 1))
    with pytest.raises(ValueError, match=r"status.journal:1: damaged ledger journal line; move"):
        read_ledger(path)


def test_todays_table_is_read_as_it_is_and_an_earlier_version_converted(tmp_path: Path) -> None:
    path = tmp_path / "status.parquet"
    ledger = _fresh(path)
    ledger.update(IDS[1], "ok", "ok", bytes=5, duration=10.0, source="download", range="1-11")
    ledger.close()
    today = read_ledger(path)
    written = pd.read_parquet(path)  # a ledger of the version before the journal: the table only
    pd.testing.assert_frame_equal(today, written)
    # the version before clip IDs: key column youtube_id, no source, no range
    old = written.drop(columns=["youtube_id", "range"]).rename(columns={"clip_id": "youtube_id"})
    old.to_parquet(path)
    seen = read_ledger(path)
    assert list(seen["clip_id"]) == IDS and set(seen["youtube_id"]) == {""}
    Ledger(path)  # a run opens it: saved in today's columns
    assert set(pd.read_parquet(path).columns) >= {"clip_id", "youtube_id", "range"}
    row = read_ledger(path).set_index("clip_id").loc[IDS[1]]
    assert (row["status"], row["bytes"], row["attempts"]) == ("ok", 5, 0)


CHILD = textwrap.dedent(
    """
    import os, sys
    from pipeline.stages.download.ledger import Ledger
    path, done, rnd, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    ledger = Ledger(path)
    out = os.open(done, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    for i in range(n * 1000):
        clip = f"c{i % n:05d}"
        status = ("ok", "unavailable", "transient")[(i // n + rnd) % 3]
        ledger.update(clip, status, status, f"round {rnd} pass {i // n}", attempts=1)
        os.write(out, f"{clip} {status} {rnd} {i // n}\\n".encode())  # after the update returned
    """
)


def _stream(path: Path, done: Path, rnd: int, n: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-c", CHILD, str(path), str(done), str(rnd), str(n)]
    return subprocess.Popen(cmd, cwd=REPO, env=env)


def _kill_when(proc: subprocess.Popen, ready) -> None:
    deadline = time.monotonic() + 60
    while not ready():
        assert proc.poll() is None, "the writer ended before it was killed"
        assert time.monotonic() < deadline, "the writer never got there"
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


def test_sigkill_during_a_stream_of_updates_loses_no_finished_clip(tmp_path: Path) -> None:
    """A real writer process killed with SIGKILL, four times: after its first update, mid-stream, while it
    rewrites the table (its temp file exists) and right after; every update that returned is in
    the ledger, the ledger always reads, and each killed run resumes on what the last one left."""
    n = 5000
    path = tmp_path / "status.parquet"
    Ledger(path).ensure({f"c{i:05d}": f"v{i:05d}" for i in range(n)})
    for rnd, when in enumerate(("first", "stream", "rewrite", "stream")):
        done = tmp_path / f"done-{rnd}.txt"
        proc = _stream(path, done, rnd, n)
        if when == "rewrite":
            _kill_when(proc, lambda: any(tmp_path.glob(".status.parquet.*")))
        else:
            least = 1 if when == "first" else 20_000  # bytes of finished updates
            _kill_when(proc, lambda d=done, b=least: d.exists() and d.stat().st_size >= b)
        for stale in tmp_path.glob(".status.parquet.*"):
            stale.unlink()  # what the download stage removes at its start
        table = read_ledger(path).set_index("clip_id")
        assert len(table) == n and table.index.is_unique
        last: dict[str, tuple[str, str]] = {}
        for line in done.read_text().splitlines():
            clip, status, r, p = line.split()
            last[clip] = (status, f"round {r} pass {p}")
        assert last, "nothing finished before the kill"
        got = {c: (table.at[c, "status"], table.at[c, "reason"]) for c in last}
        lost = {c: (want, got[c]) for c, want in last.items() if got[c] != want}
        assert not lost, f"round {rnd} ({when}): finished updates lost: {list(lost.items())[:3]}"
    Ledger(path).close()
    assert not journal_path(path).exists()
    assert len(pd.read_parquet(path)) == n
