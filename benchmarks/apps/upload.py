"""Scenario 7: read the whole request body (1 MiB POSTs) and report its size.

Answers 400 if fewer bytes than Content-Length arrived, so a server that
mishandles bodies shows up in the error column rather than as a speed-up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

BLOCK = 1 << 16


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    try:
        expected = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        expected = -1
    stream = environ["wsgi.input"]
    received = 0
    while received < expected:
        chunk = stream.read(min(BLOCK, expected - received))
        if not chunk:
            break
        received += len(chunk)
    status = "200 OK" if received == expected else "400 Bad Request"
    body = f"received {received} of {expected} bytes\n".encode("ascii")
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
