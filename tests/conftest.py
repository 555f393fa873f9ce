"""Shared fixtures: real servers on 127.0.0.1 port 0 (or a Unix socket), raw socket helpers."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from wsgipool import Server


def hello_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    body = b"Hello, World!"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [body]


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


def read_until_close(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def read_response(sock: socket.socket) -> tuple[bytes, dict[str, str], bytes]:
    """Read one response with a Content-Length or chunked body: (status line, headers, body)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed before a full head: {buf!r}")
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        length = int(headers["content-length"])
        while len(rest) < length:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("closed mid-body")
            rest += data
        body, leftover = rest[:length], rest[length:]
    elif headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            while b"\r\n" not in rest:
                rest += sock.recv(65536)
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(rest) < size + 2:
                rest += sock.recv(65536)
            body += rest[:size]
            rest = rest[size + 2 :]
            if size == 0:
                break
        leftover = rest
    else:
        body, leftover = rest, b""
    assert leftover == b"", f"unexpected bytes after the response: {leftover!r}"
    return lines[0], headers, body


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``condition`` until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


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
