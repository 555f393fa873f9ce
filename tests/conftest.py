"""Shared fixtures: real servers on 127.0.0.1 port 0 (or a Unix socket). What they are built
from, and every other shared helper, is in ``tests.helpers``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.helpers.apps import hello_app
from tests.helpers.live import Live
from wsgipool import Server


@pytest.fixture
def serve() -> Iterator[Callable[..., Live]]:
    """``serve(app, **options)`` starts a server on 127.0.0.1:0 and stops it after the test."""
    servers: list[Server] = []

    def start(app: Any = hello_app, **options: Any) -> Live:
        options.setdefault("bind", ("127.0.0.1:0",))
        options.setdefault("threads", 4)
        server = Server(app, **options)
        server.start()
        servers.append(server)
        return Live(server)

    yield start
    for server in servers:
        server.stop(timeout=5)
