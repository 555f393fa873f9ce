"""Threads, signals and wake-ups: the listener and the worker threads leave signals to the
main thread, whose handlers only wake it (see ``handle_signals``)."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import weakref
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

# The signals the main thread handles (serve(), the CLI, the reloader). A process-directed
# signal goes to any thread that does not block it; one that lands on a worker thread
# leaves the main thread asleep in its wait, and the server never hears it. So the others
# block them.
PROCESS_SIGNALS = frozenset(
    getattr(signal, name)
    for name in (
        "SIGINT",
        "SIGTERM",
        "SIGHUP",
        "SIGQUIT",
        "SIGUSR1",
        "SIGUSR2",
        "SIGTTIN",
        "SIGTTOU",
        "SIGCHLD",
    )
    if hasattr(signal, name)
)

SignalHandler = Callable[[int, "FrameType | None"], None]


def start_thread(target: Callable[[], None], name: str) -> threading.Thread:
    """Start a daemon thread running ``target`` with the process signals blocked."""
    thread = threading.Thread(target=target, name=name, daemon=True)
    if not hasattr(signal, "pthread_sigmask"):
        thread.start()
        return thread
    # Blocked around start(), so the new thread inherits the mask from its first instant.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, PROCESS_SIGNALS)
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return thread


class WakePipe:
    """A self-pipe: a byte written to it wakes whoever sleeps on its read end.

    ``wake`` takes no lock and never blocks (a full pipe means a wake-up is pending
    anyway), so signal handlers and any thread may call it. The descriptors are closed by
    ``close``, or when the object is collected: close it only once nothing can call
    ``wake`` any more, as a closed descriptor's number may be reused at once.
    """

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)
        self._finalizer = weakref.finalize(self, _close_fds, self.read_fd, self.write_fd)

    def wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self.write_fd, b"\0")

    def drain(self) -> None:
        """Take the pending wake-ups (the reader's thread only)."""
        with contextlib.suppress(OSError):
            while os.read(self.read_fd, 4096):
                pass

    def wait(self, timeout: float | None = None) -> None:
        """Sleep until woken, or ``timeout`` seconds (None: no limit), then take the
        wake-ups. Check what you wait for before calling it, and after. Opens no
        descriptor: it works when the process has none left (EMFILE)."""
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(self.read_fd, select.POLLIN)
            poller.poll(None if timeout is None else timeout * 1000)
        else:
            select.select([self.read_fd], [], [], timeout)
        self.drain()

    def close(self) -> None:
        self._finalizer()


def _close_fds(*fds: int) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def handle_signals(
    signums: Iterable[int], handler: SignalHandler, wake: WakePipe
) -> Callable[[], None]:
    """Install ``handler`` for ``signums`` and make ``wake`` the signal wake-up descriptor;
    return a function that puts the previous ones back. Signals are the main thread's: on
    another thread (a server embedded in a program) it installs nothing.

    The rule for every handler: Python runs it on the main thread between two bytecodes,
    maybe while that thread holds a lock (inside ``Event.wait``, a logging call, a queue),
    and taking that lock again would hang the thread for good. So a handler only stores
    plain values (a flag, a ``deque.append``) and calls ``wake.wake()``; the main thread,
    asleep on ``wake``, reads them and does the work: logging, stopping, waiting. No lock,
    no ``Event``, no log line in a handler. ``signal.set_wakeup_fd`` makes the interpreter
    write to ``wake`` as the signal arrives, before the handler runs: a signal that lands
    just before the main thread blocks in ``select``, or on another thread, wakes it too.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous: dict[int, Any] = {signum: signal.signal(signum, handler) for signum in signums}
    previous_fd = signal.set_wakeup_fd(wake.write_fd, warn_on_full_buffer=False)

    def restore() -> None:
        signal.set_wakeup_fd(previous_fd)
        for signum, old in previous.items():
            signal.signal(signum, old)

    return restore
