"""A loopback HTTP server for a folder, with HTTP Range support (206 Partial Content).

Python's ``http.server`` ignores ``Range``; yt-dlp's range downloads (through ffmpeg) then read the
wrong bytes or "succeed" with an empty file. This handler answers single byte ranges with 206,
``Content-Range`` and ``Accept-Ranges``, unsatisfiable ones with 416, and anything else as a plain
200. It listens on 127.0.0.1 at an ephemeral port: ``serve_folder`` (the demo) for a ``with``
block, or ``LoopbackServer`` when the caller also wants to shape answers and see the requests
(the offline download tests):

    with LoopbackServer(folder) as server:
        server.route("gone.mp4", status=404)       # an HTTP error status instead of the file
        server.route("cut.mp4", truncate_at=1000)  # a body cut short (a truncated file)
        server.route("reset.mp4", reset_at=1000)    # the connection reset in the middle of the body
        server.route("slow.mp4", bytes_per_second=1e5, delay=2.0)
        url = server.url("clip.mp4")
        server.requests_for("clip.mp4")            # every request logged: method, range, status
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
CHUNK = 1 << 16


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


@dataclass
class Route:
    """How the server answers one path (default: the file, at full speed)."""

    status: int | None = None  # answer this HTTP status (with ``body``) instead of the file
    file: Path | None = None  # serve this file instead of folder/<path>
    truncate_at: int | None = None  # stop sending at this absolute byte offset, then close
    reset_at: int | None = None  # at this absolute byte offset, reset the connection (TCP RST)
    delay: float = 0.0  # seconds to wait before answering
    bytes_per_second: float | None = None  # throttle the body (a slow server)
    body: str | None = None  # text body of a ``status`` answer


@dataclass
class Request:
    """One answered request, as logged by ``LoopbackServer``."""

    method: str
    path: str
    range: str | None
    status: int


class RangeRequestHandler(SimpleHTTPRequestHandler):
    """Static files with single-range support; quiet (no per-request log lines).

    Behind a ``LoopbackServer`` it also follows the server's routes and logs every answer.
    """

    protocol_version = "HTTP/1.1"
    _remaining = 0
    _route = Route()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - signature of the base
        pass

    @property
    def _name(self) -> str:
        return self.path.split("?", 1)[0].lstrip("/")

    @property
    def _owner(self) -> LoopbackServer | None:
        return getattr(self.server, "owner", None)

    def send_response(self, code: int, message: str | None = None) -> None:
        super().send_response(code, message)
        if self._owner is not None:
            self._owner.log(Request(self.command, self._name, self.headers.get("Range"), int(code)))

    def send_head(self):  # type: ignore[override]
        self._route = self._owner.routes.get(self._name, Route()) if self._owner else Route()
        if self._route.delay:
            time.sleep(self._route.delay)
        if self._route.status is not None:
            return self._send_text(self._route.status, self._route.body)
        path = str(self._route.file) if self._route.file else self.translate_path(self.path)
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
                f.seek(first)
            else:
                first, last = 0, size - 1
                self.send_response(HTTPStatus.OK)
            self._remaining = last - first + 1
            cut = self._route.truncate_at if self._route.truncate_at is not None else None
            cut = self._route.reset_at if self._route.reset_at is not None else cut
            if cut is not None:  # the promised length never arrives
                self._remaining = max(0, min(self._remaining, cut - first))
                self.close_connection = True
            self.send_header("Content-Type", self.guess_type(path))
            self.send_header("Content-Length", str(last - first + 1))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header(
                "Last-Modified", self.date_time_string(int(os.fstat(f.fileno()).st_mtime))
            )
            self.end_headers()
            return f
        except Exception:
            f.close()
            raise

    def _send_text(self, status: int, text: str | None) -> None:
        payload = (text or f"status {status}").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        return None

    def copyfile(self, source, outputfile) -> None:  # type: ignore[override]
        remaining, rate = self._remaining, self._route.bytes_per_second
        try:
            while remaining > 0:
                block = source.read(min(CHUNK if not rate else CHUNK // 4, remaining))
                if not block:
                    break
                outputfile.write(block)
                remaining -= len(block)
                if rate:
                    time.sleep(len(block) / rate)
            outputfile.flush()
            if self._route.reset_at is not None:  # close with RST instead of FIN
                linger = struct.pack("ii", 1, 0)
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                self.connection.close()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading (ffmpeg seeks by dropping connections)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: LoopbackServer | None = None

    def handle_error(self, request, client_address) -> None:  # type: ignore[override]
        """Clients that hang up (ffmpeg seeking, yt-dlp probing) are normal, not errors."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


class LoopbackServer:
    """Serve ``root`` on an ephemeral 127.0.0.1 port in a background thread.

    ``route(name, ...)`` gives one path a special answer (see ``Route``); ``requests`` logs every
    answer. ``max_seconds`` stops the server earlier as a safety bound.
    """

    def __init__(self, root: str | Path, max_seconds: float | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: folder to serve not found")
        self.routes: dict[str, Route] = {}
        self.requests: list[Request] = []
        self.max_seconds = max_seconds
        self._lock = threading.Lock()
        handler = functools.partial(RangeRequestHandler, directory=str(self.root))
        self._httpd = _Server(("127.0.0.1", 0), handler)
        self._httpd.owner = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="avel-loopback-http", daemon=True
        )
        self._timer: threading.Timer | None = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def route(self, name: str, **behaviour: object) -> None:
        """Give path ``name`` (no leading slash) a special answer; no arguments: the plain file."""
        self.routes[name] = Route(**behaviour)  # type: ignore[arg-type]

    def log(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def requests_for(self, name: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == name]

    def start(self) -> LoopbackServer:
        self._thread.start()
        if self.max_seconds is not None:
            self._timer = threading.Timer(self.max_seconds, self._httpd.shutdown)
            self._timer.daemon = True
            self._timer.start()
        return self

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def serve_folder(folder: str | Path, max_seconds: float | None = None) -> Iterator[str]:
    """Serve ``folder`` on http://127.0.0.1:<ephemeral port> for the ``with`` block; yield the base
    URL (no trailing slash). ``max_seconds`` stops it earlier as a safety bound."""
    with LoopbackServer(folder, max_seconds=max_seconds) as server:
        yield server.base_url


__all__ = [
    "LoopbackServer",
    "RangeRequestHandler",
    "Request",
    "Route",
    "parse_range",
    "serve_folder",
]
