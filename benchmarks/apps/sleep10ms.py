"""Scenarios 5a-5c: an app that blocks for 10 ms, like a call to a slow backend.

With T worker threads the best any server can do is T / 0.010 requests/s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

SLEEP_S = 0.010
BODY = b"Hello, World!"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    time.sleep(SLEEP_S)
    start_response("200 OK", list(HEADERS))
    return [BODY]
