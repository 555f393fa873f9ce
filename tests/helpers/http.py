"""HTTP/1.1 from the client's side, on raw sockets: requests as bytes, and responses read
exactly as framed (RFC 9112 6.3), so a test sees every byte the server sent."""

from __future__ import annotations

import http.client
import re
import socket
import threading
from typing import Any

from tests.helpers.net import HOST
from tests.helpers.waiting import DEADLINE


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


def build_request(
    method: str = "GET",
    target: str = "/",
    headers: Any = (),
    body: bytes = b"",
    *,
    version: str = "HTTP/1.1",
    host: str | None = "x",
) -> bytes:
    """One request's bytes. ``headers`` is a dict or (name, value) pairs; a Content-Length is
    added when ``body`` is given and no framing header is. ``host=None`` sends no Host."""
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers)
    names = {name.lower() for name, _ in pairs}
    if host is not None and "host" not in names:
        pairs.insert(0, ("Host", host))
    if body and not names & {"content-length", "transfer-encoding"}:
        pairs.append(("Content-Length", str(len(body))))
    head = f"{method} {target} {version}\r\n" + "".join(f"{n}: {v}\r\n" for n, v in pairs)
    return head.encode("latin-1") + b"\r\n" + body


def chunked(*parts: bytes, trailers: bytes = b"") -> bytes:
    """A chunked body with one chunk per (non-empty) part."""
    return (
        b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in parts if p) + b"0\r\n" + trailers + b"\r\n"
    )


class HTTPResponse:
    """One parsed response. ``headers`` keeps order and repeats; lookups ignore case."""

    def __init__(
        self, status_line: bytes, headers: list[tuple[str, str]], body: bytes, complete: bool
    ) -> None:
        self.status_line = status_line
        version, _, rest = status_line.decode("latin-1").partition(" ")
        code, _, reason = rest.partition(" ")
        self.version = version
        self.status = int(code)
        self.reason = reason
        self.headers = headers
        self.body = body
        self.complete = complete

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def get(self, name: str) -> str | None:
        values = self.all(name)
        return ", ".join(values) if values else None

    def has(self, name: str) -> bool:
        return bool(self.all(name))

    @property
    def connection_tokens(self) -> set[str]:
        value = self.get("connection") or ""
        return {token.strip().lower() for token in value.split(",") if token.strip()}

    def __repr__(self) -> str:
        return f"<HTTPResponse {self.status_line!r} {self.headers!r} body={self.body[:200]!r}>"


class ResponseReader:
    """Reads responses off one socket in order, keeping bytes that belong to the next one.

    Framing follows RFC 9112 6.3 from the client's side: no body after HEAD, 1xx, 204 and
    304; chunked; Content-Length; otherwise until the server closes. The socket's timeout
    is the deadline for every wait.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.eof = False
        self._partial = b""

    def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_until(self, marker: bytes) -> bytes:
        """Wait until ``marker`` has arrived; return (and consume) everything up to its end."""
        while marker not in self.buf:
            if not self._fill():
                raise ConnectionError(f"closed before {marker!r}; got {self.buf!r}")
        index = self.buf.index(marker) + len(marker)
        data, self.buf = self.buf[:index], self.buf[index:]
        return data

    def read_exactly(self, size: int) -> bytes:
        while len(self.buf) < size:
            if not self._fill():
                raise ConnectionError(f"closed after {len(self.buf)} of {size} bytes")
        data, self.buf = self.buf[:size], self.buf[size:]
        return data

    def read_head(self) -> tuple[bytes, list[tuple[str, str]]]:
        head = self.read_until(b"\r\n\r\n")[:-4]
        lines = head.split(b"\r\n")
        headers = []
        for line in lines[1:]:
            name, colon, value = line.decode("latin-1").partition(":")
            assert colon and name == name.strip(), f"malformed response field line {line!r}"
            headers.append((name, value.strip(" \t")))
        return lines[0], headers

    def read(self, method: str = "GET", *, allow_truncated: bool = False) -> HTTPResponse:
        """Read the next response (an interim 1xx is returned on its own)."""
        status_line, headers = self.read_head()
        response = HTTPResponse(status_line, headers, b"", True)
        code = response.status
        if method == "HEAD" or code < 200 or code in (204, 304):
            return response
        encoding = response.get("transfer-encoding")
        length = response.get("content-length")
        try:
            if encoding is not None:
                assert encoding.lower() == "chunked", f"unexpected Transfer-Encoding {encoding!r}"
                response.body = self._read_chunked()
            elif length is not None:
                response.body = self.read_exactly(int(length))
            else:
                while self._fill():
                    pass
                response.body, self.buf = self.buf, b""
        except ConnectionError:
            if not allow_truncated:
                raise
            response.complete = False
            if encoding is not None:
                response.body = self._partial
            else:
                response.body, self.buf = self.buf, b""
        return response

    def _read_chunked(self) -> bytes:
        self._partial = b""
        while True:
            size_line = self.read_until(b"\r\n")[:-2]
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                while self.read_until(b"\r\n") != b"\r\n":
                    pass  # trailer fields
                body, self._partial = self._partial, b""
                return body
            while len(self.buf) < size + 2:
                if not self._fill():
                    self._partial += self.buf
                    self.buf = b""
                    raise ConnectionError("closed mid-chunk")
            data = self.read_exactly(size + 2)
            assert data.endswith(b"\r\n"), "chunk data not followed by CRLF"
            self._partial += data[:-2]

    def expect_close(self) -> None:
        """Assert the server closes the connection and sends nothing more."""
        while self._fill():
            pass
        assert self.buf == b"", f"unexpected bytes before the close: {self.buf!r}"


def pending(sock: socket.socket) -> bytes | None:
    """What has already arrived on ``sock``, without consuming it or waiting (None: nothing yet;
    b"": the peer closed)."""
    timeout = sock.gettimeout()
    sock.settimeout(0)  # with a timeout, Python would wait for data before recv()
    try:
        return sock.recv(65536, socket.MSG_PEEK)
    except BlockingIOError:
        return None
    finally:
        sock.settimeout(timeout)


def probe(port: int, host: str = HOST, timeout: float = 5.0) -> int | None:
    """The status code of ``GET /`` on a new connection to ``port``; None when no HTTP
    response begins (nothing listens yet, or the connection was closed)."""
    request = f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.settimeout(timeout)
            sock.sendall(request)
            status_line = sock.recv(64)
    except OSError:
        return None
    match = re.match(rb"HTTP/1\.[01] (\d{3})", status_line)
    return int(match.group(1)) if match else None


def get_text(port: int, path: str = "/") -> tuple[int, str]:
    """One GET on a new connection to 127.0.0.1:``port``: (status, body as text)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


class InBackground(threading.Thread):
    """One GET (``http.client``) in a thread of its own, started at once; ``answered()``
    waits for it and gives the status (-1: the connection failed), then ``body`` and
    ``response_headers`` hold the rest."""

    def __init__(self, port: int, target: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(daemon=True)
        self.port, self.target, self.headers = port, target, headers or {}
        self.status = 0
        self.body = b""
        self.response_headers: dict[str, str] = {}
        self.start()

    def run(self) -> None:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=DEADLINE * 2)
        try:
            conn.request("GET", self.target, headers=self.headers)
            response = conn.getresponse()
            self.body = response.read()
            self.status = response.status
            self.response_headers = dict(response.getheaders())
        except OSError:
            self.status = -1
        finally:
            conn.close()

    def answered(self) -> int:
        self.join(DEADLINE)
        return self.status
