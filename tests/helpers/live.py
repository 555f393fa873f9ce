"""A ``Server`` running in the test's own process (the ``serve`` fixture starts it), and the
ways to talk to it."""

from __future__ import annotations

import socket
from typing import Any

from tests.helpers.http import HTTPResponse, ResponseReader, read_until_close
from wsgipool import Server


class Live:
    """A running server and ways to talk to it."""

    def __init__(self, server: Server) -> None:
        self.server = server
        address = server.addresses[0]
        self.unix_path = address if isinstance(address, str) else None
        self.host, self.port = (None, None) if self.unix_path else (address[0], address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def connect(self, timeout: float = 10.0) -> socket.socket:
        if self.unix_path:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(self.unix_path)
            return sock
        return socket.create_connection((self.host, self.port), timeout=timeout)

    def raw(self, data: bytes, timeout: float = 10.0) -> bytes:
        """Send ``data``, half-close, and return everything until the server closes."""
        with self.connect(timeout) as sock:
            sock.sendall(data)
            return read_until_close(sock)


def exchange(live: Live, data: bytes, method: str = "GET", **read_options: Any) -> HTTPResponse:
    """Send ``data`` on a new connection and read one response."""
    with live.connect() as sock:
        sock.sendall(data)
        return ResponseReader(sock).read(method, **read_options)
