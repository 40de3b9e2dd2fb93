"""A loopback HTTP server for a folder, with HTTP Range support (206 Partial Content).

Python's ``http.server`` ignores ``Range``; yt-dlp's range downloads (through ffmpeg) then read the
wrong bytes or "succeed" with an empty file. This handler answers single byte ranges with 206,
``Content-Range`` and ``Accept-Ranges``, unsatisfiable ones with 416, and anything else as a plain
200. It listens on 127.0.0.1 at an ephemeral port and lives only inside ``serve_folder``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import threading
from collections.abc import Iterator
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str, size: int) -> tuple[int, int] | None | str:
    """``(first, last)`` inclusive for one satisfiable range; ``None`` to ignore the header (serve
    everything: malformed or multi-range); ``"unsatisfiable"`` for a range past the end."""
    match = _RANGE.match(header.strip())
    if not match or match.group(1) == match.group(2) == "":
        return None
    first_s, last_s = match.groups()
    if first_s == "":  # suffix range: the last N bytes
        length = int(last_s)
        if length == 0:
            return "unsatisfiable"
        return max(0, size - length), size - 1
    first = int(first_s)
    last = size - 1 if last_s == "" else min(int(last_s), size - 1)
    if first >= size or first > last:
        return "unsatisfiable"
    return first, last


class RangeRequestHandler(SimpleHTTPRequestHandler):
    """Static files with single-range support; quiet (no per-request log lines)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - signature of the base
        pass

    def send_head(self):  # type: ignore[override]
        path = self.translate_path(self.path)
        if os.path.isdir(path) or not os.path.isfile(path):
            self.send_error(HTTPStatus.NOT_FOUND, "File not found")
            return None
        f = open(path, "rb")  # noqa: SIM115 - handed to copyfile, closed by the base class
        try:
            size = os.fstat(f.fileno()).st_size
            wanted = (
                parse_range(self.headers.get("Range", ""), size)
                if "Range" in self.headers
                else None
            )
            if wanted == "unsatisfiable":
                f.close()
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            if isinstance(wanted, tuple):
                first, last = wanted
                self.send_response(HTTPStatus.PARTIAL_CONTENT)
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
                self._remaining = last - first + 1
                f.seek(first)
            else:
                self.send_response(HTTPStatus.OK)
                self._remaining = size
            self.send_header("Content-Type", self.guess_type(path))
            self.send_header("Content-Length", str(self._remaining))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header(
                "Last-Modified", self.date_time_string(int(os.fstat(f.fileno()).st_mtime))
            )
            self.end_headers()
            return f
        except Exception:
            f.close()
            raise

    def copyfile(self, source, outputfile) -> None:  # type: ignore[override]
        remaining = self._remaining
        try:
            while remaining > 0:
                block = source.read(min(1 << 16, remaining))
                if not block:
                    break
                outputfile.write(block)
                remaining -= len(block)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading (ffmpeg seeks by dropping connections)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address) -> None:  # type: ignore[override]
        """Clients that hang up (ffmpeg seeking, yt-dlp probing) are normal, not errors."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextlib.contextmanager
def serve_folder(folder: str | Path, max_seconds: float | None = None) -> Iterator[str]:
    """Serve ``folder`` on http://127.0.0.1:<ephemeral port> for the ``with`` block; yield the base
    URL (no trailing slash). ``max_seconds`` stops it earlier as a safety bound."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: folder to serve not found")
    handler = functools.partial(RangeRequestHandler, directory=str(folder))
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="avel-demo-http", daemon=True)
    thread.start()
    timer = None
    if max_seconds is not None:
        timer = threading.Timer(max_seconds, server.shutdown)
        timer.daemon = True
        timer.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        if timer is not None:
            timer.cancel()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


__all__ = ["RangeRequestHandler", "parse_range", "serve_folder"]
