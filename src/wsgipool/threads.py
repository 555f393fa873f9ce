"""Threads for the listener and the workers, which leave signals to the main thread."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

# The signals the main thread handles (serve(), the CLI, the reloader). A process-directed
# signal goes to any thread that does not block it; one that lands on a worker leaves the
# main thread asleep in its wait, and the server never hears it. So the others block them.
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
