"""A threaded HTTP server on 127.0.0.1 with Range support, for offline download tests.

It serves the files of one folder (``GET``/``HEAD``, ``Range: bytes=a-b``, ``a-``, ``-n``) and lets a
test give any path a special behaviour: an HTTP error status, a body cut short (truncated file), a
delay before answering, or a throttled (slow) body. Every request is logged for assertions.

    with LoopbackServer(folder) as server:
        server.route("gone.mp4", status=404)
        url = server.url("clip.mp4")
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CHUNK = 16 * 1024
CONTENT_TYPES = {
    ".mp4": "video/mp4",
    ".m4a": "audio/mp4",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
}


@dataclass
class Route:
    """How the server answers one path."""

    status: int | None = None  # answer this HTTP error status instead of the file
    file: Path | None = None  # serve this file instead of folder/<path>
    truncate_at: int | None = None  # stop sending at this absolute byte offset, then close
    delay: float = 0.0  # seconds to wait before answering
    bytes_per_second: float | None = None  # throttle the body (a slow server)
    body: str | None = None  # text body for error statuses


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    status: int


class LoopbackServer:
    """Serve ``root`` on an ephemeral 127.0.0.1 port in a background thread."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.routes: dict[str, Route] = {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._httpd = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def route(self, name: str, **behaviour) -> None:
        """Give path ``name`` (no leading slash) a special behaviour (see ``Route``)."""
        self.routes[name] = Route(**behaviour)

    def requests_for(self, name: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == name]

    def _log(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _QuietServer(ThreadingHTTPServer):
    """Clients (ffmpeg) drop connections mid-body on purpose; that is not an error here."""

    def handle_error(self, request, client_address) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Inclusive (first, last) byte positions of a single-range header; None: whole file."""
    if not header:
        return None
    m = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        raise ValueError(header)
    if not m.group(1):
        n = int(m.group(2))
        return max(0, size - n), size - 1
    first = int(m.group(1))
    last = int(m.group(2)) if m.group(2) else size - 1
    return first, min(last, size - 1)


def _handler_for(server: LoopbackServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - silence stderr logging
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            name = self.path.split("?", 1)[0].lstrip("/")
            route = server.routes.get(name, Route())
            range_header = self.headers.get("Range")
            if route.delay:
                time.sleep(route.delay)
            if route.status is not None:
                self._error(
                    name, route.status, route.body or f"status {route.status}", range_header
                )
                return
            path = route.file or (server.root / name)
            if not path.is_file() or ".." in Path(name).parts:
                self._error(name, 404, "not found", range_header)
                return
            size = path.stat().st_size
            try:
                span = _parse_range(range_header, size)
            except ValueError:
                span = None
            if span is not None and span[0] >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                server._log(Request(self.command, name, range_header, 416))
                return
            first, last = span if span is not None else (0, size - 1)
            status = 206 if span is not None else 200
            self.send_response(status)
            self.send_header(
                "Content-Type", CONTENT_TYPES.get(path.suffix, "application/octet-stream")
            )
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(last - first + 1))
            if span is not None:
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            self.end_headers()
            server._log(Request(self.command, name, range_header, status))
            if not body:
                return
            stop = last + 1 if route.truncate_at is None else min(last + 1, route.truncate_at)
            try:
                with open(path, "rb") as f:
                    f.seek(first)
                    position = first
                    while position < stop:
                        chunk = f.read(min(CHUNK, stop - position))
                        if not chunk:
                            break
                        self.wfile.write(chunk)
                        position += len(chunk)
                        if route.bytes_per_second:
                            time.sleep(len(chunk) / route.bytes_per_second)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return
            if stop < last + 1:  # truncated: the promised length never arrives
                self.close_connection = True

        def _error(self, name: str, status: int, text: str, range_header: str | None) -> None:
            payload = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            server._log(Request(self.command, name, range_header, status))

    return Handler
