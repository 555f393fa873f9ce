"""Sans-IO HTTP/1.1 response serialisation: status, fields and chunks to bytes."""

from __future__ import annotations

import time
from email.utils import formatdate
from http import HTTPStatus

from .._version import __version__

SERVER_HEADER = f"wsgipool/{__version__}"
SERVER_LINE = f"Server: {SERVER_HEADER}\r\n"
LAST_CHUNK = b"0\r\n\r\n"
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
