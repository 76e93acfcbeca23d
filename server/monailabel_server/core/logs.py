"""The server's recent log lines in memory, for admins to tail and follow (MONAI Label's ``/logs``).

:class:`LogBuffer` is a logging handler on the root logger that keeps the last ``capacity`` records,
numbered from 1. Each line is formatted once, when it is logged: bounded in length, server paths
reduced to their last component (``errors.scrub``), and credentials (bearer tokens, JWTs, passwords,
secrets, API keys) replaced by ``<redacted>``. A follower waits on a condition each new line
notifies, so a follow costs no polling; it ends when its client goes, after an idle timeout, or when
the buffer closes (server stop).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Deque, Iterator, List, Tuple

from monailabel_server.errors import scrub

__all__ = ["LogBuffer", "LogRecordView", "redact", "MAX_LINE_CHARS", "DEFAULT_CAPACITY"]

#: Characters a line keeps.
MAX_LINE_CHARS = 2000
#: Lines the buffer keeps.
DEFAULT_CAPACITY = 10_000

_SECRETS = (
    # Authorization headers and bearer tokens
    re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"),
    # JWTs anywhere
    re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),
    # key=value and key: value for secret-looking keys
    re.compile(r"(?i)\b([\w.-]*(?:password|passwd|secret|token|api[_-]?key|credential)[\w.-]*)(\s*[=:]\s*)"
               r"(\"[^\"]*\"|'[^']*'|[^\s,;&]+)"),
    # user:password@ in URLs
    re.compile(r"(?<=://)([^/\s:@]+):([^/\s@]+)@"),
)


def redact(text: str) -> str:
    """Replaces credentials in a log line with ``<redacted>``."""
    text = _SECRETS[0].sub(lambda m: f"{m.group(1)} <redacted>", text)
    text = _SECRETS[1].sub("<redacted>", text)
    text = _SECRETS[2].sub(lambda m: f"{m.group(1)}{m.group(2)}<redacted>", text)
    return _SECRETS[3].sub(lambda m: f"{m.group(1)}:<redacted>@", text)


@dataclass(frozen=True)
class LogRecordView:
    """One kept line."""

    sequence: int
    time: float
    level: int
    logger: str
    message: str


class LogBuffer(logging.Handler):
    """Keeps the last ``capacity`` log lines, scrubbed, for tailing and following.

    Args:
        capacity: lines kept.
        level: the lowest level kept.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.capacity = capacity
        self._lines: Deque[LogRecordView] = deque(maxlen=capacity)
        self._next = 1
        self._cond = threading.Condition()
        self._closed = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info and record.exc_info[0] is not None:
                text += f" ({record.exc_info[0].__name__}: {record.exc_info[1]})"  # never the traceback
            message = scrub(redact(text), MAX_LINE_CHARS)
        except Exception:  # noqa: BLE001 - a bad log call must not break the caller
            message = "<unformattable log record>"
        with self._cond:
            self._lines.append(LogRecordView(self._next, record.created, record.levelno, record.name[:200], message))
            self._next += 1
            self._cond.notify_all()

    def close(self) -> None:
        """Ends every follower; the buffer keeps no new lines."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        super().close()

    def last_sequence(self) -> int:
        """The sequence number of the latest line (0 before the first)."""
        with self._cond:
            return self._next - 1

    def tail(self, lines: int, min_level: int = 0) -> Tuple[List[LogRecordView], int]:
        """The last ``lines`` kept lines of ``min_level`` or above, oldest first, and the latest sequence
        number at that moment (to follow from, without a gap or a repeat)."""
        with self._cond:
            kept = [r for r in self._lines if r.level >= min_level]
            last = self._next - 1
        return (kept[-lines:] if lines > 0 else []), last

    def follow(self, after: int, min_level: int, idle_timeout_s: float, active: Callable[[], bool],
               poll_s: float = 1.0) -> Iterator[LogRecordView]:
        """Yields lines after sequence ``after`` as they are logged.

        Ends when ``active()`` turns False (checked at least every ``poll_s``), when ``idle_timeout_s``
        passes without a line, or when the buffer closes.
        """
        last_line_at = time.monotonic()
        while active():
            with self._cond:
                fresh = [r for r in self._lines if r.sequence > after]
                if not fresh:
                    if self._closed:  # lines logged before the close are still sent
                        return
                    remaining = idle_timeout_s - (time.monotonic() - last_line_at)
                    if remaining <= 0:
                        return
                    self._cond.wait(min(poll_s, remaining))
                    continue
            after = fresh[-1].sequence
            last_line_at = time.monotonic()
            for r in fresh:
                if r.level >= min_level:
                    yield r
