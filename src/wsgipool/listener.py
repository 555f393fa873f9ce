"""The listener thread: accepts connections, watches idle ones, feeds ready ones to the pool.

It owns the listening sockets, the poller and the registry of open connections. A worker
hands a connection back with ``watch`` and tells of one it closed with ``discard``.

A connection is *watched* (owned by the listener) while ``conn.deadline`` is non-zero and
owned by a worker while it is zero. Both hand-overs happen under ``_lock``, as do all
changes to the registry, and only the listener turns a readiness event into a dispatch,
after finding the connection there and watched; a stale event for a closed or reused
descriptor therefore never runs anything twice.

A connection closed after an error response that the client may still be sending to
*lingers* (``linger``): half-closed, it stays watched while the listener reads and drops
what arrives, so the client's unread response is not destroyed by a reset.

With an edge-triggered poller a connection stays registered while a worker owns it, so
an edge can fire then: the listener records it (``_missed``) and the worker's hand-back
(``watch``) finds it and reads again instead of handing the connection over. See
docs/architecture.md, "Edges while a worker owns a connection".
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from .config import Config
from .connection import (
    MSG_DONTWAIT,
    TCP_OPTIONS_INHERITED,
    Connection,
    set_socket_options,
    timeval,
)
from .http.parser import opens_head_request
from .http.response import RETRY_AFTER, error_response
from .poller import make_poller
from .sockets import defers_accept
from .taskqueue import STALL_DELAY, TaskQueue
from .threads import start_thread

if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable

    from .affinity import CpuAffinity
    from .connection import TransferLimits
    from .http.parser import Limits

log = logging.getLogger("wsgipool.error")

# How often idle and slow connections are checked against their deadlines.
SWEEP_INTERVAL = 0.5
# While draining, a connection idle this long is closed; until then a request on it is
# still served (with Connection: close). See _close_watched.
DRAIN_IDLE_GRACE = 0.5
# After EMFILE/ENFILE on accept, stop accepting this long before trying again.
ACCEPT_BACKOFF = 0.5
# When a pool that runs Python (a target of one worker, see taskqueue) has queued work,
# the listener pauses for half of it before polling again, at most MAX_PAUSE (no longer
# than a stall check may wait); below MIN_PAUSE a sleep is not worth its system call.
# See _run.
MAX_PAUSE = STALL_DELAY
MIN_PAUSE = 0.0001
# A lingering connection (see Listener.linger) is closed once the client has sent nothing
# for LINGER_IDLE seconds, and at the latest LINGER_TIME seconds after the error response
# (nginx's lingering_timeout and lingering_time). Each wake reads at most LINGER_READS
# times RECV_SIZE bytes of it (1 MiB), so a fast sender cannot keep the listener to itself.
LINGER_IDLE = 5.0
LINGER_TIME = 30.0
LINGER_READS = 16
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def _peek(sock: socket.socket) -> bytes | None:
    """Look at the next byte without reading it: ``None`` while nothing has arrived,
    ``b""`` once the peer closed (or the socket broke), else the byte."""
    try:
        return sock.recv(1, socket.MSG_PEEK | MSG_DONTWAIT)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def _refusal(conn: Connection, status: int, detail: str, extra_headers: str = "") -> bytes:
    """The listener's own error response to the request waiting on ``conn``: without
    content when that is a HEAD (RFC 9110 9.3.2), told from what has been read of it or,
    when nothing has, from a look at the socket's first bytes (left unread)."""
    data: bytes | bytearray = conn.buffer
    if not data:
        with contextlib.suppress(OSError):
            data = conn.sock.recv(7, socket.MSG_PEEK | MSG_DONTWAIT)
    return error_response(
        status, detail, extra_headers=extra_headers, head_only=opens_head_request(data)
    )


def next_deadline(conn: Connection, config: Config) -> float:
    """Until when ``conn``, handed to the listener to wait for its next bytes, may wait:
    the header timeout from the first byte of a head that has begun; from the accept for
    one that has not said anything yet (a deferred accept that timed out, a preconnect);
    else the keep-alive timeout from the last response. Expiry before a head has begun is
    a silent close."""
    if conn.buffer:
        if not conn.head_started:
            conn.head_started = time.monotonic()
        return conn.head_started + config.header_timeout
    if not conn.requests:
        return conn.accepted_at + config.header_timeout
    conn.head_started = 0.0
    return conn.idle_since + config.keepalive_timeout


def _idle(conn: Connection) -> bool:
    """Whether ``conn`` waits for a request that has not begun to arrive. A request already
    in the kernel's buffer counts as begun: the poller will report it, and closing such a
    connection (say, accepted just before a drain) would drop a request unanswered. A
    closed or broken connection counts as idle: there is nothing to answer."""
    if conn.buffer or conn.has_pending_input():
        return False
    return not _peek(conn.sock)


class Listener:
    """Runs the accept/watch loop on its own thread."""

    def __init__(
        self,
        sockets: list[socket.socket],
        config: Config,
        tasks: TaskQueue[Connection],
        draining: threading.Event,
        tls: ssl.SSLContext | None = None,
        on_shed: Callable[[], None] | None = None,
        affinity: CpuAffinity | None = None,
    ) -> None:
        self._config = config
        # --cpu-affinity: checked at each sweep; this thread is one of those it moves.
        self._affinity = affinity
        # Told of each request refused for a full queue (the metrics' count).
        self._on_shed = on_shed
        # With TLS every connection is a TLSConnection; its handshake runs on a worker.
        self._new_connection: Callable[
            [socket.socket, Any, Any, Limits, TransferLimits], Connection
        ] = Connection
        if tls is not None:
            from .tls import TLSConnection  # Only then: ssl costs an import.

            self._new_connection = functools.partial(TLSConnection, context=tls)
        self._tasks = tasks
        self._poller = make_poller(config.poller)
        self._listening = {sock.fileno(): sock for sock in sockets}
        self._tcp = {fd for fd, sock in self._listening.items() if sock.family != socket.AF_UNIX}
        self._deferred = {fd for fd, sock in self._listening.items() if defers_accept(sock)}
        self._addresses = {fd: sock.getsockname() for fd, sock in self._listening.items()}
        self._recv_timeout = timeval(config.body_timeout)
        self._send_timeout = timeval(config.send_timeout)
        # --proxy-protocol: whose connections must start with a PROXY header.
        self._proxy_trust = config.proxy_trust if config.proxy_protocol else None
        self._conns: dict[int, Connection] = {}
        self._lock = threading.Lock()
        # Under _lock: connections owned by a worker that the poller reported readable
        # meanwhile, and connections not in the poller yet (accepted deferred: added by
        # their first hand-back).
        self._missed: set[Connection] = set()
        self._unarmed: set[Connection] = set()
        self._empty = threading.Condition(self._lock)
        # Whether the listening sockets are in the poller, and until when accepting is
        # paused after EMFILE/ENFILE.
        self._accepting = False
        self._accept_paused_until = 0.0
        self._at_capacity = False
        # Set once shutdown begins; the gateway reads it as each response head goes out.
        self._draining = draining
        self._stopping = False
        self._last_overload_log = 0.0
        self._thread: threading.Thread | None = None

    # --- called from other threads -------------------------------------------------------

    def start(self) -> None:
        for fd, sock in self._listening.items():
            sock.setblocking(False)
            if fd in self._tcp and TCP_OPTIONS_INHERITED:
                set_socket_options(sock, True, self._recv_timeout, self._send_timeout)
        self._update_accepting(time.monotonic())
        self._thread = start_thread(self._run, "wsgipool-listener")

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    def watch(self, conn: Connection, deadline: float) -> bool:
        """A worker hands ``conn`` back to wait for its next bytes until ``deadline``.

        False when the poller reported ``conn`` readable while the worker owned it: the
        worker keeps it and must read again (the bytes may have come after its last read).
        With an edge-triggered poller a connection already registered needs no system
        call. Should the listener close the connection in between (shutdown), a re-arm
        fails harmlessly; the registry decides what runs. Once the listener is stopping,
        the connection is closed instead.
        """
        with self._lock:
            stopping = self._stopping
            if stopping:
                self._remove(conn)
            elif conn in self._missed:
                self._missed.discard(conn)
                return False
            else:
                conn.deadline = deadline
                rearm = not self._poller.persistent or conn in self._unarmed
                self._unarmed.discard(conn)
        if stopping:
            # The listener may have closed what it watches already and closes nothing
            # from now on: a connection handed back now would stay open for good.
            conn.close()
            return True
        if rearm:
            self._poller.rearm(conn.fd)
        return True

    def linger(self, conn: Connection) -> None:
        """``conn``'s last response (an error, sent while the client may still be sending
        a body) is out: half-close it and close it once the client stops sending.

        Closing at once over bytes still arriving would make the kernel reset the
        connection and destroy the response the client has not read yet: a client that
        sends its whole body before reading (Python's http.client) would never see its
        413. The listener drops what arrives meanwhile (``_drop_lingering``) until the
        client closes, goes quiet for LINGER_IDLE or reaches LINGER_TIME; no worker
        waits on it, and it still counts toward max_connections. Called by the owner
        (a worker, or the listener shedding a request), which gives the connection up.
        """
        conn.half_close()
        conn.buffer.clear()
        conn.head_started = 0.0  # Its expiry is a silent close, never a 408.
        now = conn.idle_since = time.monotonic()
        with self._lock:
            if self._stopping or self._conns.get(conn.fd) is not conn:
                self._remove(conn)
                stopped = True
            else:
                # A readiness event missed meanwhile needs no note: the re-arm below
                # reports the bytes waiting.
                self._missed.discard(conn)
                self._unarmed.discard(conn)
                conn.linger_until = now + LINGER_TIME
                conn.deadline = now + LINGER_IDLE
                stopped = False
        if stopped:
            # Too late for the listener (it closes nothing after it stopped): close now.
            conn.close()
            return
        self._poller.rearm(conn.fd)

    def discard(self, conn: Connection) -> None:
        """A worker closed (or is about to close) ``conn``: forget it."""
        with self._lock:
            self._remove(conn)

    def drain(self) -> None:
        """Stop accepting and close idle connections; busy ones finish their request."""
        self._draining.set()
        self._poller.wake()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no connection is open; False if ``timeout`` passed first."""
        with self._empty:
            return self._empty.wait_for(lambda: not self._conns, timeout)

    def stop(self) -> None:
        """End the loop, close watched connections and shut down the rest (their workers,
        which own them, close them)."""
        self._draining.set()
        with self._lock:
            self._stopping = True
            busy = [conn for conn in self._conns.values() if not conn.deadline]
        self._poller.wake()
        if self._thread is not None:
            self._thread.join()
        for conn in busy:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)

    def connection_count(self) -> int:
        with self._lock:
            return len(self._conns)

    def connection_states(self) -> tuple[int, int]:
        """Open connections: (owned by a worker, watched by the listener)."""
        with self._lock:
            watched = sum(1 for conn in self._conns.values() if conn.deadline)
            return len(self._conns) - watched, watched

    # --- the listener thread -------------------------------------------------------------

    def _run(self) -> None:
        poller = self._poller
        tasks = self._tasks
        next_sweep = time.monotonic() + SWEEP_INTERVAL
        next_wake_check: float | None = None
        affinity = self._affinity
        if affinity is not None:
            affinity.pinning.join()
        try:
            while not self._stopping:
                if self._draining.is_set():
                    # Every turn, not once: a worker may hand back an idle connection
                    # after the drain began.
                    self._close_watched(idle_only=True)
                wake_at = (
                    next_sweep if next_wake_check is None else min(next_sweep, next_wake_check)
                )
                # A pool that runs Python, with work queued: gather the connections that get
                # ready meanwhile into one batch rather than wake for every few. Each
                # wake costs a system call and a GIL hand-off with the worker; requests
                # that get ready during the pause lose nothing, they would queue behind
                # that work. Hello world, 50 connections: 13% less CPU, 5-10% more req/s.
                pause = min(MAX_PAUSE, tasks.backlog(time.monotonic()) / 2)
                if pause >= MIN_PAUSE:
                    time.sleep(pause)
                ready = poller.poll(max(0.0, wake_at - time.monotonic()))
                busy_from = time.monotonic()
                if ready:
                    self._handle_ready(ready)
                now = time.monotonic()
                next_wake_check = tasks.wake_stalled(now, now - busy_from)
                self._update_accepting(now)
                if now >= next_sweep:
                    self._sweep(now)
                    next_sweep = now + SWEEP_INTERVAL
                    if affinity is not None:
                        affinity.check(now, tasks.taken, tasks.target, tasks.awake)
            self._close_watched(idle_only=False)
        except BaseException:
            log.critical("listener thread failed", exc_info=True)
            raise
        finally:
            if affinity is not None:
                affinity.pinning.leave()
                affinity.release()
            poller.close()

    def _handle_ready(self, ready: list[int]) -> None:
        listening = self._listening
        dispatch = []
        lingering: list[Connection] = []
        with self._lock:
            conns = self._conns
            for fd in ready:
                if fd in listening:
                    continue
                conn = conns.get(fd)
                if conn is None:
                    continue  # Closed since: a stale event.
                if conn.linger_until:
                    if conn.deadline:
                        lingering.append(conn)
                elif conn.deadline:
                    conn.deadline = 0.0
                    dispatch.append(conn)
                else:
                    # A worker owns it: its hand-back will find this and read again.
                    self._missed.add(conn)
        if lingering:
            self._drop_lingering(lingering)
        for fd in ready:
            sock = listening.get(fd)
            if sock is not None:
                self._accept(sock)
        put = self._tasks.put
        for conn in dispatch:
            if not put(conn):
                self._shed(conn)

    def _drop_lingering(self, lingering: list[Connection]) -> None:
        """Drop what lingering connections received; close those whose client closed.
        The others wait for more until LINGER_IDLE from now (at most their LINGER_TIME:
        the sweep closes them then)."""
        finished = {conn for conn in lingering if not conn.drop_input(LINGER_READS)}
        now = time.monotonic()
        with self._lock:
            for conn in lingering:
                if conn in finished:
                    self._poller.forget(conn.fd)
                    self._remove(conn)
                else:
                    # A drain closes lingering connections quiet since idle_since for
                    # DRAIN_IDLE_GRACE like idle ones (see _close_watched), not one
                    # caught between two reads.
                    conn.idle_since = now
                    conn.deadline = min(now + LINGER_IDLE, conn.linger_until)
        for conn in finished:
            conn.close()
        for conn in lingering:
            if conn not in finished:
                # Always: a read cut short by LINGER_READS left bytes an edge-triggered
                # poller will not report again (and the fallback poller fires once).
                self._poller.rearm(conn.fd)

    def _accept(self, listening: socket.socket) -> None:
        config = self._config
        is_tcp = listening.fileno() in self._tcp
        deferred = listening.fileno() in self._deferred
        local = self._addresses[listening.fileno()]
        # Accept everything pending (one wake-up, many connections), up to the limit, then
        # take the registry lock once for the lot: workers closing connections contend
        # for it, so it is held for dictionary stores only, not system calls.
        with self._lock:
            room = config.max_connections - len(self._conns)
        accepted: list[Connection] = []
        for _ in range(min(256, room)):
            try:
                sock, peer = listening.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno in RESOURCE_ERRNOS:
                    self._pause_accepting(exc)
                    break
                # ECONNABORTED and friends: that client is gone, the next may not be.
                continue
            try:
                if sock.gettimeout() is not None:
                    # Only after socket.setdefaulttimeout(): accepted sockets are blocking.
                    sock.setblocking(True)
                if not (is_tcp and TCP_OPTIONS_INHERITED):
                    set_socket_options(sock, is_tcp, self._recv_timeout, self._send_timeout)
            except OSError:
                sock.close()
                continue
            try:
                conn = self._new_connection(sock, peer, local, config.limits, config.transfer)
            except Exception:
                # One connection's set-up (a TLS object) must never stop the listener.
                log.exception("cannot set up the connection from %s", peer)
                sock.close()
                continue
            if self._proxy_trust is not None and self._proxy_trust.trusts_peer(peer):
                conn.proxy_header_expected = True
            accepted.append(conn)
        if not accepted:
            return
        deadline = 0.0 if deferred else time.monotonic() + config.header_timeout
        with self._lock:
            for conn in accepted:
                conn.deadline = deadline
                self._conns[conn.fd] = conn
            if deferred:
                self._unarmed.update(accepted)
        # Only this thread registers, and a connection is in the registry before the
        # poller can report it (or a worker can own it).
        register = self._poller.register
        for conn in accepted:
            # Deferred: its first bytes are already here, so straight to a worker.
            register(conn.fd, armed=not deferred)
        if deferred:
            put = self._tasks.put
            for conn in accepted:
                if not put(conn):
                    self._shed(conn)

    def _pause_accepting(self, exc: OSError) -> None:
        now = time.monotonic()
        if now >= self._accept_paused_until + 60:
            # Once a minute at most: a descriptor shortage can last.
            log.error("accept() failed (%s); pausing accepts for %.1fs", exc, ACCEPT_BACKOFF)
        self._accept_paused_until = now + ACCEPT_BACKOFF
        self._update_accepting(now)

    def _update_accepting(self, now: float) -> None:
        """Watch the listening sockets exactly when a new connection may be taken."""
        if self._draining.is_set():
            self._close_listening()
            return
        with self._lock:
            self._at_capacity = len(self._conns) >= self._config.max_connections
        wanted = not (self._at_capacity or now < self._accept_paused_until)
        if wanted == self._accepting:
            return
        for fd in self._listening:
            if wanted:
                self._poller.add_listener(fd)
            else:
                self._poller.remove_listener(fd)
        self._accepting = wanted

    def _close_listening(self) -> None:
        """Shutting down: close the listening sockets, so new clients are refused at once
        rather than left in the backlog until the drain ends."""
        for fd, sock in self._listening.items():
            if self._accepting:
                self._poller.remove_listener(fd)
            sock.close()
        self._listening = {}
        self._accepting = False

    def _shed(self, conn: Connection) -> None:
        """The queue is full: refuse the request waiting on ``conn`` at once (a 503 costs
        no worker). Only a request is refused: a connection with nothing to read is none."""
        if not (conn.buffer or conn.has_pending_input()):
            first = _peek(conn.sock)
            # Nothing sent yet: a preconnect that a deferred accept delivered, say. Watched
            # as a fresh one: served once it speaks (with room in the queue by then), or
            # closed silently at its deadline. (Not handed over: it spoke just now, so it
            # is a request to refuse.)
            if first is None and self.watch(conn, next_deadline(conn, self._config)):
                return
            if first == b"":
                # An idle client hung up: close it without a word.
                self.discard(conn)
                conn.close()
                return
        now = time.monotonic()
        if now - self._last_overload_log >= 1.0:
            self._last_overload_log = now
            log.warning(
                "overloaded: %d connections wait for a worker; answering 503", len(self._tasks)
            )
        conn.send_nowait(_refusal(conn, 503, "server overloaded", RETRY_AFTER))
        if self._on_shed is not None:
            self._on_shed()
        self.linger(conn)

    def _sweep(self, now: float) -> None:
        expired = []
        with self._lock:
            for conn in self._conns.values():
                if 0.0 < conn.deadline <= now:
                    expired.append(conn)
            for conn in expired:
                self._poller.forget(conn.fd)
                self._remove(conn)
        for conn in expired:
            if conn.head_started:
                # A request had started arriving: say why it is being dropped.
                conn.send_nowait(_refusal(conn, 408, "request head timed out"))
            conn.close()

    def _close_watched(self, *, idle_only: bool) -> None:
        if idle_only:
            # Draining: close connections idle for DRAIN_IDLE_GRACE. One that went idle just
            # now is likely about to carry a request (a proxy reuses its pooled connections
            # at once under load); closing it would race that request, which then meets a
            # reset, and a proxy cannot retry a POST. Served instead, the request's response
            # carries Connection: close.
            idle_before = time.monotonic() - DRAIN_IDLE_GRACE
        with self._lock:
            closing = [
                conn
                for conn in self._conns.values()
                if conn.deadline
                and (not idle_only or (conn.idle_since <= idle_before and _idle(conn)))
            ]
            for conn in closing:
                self._poller.forget(conn.fd)
                self._remove(conn)
        for conn in closing:
            conn.close()

    def _remove(self, conn: Connection) -> None:
        """Drop ``conn`` from the registry; the registry lock must be held."""
        conn.deadline = 0.0
        self._missed.discard(conn)
        self._unarmed.discard(conn)
        if self._conns.pop(conn.fd, None) is conn:
            if not self._conns:
                self._empty.notify_all()
            if self._at_capacity:
                self._poller.wake()  # Below max_connections again: accept once more.
