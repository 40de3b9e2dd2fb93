"""Fetch one clip ``[start, end)`` of one video through the yt-dlp Python API (range download).

YouTube needs a JavaScript runtime: :func:`find_js_runtime` finds one (the ``deno`` wheel that
``pip install avel`` brings, or deno / node / bun on PATH) without the virtual environment being
activated, and :func:`ydl_params` hands its path to yt-dlp.
"""

from __future__ import annotations

import shutil
import string
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from pipeline.core.media import MediaError, first_stream, probe

#: <= 360p video + best audio; falls back to the best single file of <= 360p, then the smallest.
DEFAULT_FORMAT = "bv*[height<=360]+ba/b[height<=360]/wv*+ba/w"
DEFAULT_URL_TEMPLATE = "https://www.youtube.com/watch?v={youtube_id}"
#: JavaScript runtimes yt-dlp can use, in the order they are looked for.
JS_RUNTIMES = ("deno", "node", "bun")
JS_RUNTIME_ADVICE = (
    "YouTube downloads need a JavaScript runtime and none was found: install the deno wheel into "
    "this environment (`pip install deno`; `make setup` does it), or put deno, node >= 22 or bun on "
    "PATH, or pass --js-runtime PATH"
)


@dataclass(frozen=True)
class FetchOptions:
    format: str = DEFAULT_FORMAT
    cookies: str | None = None  # Netscape cookies.txt
    rate_limit: str | None = None  # bytes/s, e.g. "2M" (yt-dlp's own downloader only)
    socket_timeout: float = 30.0
    js_runtime: tuple[str, str] | None = None  # (yt-dlp runtime name, executable path)


class _Logger:
    """Keep yt-dlp quiet; its errors come back as exceptions, its warnings are kept."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def debug(self, msg: str) -> None:
        pass

    def info(self, msg: str) -> None:
        pass

    def warning(self, msg: str) -> None:
        self.warnings.append(msg)

    def error(self, msg: str) -> None:
        pass


#: The fields a URL template may use.
URL_FIELDS = ("youtube_id", "start", "end")


def check_url_template(template: str) -> str:
    """``template`` when it is a usable URL template, else a ``ValueError`` saying why: it must name
    each video (``{youtube_id}``) and use no other field than ``{start}`` and ``{end}``."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ValueError(f"{exc} in {template!r} (write a literal brace as {{{{)") from None
    names = [f.split(".")[0].split("[")[0] for f in fields]
    unknown = sorted({n for n in names if n not in URL_FIELDS})
    if unknown or "" in names:
        shown = ", ".join("{" + n + "}" for n in unknown) or "{}"
        raise ValueError(
            f"unknown field {shown} in {template!r}; the fields are "
            + ", ".join("{" + f + "}" for f in URL_FIELDS)
        )
    if "youtube_id" not in names:
        raise ValueError(f"no {{youtube_id}} in {template!r}: every video would get the same URL")
    return template


def source_url(template: str, youtube_id: str, start: float | None, end: float | None) -> str:
    """The URL for one video: ``template`` with ``{youtube_id}``, ``{start}``, ``{end}`` filled."""
    return template.format(youtube_id=youtube_id, start=start, end=end)


def is_youtube(url_template: str) -> bool:
    """True when the URLs of ``url_template`` point at YouTube (which needs a JavaScript runtime)."""
    host = (urlparse(url_template).hostname or "").lower()
    return host == "youtu.be" or host == "youtube.com" or host.endswith(".youtube.com")


def _runtime_info(name: str, path: str) -> tuple[str, str] | None:
    """``(name, path)`` when ``path`` runs as a version of ``name`` that yt-dlp supports."""
    import yt_dlp  # noqa: F401 - registers the runtimes below
    from yt_dlp.globals import supported_js_runtimes

    info = supported_js_runtimes.value[name](path=path).info
    return (name, info.path) if info is not None and info.supported else None


def _packaged_deno() -> str | None:
    """The deno binary of the ``deno`` wheel installed beside this Python, if any."""
    try:
        import deno
    except ImportError:
        return None
    try:
        return str(deno.find_deno_bin())
    except (FileNotFoundError, OSError):
        return None


def find_js_runtime(spec: str = "auto") -> tuple[str, str] | None:
    """The JavaScript runtime for yt-dlp as ``(name, path)``, or None when there is none.

    ``auto``: the ``deno`` wheel of this Python (found through the package, so the environment
    need not be activated), then deno, node and bun on PATH (versions yt-dlp supports). Anything
    else is the path of a deno, node or bun executable (its name says which).
    """
    if spec != "auto":
        path = shutil.which(spec) or (spec if Path(spec).is_file() else None)
        if path is None:
            return None
        name = next((n for n in JS_RUNTIMES if Path(path).name.startswith(n)), "deno")
        return _runtime_info(name, path)
    packaged = _packaged_deno()
    if packaged and (found := _runtime_info("deno", packaged)):
        return found
    for name in JS_RUNTIMES:
        path = shutil.which(name)
        if path and (found := _runtime_info(name, path)):
            return found
    return None


def ydl_params(start: float, end: float, outdir: Path, opts: FetchOptions) -> dict:
    """yt-dlp options for an exact-cut range download of ``[start, end)`` into ``outdir``."""
    from yt_dlp.utils import download_range_func, parse_bytes

    if opts.js_runtime is not None:
        name, path = opts.js_runtime
        runtimes: dict = {name: {"path": path}}
    else:
        runtimes = {n: {} for n in JS_RUNTIMES}  # whatever yt-dlp finds itself
    params = {
        "format": opts.format,
        "merge_output_format": "mp4",
        "download_ranges": download_range_func(None, [(float(start), float(end))]),
        "force_keyframes_at_cuts": True,  # re-encode at the cuts: exact 10.00 s, not keyframe-snapped
        "outtmpl": {"default": str(outdir / "clip.%(ext)s")},
        "postprocessors": [{"key": "FFmpegVideoRemuxer", "preferedformat": "mp4"}],
        "noplaylist": True,
        "overwrites": True,
        "continuedl": False,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "logger": _Logger(),
        "retries": 2,
        "extractor_retries": 1,
        "socket_timeout": opts.socket_timeout,
        # YouTube needs a JavaScript runtime (and the yt-dlp-ejs scripts)
        "js_runtimes": runtimes,
    }
    if opts.cookies:
        params["cookiefile"] = str(opts.cookies)
    if opts.rate_limit:
        rate = parse_bytes(opts.rate_limit)
        if rate is None:
            raise ValueError(
                f"--rate-limit {opts.rate_limit!r}: expected bytes/s such as 500K or 2M"
            )
        params["ratelimit"] = rate
    return params


def fetch_clip_info(
    url: str, start: float, end: float, outdir: Path, opts: FetchOptions
) -> tuple[Path, dict]:
    """Download ``[start, end)`` of ``url`` as an mp4 inside ``outdir``; return its path and
    yt-dlp's info dict.

    Raises yt-dlp's ``DownloadError`` (see ``classify_exception``) or ``FileNotFoundError`` when
    yt-dlp reported success without leaving a file.
    """
    import yt_dlp

    outdir.mkdir(parents=True, exist_ok=True)
    with yt_dlp.YoutubeDL(ydl_params(start, end, outdir, opts)) as ydl:
        info = ydl.extract_info(url, download=True) or {}
    paths = [
        Path(d["filepath"]) for d in info.get("requested_downloads") or [] if d.get("filepath")
    ]
    paths = [p for p in paths if p.is_file()] or sorted(outdir.glob("clip.*"))
    if not paths:
        raise FileNotFoundError(f"yt-dlp finished without an output file for {url}")
    return paths[0], info


def fetch_clip(url: str, start: float, end: float, outdir: Path, opts: FetchOptions) -> Path:
    """Download ``[start, end)`` of ``url`` as an mp4 inside ``outdir``; return its path."""
    return fetch_clip_info(url, start, end, outdir, opts)[0]


def source_streams(info: dict, timeout: float = 60) -> set[str] | None:
    """The kinds of stream (``video``, ``audio``) the whole source has: the site's own format
    description, else ffprobe of its media URL(s); None when it cannot be told."""
    formats = info.get("requested_formats") or [info]
    kinds: set[str] = set()
    described = True
    for fmt in formats:
        codecs = {"video": fmt.get("vcodec"), "audio": fmt.get("acodec")}
        if any(c is None for c in codecs.values()):
            described = False
            break
        kinds |= {kind for kind, codec in codecs.items() if codec != "none"}
    if described:
        return kinds
    kinds = set()
    for fmt in formats:
        url = fmt.get("url")
        if not url:
            return None
        try:
            streams = probe(url, timeout=timeout, headers=fmt.get("http_headers"))
        except (MediaError, ValueError):
            return None
        kinds |= {k for k in ("video", "audio") if first_stream(streams, k) is not None}
    return kinds


def source_seconds(info: dict, timeout: float = 60) -> float | None:
    """The length of the whole source video: the site's own figure, else ffprobe of its media
    URL(s) (the shortest stream); None when it cannot be told."""
    if info.get("duration"):
        return float(info["duration"])
    formats = info.get("requested_formats") or [info]
    lengths = []
    for fmt in formats:
        url = fmt.get("url")
        if not url:
            continue
        try:
            described = probe(url, timeout=timeout, headers=fmt.get("http_headers"))
            lengths.append(float(described["format"]["duration"]))
        except (MediaError, KeyError, ValueError):
            continue
    return min(lengths) if lengths else None
