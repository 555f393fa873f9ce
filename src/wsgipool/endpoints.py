"""A small server of one-shot exchanges, for the monitoring endpoint and the control socket.

Each connection is one exchange: a request in, one answer out, then the connection is
closed. Every exchange is served from one selector, never blocking: a client that sends
slowly, or reads slowly, holds one of ``max_exchanges`` places for at most ``timeout``
seconds and delays nobody; a connection beyond them is closed at once (its client asks
again). An ``Endpoint`` runs on a thread of its own (``start``) in a server process, or,
in the worker-process supervisor, which must start no thread, as one more descriptor of
its ``select`` loop (``fileno``, ``serve``, ``next_deadline``).

Subclasses say what a request is and what answers it (``_read``, which calls ``_reply``);
``_other_ready`` and ``_overdue`` let them drive more descriptors from the same selector
(the control socket's gatherings of worker processes' answers).
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading
import time
from typing import Any

from .sockets import remove_socket_files
from .threads import WakePipe, start_thread

log = logging.getLogger("wsgipool.error")


class Exchange:
    """One connection: its request coming in, then its answer going out."""

    __slots__ = ("deadline", "fd", "inbox", "outbox", "sock")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.deadline = deadline
        self.inbox = bytearray()
        self.outbox: memoryview | None = None


class Endpoint:
    """Serves exchanges on ``sock`` (listening); ``name`` names its thread and its log
    lines. ``unix_path``: the socket file to remove on ``close``."""

    exchange_type: type[Exchange] = Exchange

    def __init__(
        self,
        sock: socket.socket,
        *,
        name: str,
        max_exchanges: int,
        timeout: float,
        recv_size: int,
        unix_path: str = "",
    ) -> None:
        self.sock = sock
        self._name = name
        self._max_exchanges = max_exchanges
        self._timeout = timeout
        self._recv_size = recv_size
        self._unix_path = os.path.abspath(unix_path) if unix_path else ""
        sock.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(sock, selectors.EVENT_READ, None)
        self._exchanges: dict[int, Any] = {}
        self._wake: WakePipe | None = None
        self._thread: threading.Thread | None = None
        self._closing = False

    # --- on a thread of its own ------------------------------------------------------------

    def start(self) -> None:
        """Serve on a thread of its own until ``close``."""
        self._wake = WakePipe()
        self._selector.register(self._wake.read_fd, selectors.EVENT_READ, self._wake)
        self._thread = start_thread(self._run, f"wsgipool-{self._name}")

    def _run(self) -> None:
        try:
            while not self._closing:
                deadline = self.next_deadline()
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                self.serve(timeout)
        except BaseException:
            log.critical("the wsgipool-%s thread failed", self._name, exc_info=True)
            raise

    # --- from someone else's loop ----------------------------------------------------------

    def fileno(self) -> int:
        """A descriptor that is readable when ``serve`` has work (epoll's, kqueue's)."""
        return self._selector.fileno()  # type: ignore[no-any-return,unused-ignore]

    def serve(self, timeout: float | None = 0.0) -> None:
        """Handle what is ready (waiting up to ``timeout``), and what is overdue."""
        for key, _events in self._selector.select(timeout):
            if key.data is None:
                self._accept()
            elif isinstance(key.data, WakePipe):
                key.data.drain()
            elif isinstance(key.data, Exchange):
                self._step(key.data)
            else:
                self._other_ready(key)
        now = time.monotonic()
        for exchange in list(self._exchanges.values()):
            self._overdue(exchange, now)

    def next_deadline(self) -> float | None:
        """When ``serve`` must run again for something overdue (None: never)."""
        return min((self._deadline(e) for e in self._exchanges.values()), default=None)

    def close(self) -> None:
        """Stop serving: close the listening socket and every exchange, and remove the
        socket file."""
        self._closing = True
        if self._wake is not None and self._thread is not None:
            self._wake.wake()
            self._thread.join()
            self._wake.close()
        for exchange in list(self._exchanges.values()):
            self._finish(exchange)
        self._selector.close()
        self.sock.close()
        remove_socket_files([self._unix_path] if self._unix_path else [])

    def close_after_fork(self) -> None:
        """In a forked child: let go of the descriptors, leaving the socket file alone and
        the selector's registrations too (an epoll set is shared with the parent)."""
        for exchange in self._exchanges.values():
            self._release_after_fork(exchange)
            exchange.sock.close()
        self._exchanges.clear()
        self._selector.close()
        self.sock.close()

    # --- what subclasses fill in -----------------------------------------------------------

    def _read(self, exchange: Any) -> None:
        """Bytes came (``exchange.inbox``): once the request is whole, ``_reply``."""
        raise NotImplementedError

    def _other_ready(self, key: selectors.SelectorKey) -> None:
        """A descriptor the subclass registered is ready."""
        raise NotImplementedError

    def _deadline(self, exchange: Any) -> float:
        return float(exchange.deadline)

    def _overdue(self, exchange: Any, now: float) -> None:
        """Called for every exchange after each turn: close it once its time is up."""
        if exchange.deadline <= now:
            self._finish(exchange)

    def _release(self, exchange: Any) -> None:
        """What the subclass holds for ``exchange``, given up as it finishes."""

    def _release_after_fork(self, exchange: Any) -> None:
        """The same in a forked child, touching nothing the parent shares."""

    # --- the exchanges ---------------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # out of descriptors, and the like: the next turn tries again
            if len(self._exchanges) >= self._max_exchanges:
                sock.close()
                continue
            sock.setblocking(False)
            exchange = self.exchange_type(sock, time.monotonic() + self._timeout)
            self._exchanges[exchange.fd] = exchange
            self._selector.register(sock, selectors.EVENT_READ, exchange)

    def _step(self, exchange: Any) -> None:
        try:
            if exchange.outbox is None:
                data = exchange.sock.recv(self._recv_size)
                if not data:
                    self._finish(exchange)
                    return
                exchange.inbox += data
                self._read(exchange)
            if exchange.outbox is not None:
                self._write(exchange)
        except OSError:
            self._finish(exchange)

    def _reply(self, exchange: Any, data: bytes) -> None:
        """Send ``data`` as the answer, then close."""
        exchange.outbox = memoryview(data)
        try:
            self._selector.modify(exchange.sock, selectors.EVENT_WRITE, exchange)
        except KeyError:  # not registered (while the subclass waited on something else)
            self._selector.register(exchange.sock, selectors.EVENT_WRITE, exchange)

    def _write(self, exchange: Any) -> None:
        outbox = exchange.outbox
        try:
            sent = exchange.sock.send(outbox)
        except BlockingIOError:
            return
        exchange.outbox = outbox[sent:]
        if not exchange.outbox:
            with contextlib.suppress(OSError):
                exchange.sock.shutdown(socket.SHUT_WR)
            self._finish(exchange)

    def _finish(self, exchange: Any) -> None:
        self._release(exchange)
        if self._exchanges.pop(exchange.fd, None) is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(exchange.sock)
        exchange.sock.close()
