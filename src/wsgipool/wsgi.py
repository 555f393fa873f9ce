"""The PEP 3333 gateway: one request in, the application run, its response streamed out."""

from __future__ import annotations

import contextlib
import enum
import ipaddress
import logging
import os
import re
import socket
import stat
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import unquote_to_bytes

from .accesslog import AccessLog, Atoms
from .config import Config
from .connection import RECV_SIZE, ClientDisconnected, Connection
from .http import _abnf
from .http.errors import ProtocolError
from .http.parser import ChunkedBody, FixedLengthBody, Request
from .http.response import (
    CONTINUE_100,
    LAST_CHUNK,
    SERVER_HEADER,
    SERVER_LINE,
    error_response,
    has_no_body,
    http_date,
    status_line,
)
from .proxy import apply_forwarded

log = logging.getLogger("wsgipool.error")

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
OptExcInfo = ExcInfo | tuple[None, None, None]
WriteCallable = Callable[[bytes], None]


class StartResponse(Protocol):
    def __call__(
        self, status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = ..., /
    ) -> WriteCallable: ...


WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

# An unread request body up to this size is read and dropped so the connection can be kept;
# a larger one costs less to abandon with the connection.
DRAIN_LIMIT = 256 * 1024
# Largest piece handed to one sendfile() call.
SENDFILE_BLOCK = 1 << 24
# Piece of a file read and sent where sendfile() cannot be used (TLS).
COPY_BLOCK = 256 * 1024

# RFC 9110 7.6.1: hop-by-hop fields belong to the connection, which the server manages.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# status = 3DIGIT SP reason-phrase (RFC 9112 4); 1xx are interim and not the app's to send.
STATUS = re.compile(r"([2-5][0-9][0-9]) [\t\x20-\x7e\x80-\xff]*")

# CGI names for the fields nearly every request carries, so the common case skips the
# upper()/replace() work. Read-only: never written after import.
_COMMON_FIELDS = (
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "authorization",
    "cache-control",
    "cookie",
    "forwarded",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "origin",
    "pragma",
    "referer",
    "user-agent",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "x-requested-with",
    "upgrade-insecure-requests",
    "sec-fetch-mode",
    "sec-fetch-site",
    "sec-fetch-dest",
    "dnt",
    "connection",
    "keep-alive",
    "expect",
    "range",
    "if-range",
    "te",
)
CGI_NAMES = {name: "HTTP_" + name.upper().replace("-", "_") for name in _COMMON_FIELDS}
CGI_NAMES["content-type"] = "CONTENT_TYPE"
CGI_NAMES["content-length"] = "CONTENT_LENGTH"


def cgi_name(field_name: str) -> str:
    """``user-agent`` -> ``HTTP_USER_AGENT``; Content-Type and -Length lose the prefix."""
    name = CGI_NAMES.get(field_name)
    if name is None:
        name = "HTTP_" + field_name.upper().replace("-", "_")
    return name


class Outcome(enum.Enum):
    """How a connection goes on after a request."""

    KEEP_ALIVE = "keep-alive"  # Ready for the next request.
    CLOSE = "close"  # The exchange is complete: close normally.
    ABORT = "abort"  # The client may still be sending: half-close and drop what arrives,
    # so the response is not destroyed by a reset.


class RequestBodyError(OSError):
    """``wsgi.input`` could not deliver the body; ``status`` is what the client is told."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class RequestBody:
    """``wsgi.input``: the request body streamed from the socket, never past its end."""

    __slots__ = (
        "_conn",
        "_decoder",
        "_expect_continue",
        "_max_size",
        "_pending",
        "_received",
        "continue_sent",
        "failure",
    )

    def __init__(
        self,
        conn: Connection,
        decoder: FixedLengthBody | ChunkedBody | None,
        expect_continue: bool,
        max_size: int,
    ) -> None:
        self._conn = conn
        self._decoder = decoder
        self._expect_continue = expect_continue and decoder is not None
        self._max_size = max_size
        self._pending = b""
        self._received = 0
        self.continue_sent = False
        # The HTTP status the client should get after a body error (None: no error).
        self.failure: int | None = None

    @property
    def done(self) -> bool:
        return self._decoder is None or self._decoder.done

    @property
    def awaiting_continue(self) -> bool:
        """The client waits for 100 Continue, so it may never send the body."""
        return self._expect_continue and not self.continue_sent and not self.done

    def can_keep_alive(self) -> bool:
        """Whether the rest of the body is small enough to drain for the next request."""
        decoder = self._decoder
        if decoder is None or decoder.done:
            return True
        if self.awaiting_continue or self.failure is not None:
            return False
        return not isinstance(decoder, FixedLengthBody) or decoder.remaining <= DRAIN_LIMIT

    def drain(self) -> bool:
        """Read and drop what is left of the body (bounded); True if it all arrived."""
        if not self.can_keep_alive():
            return False
        self._pending = b""
        dropped = 0
        try:
            while dropped <= DRAIN_LIMIT:
                data = self._decode(RECV_SIZE)
                if not data:
                    return True
                dropped += len(data)
        except OSError:
            return False
        return False

    def _decode(self, limit: int) -> bytes:
        decoder = self._decoder
        if decoder is None:
            return b""
        conn = self._conn
        if self._expect_continue and not self.continue_sent and not decoder.done:
            self.continue_sent = True
            conn.sendall(CONTINUE_100)
        while True:
            try:
                data = decoder.read(conn.buffer, limit)
            except ProtocolError as exc:
                self.failure = exc.status
                raise RequestBodyError(exc.status, exc.detail) from None
            if data is not None:
                break
            try:
                received = conn.recv_wait()
            except TimeoutError:
                self.failure = 408
                raise RequestBodyError(408, "timed out reading the request body") from None
            if received == 0:
                self.failure = 400
                raise ClientDisconnected("client closed the connection mid-body")
        if data and isinstance(decoder, ChunkedBody):
            self._received += len(data)
            if self._received > self._max_size:
                self.failure = 413
                raise RequestBodyError(413, "request body larger than max_body_size")
        return data

    def _next(self, limit: int) -> bytes:
        pending = self._pending
        if pending:
            if len(pending) <= limit:
                self._pending = b""
                return pending
            self._pending = pending[limit:]
            return pending[:limit]
        return self._decode(limit)

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            parts = []
            while data := self._next(RECV_SIZE):
                parts.append(data)
            return b"".join(parts)
        if size == 0:
            return b""
        data = self._next(size)
        if len(data) == size or not data:
            return data
        parts = [data]
        remaining = size - len(data)
        while remaining > 0:
            data = self._next(remaining)
            if not data:
                break
            parts.append(data)
            remaining -= len(data)
        return b"".join(parts)

    def readline(self, size: int | None = -1) -> bytes:
        limit = size if size is not None and size >= 0 else sys.maxsize
        line = self._pending
        self._pending = b""
        searched = 0
        while True:
            end = line.find(b"\n", searched, limit)
            if end >= 0:
                self._pending = line[end + 1 :]
                return line[: end + 1]
            if len(line) >= limit:
                self._pending = line[limit:]
                return line[:limit]
            searched = len(line)
            data = self._decode(RECV_SIZE)
            if not data:
                return line
            line += data

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


class FileWrapper:
    """``wsgi.file_wrapper``: a file sent with ``sendfile()`` when the app returns it as is."""

    def __init__(self, filelike: Any, blksize: int = 65536) -> None:
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        data: bytes = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()


# What Response._check needs to know of a response header name.
_OTHER_FIELD, _CONTENT_LENGTH_FIELD, _DATE_FIELD, _SERVER_FIELD = (
    "other",
    "length",
    "date",
    "server",
)
_SPECIAL_FIELDS = {
    "content-length": _CONTENT_LENGTH_FIELD,
    "date": _DATE_FIELD,
    "server": _SERVER_FIELD,
}
# Valid response header names seen so far, as the app spelled them, with their kind: apps
# send the same few names on every response, and a dictionary lookup is cheaper than a
# regular expression, a lower() and four comparisons (1.1 to 0.6 us for two headers).
# Cleared when full, so names made up per request cannot grow it for ever. Each access is
# one dict operation, atomic with or without the GIL, so the threads share it freely.
_KNOWN_NAMES: dict[str, str] = {}
_KNOWN_NAMES_LIMIT = 1024


def _learn_name(name: str) -> str:
    """Validate a response header name not seen before; remember and return its kind."""
    if _abnf.FIELD_NAME.fullmatch(name) is None:
        raise ValueError(f"invalid response header name {name!r}")
    lowered = name.lower()
    if lowered in HOP_BY_HOP:
        raise ValueError(f"hop-by-hop header {name!r} is the server's to set, not the app's")
    kind = _SPECIAL_FIELDS.get(lowered, _OTHER_FIELD)
    if len(_KNOWN_NAMES) >= _KNOWN_NAMES_LIMIT:
        _KNOWN_NAMES.clear()
    _KNOWN_NAMES[name] = kind
    return kind


def is_loopback_peer(sock: socket.socket) -> bool:
    """Whether ``sock`` is a TCP connection from this host (127.0.0.0/8, ::1, or those
    IPv4 addresses mapped into IPv6)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        address = ipaddress.ip_address(sock.getpeername()[0])
    except (OSError, ValueError):
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _sendfile_source(result: object) -> tuple[Any, int, int] | None:
    """(file, position, bytes left) when ``result`` wraps a regular file ``sendfile`` can send."""
    if type(result) is not FileWrapper or not hasattr(os, "sendfile"):
        return None
    filelike = result.filelike
    try:
        status = os.fstat(filelike.fileno())
        position = filelike.tell()
    except (AttributeError, OSError, ValueError):
        return None
    if not stat.S_ISREG(status.st_mode):
        return None
    return filelike, position, max(0, status.st_size - position)


class Response:
    """``start_response``, ``write`` and the framing of one response on the wire."""

    __slots__ = (
        "_body",
        "_conn",
        "_content_length",
        "_framing",
        "_has_date",
        "_has_server",
        "_head_only",
        "_request",
        "_sent",
        "_truncated",
        "draining",
        "headers",
        "headers_sent",
        "keep_alive",
        "status",
    )

    # How the body is delimited on the wire.
    LENGTH, CHUNKED, CLOSE, NONE = range(4)

    def __init__(
        self, conn: Connection, request: Request, body: RequestBody, draining: threading.Event
    ):
        self._conn = conn
        self._request = request
        self._body = body
        self._head_only = request.method == "HEAD"
        self._content_length: int | None = None
        self._has_date = self._has_server = False
        self._framing = self.NONE
        self._sent = 0
        self._truncated = False
        self.draining = draining
        self.keep_alive = request.keep_alive
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.headers_sent = False

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None
    ) -> WriteCallable:
        if exc_info:
            try:
                if self.headers_sent:
                    # PEP 3333: too late to change the response; let the error abort it.
                    raise exc_info[1].with_traceback(exc_info[2])  # type: ignore[union-attr]
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response() called again without exc_info")
        # Checked now, so a bad header raises where the application made it.
        self._content_length, self._has_date, self._has_server = self._check(status, headers)
        self.status = status
        self.headers = headers
        return self.write

    @staticmethod
    def _check(status: str, headers: list[tuple[str, str]]) -> tuple[int | None, bool, bool]:
        """Validate status and headers; return (Content-Length, has Date, has Server)."""
        if type(status) is not str or STATUS.fullmatch(status) is None:
            raise ValueError(f"invalid status {status!r}: expected '200 OK' (3 digits, a reason)")
        if not isinstance(headers, list):
            raise TypeError(f"response headers must be a list, not {type(headers).__name__}")
        field_value = _abnf.FIELD_VALUE.fullmatch
        known_names = _KNOWN_NAMES
        content_length = None
        has_date = has_server = False
        for item in headers:
            if type(item) is not tuple or len(item) != 2:
                raise TypeError(f"response header {item!r} is not a (name, value) tuple")
            name, value = item
            if type(name) is not str:
                raise ValueError(f"invalid response header name {name!r}")
            kind = known_names.get(name)
            if kind is None:
                kind = _learn_name(name)
            if type(value) is not str or field_value(value) is None:
                raise ValueError(f"invalid response header value for {name}: {value!r}")
            if kind == _OTHER_FIELD:
                continue
            if kind == _CONTENT_LENGTH_FIELD:
                if content_length is not None or _abnf.CONTENT_LENGTH.fullmatch(value) is None:
                    raise ValueError(f"invalid or repeated Content-Length {value!r}")
                content_length = int(value)
            elif kind == _DATE_FIELD:
                has_date = True
            else:
                has_server = True
        return content_length, has_date, has_server

    def write(self, data: bytes) -> None:
        """Send one piece of the body (the PEP 3333 ``write()`` callable, and the iterator's)."""
        if not isinstance(data, bytes):
            raise TypeError(f"response body items must be bytes, not {type(data).__name__}")
        if not self.headers_sent:
            self._send_head(data, complete=False)
        elif data:
            self._send_body(data)

    def write_complete(self, data: bytes) -> None:
        """Send a body known to be whole (a one-item iterable), so it gets a Content-Length."""
        if not isinstance(data, bytes):
            raise TypeError(f"response body items must be bytes, not {type(data).__name__}")
        self._send_head(data, complete=True)

    @property
    def body_sent(self) -> int:
        """Body bytes sent so far."""
        return self._sent

    @property
    def finished_sending(self) -> bool:
        """Nothing more would reach the client: a HEAD head is out, or the length is reached."""
        return self.headers_sent and (
            self._framing == self.NONE
            or (self._framing == self.LENGTH and self._sent >= (self._content_length or 0))
        )

    def finish(self) -> None:
        """End the response; ``keep_alive`` then says whether the connection can be reused."""
        if not self.headers_sent:
            self._send_head(b"", complete=True)
        if self._framing == self.CHUNKED:
            self._conn.sendall(LAST_CHUNK)
        elif self._framing == self.LENGTH and self._sent < (self._content_length or 0):
            log.error(
                "application sent %d of %d Content-Length bytes for %s %s; closing the connection",
                self._sent,
                self._content_length,
                self._request.method,
                self._request.target,
            )
            self.keep_alive = False

    def _send_head(self, data: bytes, complete: bool) -> None:
        if self.status is None:
            raise AssertionError("the application sent body data before calling start_response()")
        request = self._request
        status = self.status
        # RFC 9110 6.2: answer with the highest version we speak, 1.1, whatever the request's.
        lines = [
            f"HTTP/1.1 {status}\r\n",
            *[f"{name}: {value}\r\n" for name, value in self.headers],
        ]
        if not self._has_date:
            lines.append(f"Date: {http_date()}\r\n")
        if not self._has_server:
            lines.append(SERVER_LINE)
        content_length = self._content_length

        if has_no_body(int(status[:3])):
            framing = self.NONE
        elif content_length is not None:
            framing = self.LENGTH
        elif complete:
            content_length = len(data)
            lines.append(f"Content-Length: {content_length}\r\n")
            framing = self.LENGTH
        elif request.http11:
            lines.append("Transfer-Encoding: chunked\r\n")
            framing = self.CHUNKED
        else:
            framing = self.CLOSE
        if self._head_only:
            framing = self.NONE
        keep_alive = (
            self.keep_alive
            and not self.draining.is_set()
            and framing != self.CLOSE
            and self._body.can_keep_alive()
        )
        if request.http11:
            if not keep_alive:
                lines.append("Connection: close\r\n")
        elif keep_alive:
            lines.append("Connection: keep-alive\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1")

        self.keep_alive = keep_alive
        self._framing = framing
        self._content_length = content_length
        self.headers_sent = True
        if data and framing != self.NONE:
            self._send_body(data, head)
        else:
            self._conn.sendall(head)

    def _send_body(self, data: bytes, head: bytes = b"") -> None:
        framing = self._framing
        if framing == self.NONE:
            return
        if framing == self.LENGTH:
            allowed = (self._content_length or 0) - self._sent
            if len(data) > allowed:
                if not self._truncated:
                    self._truncated = True
                    log.warning(
                        "application sent more than its Content-Length (%d) for %s %s; "
                        "the excess is dropped",
                        self._content_length,
                        self._request.method,
                        self._request.target,
                    )
                data = data[:allowed]
            parts = [head, data]
        elif framing == self.CHUNKED:
            parts = [head, b"%x\r\n" % len(data), data, b"\r\n"]
        else:
            parts = [head, data]
        self._sent += len(data)
        self._conn.send_parts(parts)

    def send_file(
        self, filelike: Any, position: int, available: int, *, use_sendfile: bool
    ) -> None:
        """Send a file from its position, within the Content-Length: with ``sendfile()``,
        or read and sent in blocks when ``use_sendfile`` is False."""
        if not self.headers_sent:
            if self._content_length is None:
                # The file size is known, so the response gets a length rather than chunks.
                self.headers = [*self.headers, ("Content-Length", str(available))]
                self._content_length = available
            self._send_head(b"", complete=False)
        if self._framing != self.LENGTH:
            return  # HEAD or a body-less status: nothing to send.
        remaining = min(available, (self._content_length or 0) - self._sent)
        # os.sendfile rather than socket.sendfile: the latter waits in select() without a
        # timeout when the kernel send timeout fires, so a client that stops reading
        # would hold the worker for ever.
        if not use_sendfile:
            self._copy_file(filelike, position, remaining)
            return
        out_fd, in_fd = self._conn.sock.fileno(), filelike.fileno()
        offset = position
        while remaining > 0:
            try:
                sent = os.sendfile(out_fd, in_fd, offset, min(remaining, SENDFILE_BLOCK))
            except BlockingIOError as exc:
                raise ClientDisconnected("client stopped reading (send timeout)") from exc
            except OSError as exc:
                raise ClientDisconnected(str(exc)) from exc
            if sent == 0:
                break  # The file is shorter than it was: finish() reports the shortfall.
            offset += sent
            remaining -= sent
            self._sent += sent

    def _copy_file(self, filelike: Any, position: int, remaining: int) -> None:
        """``send_file`` without sendfile() (TLS, a peer on this host): read, send in blocks."""
        in_fd = filelike.fileno()
        while remaining > 0:
            data = os.pread(in_fd, min(remaining, COPY_BLOCK), position)
            if not data:
                break  # The file is shorter than it was: finish() reports the shortfall.
            self._conn.sendall(data)
            position += len(data)
            remaining -= len(data)
            self._sent += len(data)


class Gateway:
    """Runs the WSGI application for requests parsed off a connection."""

    def __init__(
        self,
        app: WSGIApp,
        config: Config,
        *,
        multiprocess: bool = False,
        draining: threading.Event | None = None,
    ) -> None:
        self.app = app
        self.config = config
        # Set when the server shuts down: responses from then on carry Connection: close.
        self.draining = draining if draining is not None else threading.Event()
        self.access_log = AccessLog(config.access_log_format) if config.access_log else None
        self._static_environ: dict[str, Any] = {
            "SCRIPT_NAME": config.root_path,
            "SERVER_SOFTWARE": SERVER_HEADER,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": config.url_scheme,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": multiprocess,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
            "wsgi.file_wrapper": FileWrapper,
        }
        trust = config.forwarded_trust
        self._forwarded_trust = None if trust.empty else trust

    def _connection_environ(self, conn: Connection) -> dict[str, Any]:
        environ = dict(self._static_environ)
        # The listening socket's address, as gunicorn and werkzeug report it (0.0.0.0 for
        # a wildcard bind); HTTP_HOST says what the client asked for.
        local = conn.local
        if isinstance(local, tuple):
            environ["SERVER_NAME"] = local[0]
            environ["SERVER_PORT"] = str(local[1])
        else:
            environ["SERVER_NAME"] = local if isinstance(local, str) else "localhost"
            environ["SERVER_PORT"] = ""
        peer = conn.peer
        if isinstance(peer, tuple) and peer:
            environ["REMOTE_ADDR"] = peer[0]
            environ["REMOTE_PORT"] = str(peer[1])
        else:
            # Unix sockets have no peer address.
            environ["REMOTE_ADDR"] = ""
            environ["REMOTE_PORT"] = ""
        tls = conn.tls_environ()
        if tls is not None:
            environ.update(tls)
        # Once per connection: only a trusted peer's forwarded headers are ever read.
        conn.forwarded_trusted = self._forwarded_trust is not None and (
            self._forwarded_trust.trusts_peer(peer)
        )
        conn.environ_base = environ
        return environ

    def make_environ(self, conn: Connection, request: Request) -> dict[str, Any]:
        base = conn.environ_base or self._connection_environ(conn)
        environ = dict(base)
        path = request.path
        if "%" in path:
            path = unquote_to_bytes(path).decode("latin-1")
        root_path = self.config.root_path
        if (
            root_path
            and path.startswith(root_path)
            and path[len(root_path) : len(root_path) + 1] in ("", "/")
        ):
            path = path[len(root_path) :]
        environ["REQUEST_METHOD"] = request.method
        environ["PATH_INFO"] = path
        environ["QUERY_STRING"] = request.query
        environ["SERVER_PROTOCOL"] = request.version
        environ["REQUEST_URI"] = environ["RAW_URI"] = request.target
        for name, value in request.headers:
            if "_" in name:
                # Never let X_Forwarded_For pose as X-Forwarded-For (both map to one key).
                continue
            key = cgi_name(name)
            if key in environ and key.startswith("HTTP_"):
                separator = "; " if key == "HTTP_COOKIE" else ", "
                environ[key] = environ[key] + separator + value
            else:
                environ[key] = value
        if request.host is not None:
            environ["HTTP_HOST"] = request.host
        if request.chunked:
            environ.pop("CONTENT_LENGTH", None)
        elif request.content_length is not None:
            environ["CONTENT_LENGTH"] = str(request.content_length)
        if conn.forwarded_trusted:
            apply_forwarded(environ, self.config.forwarded_trust)
        return environ

    def handle(self, conn: Connection, request: Request, queue_wait: float = 0.0) -> Outcome:
        """Serve one request; say whether and how the connection goes on.

        ``queue_wait`` is how long the request waited for a worker (seconds); the app
        sees it as ``environ["wsgipool.queue_wait"]``.
        """
        max_body = self.config.max_body_size
        if request.content_length is not None and request.content_length > max_body:
            conn.sendall(error_response(413, "request body larger than max_body_size"))
            return Outcome.ABORT
        decoder: FixedLengthBody | ChunkedBody | None
        if request.chunked:
            decoder = ChunkedBody(self.config.limits)
        elif request.content_length:
            decoder = FixedLengthBody(request.content_length)
        else:
            decoder = None
        body = RequestBody(conn, decoder, request.expect_continue, max_body)
        environ = self.make_environ(conn, request)
        environ["wsgi.input"] = body
        environ["wsgipool.queue_wait"] = queue_wait
        response = Response(conn, request, body, self.draining)
        access_log = self.access_log
        started = time.monotonic() if access_log is not None else 0.0
        result: Iterable[bytes] | None = None
        status: str | None = None
        try:
            result = self.app(environ, response.start_response)
            self._send_result(conn, response, result)
            status = response.status
            if not response.keep_alive:
                outcome = Outcome.CLOSE if body.done and not conn.buffer else Outcome.ABORT
            else:
                outcome = Outcome.KEEP_ALIVE if body.done or body.drain() else Outcome.ABORT
        except ClientDisconnected as exc:
            log.debug("client %s went away: %s", conn.peer, exc)
            outcome = Outcome.CLOSE
        except Exception as exc:
            status = self._fail(conn, request, response, body, exc)
            outcome = Outcome.ABORT
        except SystemExit as exc:
            # sys.exit() in a view must not stop a server thread: it is an app error.
            status = self._fail(conn, request, response, body, exc)
            outcome = Outcome.ABORT
        finally:
            if result is not None:
                self._close_result(result, request)
        if access_log is not None:
            access_log.log(
                Atoms(
                    environ,
                    status or "-",
                    response.headers,
                    response.body_sent,
                    time.monotonic() - started,
                    queue_wait,
                )
            )
        return outcome

    def _send_result(self, conn: Connection, response: Response, result: Iterable[bytes]) -> None:
        file_source = _sendfile_source(result)
        if file_source is not None:
            response.send_file(*file_source, use_sendfile=self._use_sendfile(conn))
        elif isinstance(result, (list, tuple)) and len(result) == 1:
            response.write_complete(result[0])
        else:
            for data in result:
                if data:
                    response.write(data)
                    if response.finished_sending:
                        break
        response.finish()

    def _use_sendfile(self, conn: Connection) -> bool:
        """Whether a file goes to ``conn`` with sendfile() (``--sendfile``).

        Not through TLS, which encrypts in Python. With ``auto``, not to a TCP peer on this
        host either (a proxy in front, a benchmark): over loopback, sendfile() measured about
        half as fast as copying in 256 KiB blocks (2.4 against 4.1 GB/s to a reader taking
        8 KiB at a time), as the receiving side copies the data anyway. Unix sockets and
        remote peers keep sendfile(), which saves the copy and the CPU.
        """
        mode = self.config.sendfile
        if not conn.sendfile_ok or mode == "off":
            return False
        return mode == "on" or not is_loopback_peer(conn.sock)

    def _fail(
        self,
        conn: Connection,
        request: Request,
        response: Response,
        body: RequestBody,
        exc: BaseException,
    ) -> str | None:
        """Answer an application or body error; return the status sent, if any."""
        if response.headers_sent:
            log.error(
                "error after the response started for %s %s; aborting the connection",
                request.method,
                request.target,
                exc_info=exc,
            )
            return response.status
        status = body.failure
        if status is None:
            status = 500
            log.error(
                "error in the application for %s %s", request.method, request.target, exc_info=exc
            )
        else:
            log.info("bad request body for %s %s: %s", request.method, request.target, exc)
        detail = ""
        if status == 500 and self.config.expose_tracebacks:
            detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        with contextlib.suppress(ClientDisconnected):
            conn.sendall(error_response(status, detail))
        return status_line(status)

    @staticmethod
    def _close_result(result: Iterable[bytes], request: Request) -> None:
        close = getattr(result, "close", None)
        if close is None:
            return
        try:
            close()
        except Exception:
            log.exception(
                "error in close() of the response for %s %s", request.method, request.target
            )


__all__ = ["FileWrapper", "Gateway", "RequestBody", "Response", "WSGIApp"]
