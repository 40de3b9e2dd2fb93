"""Fetch one clip ``[start, end)`` of one video through the yt-dlp Python API (range download)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: <= 360p video + best audio; falls back to the best single file of <= 360p, then the smallest.
DEFAULT_FORMAT = "bv*[height<=360]+ba/b[height<=360]/wv*+ba/w"
DEFAULT_URL_TEMPLATE = "https://www.youtube.com/watch?v={youtube_id}"


@dataclass(frozen=True)
class FetchOptions:
    format: str = DEFAULT_FORMAT
    cookies: str | None = None  # Netscape cookies.txt
    rate_limit: str | None = None  # bytes/s, e.g. "2M" (yt-dlp's own downloader only)
    socket_timeout: float = 30.0


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


def source_url(template: str, youtube_id: str, start: float | None, end: float | None) -> str:
    """The URL for one video: ``template`` with ``{youtube_id}``, ``{start}``, ``{end}`` filled."""
    return template.format(youtube_id=youtube_id, start=start, end=end)


def ydl_params(start: float, end: float, outdir: Path, opts: FetchOptions) -> dict:
    """yt-dlp options for an exact-cut range download of ``[start, end)`` into ``outdir``."""
    from yt_dlp.utils import download_range_func, parse_bytes

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
        # YouTube needs a JavaScript runtime (and the yt-dlp-ejs scripts); use whichever is installed
        "js_runtimes": {"deno": {}, "node": {}, "bun": {}},
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


def fetch_clip(url: str, start: float, end: float, outdir: Path, opts: FetchOptions) -> Path:
    """Download ``[start, end)`` of ``url`` as an mp4 inside ``outdir``; return its path.

    Raises yt-dlp's ``DownloadError`` (see ``classify_exception``) or ``FileNotFoundError`` when
    yt-dlp reported success without leaving a file.
    """
    import yt_dlp

    outdir.mkdir(parents=True, exist_ok=True)
    with yt_dlp.YoutubeDL(ydl_params(start, end, outdir, opts)) as ydl:
        info = ydl.extract_info(url, download=True)
    paths = [
        Path(d["filepath"])
        for d in (info or {}).get("requested_downloads") or []
        if d.get("filepath")
    ]
    paths = [p for p in paths if p.is_file()] or sorted(outdir.glob("clip.*"))
    if not paths:
        raise FileNotFoundError(f"yt-dlp finished without an output file for {url}")
    return paths[0]
