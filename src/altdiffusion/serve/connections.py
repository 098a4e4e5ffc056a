"""Connection limits uvicorn lacks: deadlines for a request's headers and body, and a cap on open
connections that refuses the surplus at once; plus a log filter so a flood cannot fill the disk.

uvicorn closes an idle keep-alive connection (``timeout_keep_alive``) but waits forever for the
first request on a new connection, for the rest of half-sent headers, and for a half-sent body;
its ``limit_concurrency`` answers 503 only once a whole request has arrived, so idle sockets
still hold file descriptors. :class:`GuardedH11Protocol` is uvicorn's own h11 protocol with
those deadlines added (uvicorn takes a protocol class through ``Config(http=...)``).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger("altdiffusion.serve")

_BUSY_BODY = b'{"error": "TooManyConnections", "detail": "too many open connections (--max-connections); retry later"}'
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)
_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int
    header_timeout: float  # seconds from connect (or the end of the previous response) to the last header
    body_timeout: float  # seconds from the last header to the end of the body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol; a connection that is too many, or too slow to send its request, is closed."""

    def __init__(self, *args, limits: ConnectionLimits, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.deadline = None  # the TimerHandle of the header or body deadline now running

    def connection_made(self, transport) -> None:
        if len(self.connections) >= self.limits.max_connections:
            transport.write(_BUSY)
            transport.close()
            logger.warning("refused a connection: %d are open (--max-connections)", len(self.connections))
            return
        super().connection_made(transport)
        self._arm(self.limits.header_timeout, "headers")

    def connection_lost(self, exc) -> None:
        if self.transport is None:  # refused in connection_made
            return
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a request's headers are complete: now its body has a deadline
            self._arm(self.limits.body_timeout, "body")

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():  # keep-alive: the next request's headers get a deadline
            self._arm(self.limits.header_timeout, "headers")

    def _arm(self, seconds: float, part: str) -> None:
        self._disarm()
        self.deadline = self.loop.call_later(seconds, self._expire, part)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _expire(self, part: str) -> None:
        self.deadline = None
        cycle = self.cycle
        if part == "body" and (cycle is None or not cycle.more_body or cycle.response_started):
            return  # the body arrived; the app is working on the request
        if part == "headers" and cycle is not None and not cycle.response_complete:
            return  # a response is still on its way (pipelined request)
        if not self.transport.is_closing():
            self.transport.write(_TIMEOUT)
            self.transport.close()
            logger.info("closed a connection that did not send its request %s in time", part)


class RateLimitFilter(logging.Filter):
    """At most ``burst`` records per logger and message template every ``period`` seconds; the count of
    the ones dropped is reported with the next record let through."""

    def __init__(self, burst: int = 20, period: float = 10.0) -> None:
        super().__init__()
        self.burst = burst
        self.period = period
        self.lock = threading.Lock()
        self.windows: dict[tuple[str, str], list] = {}  # key -> [window start, passed, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg)[:200])
        now = time.monotonic()
        with self.lock:
            window = self.windows.get(key)
            if window is None or now - window[0] >= self.period:
                if len(self.windows) > 1000:  # many distinct messages: start over rather than grow
                    self.windows.clear()
                dropped = window[2] if window else 0
                window = self.windows[key] = [now, 0, 0]
                if dropped:
                    record.msg = f"{record.msg} (and {dropped} more like it were not logged)"
            if window[1] >= self.burst:
                window[2] += 1
                return False
            window[1] += 1
            return True


RATE_LIMITED_LOGGERS = ("asyncio", "uvicorn.error", "uvicorn.access", "altdiffusion.serve")


def limit_log_rate(filter_: RateLimitFilter | None = None) -> RateLimitFilter:
    """Put one :class:`RateLimitFilter` on the loggers a flood of connections writes to."""
    filter_ = filter_ or RateLimitFilter()
    for name in RATE_LIMITED_LOGGERS:
        log = logging.getLogger(name)
        if not any(isinstance(f, RateLimitFilter) for f in log.filters):
            log.addFilter(filter_)
    return filter_
