"""Scenario 6a: a 1 MiB response body held in memory."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

SIZE = 1 << 20
BODY = b"x" * SIZE
HEADERS = [("Content-Type", "application/octet-stream"), ("Content-Length", str(SIZE))]


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", list(HEADERS))
    return [BODY]
