"""Sort download failures into ledger classes from yt-dlp's exception objects.

yt-dlp raises ``DownloadError``; its ``exc_info[1]`` is the cause: an ``HTTPError`` (with
``.status``), a ``TransportError`` (timeouts, resets), a ``GeoRestrictedError`` or an
``ExtractorError`` whose ``expected`` message is YouTube's own reason. The exception types and
HTTP statuses decide first; YouTube's reason texts (which have no type of their own) decide last.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass

#: Ledger statuses. ``pending``: not tried yet (or stopped before it was).
OK, UNAVAILABLE, UNUSABLE, TRANSIENT, PENDING = (
    "ok",
    "unavailable",
    "unusable",
    "transient",
    "pending",
)
STATUSES = (OK, UNAVAILABLE, UNUSABLE, TRANSIENT, PENDING)
PERMANENT = (UNAVAILABLE, UNUSABLE)


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to: a ledger ``status``, a short ``kind`` and the full ``reason``."""

    status: str
    kind: str
    reason: str
    rate_limited: bool = False  # the site is throttling this session: pause every worker
    systemic: bool = False  # no point going on (disk full, ffmpeg missing)


class SystemicError(RuntimeError):
    """A problem with this machine or session, not with one video; the run must stop."""


class SetupError(ValueError):
    """The run cannot start: an input or the setup is wrong (one line saying what to do)."""


# YouTube reason texts, most specific first: (pattern, status, kind, rate_limited)
_MESSAGE_RULES: tuple[tuple[str, str, str, bool], ...] = (
    (
        r"confirm you.?re not a bot|captcha|rate-limited|try again later|too many requests",
        TRANSIENT,
        "rate_limited",
        True,
    ),
    (r"private video|video is private", UNAVAILABLE, "private", False),
    (r"account .*terminated|terminated account", UNAVAILABLE, "account_terminated", False),
    (
        r"removed by the (user|uploader)|has been removed|violating youtube|copyright",
        UNAVAILABLE,
        "removed",
        False,
    ),
    (
        r"not (made this video )?available in your country|geo.?restrict|blocked it in your country",
        UNAVAILABLE,
        "geo_blocked",
        False,
    ),
    (
        r"confirm your age|age.?restricted|inappropriate for some users",
        UNAVAILABLE,
        "age_restricted",
        False,
    ),
    (
        r"members.only|join this channel|requires payment|premium",
        UNAVAILABLE,
        "members_only",
        False,
    ),
    (
        r"video unavailable|no longer available|does not exist|not available|unsupported url",
        UNAVAILABLE,
        "unavailable",
        False,
    ),
    (r"requested format is not available|no video formats found", UNUSABLE, "no_format", False),
    (
        r"timed? ?out|connection (reset|refused|aborted)|temporary failure|network is unreachable"
        r"|incomplete ?read|remote end closed|name or service not known|ssl",
        TRANSIENT,
        "network",
        False,
    ),
)


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception, yt-dlp's ``exc_info[1]``, and their ``cause``/``__cause__`` chain."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        exc_info = getattr(e, "exc_info", None)
        if isinstance(exc_info, tuple) and len(exc_info) > 1:
            todo.append(exc_info[1])
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
    return [e for e in seen if isinstance(e, BaseException)]


def _clean(message: str) -> str:
    message = re.sub(r"\x1b\[[0-9;]*m", "", message)
    return re.sub(r"^ERROR:\s*", "", message.strip())


def classify_exception(exc: BaseException) -> Outcome:
    """Map an exception raised while downloading one video to an ``Outcome``."""
    from yt_dlp.networking.exceptions import HTTPError, TransportError
    from yt_dlp.utils import ExtractorError, GeoRestrictedError

    chain = _chain(exc)
    reason = _clean(str(getattr(exc, "msg", None) or exc) or type(exc).__name__)
    for e in chain:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return Outcome(TRANSIENT, "disk_full", f"disk full: {e}", systemic=True)
    if re.search(r"no space left on device", reason, re.I):
        return Outcome(TRANSIENT, "disk_full", reason, systemic=True)
    for e in chain:
        if isinstance(e, GeoRestrictedError):
            return Outcome(UNAVAILABLE, "geo_blocked", reason)
    for e in chain:
        if isinstance(e, HTTPError):
            status = e.status
            if status == 429:
                return Outcome(TRANSIENT, "rate_limited", reason, rate_limited=True)
            if status in (404, 410):
                return Outcome(UNAVAILABLE, f"http_{status}", reason)
            if status == 403 or status == 408 or status >= 500:
                return Outcome(TRANSIENT, f"http_{status}", reason)
            return Outcome(UNAVAILABLE, f"http_{status}", reason)
    for pattern, status, kind, limited in _MESSAGE_RULES:
        if re.search(pattern, reason, re.I):
            return Outcome(status, kind, reason, rate_limited=limited)
    for e in chain:
        if isinstance(e, TransportError | TimeoutError | ConnectionError):
            return Outcome(TRANSIENT, "network", reason)
    for e in chain:
        if isinstance(e, ExtractorError) and getattr(e, "expected", False):
            # The site gave a reason we do not know; it answered, so treat it as permanent.
            return Outcome(UNAVAILABLE, "unavailable", reason)
    return Outcome(TRANSIENT, "error", reason)
