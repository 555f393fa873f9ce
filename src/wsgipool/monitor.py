"""The monitoring endpoint (``--metrics-bind``): metrics and health on an address of its own.

``GET /metrics`` (Prometheus text, or OpenMetrics when the Accept header asks), ``GET
/stats`` (versioned JSON), ``GET /livez`` (200 while the process runs) and ``GET /readyz``
(200, or 503 with a JSON reason). Nothing here runs application code or waits on a worker
thread: every answer comes from a ``MetricsStore`` snapshot (a copy of shared memory) and a
few flags.

A ``MonitorEndpoint`` is an ``endpoints.Endpoint``: every exchange from one selector, never
blocking (a slow client holds one of ``MAX_EXCHANGES`` places for at most
``EXCHANGE_TIMEOUT``), on a thread of its own in a server process or from the
worker-process supervisor's ``select`` loop. One request per connection, answered with
``Connection: close``.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from .config import BindAddress
from .endpoints import Endpoint, Exchange
from .exposition import render_metrics, stats_json
from .http.errors import ProtocolError
from .http.parser import HeadScanner, Limits, parse_head
from .http.response import SERVER_LINE, http_date, status_line
from .metrics import Histogram, Snapshot
from .sockets import BindError, bind_socket
from .threads import WakePipe, start_thread

log = logging.getLogger("wsgipool.error")

# A whole exchange (request head in, answer out) gets this long, then it is closed.
EXCHANGE_TIMEOUT = 5.0
# Exchanges at once; a connection beyond them is closed at once (a scraper retries).
MAX_EXCHANGES = 32
BACKLOG = 64
# A monitoring request is a request line and a few fields.
LIMITS = Limits(max_request_line=2048, max_header_size=8192, max_header_count=50)
RECV_SIZE = 8192
# How often a server process publishes its gauges, and the supervisor tells systemd.
SAMPLE_INTERVAL = 1.0
# /readyz's queue wait verdict is over at least this much time (see Readiness).
READY_WINDOW = 1.0

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"


class Answer(NamedTuple):
    status: int
    content_type: str
    body: bytes
    extra_headers: str = ""


class Readiness:
    """What /readyz says, from the server's phase and its queue wait.

    With ``max_queue_wait`` (seconds; 0: off), the server is not ready while the oldest
    request in the queue has waited longer, or while the requests that finished since the
    previous check (at least ``READY_WINDOW`` ago) waited longer on average: queue wait
    that *stays* over it, not one slow request.
    """

    def __init__(self, max_queue_wait: float) -> None:
        self._max = max_queue_wait
        self._mark: tuple[float, int, float] | None = None  # (time, count, sum)
        self._slow_recently = False
        self._lock = threading.Lock()  # checks may come from two scrapes at once

    def not_ready(self, phase: str, snapshot: Callable[[], Snapshot]) -> str | None:
        """None when ready, else the reason. ``phase``: "" (serving), or why not."""
        if phase:
            return phase
        if not self._max:
            return None
        taken = snapshot()
        oldest = max(
            (reading.gauges.queue_oldest_wait_us for reading in taken.workers.values()),
            default=0,
        )
        with self._lock:
            slow = self._recent_wait_over(taken.queue_wait, time.monotonic())
        if oldest / 1e6 > self._max:
            return f"a request has waited {oldest / 1e6:.3f}s for a worker thread"
        if slow:
            return f"requests waited over {self._max:g}s on average for a worker thread"
        return None

    def _recent_wait_over(self, queue_wait: Histogram, now: float) -> bool:
        count, total = queue_wait.count, queue_wait.sum
        mark = self._mark
        if mark is None:
            self._mark = (now, count, total)
        elif now - mark[0] >= READY_WINDOW:
            finished = count - mark[1]
            self._slow_recently = finished > 0 and (total - mark[2]) / finished > self._max
            self._mark = (now, count, total)
        return self._slow_recently


class _Exchange(Exchange):
    """One connection to the endpoint: an HTTP request head coming in, then its answer."""

    __slots__ = ("scanner",)

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__(sock, deadline)
        self.scanner = HeadScanner(LIMITS)


class MonitorEndpoint(Endpoint):
    """Serves the monitoring paths on ``sock`` (listening), from ``snapshot`` (the metrics
    now) and ``not_ready`` (None, or why /readyz says 503)."""

    exchange_type = _Exchange

    def __init__(
        self,
        sock: socket.socket,
        snapshot: Callable[[], Snapshot],
        not_ready: Callable[[], str | None],
        unix_path: str = "",
    ) -> None:
        super().__init__(
            sock,
            name="monitor",
            max_exchanges=MAX_EXCHANGES,
            timeout=EXCHANGE_TIMEOUT,
            recv_size=RECV_SIZE,
            unix_path=unix_path,
        )
        self._snapshot = snapshot
        self._not_ready = not_ready

    @classmethod
    def bind(
        cls,
        address: BindAddress,
        snapshot: Callable[[], Snapshot],
        not_ready: Callable[[], str | None],
        mode: int | None = None,
    ) -> MonitorEndpoint:
        """Listen on ``address`` (``BindError``, naming the option, if it cannot)."""
        try:
            sock = bind_socket(address, BACKLOG, mode)
        except BindError as exc:
            # Not "cannot listen on HOST:PORT" alone: a --bind address may look the same.
            raise BindError(f"metrics_bind: {exc}") from None
        return cls(sock, snapshot, not_ready, address.path if address.kind == "unix" else "")

    def _read(self, exchange: _Exchange) -> None:
        try:
            end = exchange.scanner.find(exchange.inbox)
            if end < 0:
                return
            request = parse_head(bytes(exchange.inbox[:end]), LIMITS)
        except ProtocolError as exc:
            self._reply(exchange, _response(Answer(exc.status, TEXT, b""), head_only=False))
        else:
            accept = next((v for n, v in request.headers if n == "accept"), None)
            answer = self._answer(request.method, request.path, accept)
            self._reply(exchange, _response(answer, head_only=request.method == "HEAD"))

    def _answer(self, method: str, path: str, accept: str | None) -> Answer:
        route = ROUTES.get(path)
        if route is None:
            return Answer(404, TEXT, b"not found: try /metrics, /stats, /livez or /readyz\n")
        if method not in ("GET", "HEAD"):
            return Answer(405, TEXT, b"method not allowed\n", "Allow: GET, HEAD\r\n")
        try:
            return route(self, accept)
        except Exception:
            log.exception("monitoring endpoint: cannot answer %s", path)
            return Answer(500, TEXT, b"internal error\n")

    def _metrics(self, accept: str | None) -> Answer:
        content_type, body = render_metrics(self._snapshot(), accept)
        return Answer(200, content_type, body)

    def _stats(self, accept: str | None) -> Answer:
        return Answer(200, JSON, stats_json(self._snapshot()))

    def _livez(self, accept: str | None) -> Answer:
        return Answer(200, TEXT, b"ok\n")

    def _readyz(self, accept: str | None) -> Answer:
        reason = self._not_ready()
        if reason is None:
            return Answer(200, JSON, b'{"status": "ready"}\n')
        body = json.dumps({"status": "not ready", "reason": reason}).encode() + b"\n"
        return Answer(503, JSON, body)


ROUTES: dict[str, Callable[[MonitorEndpoint, str | None], Answer]] = {
    "/metrics": MonitorEndpoint._metrics,
    "/stats": MonitorEndpoint._stats,
    "/livez": MonitorEndpoint._livez,
    "/readyz": MonitorEndpoint._readyz,
}


def _response(answer: Answer, head_only: bool) -> bytes:
    head = (
        f"HTTP/1.1 {status_line(answer.status)}\r\n"
        f"{SERVER_LINE}"
        f"Date: {http_date()}\r\n"
        f"Content-Type: {answer.content_type}\r\n"
        f"Content-Length: {len(answer.body)}\r\n"
        "Cache-Control: no-store\r\n"
        f"{answer.extra_headers}"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + (b"" if head_only else answer.body)


class Ticker:
    """Calls ``tick`` every ``interval`` seconds on a thread of its own until ``stop``."""

    def __init__(self, tick: Callable[[], None], name: str, interval: float = SAMPLE_INTERVAL):
        self._tick = tick
        self._interval = interval
        self._stopping = False
        self._wake = WakePipe()
        self._thread = start_thread(self._run, name)

    def _run(self) -> None:
        while not self._stopping:
            try:
                self._tick()
            except Exception:
                log.exception("%s failed; going on", threading.current_thread().name)
            self._wake.wait(self._interval)

    def stop(self) -> None:
        self._stopping = True
        self._wake.wake()
        self._thread.join()
        self._wake.close()
