"""The response side of the sans-IO HTTP/1.1 core: the checks on a response's status and
fields, how its body is delimited, and its head and chunks as bytes.

The gateway (``wsgi.py``) takes the application's status and header list, has them checked
here (``check_response``), asks ``response_head`` for the head bytes and the framing when
the first body bytes (or the end of the body) come, and frames each piece of body with
``chunk_head``/``CHUNK_END`` when chunked. It does the sending; nothing here does I/O.
"""

from __future__ import annotations

import logging
import time
from email.utils import formatdate
from http import HTTPStatus

from .._version import __version__
from . import _abnf
from .parser import Request

# The server's error log, by name (what the protocol core fixes up in a response is told
# there, at debug level).
log = logging.getLogger("wsgipool.error")

SERVER_HEADER = f"wsgipool/{__version__}"
SERVER_LINE = f"Server: {SERVER_HEADER}\r\n"
# RFC 9112 7.1: last-chunk (a zero chunk-size), then the empty trailer section.
LAST_CHUNK = b"0\r\n\r\n"
# The CRLF after a chunk's data.
CHUNK_END = b"\r\n"
CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"
# Sent with every 503: overload is brief, so invite a retry soon.
RETRY_AFTER = "Retry-After: 1\r\n"

_REASONS = {status.value: status.phrase for status in HTTPStatus}

# (second, formatted Date value). Swapped as one tuple so a reader on another thread always
# sees a matching pair; a race only means two threads format the same second.
_date_cache: tuple[int, str] = (0, "")


def http_date() -> str:
    """The current time as an IMF-fixdate (RFC 9110 5.6.7), formatted once a second."""
    global _date_cache
    now = int(time.time())
    cached = _date_cache
    if cached[0] != now:
        cached = (now, formatdate(now, usegmt=True))
        _date_cache = cached
    return cached[1]


def status_line(status: int) -> str:
    """``"404 Not Found"`` for 404."""
    return f"{status} {_REASONS.get(status, 'Unknown')}"


def has_no_body(status_code: int) -> bool:
    """1xx, 204 and 304 responses never carry content (RFC 9110 6.4.1)."""
    return status_code < 200 or status_code in (204, 304)


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (RFC 9112 7.1); nothing for no data, never the last chunk."""
    if not data:
        return b""
    return b"%x\r\n%b\r\n" % (len(data), data)


# chunk_head(size): the chunk-size line before ``size`` (> 0) bytes of chunk-data (RFC 9112
# 7.1), for a caller that sends the data as it is (no copy) and CHUNK_END after it. A bound
# method of the format, so that framing a chunk runs no Python function.
chunk_head = b"%x\r\n".__mod__


# How a response body is delimited on the wire (RFC 9112 6.3): ``response_head`` says which.
# Plain module ints, as they are compared on every write.
CONTENT_LENGTH = 0  # a Content-Length field
CHUNKED = 1  # Transfer-Encoding: chunked (HTTP/1.1 only)
CLOSE_DELIMITED = 2  # the end of the connection (HTTP/1.0, no length known)
NO_BODY = 3  # HEAD, 1xx, 204, 304; 205 (with Content-Length: 0)


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

# (Content-Length, has a Date field, has a Server field) of a checked header list.
ResponseFields = tuple[int | None, bool, bool]

# What check_response needs to know of a field name.
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
# Valid response field names seen so far, as the app spelled them, with their kind: apps
# send the same few names on every response, and a dictionary lookup is cheaper than a
# regular expression, a lower() and four comparisons (1.1 to 0.6 us for two fields).
# Cleared when full, so names made up per request cannot grow it for ever. Each access is
# one dict operation, atomic with or without the GIL, so the threads share it freely.
_KNOWN_NAMES: dict[str, str] = {}
_KNOWN_NAMES_LIMIT = 1024


def _learn_name(name: str) -> str:
    """Check a field name not seen before; remember and return its kind."""
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


def check_response(status: str, headers: list[tuple[str, str]]) -> ResponseFields:
    """Check an application's status (``"200 OK"``) and header list; return what the head
    needs to know of them (``ResponseFields``).

    Raises ``ValueError`` (``TypeError`` for a wrong type of container) for what would
    break the response or smuggle another: a status that is not a final one, a field name
    that is not a token or is hop-by-hop, a value with a control character (CR, LF, NUL),
    a Content-Length that is not digits or comes twice.
    """
    if type(status) is not str or _abnf.FINAL_STATUS.fullmatch(status) is None:
        if isinstance(status, str) and _abnf.INTERIM_STATUS.fullmatch(status):
            raise ValueError(
                f"invalid status {status!r}: a 1xx status is interim, never a final "
                "one (the server sends 100 Continue itself when wsgi.input is read)"
            )
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


def response_head(
    request: Request,
    status: str,
    headers: list[tuple[str, str]],
    fields: ResponseFields,
    body_length: int | None,
    keep_alive: bool,
) -> tuple[bytes, int, int | None, bool]:
    """The head answering ``request``, and how the body follows it.

    ``status`` and ``headers`` are the application's, ``fields`` what ``check_response``
    said of them. ``body_length`` is the length of the whole body when it is known before
    the head goes (a one-item body, or none at all), else None: the body streams.
    ``keep_alive`` is whether the request and the server would keep the connection.

    Returns ``(head, framing, content_length, keep_alive)``: the head's bytes, how the body
    is delimited (``CONTENT_LENGTH``, ``CHUNKED``, ``CLOSE_DELIMITED``, ``NO_BODY``), the
    Content-Length the body is held to (None: none), and whether the connection may be
    kept after it (not when the body ends with it).
    """
    content_length, has_date, has_server = fields
    code = int(status[:3])
    head_only = request.method == "HEAD"
    http11 = request.http11
    if content_length is not None and code in (204, 205):
        # RFC 9110 8.6: never a Content-Length on a 204 (or a 1xx); a 205 gets its own.
        log.debug("dropped the application's Content-Length from a %s response", status)
        headers = [item for item in headers if item[0].lower() != "content-length"]
        content_length = None
    # RFC 9110 6.2: answer with the highest version we speak, 1.1, whatever the request's.
    lines = [f"HTTP/1.1 {status}\r\n", *[f"{name}: {value}\r\n" for name, value in headers]]
    if not has_date:
        lines.append(f"Date: {http_date()}\r\n")
    if not has_server:
        lines.append(SERVER_LINE)

    if has_no_body(code):
        framing = NO_BODY
    elif code == 205:
        # RFC 9110 15.3.6: never content in a 205, whatever the app gives. Its framing is
        # a normal one (RFC 9112 6.3), so say zero: a client reading it and one that
        # expects no body (Ruby's Net::HTTP) then agree where the next response starts.
        lines.append("Content-Length: 0\r\n")
        framing = NO_BODY
    elif content_length is not None:
        framing = CONTENT_LENGTH
    elif head_only:
        # RFC 9110 8.6: a Content-Length on HEAD must be what GET would send, which is
        # known only when the app gave the whole body (werkzeug answers every HEAD
        # with an empty one, however long its GET): otherwise none.
        if body_length:
            lines.append(f"Content-Length: {body_length}\r\n")
        framing = NO_BODY
    elif body_length is not None:
        content_length = body_length
        lines.append(f"Content-Length: {content_length}\r\n")
        framing = CONTENT_LENGTH
    elif http11:
        lines.append("Transfer-Encoding: chunked\r\n")
        framing = CHUNKED
    else:
        framing = CLOSE_DELIMITED
    if head_only:
        framing = NO_BODY
    keep_alive = keep_alive and framing != CLOSE_DELIMITED
    # RFC 9112 9.3: HTTP/1.1 persists unless told "close"; HTTP/1.0 only when told so.
    if http11:
        if not keep_alive:
            lines.append("Connection: close\r\n")
    elif keep_alive:
        lines.append("Connection: keep-alive\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1"), framing, content_length, keep_alive


def error_response(
    status: int, detail: str = "", *, extra_headers: str = "", head_only: bool = False
) -> bytes:
    """A complete ``Connection: close`` response for a request the server refuses itself.

    ``head_only`` (the answer to HEAD): the same head, its Content-Length included, and
    no body (RFC 9110 9.3.2)."""
    line = status_line(status)
    body = f"{line}\n{detail}\n" if detail else f"{line}\n"
    payload = body.encode("utf-8", "replace")
    head = (
        f"HTTP/1.1 {line}\r\n"
        f"{SERVER_LINE}"
        f"Date: {http_date()}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(payload)}\r\n"
        f"{extra_headers}"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + (b"" if head_only else payload)
