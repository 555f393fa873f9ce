"""Readiness polling for the listener thread, safe to re-arm from a worker thread.

Two implementations:

- ``EpollPoller`` (Linux): edge-triggered (``EPOLLET``). A connection is added once and
  stays registered while workers serve it: handing it back costs no system call. Edges
  that fire while a worker owns the connection reach the listener, which notes them under
  its registry lock (see listener.py and docs/architecture.md: "Edges while a worker
  owns a connection"), so none is lost.
- ``SelectorPoller`` (anywhere): ``selectors`` has no edge-triggered or one-shot mode and
  its map is not thread-safe, so a connection leaves the selector when it fires, re-arm
  requests are queued under a lock and the listener thread, woken through a pipe,
  applies them itself.
"""

from __future__ import annotations

import contextlib
import errno
import select
import selectors
import threading
from typing import Protocol

from .threads import WakePipe


class Poller(Protocol):
    # Whether a connection stays registered after it fires (EpollPoller): then only its
    # first hand-back calls ``rearm``, to add a connection registered unarmed.
    persistent: bool

    def add_listener(self, fd: int) -> None:
        """Watch a listening socket, level-triggered, until ``remove``."""

    def remove_listener(self, fd: int) -> None: ...

    def register(self, fd: int, armed: bool = True) -> None:
        """Add a new connection (listener thread only), watched for readable events
        unless ``armed`` is False: then it waits for its first ``rearm`` (which may be
        when it is actually added)."""

    def rearm(self, fd: int) -> None:
        """Watch a connection again (any thread), reporting bytes already waiting; a
        closed descriptor is ignored."""

    def forget(self, fd: int) -> None:
        """Stop watching a connection the listener is about to close (listener thread only).

        A worker closing a connection it owns needs no call: closing the descriptor takes it
        out of epoll, and the selectors fallback holds no connection a worker owns.
        """

    def poll(self, timeout: float) -> list[int]:
        """Wait up to ``timeout`` seconds; return the ready descriptors (listener thread only)."""

    def wake(self) -> None:
        """Make a blocked ``poll`` return now (any thread)."""

    def close(self) -> None: ...


class EpollPoller:
    persistent = True
    _EDGE_IN = select.EPOLLIN | select.EPOLLET if hasattr(select, "epoll") else 0

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._wake_pipe = WakePipe()
        self._epoll.register(self._wake_pipe.read_fd, select.EPOLLIN)
        self._exclusive: int = getattr(select, "EPOLLEXCLUSIVE", 0)

    def add_listener(self, fd: int) -> None:
        # EPOLLEXCLUSIVE (Linux >= 4.5): when worker processes share a listening socket,
        # a new connection wakes one of their listeners, not all (the thundering herd).
        # It is only ever added and deleted here, never modified (EPOLL_CTL_MOD refuses it);
        # pausing accepts removes and re-adds the descriptor.
        if self._exclusive:
            try:
                self._epoll.register(fd, select.EPOLLIN | self._exclusive)
                return
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self._exclusive = 0  # An older kernel: plain registration from now on.
        self._epoll.register(fd, select.EPOLLIN)

    def remove_listener(self, fd: int) -> None:
        self.forget(fd)

    def register(self, fd: int, armed: bool = True) -> None:
        if not armed:
            # Added by its first rearm instead: a connection that closes after one request
            # (Connection: close) then costs no epoll call at all.
            return
        try:
            self._epoll.register(fd, self._EDGE_IN)
        except FileExistsError:
            self._epoll.modify(fd, self._EDGE_IN)

    def rearm(self, fd: int) -> None:
        # Adding (or modifying) checks the descriptor at once: bytes that arrived before
        # are reported as an edge. Any thread may call it: epoll_ctl is thread-safe.
        try:
            self._epoll.register(fd, self._EDGE_IN)
        except FileExistsError:
            with contextlib.suppress(OSError):
                self._epoll.modify(fd, self._EDGE_IN)
        except OSError:
            pass  # The listener closed the connection during shutdown: nothing to re-arm.

    def forget(self, fd: int) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._epoll.unregister(fd)

    def poll(self, timeout: float) -> list[int]:
        wake_fd = self._wake_pipe.read_fd
        ready = []
        for fd, _events in self._epoll.poll(timeout):
            if fd == wake_fd:
                self._wake_pipe.drain()
            else:
                ready.append(fd)
        return ready

    def wake(self) -> None:
        self._wake_pipe.wake()

    def close(self) -> None:
        self._epoll.close()
        self._wake_pipe.close()


class SelectorPoller:
    persistent = False

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_pipe = WakePipe()
        self._selector.register(self._wake_pipe.read_fd, selectors.EVENT_READ)
        self._listeners: set[int] = set()
        # Re-arm requests from workers, applied by the listener thread in poll().
        self._pending: list[int] = []
        self._pending_lock = threading.Lock()

    def add_listener(self, fd: int) -> None:
        self._listeners.add(fd)
        self._selector.register(fd, selectors.EVENT_READ)

    def remove_listener(self, fd: int) -> None:
        self._listeners.discard(fd)
        self._unregister(fd)

    def register(self, fd: int, armed: bool = True) -> None:
        if armed:
            self._selector.register(fd, selectors.EVENT_READ)

    def rearm(self, fd: int) -> None:
        with self._pending_lock:
            self._pending.append(fd)
        self._wake_pipe.wake()

    def forget(self, fd: int) -> None:
        with self._pending_lock:
            if fd in self._pending:
                self._pending.remove(fd)
        self._unregister(fd)

    def poll(self, timeout: float) -> list[int]:
        with self._pending_lock:
            pending, self._pending = self._pending, []
        for fd in pending:
            # A connection closed (or its number reused) since the request: skip it.
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.register(fd)
        wake_fd = self._wake_pipe.read_fd
        ready = []
        for key, _events in self._selector.select(timeout):
            fd = key.fd
            if fd == wake_fd:
                self._wake_pipe.drain()
            elif fd in self._listeners:
                ready.append(fd)
            else:
                # One-shot: the connection leaves the selector until it is re-armed.
                self._unregister(fd)
                ready.append(fd)
        return ready

    def wake(self) -> None:
        self._wake_pipe.wake()

    def _unregister(self, fd: int) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(fd)

    def close(self) -> None:
        self._selector.close()
        self._wake_pipe.close()


def make_poller(kind: str) -> Poller:
    """``auto`` picks epoll where the platform has it."""
    if kind == "epoll" or (kind == "auto" and hasattr(select, "epoll")):
        return EpollPoller()
    return SelectorPoller()
