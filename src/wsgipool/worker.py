"""The worker pool: threads that take ready connections off the queue and serve requests."""

from __future__ import annotations

import contextlib
import logging
import threading
import time

from .affinity import ThreadPinning
from .connection import ClientDisconnected, Connection, Handshake
from .http.errors import ProtocolError
from .http.parser import opens_head_request, parse_head
from .http.proxy_protocol import parse_proxy_header
from .http.response import RETRY_AFTER, error_response
from .listener import Listener, next_deadline
from .scoreboard import Scoreboard, Slot
from .taskqueue import Load, TaskQueue
from .threads import start_thread
from .wsgi import Gateway, Outcome

log = logging.getLogger("wsgipool.error")

# How long a stopping server waits for its worker threads once the graceful timeout is
# over and their connections are shut down: one blocked on its socket leaves at once; one
# inside the application cannot be interrupted (a daemon thread) and is left behind. The
# supervisors' SIGKILL comes later (supervisors.process.KILL_MARGIN is derived from this).
STOP_MARGIN = 1.0


class ConnectionHandler:
    """Serves the requests waiting on one connection, then hands it back or closes it.

    It never waits for a request head: when the bytes that arrived do not yet make a whole
    head, the connection goes back to the listener, so a slow client holds no worker.
    """

    def __init__(self, gateway: Gateway, listener: Listener) -> None:
        self._gateway = gateway
        self._listener = listener
        self._config = gateway.config

    def __call__(
        self, conn: Connection, load: Load | None = None, slot: Slot | None = None
    ) -> None:
        try:
            self._serve(conn, load, slot)
        except BaseException:
            # Even SystemExit from an application must not cost the pool a thread.
            log.exception("unexpected error serving %s", conn.peer)
            self._close(conn)

    def _serve(self, conn: Connection, load: Load | None, slot: Slot | None) -> None:
        if conn.proxy_header_expected and not self._take_proxy_header(conn):
            return
        if conn.handshake_pending and not self._handshake(conn):
            return
        config = self._config
        limits = config.limits
        gateway = self._gateway
        buffer = conn.buffer
        # One budget per transfer direction for this whole turn, not one per request: a
        # client pipelining requests whose bodies (or responses) each stay within the
        # timeout would otherwise restart the rate floor with every request and hold the
        # worker for ever. Waiting for a head never happens here, so a turn ends as soon
        # as the client makes the worker wait for its next request.
        conn.receiving.start()
        conn.sending.start()
        while True:
            request = None
            head = b""
            try:
                end = conn.scanner.find(buffer) if buffer else -1
                if end < 0:
                    received = conn.recv_available()
                    if received == 0:
                        # The peer closed (or reset) the connection between requests.
                        self._close(conn)
                        return
                    if received < 0:
                        if self._hand_back(conn):
                            return
                        continue  # Bytes may have come since the read: read again.
                    if not conn.head_started:
                        conn.head_started = time.monotonic()
                    continue
                head = bytes(buffer[:end])
                del buffer[:end]
                head_started = conn.head_started
                conn.head_started = 0.0
                conn.requests += 1
                request = parse_head(head, limits)
                queue_wait = 0.0
                if conn.queued_at:
                    # The first request of this turn waited in the queue; a client that
                    # waited past queue_timeout has likely given up, so do not run it.
                    queue_wait = time.monotonic() - conn.queued_at
                    conn.queued_at = 0.0
                    if 0 < config.queue_timeout < queue_wait:
                        raise ProtocolError(503, f"waited {queue_wait:.1f}s for a worker")
            except ProtocolError as exc:
                log.debug("refused a request from %s: %s", conn.peer, exc)
                extra = RETRY_AFTER if exc.status == 503 else ""
                if request is not None:
                    head_only = request.method == "HEAD"
                else:
                    # Refused before it parsed: its first bytes still tell a HEAD.
                    head_only = opens_head_request(head or buffer)
                response = error_response(
                    exc.status, exc.detail, extra_headers=extra, head_only=head_only
                )
                conn.sending.start()
                with contextlib.suppress(ClientDisconnected):
                    conn.sendall(response)
                self._close(conn, linger=True)
                return
            try:
                outcome = gateway.handle(conn, request, queue_wait, load, slot, head_started)
            except ClientDisconnected:
                outcome = Outcome.CLOSE
            if outcome is not Outcome.KEEP_ALIVE:
                self._close(conn, linger=outcome is Outcome.ABORT, reset=outcome is Outcome.RESET)
                return
            conn.idle_since = time.monotonic()
            if not buffer and not conn.has_pending_input() and self._hand_back(conn):
                return
            # A pipelined request is already here (or bytes came as the response went
            # out): serve it without a hand-off.

    def _take_proxy_header(self, conn: Connection) -> bool:
        """Consume the PROXY protocol header that must open ``conn`` (``--proxy-protocol``).

        True once it is consumed (the peer is then the client it names); False when the
        connection was handed back to wait for the rest, or closed. A malformed header, or
        a peer that closes first, is closed without an HTTP response: the peer is a proxy.
        """
        buffer = conn.buffer
        while True:
            try:
                header = parse_proxy_header(buffer) if buffer else None
            except ProtocolError as exc:
                log.debug("closing %s: %s", conn.peer, exc)
                self._close(conn)
                return False
            if header is not None:
                break
            received = conn.recv_available()
            if received == 0:
                self._close(conn)
                return False
            # The header timeout from the accept applies; expiry is a silent close
            # (head_started stays 0: no 408 to a proxy).
            if received < 0 and self._listener.watch(
                conn, conn.accepted_at + self._config.header_timeout
            ):
                return False
        del buffer[: header.consumed]
        conn.proxy_header_expected = False
        if header.source is not None:
            # The gateway reads conn.peer on the first request, after this.
            conn.peer = header.source
        return True

    def _handshake(self, conn: Connection) -> bool:
        """Advance the TLS handshake of ``conn``: True once it is done; False when the
        connection was handed back to wait for the client's next flight, or closed."""
        result = conn.handshake()
        while result is Handshake.WAITING:
            if self._hand_back(conn):
                return False
            result = conn.handshake()  # Bytes may have come since the read: try again.
        if result is Handshake.DONE:
            return True
        log.debug("closing %s: TLS handshake %s", conn.peer, result.value)
        self._close(conn, linger=result is Handshake.NOT_TLS)
        return False

    def flush_metrics(self) -> None:
        """Add the calling worker thread's uncounted requests to the metrics (before it
        waits for work)."""
        recorder = self._gateway.recorder
        if recorder is not None:
            recorder.flush()

    def leave_metrics(self) -> None:
        """The calling worker thread leaves the pool: add what it counted, forget it."""
        recorder = self._gateway.recorder
        if recorder is not None:
            recorder.leave()

    def _hand_back(self, conn: Connection) -> bool:
        """Give ``conn`` to the listener to wait for its next bytes; False when it was
        reported readable meanwhile and stays with this worker (see ``Listener.watch``)."""
        return self._listener.watch(conn, next_deadline(conn, self._config))

    def _close(self, conn: Connection, *, linger: bool = False, reset: bool = False) -> None:
        """Close ``conn``; with ``linger``, after the client has stopped sending (the
        listener drops what it sends meanwhile, see ``Listener.linger``)."""
        if linger:
            self._listener.linger(conn)
            return
        self._listener.discard(conn)
        conn.close(reset=reset)


class WorkerPool:
    """``threads`` workers taking ready connections off one ``TaskQueue``; each keeps a
    slot on ``scoreboard`` (one of its own when none is given)."""

    def __init__(
        self,
        threads: int,
        tasks: TaskQueue[Connection],
        name: str = "wsgipool-worker",
        scoreboard: Scoreboard | None = None,
        pinning: ThreadPinning | None = None,
    ):
        self._tasks = tasks
        self._pinning = pinning  # --cpu-affinity: the CPUs each worker thread keeps to
        self.scoreboard = scoreboard if scoreboard is not None else Scoreboard()
        self._size = threads
        self._name = name
        self._threads: list[threading.Thread] = []
        self._started = 0  # threads started so far: the next one's number
        self._handler: ConnectionHandler | None = None

    def start(self, handler: ConnectionHandler) -> None:
        self._handler = handler
        for _ in range(self._size):
            self._add_thread()

    def _add_thread(self) -> None:
        self._tasks.register_worker()
        name = f"{self._name}-{self._started}"
        try:
            self._threads.append(start_thread(self._work, name))
        except RuntimeError:  # "can't start new thread"
            self._tasks.unregister_worker()
            raise
        self._started += 1

    @property
    def size(self) -> int:
        """How many worker threads the pool has, or will have once those asked to leave
        (``resize``) have finished their connection."""
        return self._size

    def resize(self, threads: int) -> None:
        """Grow the pool to ``threads`` at once (``RuntimeError`` if a thread cannot be
        started), or shrink it: the surplus threads leave as they are done with their
        connection. Call it from one thread at a time (the control socket's)."""
        if threads > self._size:
            self._threads = [thread for thread in self._threads if thread.is_alive()]
            while self._size < threads:
                self._add_thread()
                self._size += 1
        elif threads < self._size:
            self._tasks.retire_workers(self._size - threads)
            self._size = threads

    def alive(self) -> int:
        return sum(thread.is_alive() for thread in self._threads)

    def stop(self, timeout: float) -> None:
        self._tasks.close()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _work(self) -> None:
        handler = self._handler
        assert handler is not None
        get = self._tasks.get
        wake_lock = threading.Lock()
        load = Load()  # What this worker measures for the queue (see taskqueue).
        flush_metrics = handler.flush_metrics
        slot = self.scoreboard.claim()
        pinning = self._pinning
        if pinning is not None:
            pinning.join()
        try:
            while True:
                task = get(wake_lock, load, flush_metrics)
                if task is None:
                    return
                conn, queued_at = task
                conn.queued_at = queued_at
                slot.reading()
                handler(conn, load, slot)
                slot.done()  # idle (a request the handler began is done already)
        finally:
            if pinning is not None:
                pinning.leave()
            handler.leave_metrics()
            self.scoreboard.release(slot)
