"""Scenario 5d: an app with some Python around a wait, like a view that builds a query,
waits on the database, then renders: 0.3 ms of CPU, a 10 ms sleep, 0.3 ms of CPU.

The CPU part holds the GIL, so no server can do better than about 1 / 0.6 ms requests/s
in one process, however many threads wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

SLEEP_S = 0.010
CPU_S = 0.0003  # each side of the sleep
BODY = b"Hello, World!"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def _spin(seconds: float) -> None:
    """Run Python (holding the GIL) for ``seconds`` of this thread's CPU time."""
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        sum(range(100))


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    _spin(CPU_S)
    time.sleep(SLEEP_S)
    _spin(CPU_S)
    start_response("200 OK", list(HEADERS))
    return [BODY]
