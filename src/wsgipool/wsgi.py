"""The PEP 3333 gateway: one request in, the application run, its response streamed out."""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import re
import stat
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import unquote_to_bytes

from .accesslog import AccessLog, Atoms
from .config import Config
from .connection import RECV_SIZE, ClientDisconnected, Connection
from .hooks import RequestHooks
from .http.errors import ProtocolError
from .http.parser import ChunkedBody, FixedLengthBody, Request
from .http.response import (
    CHUNK_END,
    CHUNKED,
    CLOSE_DELIMITED,
    CONTENT_LENGTH,
    CONTINUE_100,
    LAST_CHUNK,
    NO_BODY,
    SERVER_HEADER,
    ResponseFields,
    check_response,
    chunk_head,
    error_response,
    response_head,
    status_line,
)
from .metrics import Recorder
from .proxy import TrustedPeers, apply_forwarded
from .scoreboard import InFlight, Slot
from .taskqueue import Load, Sample

log = logging.getLogger("wsgipool.error")

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
OptExcInfo = ExcInfo | tuple[None, None, None]
WriteCallable = Callable[[bytes], None]


class StartResponse(Protocol):
    def __call__(
        self, status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = ..., /
    ) -> WriteCallable: ...


WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

REQUEST_ID_HEADER = "X-Request-ID"
# An X-Request-ID taken from a proxy: visible ASCII, no quote or backslash, of a length a
# log line can hold. Anything else is ignored (and, with --request-id generate, replaced).
_REQUEST_ID = re.compile(r"[!#-\[\]-~]{1,200}")

# An unread request body up to this size is read and dropped so the connection can be kept;
# a larger one costs less to abandon with the connection.
DRAIN_LIMIT = 256 * 1024
# Past the end of a response, at most this much more of the body, for at most this long,
# is pulled from the app (and dropped) looking for its end.
DISCARD_LIMIT = 1024 * 1024
DISCARD_TIME = 1.0

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


# Per connection (``Connection.gateway_state``): the environ keys of the connection, and
# the forwarded headers' trust when its peer has it (None: they are never read).
_ConnectionState = tuple[dict[str, Any], TrustedPeers | None]


class Outcome(enum.Enum):
    """How a connection goes on after a request."""

    KEEP_ALIVE = "keep-alive"  # Ready for the next request.
    CLOSE = "close"  # The exchange is complete: close normally.
    ABORT = "abort"  # The client may still be sending: half-close and drop what arrives,
    # so the response is not destroyed by a reset.
    RESET = "reset"  # The response failed part-way: reset, so the client cannot take what
    # it got for the whole.


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
        "_interim_allowed",
        "_max_size",
        "_offset",
        "_pending",
        "_record",
        "continue_sent",
        "failure",
    )

    def __init__(
        self,
        conn: Connection,
        decoder: FixedLengthBody | ChunkedBody | None,
        expect_continue: bool,
        max_size: int,
        record: InFlight | None = None,
    ) -> None:
        self._conn = conn
        # The scoreboard's record of this request: told of the body's progress.
        self._record = record
        self._decoder = decoder
        self._expect_continue = expect_continue and decoder is not None
        self._max_size = max_size
        # Decoded bytes not yet read, from _offset on: read(1) on a 64 KiB piece moves an
        # index rather than copying the rest each time.
        self._pending = b""
        self._offset = 0
        self.continue_sent = False
        # A 100 Continue may only come before the final response head (RFC 9110 15.2).
        self._interim_allowed = True
        # The HTTP status the client should get after a body error (None: no error).
        self.failure: int | None = None

    @property
    def done(self) -> bool:
        return self._decoder is None or self._decoder.done

    @property
    def awaiting_continue(self) -> bool:
        """The client waits for 100 Continue, so it may never send the body."""
        return self._expect_continue and not self.continue_sent and not self.done

    def final_head_sent(self) -> None:
        """The response head is out: from now on no 100 Continue may be sent."""
        self._interim_allowed = False

    def can_keep_alive(self) -> bool:
        """Whether the rest of the body is small enough to drain for the next request.

        Asked as the response head goes out, so that it can say ``Connection: close`` when
        not. A chunked body's size is unknown until its end, so what of it has already
        arrived is decoded now (kept for the app to read): keep-alive only when that
        reaches the end within ``DRAIN_LIMIT``.
        """
        decoder = self._decoder
        if decoder is None or decoder.done:
            return True
        if self.awaiting_continue or self.failure is not None:
            return False
        if isinstance(decoder, FixedLengthBody):
            return decoder.remaining <= DRAIN_LIMIT
        return self._read_ahead()

    def _read_ahead(self) -> bool:
        """Decode what has arrived of a chunked body, without waiting, into what the app
        will read; True when that reached the end of the body (within ``DRAIN_LIMIT``)."""
        decoder = self._decoder
        assert isinstance(decoder, ChunkedBody)
        conn = self._conn
        parts = [self._pending[self._offset :]]
        try:
            while decoder.wire_bytes <= DRAIN_LIMIT:
                data = decoder.read(conn.buffer, RECV_SIZE)
                self._count(decoder)
                if data is None:
                    if conn.recv_available() <= 0:
                        break
                    continue
                if not data:
                    break
                self._received(len(data))
                parts.append(data)
        except ProtocolError as exc:
            self.failure = exc.status  # The app's next read raises it again.
            return False
        except RequestBodyError:
            return False
        finally:
            self._pending = b"".join(parts)
            self._offset = 0
        return decoder.done

    def drain(self) -> bool:
        """Read and drop what is left of the body (bounded); True if it all arrived."""
        if not self.can_keep_alive():
            return False
        self._pending = b""
        self._offset = 0
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
        if self._interim_allowed and self.awaiting_continue:
            self.continue_sent = True
            conn.sendall(CONTINUE_100)
        while True:
            try:
                data = decoder.read(conn.buffer, limit)
            except ProtocolError as exc:
                self.failure = exc.status
                raise RequestBodyError(exc.status, exc.detail) from None
            if isinstance(decoder, ChunkedBody):
                # Before any wait: a chunk announced past the limit is refused at once.
                self._count(decoder)
            if data is not None:
                break
            try:
                received = conn.recv_wait()
            except TimeoutError as exc:
                self.failure = 408
                raise RequestBodyError(408, str(exc)) from None
            if received == 0:
                self.failure = 400
                raise ClientDisconnected("client closed the connection mid-body")
        self._received(len(data))
        return data

    def _received(self, nbytes: int) -> None:
        if nbytes and self._record is not None:
            self._record.received(nbytes)

    def _count(self, decoder: ChunkedBody) -> None:
        """Refuse a chunked body once its bytes on the wire, framing included, pass the
        limit, or a chunk's size line announces that they will (a Content-Length body
        over it never gets this far)."""
        if decoder.announced_bytes > self._max_size:
            self.failure = 413
            raise RequestBodyError(413, "request body larger than max_body_size")

    def _next(self, limit: int) -> bytes:
        """Up to ``limit`` bytes: what is pending first, else the next decoded piece."""
        pending = self._pending
        if not pending:
            return self._decode(limit)
        start = self._offset
        end = start + limit
        if end < len(pending):
            self._offset = end
            return pending[start:end]
        self._pending = b""
        self._offset = 0
        return pending[start:] if start else pending

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
        # Pieces of a line longer than one decoded piece; each byte is copied a bounded
        # number of times, so a line of any length reads in linear time.
        line = bytearray()
        while len(line) < limit:
            pending = self._pending
            if not pending:
                data = self._decode(RECV_SIZE)
                if not data:
                    break
                self._pending, self._offset = data, 0
                continue
            start = self._offset
            stop = min(len(pending), start + limit - len(line))
            newline = pending.find(b"\n", start, stop)
            if newline >= 0:
                stop = newline + 1
            if stop < len(pending):
                self._offset = stop
            else:
                self._pending, self._offset = b"", 0
            if newline >= 0 or (not line and stop - start == limit):
                if not line:
                    return pending[start:stop]
                line += pending[start:stop]
                break
            line += pending[start:stop]
        return bytes(line)

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
    """``start_response`` and ``write`` for one response, sent in the framing
    ``http.response`` decides (``response_head``).

    Its life: started (``start_response``), head sent (by the first ``write`` or the end
    of the body), finished (``finish``: the body delimited), ended (``end``: the gateway
    is done with it; ``write`` then raises, so a ``write`` kept by the app can never put
    bytes inside a later response on the same connection).
    """

    __slots__ = (
        "_body",
        "_conn",
        "_content_length",
        "_ended",
        "_fields",
        "_framing",
        "_head_only",
        "_record",
        "_request",
        "_request_id_header",
        "_sent",
        "_slot",
        "_truncated",
        "draining",
        "headers",
        "headers_sent",
        "keep_alive",
        "sent_status",
        "status",
    )

    def __init__(
        self,
        conn: Connection,
        request: Request,
        body: RequestBody,
        draining: threading.Event,
        slot: Slot | None = None,
        record: InFlight | None = None,
        request_id_header: tuple[str, str] | None = None,
    ):
        self._conn = conn
        # The scoreboard's slot and record of this request: told of the head and the
        # body bytes going out. ``request_id_header`` is added to the head, unless the
        # application sets one (``--request-id generate``).
        self._slot = slot
        self._record = record
        self._request_id_header = request_id_header
        self._request = request
        self._body = body
        self._head_only = request.method == "HEAD"
        # What check_response said of the app's headers; then, once the head is out, the
        # Content-Length the body is held to and how the body is delimited.
        self._fields: ResponseFields = (None, False, False)
        self._content_length: int | None = None
        self._framing = NO_BODY
        self._sent = 0
        self._truncated = False
        self._ended = False
        self.draining = draining
        self.keep_alive = request.keep_alive
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.headers_sent = False
        # The status line that went to the client (the app's, or the server's own error).
        self.sent_status: str | None = None

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
        if isinstance(headers, list):
            # A copy: the head sent later is the list checked now, whatever the app does
            # to its own list meanwhile (gunicorn and waitress copy it too).
            headers = list(headers)
        # Checked now, so a bad header raises where the application made it.
        self._fields = check_response(status, headers)
        self.status = status
        self.headers = headers
        return self.write

    def write(self, data: bytes) -> None:
        """Send one piece of the body (the PEP 3333 ``write()`` callable, and the iterator's)."""
        if self._ended:
            raise RuntimeError("write() called after its response ended")
        if not isinstance(data, bytes):
            raise TypeError(f"response body items must be bytes, not {type(data).__name__}")
        if not self.headers_sent:
            self._send_head(data, complete=False)
        elif data:
            self._send_body(data)

    def write_complete(self, data: bytes) -> None:
        """Send a whole body (a one-item iterable) before anything else: it gets a
        Content-Length."""
        if not isinstance(data, bytes):
            raise TypeError(f"response body items must be bytes, not {type(data).__name__}")
        self._send_head(data, complete=True)

    @property
    def body_sent(self) -> int:
        """Body bytes sent so far."""
        return self._sent

    @property
    def body_complete(self) -> bool:
        """Whether the client has the whole response, judged by its framing: a head with
        no body (HEAD, 204, 304), or every Content-Length byte."""
        return self.headers_sent and (
            self._framing == NO_BODY
            or (self._framing == CONTENT_LENGTH and self._sent >= (self._content_length or 0))
        )

    @property
    def close_delimited(self) -> bool:
        """Whether the body ends where the connection does (HTTP/1.0, no length)."""
        return self._framing == CLOSE_DELIMITED

    def finish(self) -> None:
        """End the response; ``keep_alive`` then says whether the connection can be reused.
        ``write`` raises from now on."""
        if not self.headers_sent:
            self._send_head(b"", complete=True)
        self._ended = True
        if self._framing == CHUNKED:
            self._conn.sendall(LAST_CHUNK)
        elif self._framing == CONTENT_LENGTH and self._sent < (self._content_length or 0):
            log.error(
                "application sent %d of %d Content-Length bytes for %s %s; closing the connection",
                self._sent,
                self._content_length,
                self._request.method,
                self._request.target,
            )
            self.keep_alive = False

    def end(self) -> None:
        """The gateway is done with this response: ``write`` raises from now on."""
        self._ended = True

    def send_error(self, status: int, detail: str = "") -> None:
        """Answer with the server's own error response; nothing may have been sent yet."""
        data = error_response(status, detail, head_only=self._head_only)
        self._ended = True
        self.headers_sent = True
        self.keep_alive = False
        self.sent_status = status_line(status)
        self.headers = []
        self._body.final_head_sent()
        if not self._head_only:
            self._sent = len(data) - data.index(b"\r\n\r\n") - 4
        if self._slot is not None:
            self._slot.sending(time.monotonic())
        self._conn.sendall(data)
        if self._record is not None:
            self._record.sent(self._sent)

    def _send_head(self, data: bytes, complete: bool) -> None:
        """Send the head, with ``data`` (the whole body when ``complete``) if any."""
        status = self.status
        if status is None:
            raise AssertionError("the application sent body data before calling start_response()")
        keep_alive = self.keep_alive and not self.draining.is_set() and self._body.can_keep_alive()
        if self._request_id_header is not None:
            self._add_request_id()
        head, framing, self._content_length, self.keep_alive = response_head(
            self._request,
            status,
            self.headers,
            self._fields,
            len(data) if complete else None,
            keep_alive,
        )
        self._framing = framing
        self.headers_sent = True
        self.sent_status = status
        self._body.final_head_sent()
        if self._slot is not None:
            self._slot.sending(time.monotonic())
        if data and framing != NO_BODY:
            self._send_body(data, head)
        else:
            self._conn.sendall(head)

    def _add_request_id(self) -> None:
        """Add the request id header, unless the application set one."""
        header = self._request_id_header
        assert header is not None
        name = header[0].lower()
        if not any(key.lower() == name for key, _value in self.headers):
            self.headers = [*self.headers, header]

    def _send_body(self, data: bytes, head: bytes = b"") -> None:
        framing = self._framing
        if framing == NO_BODY:
            return
        if framing == CONTENT_LENGTH:
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
                if not data:
                    if head:
                        self._conn.sendall(head)
                    return
            parts = [head, data]
        elif framing == CHUNKED:
            parts = [head, chunk_head(len(data)), data, CHUNK_END]
        else:
            parts = [head, data]
        self._conn.send_parts(parts)
        # Counted once sent: a send that failed part-way leaves the body incomplete.
        self._sent += len(data)
        if self._record is not None:
            self._record.sent(len(data))

    def send_file(self, filelike: Any, position: int, available: int, sendfile: str) -> None:
        """Send a file from its position as the whole body, within the Content-Length, as
        ``sendfile`` (``--sendfile``) says (see ``Connection.sendfile``). Only before
        anything else was sent (else the file is iterated like any body)."""
        if self.headers_sent:
            raise AssertionError("send_file() after the response head")
        content_length, has_date, has_server = self._fields
        if content_length is None:
            # The file size is known, so the response gets a length rather than chunks.
            self.headers = [*self.headers, ("Content-Length", str(available))]
            self._fields = (available, has_date, has_server)
        self._send_head(b"", complete=False)
        if self._framing != CONTENT_LENGTH:
            return  # HEAD or a body-less status: nothing to send.
        remaining = min(available, (self._content_length or 0) - self._sent)
        # Fewer when the file is shorter than it was: finish() reports the shortfall.
        sent = self._conn.sendfile(filelike.fileno(), position, remaining, sendfile)
        self._sent += sent
        if self._record is not None:
            self._record.sent(sent)


class Gateway:
    """Runs the WSGI application for requests parsed off a connection."""

    def __init__(
        self,
        app: WSGIApp,
        config: Config,
        *,
        multiprocess: bool = False,
        draining: threading.Event | None = None,
        access_log: AccessLog | None = None,
        recorder: Recorder | None = None,
        request_hooks: RequestHooks | None = None,
        worker_index: int = 0,
    ) -> None:
        self.app = app
        self.request_hooks = request_hooks  # None: the hot path checks that once
        self.config = config
        # Metrics (--metrics-bind, or a worker process's slot): None records nothing.
        self.recorder = recorder
        self._request_ids = config.request_id
        # Set when the server shuts down: responses from then on carry Connection: close.
        self.draining = draining if draining is not None else threading.Event()
        self.access_log = access_log  # The server's own: it opens and closes it.
        # The root path as the decoded PATH_INFO spells it: its UTF-8 bytes, one code
        # point each (what PEP 3333 wants of SCRIPT_NAME too).
        self._root_path = config.root_path.encode("utf-8").decode("latin-1")
        self._static_environ: dict[str, Any] = {
            "SCRIPT_NAME": self._root_path,
            "SERVER_SOFTWARE": SERVER_HEADER,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": config.url_scheme,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": multiprocess,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
            "wsgi.file_wrapper": FileWrapper,
            # The worker process's index (0: a single process); see docs/observability.md.
            "wsgipool.worker_index": worker_index,
        }
        trust = config.forwarded_trust
        self._forwarded_trust = None if trust.empty else trust

    def _connection_state(self, conn: Connection) -> _ConnectionState:
        """What the gateway keeps per connection, made on its first request (after any
        PROXY header has named the peer) and kept in ``conn.gateway_state``."""
        environ = dict(self._static_environ)
        tls = conn.tls_environ()
        if tls is not None:
            environ.update(tls)
        # The listening socket's address, as gunicorn and werkzeug report it (0.0.0.0 for
        # a wildcard bind); HTTP_HOST says what the client asked for.
        local = conn.local
        if isinstance(local, tuple):
            environ["SERVER_NAME"] = local[0]
            environ["SERVER_PORT"] = str(local[1])
        else:
            # A Unix socket: its path (as bytes, one code point each, like every environ
            # string), and for the port it lacks the scheme's default, as PEP 3333 wants
            # both never empty (and gunicorn reports them).
            named = isinstance(local, str) and local
            environ["SERVER_NAME"] = os.fsencode(local).decode("latin-1") if named else "localhost"
            environ["SERVER_PORT"] = "443" if environ["wsgi.url_scheme"] == "https" else "80"
        peer = conn.peer
        if isinstance(peer, tuple) and peer:
            environ["REMOTE_ADDR"] = peer[0]
            environ["REMOTE_PORT"] = str(peer[1])
        else:
            # Unix sockets have no peer address.
            environ["REMOTE_ADDR"] = ""
            environ["REMOTE_PORT"] = ""
        # Once per connection: only a trusted peer's forwarded headers are ever read.
        trust = self._forwarded_trust
        state = (environ, trust if trust is not None and trust.trusts_peer(peer) else None)
        conn.gateway_state = state
        return state

    def make_environ(self, conn: Connection, request: Request) -> dict[str, Any]:
        base, forwarded_trust = conn.gateway_state or self._connection_state(conn)
        environ = dict(base)
        path = request.path
        if "%" in path:
            path = unquote_to_bytes(path).decode("latin-1")
        root_path = self._root_path
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
        if forwarded_trust is not None:
            apply_forwarded(environ, forwarded_trust)
        return environ

    def handle(
        self,
        conn: Connection,
        request: Request,
        queue_wait: float = 0.0,
        load: Load | None = None,
        slot: Slot | None = None,
        head_started: float = 0.0,
    ) -> Outcome:
        """Serve one request; say whether and how the connection goes on.

        ``queue_wait`` is how long the request waited for a worker (seconds); the app
        sees it as ``environ["wsgipool.queue_wait"]``. ``load`` is the worker's, which now
        and then measures a request for the pool (see ``taskqueue``). ``slot`` is the
        worker thread's on the scoreboard (a throwaway one when None); ``head_started``
        when the head's first bytes arrived (monotonic; 0: it came whole).
        """
        # The worker took it now; its head was complete when it was queued.
        taken = time.monotonic()
        started = taken - queue_wait
        sample = Sample() if load is not None and load.sample_now() else None
        max_body = self.config.max_body_size
        decoder: FixedLengthBody | ChunkedBody | None
        if request.chunked:
            decoder = ChunkedBody(self.config.limits)
        elif request.content_length:
            decoder = FixedLengthBody(request.content_length)
        else:
            decoder = None
        # The wait budgets run over the worker's whole turn on the connection (see
        # ConnectionHandler), not per request: only this request's waits are its sample's.
        waited_before = conn.receiving.waited + conn.sending.waited
        environ = self.make_environ(conn, request)
        if slot is None:
            slot = Slot(frozenset())
        # Whether the peer is a trusted proxy (made by make_environ).
        trusted = conn.gateway_state[1] is not None
        request_id = None
        if trusted or self._request_ids == "generate":
            request_id = self._request_id(environ, trusted)
        started_wall = time.time() - queue_wait
        record = slot.begin(
            request.method,
            request.path,
            self._client(conn, environ) if trusted else conn.peer,
            queue_wait=queue_wait,
            request_id=request_id,
            headers=request.headers,
            started=started,
            started_wall=started_wall,
            head_started=head_started,
        )
        body = RequestBody(conn, decoder, request.expect_continue, max_body, record)
        environ["wsgi.input"] = body
        environ["wsgipool.queue_wait"] = queue_wait
        environ["wsgipool.request_start"] = started_wall
        environ["wsgipool.thread_name"] = slot.thread_name
        id_header = None
        if request_id is not None:
            environ["wsgipool.request_id"] = request_id
            if self._request_ids == "generate":
                id_header = (REQUEST_ID_HEADER, request_id)
        response = Response(conn, request, body, self.draining, slot, record, id_header)
        recorder = self.recorder
        if recorder is not None:
            scheme = environ["wsgi.url_scheme"]  # taken before the app can change it
        result: Iterable[bytes] | None = None
        hooks = self.request_hooks
        hooked: object = None
        try:
            try:
                if hooks is not None:
                    hooked = hooks.before(request, environ)
                if request.content_length is not None and request.content_length > max_body:
                    body.failure = 413
                    raise RequestBodyError(413, "request body larger than max_body_size")
                if sample is None:
                    result = self.app(environ, response.start_response)
                else:
                    sample.enter()
                    result = self.app(environ, response.start_response)
                    sample.leave()
                self._send_result(conn, response, result, sample)
                outcome = self._next_outcome(conn, request, response, body)
            except ClientDisconnected as exc:
                outcome = self._client_gone(conn, response, exc)
            except BaseException as exc:
                # Whatever the application raises (SystemExit and KeyboardInterrupt
                # included: in a worker thread they can only come from the app) is its
                # failure, never the worker's; unless it only re-raised the client's
                # disconnect as an error of its own (Django's UnreadablePostError).
                gone = _disconnect_behind(exc)
                if gone is not None:
                    outcome = self._client_gone(conn, response, gone)
                else:
                    outcome = self._fail(conn, request, response, body, exc)
            finally:
                response.end()
                if result is not None:
                    self._close_result(result, request, sample)
        finally:
            # The request is over (its record has its end time): the one place a
            # per-request hook (metrics) reads its timings from.
            slot.done()
        access_log = self.access_log
        if access_log is not None:
            access_log.log(
                Atoms(
                    environ,
                    response.sent_status or "-",
                    response.headers,
                    response.body_sent,
                    record.finished - taken,
                    queue_wait,
                    record,
                )
            )
        if hooks is not None and hooked is not None:
            hooks.after(hooked, environ, response.sent_status or "-")
        if recorder is not None:
            # From the complete head to the last byte (the times of scoreboard.InFlight);
            # a response that never got a status (the client left first) counts as "".
            recorder.request_done(
                request.method,
                response.sent_status or "",
                scheme,
                record.finished - record.started,
                record.queue_wait,
            )
        if sample is not None and load is not None:
            waited = conn.receiving.waited + conn.sending.waited - waited_before
            sample.finish(load, waited)
        return outcome

    def _request_id(self, environ: dict[str, Any], trusted: bool) -> str | None:
        """The request's id: a trusted proxy's ``X-Request-ID`` when it is fit for a log
        line (unless ``--request-id off``); with ``--request-id generate``, else a new one."""
        if trusted and self._request_ids != "off":
            given = environ.get("HTTP_X_REQUEST_ID")
            if given is not None and _REQUEST_ID.fullmatch(given):
                return str(given)
        if self._request_ids == "generate":
            return uuid.uuid4().hex
        return None

    @staticmethod
    def _client(conn: Connection, environ: dict[str, Any]) -> object:
        """Who the scoreboard names as the client of a trusted proxy's request: the
        client it named (``--forwarded-allow-ips``), else the peer."""
        peer = conn.peer
        remote = environ.get("REMOTE_ADDR")
        if remote and not (isinstance(peer, tuple) and peer and peer[0] == remote):
            return remote
        return peer

    @staticmethod
    def _client_gone(conn: Connection, response: Response, exc: ClientDisconnected) -> Outcome:
        """The client went away (or was too slow): an ordinary event, logged at DEBUG."""
        log.debug("client %s went away: %s", conn.peer, exc)
        # Cut off part-way (a client too slow, not only one gone): a body delimited by the
        # close must not end in an orderly one.
        cut_short = response.close_delimited and not response.body_complete
        return Outcome.RESET if cut_short else Outcome.CLOSE

    @staticmethod
    def _next_outcome(
        conn: Connection, request: Request, response: Response, body: RequestBody
    ) -> Outcome:
        """How the connection goes on after a complete response."""
        if not response.keep_alive:
            # A client that asked for the close sends nothing more (RFC 9112 9.6). One the
            # server closes on (draining) may have its next request on the way: closing
            # over unread bytes resets the connection, and the kernel drops what it still
            # holds of this response; ABORT half-closes and drains them first.
            done = body.done and not conn.buffer and not request.keep_alive
            return Outcome.CLOSE if done else Outcome.ABORT
        return Outcome.KEEP_ALIVE if body.done or body.drain() else Outcome.ABORT

    def _send_result(
        self,
        conn: Connection,
        response: Response,
        result: Iterable[bytes],
        sample: Sample | None = None,
    ) -> None:
        # The fast paths (sendfile, one Content-Length for a one-item list) only while
        # nothing was sent: after a write() the head and its framing are out, and the rest
        # follows them like any body.
        if not response.headers_sent:
            file_source = _sendfile_source(result)
            if file_source is not None:
                response.send_file(*file_source, self.config.sendfile)
                response.finish()
                return
            if isinstance(result, (list, tuple)) and len(result) == 1:
                response.write_complete(result[0])
                response.finish()
                return
        write = response.write
        items = iter(result) if sample is None else sample.timed(result)
        for data in items:
            if data:
                write(data)
                if response.body_complete:
                    break
        response.finish()
        # On past the end of the response (a Content-Length reached, HEAD), so that code
        # after an app's last yield runs (werkzeug's debugger logs the traceback there),
        # as gunicorn and werkzeug do: the excess is dropped.
        self._discard_rest(items)

    @staticmethod
    def _discard_rest(items: Iterator[bytes]) -> None:
        """Run ``items`` to its end, dropping what it yields; but no more than
        DISCARD_LIMIT bytes or DISCARD_TIME seconds of it, so that an endless stream
        answering HEAD does not hold the worker for ever."""
        dropped = 0
        give_up_at = time.monotonic() + DISCARD_TIME
        for data in items:
            dropped += len(data)
            if dropped > DISCARD_LIMIT or time.monotonic() > give_up_at:
                log.debug("dropped %d bytes past the end of the response; stopping", dropped)
                return

    def _fail(
        self,
        conn: Connection,
        request: Request,
        response: Response,
        body: RequestBody,
        exc: BaseException,
    ) -> Outcome:
        """Answer an application or body error; say how the connection goes on."""
        if response.headers_sent:
            if response.body_complete:
                # The client has the whole response: nothing is lost by going on.
                log.error(
                    "error in the application for %s %s after its response was complete",
                    request.method,
                    request.target,
                    exc_info=exc,
                )
                return self._next_outcome(conn, request, response, body)
            log.error(
                "error after the response started for %s %s; aborting the connection",
                request.method,
                request.target,
                exc_info=exc,
            )
            # A body delimited by the close must not end in an orderly one: the client
            # would take the truncated body for the whole.
            return Outcome.RESET if response.close_delimited else Outcome.ABORT
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
            response.send_error(status, detail)
        return Outcome.ABORT

    @staticmethod
    def _close_result(result: Iterable[bytes], request: Request, sample: Sample | None) -> None:
        close = getattr(result, "close", None)
        if close is None:
            return
        try:
            if sample is None:
                close()
            else:
                sample.enter()
                close()
                sample.leave()
        except BaseException:
            # The response is already decided; a failing close() changes nothing on the
            # wire, so the connection goes on as it would have.
            log.exception(
                "error in close() of the response for %s %s", request.method, request.target
            )


def _disconnect_behind(exc: BaseException) -> ClientDisconnected | None:
    """The client's disconnect that ``exc`` was raised from (``raise ... from``), if any.

    Only an explicit cause counts: an error merely raised while handling a disconnect may
    be a bug of its own, which must still be logged as one.
    """
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:  # a chain may loop
        if isinstance(cause, ClientDisconnected):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__
    return None


__all__ = ["FileWrapper", "Gateway", "RequestBody", "Response", "WSGIApp"]
