"""Sans-IO HTTP/1.1 request parsing: bytes in, a ``Request`` or a ``ProtocolError`` out.

Nothing here touches a socket. The connection code keeps a ``bytearray`` of what it has
received, asks ``HeadScanner`` whether a whole request head is there, hands the head to
``parse_head`` and then drains the body through a ``FixedLengthBody`` or ``ChunkedBody``
decoder that consumes from the same buffer.

Strictness follows RFC 9112: anything ambiguous about where a message starts or ends is a
``ProtocolError`` and the caller closes the connection, so no byte after a bad request is
ever read as another request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn

from . import _abnf
from .errors import ProtocolError

CRLF = b"\r\n"
HEAD_END = b"\r\n\r\n"

# Longest chunk-size accepted: 16 hex digits cover 2**64, and refusing more keeps int()
# from ever seeing a huge number.
MAX_CHUNK_SIZE_DIGITS = 16
# Longest Content-Length accepted, for the same reason (a 1 EB body is no real request).
MAX_CONTENT_LENGTH_DIGITS = 18
# Framing a chunked body may carry beyond its data: each chunk may spend
# FRAMING_ALLOWANCE bytes plus twice its size on its size line, extensions and CRLFs, and
# what goes over that accumulates up to MAX_FRAMING_EXCESS before the body is refused
# (Go's rule since CVE-2023-39326). One-byte chunks stay within it; long extensions don't.
FRAMING_ALLOWANCE = 16
MAX_FRAMING_EXCESS = 16 * 1024


@dataclass(frozen=True)
class Limits:
    """Bounds on what a peer may send before it gets an error instead of memory."""

    max_request_line: int = 8192
    max_header_size: int = 65536
    max_header_count: int = 100
    max_chunk_line: int = 4096


class Request:
    """A parsed request head. Text fields are latin-1 decoded: one code point per byte."""

    __slots__ = (
        "chunked",
        "content_length",
        "expect_continue",
        "headers",
        "host",
        "http11",
        "keep_alive",
        "method",
        "path",
        "query",
        "target",
        "version",
    )

    def __init__(
        self,
        method: str,
        target: str,
        path: str,
        query: str,
        version: str,
        headers: list[tuple[str, str]],
        host: str | None,
        content_length: int | None,
        chunked: bool,
        keep_alive: bool,
        expect_continue: bool,
    ) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.query = query
        self.version = version
        self.http11 = version == "HTTP/1.1"
        self.headers = headers
        self.host = host
        self.content_length = content_length
        self.chunked = chunked
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.target} {self.version}>"


class HeadScanner:
    """Finds the end of a request head in a growing buffer without rescanning old bytes.

    A client that trickles its head a byte at a time would otherwise make every search
    start over, turning a 64 KiB limit into billions of comparisons.
    """

    __slots__ = ("_limits", "_scanned")

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._scanned = 0

    def find(self, buf: bytearray) -> int:
        """Return the length of the complete head (CRLFCRLF included), or -1 for "need more".

        Raises ``ProtocolError`` once the head is over a limit, or as soon as a bare LF
        shows that the client does not end its lines with CRLF.
        """
        start = self._scanned - 3 if self._scanned > 3 else 0
        end = buf.find(HEAD_END, start)
        if end >= 0:
            self._scanned = 0
            if end + 4 > self._limits.max_header_size:
                raise ProtocolError(431, "request head too large")
            return end + 4
        self._check_bare_lf(buf, start)
        self._scanned = len(buf)
        self._check_limits(buf)
        return -1

    def reset(self) -> None:
        self._scanned = 0

    @staticmethod
    def _check_bare_lf(buf: bytearray, start: int) -> None:
        # Without this a client using bare LF line endings would wait for the header
        # timeout, as its head never ends in CRLFCRLF; a complete head is checked anyway.
        lf = buf.find(b"\n", start)
        while lf >= 0:
            if lf == 0 or buf[lf - 1] != 13:
                raise ProtocolError(400, "bare LF in request head")
            lf = buf.find(b"\n", lf + 1)

    def _check_limits(self, buf: bytearray) -> None:
        limits = self._limits
        if len(buf) > limits.max_header_size:
            raise ProtocolError(431, "request head too large")
        # One leading CRLF is allowed before the request line (RFC 9112 2.2).
        skip = 2 if buf.startswith(CRLF) else 0
        line_end = buf.find(CRLF, skip)
        if line_end < 0:
            # A trailing CR may be the first half of the line's CRLF.
            line_end = len(buf) - 1 if buf.endswith(b"\r") else len(buf)
        if line_end - skip > limits.max_request_line:
            raise ProtocolError(414, "request line too long")


def parse_head(head: bytes | bytearray, limits: Limits) -> Request:
    """Parse one complete request head, ending in CRLFCRLF, into a ``Request``."""
    text = head.decode("latin-1")
    try:
        return _parse_head_text(text, limits)
    except ProtocolError as exc:
        # HeadScanner refuses a bare LF with 400 as soon as it arrives, which may be before
        # the head is complete; a head with one that arrived whole must get the same 400,
        # not a 505 or 501 found first, or the answer would depend on how TCP cut it up.
        if exc.status not in (400, 414, 431) and text.count("\n") != text.count("\r\n"):
            raise ProtocolError(400, "bare LF in request head") from None
        raise


def opens_head_request(data: bytes | bytearray) -> bool:
    """Whether ``data``, a request head or what has arrived of one, is a HEAD request, by
    its first bytes alone: for the answer to a request refused before it could be parsed,
    which must carry no content all the same (RFC 9110 9.3.2)."""
    return data.startswith(b"HEAD ", 2 if data.startswith(CRLF) else 0)


def _parse_head_text(text: str, limits: Limits) -> Request:
    if text.startswith("\r\n"):
        text = text[2:]
        if not text.endswith("\r\n\r\n"):
            raise ProtocolError(400, "empty request line")
    line_end = text.find("\r\n")
    request_line = text[:line_end]
    if len(request_line) > limits.max_request_line:
        raise ProtocolError(414, "request line too long")
    # Every field line with its CRLF; the head's final empty line is left out.
    fields = text[line_end + 2 : -2]
    if fields.count("\r\n") > limits.max_header_count:
        raise ProtocolError(431, "too many header fields")
    match = _abnf.REQUEST_LINE.fullmatch(request_line)
    if match is None:
        raise ProtocolError(400, "malformed request line")
    method, target, major, minor = match.groups()
    if major != "1":
        raise ProtocolError(505, "HTTP version not supported")
    # HTTP/1.2 and later minors are answered as HTTP/1.1 (RFC 9110 6.2).
    version = "HTTP/1.0" if minor == "0" else "HTTP/1.1"
    path, query, target_host = _split_target(method, target)

    # The whole field section is checked by one regular expression, then split by another:
    # two passes in C instead of several calls per line.
    if _abnf.FIELD_SECTION.fullmatch(fields) is None:
        _raise_field_error(fields)
    headers: list[tuple[str, str]] = []
    host_values: list[str] = []
    content_lengths: list[str] = []
    transfer_codings: list[str] = []
    connection_tokens: list[str] = []
    expectations: list[str] = []
    for name, value in _abnf.FIELD_LINE.findall(fields):
        name = name.lower()
        value = value.strip(" \t")
        if name in _FRAMING_FIELDS:
            if name == "host":
                host_values.append(value)
            elif name == "content-length":
                content_lengths.append(value)
            elif name == "transfer-encoding":
                transfer_codings.extend(value.split(","))
            elif name == "connection":
                connection_tokens.extend(token.strip(" \t").lower() for token in value.split(","))
            else:
                expectations.extend(value.split(","))
        headers.append((name, value))
    expect_continue = _parse_expect(expectations) if expectations else False

    http11 = version == "HTTP/1.1"
    host = _parse_host(host_values, http11)
    if target_host is not None:
        # RFC 9112 3.2.2: the authority of an absolute-form target replaces any Host field.
        host = target_host
    chunked = False
    content_length = None
    if transfer_codings:
        if not http11:
            raise ProtocolError(400, "Transfer-Encoding in an HTTP/1.0 request")
        if content_lengths:
            raise ProtocolError(400, "both Transfer-Encoding and Content-Length")
        chunked = _parse_transfer_encoding(transfer_codings)
    elif content_lengths:
        content_length = _parse_content_length(content_lengths)

    if http11:
        keep_alive = "close" not in connection_tokens
    else:
        keep_alive = "keep-alive" in connection_tokens and "close" not in connection_tokens
    # Positional: keyword arguments cost 0.3 us here, a tenth of this function.
    return Request(
        method,
        target,
        path,
        query,
        version,
        headers,
        host,
        content_length,
        chunked,
        keep_alive,
        expect_continue and http11,  # expect_continue
    )


# The fields that decide how the request is framed and handled.
_FRAMING_FIELDS = frozenset({"host", "content-length", "transfer-encoding", "connection", "expect"})


def _raise_field_error(fields: str) -> NoReturn:
    """Say which rule the field section broke (it failed FIELD_SECTION)."""
    field_name = _abnf.FIELD_NAME.fullmatch
    field_value = _abnf.FIELD_VALUE.fullmatch
    for line in fields.split("\r\n")[:-1]:
        name, colon, value = line.partition(":")
        if not colon:
            if line[:1] in (" ", "\t"):
                raise ProtocolError(400, "obsolete line folding")
            raise ProtocolError(400, "header line without a colon")
        if field_name(name) is None:
            # Also catches whitespace before the colon and obs-fold (RFC 9112 5.1, 5.2).
            raise ProtocolError(400, "invalid header field name")
        if field_value(value.strip(" \t")) is None:
            raise ProtocolError(400, "invalid character in header field value")
    raise ProtocolError(400, "invalid header section")


def _split_target(method: str, target: str) -> tuple[str, str, str | None]:
    """Return (path, query, host from an absolute-form target) for a request-target."""
    if method == "CONNECT":
        # RFC 9112 3.2.3: CONNECT takes the authority-form and nothing else.
        if _abnf.AUTHORITY_FORM.fullmatch(target) is not None:
            raise ProtocolError(501, "CONNECT is not supported")
        raise ProtocolError(400, "CONNECT needs an authority-form target")
    if target[0] == "/":
        if _abnf.ORIGIN_FORM.fullmatch(target) is None:
            raise ProtocolError(400, "invalid request target")
        path, _, query = target.partition("?")
        return path, query, None
    if target == "*":
        if method != "OPTIONS":
            raise ProtocolError(400, "asterisk-form target is only for OPTIONS")
        return "*", "", None
    absolute = _abnf.ABSOLUTE_FORM.fullmatch(target)
    if absolute is not None:
        scheme, authority, rest = absolute.groups()
        if scheme.lower() not in ("http", "https"):
            raise ProtocolError(400, "unsupported URI scheme in request target")
        if not authority or authority[0] == ":":
            # RFC 9110 4.2.1, 4.2.2: an http(s) URI with an empty host is invalid, with a
            # port ("http://:80/") or without; authority is host [":" port], so the host
            # is empty exactly when the authority is or starts with its colon.
            raise ProtocolError(400, "absolute-form target without a host")
        path, _, query = (rest or "/").partition("?")
        return path or "/", query, authority
    if _abnf.AUTHORITY_FORM.fullmatch(target) is not None:
        raise ProtocolError(400, "authority-form target is only for CONNECT")
    raise ProtocolError(400, "invalid request target")


def _parse_host(values: list[str], http11: bool) -> str | None:
    if len(values) > 1:
        raise ProtocolError(400, "more than one Host field")
    if not values:
        if http11:
            raise ProtocolError(400, "missing Host field")
        return None
    if _abnf.HOST.fullmatch(values[0]) is None:
        raise ProtocolError(400, "invalid Host field")
    return values[0]


def _parse_content_length(values: list[str]) -> int:
    # RFC 9110 8.6: a list of identical values ("5, 5") may be taken as one; anything else
    # is a framing conflict.
    lengths = set()
    for value in values:
        for item in value.split(","):
            item = item.strip(" \t")
            if (
                _abnf.CONTENT_LENGTH.fullmatch(item) is None
                or len(item) > MAX_CONTENT_LENGTH_DIGITS
            ):
                raise ProtocolError(400, "invalid Content-Length")
            lengths.add(int(item))
    if len(lengths) != 1:
        raise ProtocolError(400, "conflicting Content-Length values")
    return lengths.pop()


def _parse_transfer_encoding(items: list[str]) -> bool:
    codings = [item.strip(" \t").lower() for item in items]
    if codings == ["chunked"]:
        return True
    for coding in codings:
        if _abnf.TOKEN.fullmatch(coding) is None:
            raise ProtocolError(400, "invalid Transfer-Encoding")
    if codings[-1] != "chunked" or codings.count("chunked") > 1:
        # RFC 9112 6.3: without chunked as the final coding the length cannot be known.
        raise ProtocolError(400, "Transfer-Encoding does not end in a single chunked")
    raise ProtocolError(501, "unsupported transfer coding")


def _parse_expect(items: list[str]) -> bool:
    """Whether the Expect list (its items from every Expect field) asks for 100-continue.

    Expect is a list (RFC 9110 5.6.1): "100-continue, 100-continue" in one field means what
    the two fields would, and empty elements ("100-continue,") are ignored.
    """
    members = {item.strip(" \t").lower() for item in items} - {""}
    if members - {"100-continue"}:
        # RFC 9110 10.1.1: an expectation the server cannot meet gets 417.
        raise ProtocolError(417, "unsupported expectation")
    return bool(members)


class FixedLengthBody:
    """Decodes a body delimited by Content-Length (RFC 9112 6.2)."""

    __slots__ = ("remaining",)

    def __init__(self, length: int) -> None:
        self.remaining = length

    @property
    def done(self) -> bool:
        return self.remaining == 0

    def read(self, buf: bytearray, limit: int) -> bytes | None:
        """Consume up to ``limit`` body bytes from ``buf``.

        Returns data, ``b""`` at the end of the body, or ``None`` when ``buf`` holds no body
        bytes yet (read more from the peer and call again).
        """
        if self.remaining == 0:
            return b""
        take = min(self.remaining, limit, len(buf))
        if take <= 0:
            return None
        data = bytes(buf[:take])
        del buf[:take]
        self.remaining -= take
        return data


class ChunkedBody:
    """Decodes a chunked body (RFC 9112 7.1); trailer fields are checked and discarded.

    Trailers never reach the application: merging them into the environ after the head was
    handed over would let a client change headers a proxy already checked.

    ``wire_bytes`` counts the chunks as they crossed the wire: chunk-size lines and their
    extensions and CRLFs as well as data, so a limit on it bounds what a client may send,
    not only what the application reads (the last chunk is bounded as a chunk line,
    by ``max_chunk_line``, and the trailer fields by ``max_header_size``). Framing beyond a little per
    chunk is refused outright (``MAX_FRAMING_EXCESS``): a body of one-byte chunks with
    long extensions is nearly all framing (the class of Go's CVE-2023-39326).
    """

    __slots__ = (
        "_chunk_left",
        "_error",
        "_excess",
        "_limits",
        "_state",
        "_trailer_bytes",
        "wire_bytes",
    )

    _SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._state = self._SIZE
        self._chunk_left = 0
        self._trailer_bytes = 0
        self._excess = 0
        self._error: ProtocolError | None = None
        self.wire_bytes = 0

    @property
    def done(self) -> bool:
        return self._state == self._DONE

    @property
    def announced_bytes(self) -> int:
        """``wire_bytes`` with the rest of the chunk being read, as its size line announced
        it: a limit on this refuses a chunk too large before its data arrives, as a
        ``Content-Length`` is refused."""
        return self.wire_bytes + (self._chunk_left if self._state == self._DATA else 0)

    def read(self, buf: bytearray, limit: int) -> bytes | None:
        """Same contract as ``FixedLengthBody.read``.

        Decodes as many chunks as ``buf`` holds, up to ``limit`` data bytes, in one call,
        and a chunk whose data and CRLF are all there in one step, so that many small
        chunks stay cheap. A framing error is final: it is raised again by every later
        call (after the data decoded before it, if any, is returned), and nothing of the
        element at fault is consumed.
        """
        if self._error is not None:
            raise self._error
        pieces: list[bytearray] = []
        wanted = limit
        position = 0
        # Bytes of the last chunk (a chunk line, bounded like any) and the trailer section
        # (which --max-header-size bounds).
        tail = 0
        size = len(buf)
        state = self._state
        max_line = self._limits.max_chunk_line
        try:
            while wanted:
                if state == self._SIZE:
                    end = buf.find(CRLF, position, position + max_line + 2)
                    if end < 0:
                        self._line_end(buf, position, max_line)  # Raises on a bad line.
                        break
                    chunk = self._chunk_size(buf[position:end], end - position)
                    if not chunk:
                        tail += end + 2 - position
                        position = end + 2
                        state = self._TRAILER
                        continue
                    data_start = end + 2
                    data_end = data_start + chunk
                    if chunk <= wanted and data_end + 2 <= size:
                        # The whole chunk is here: its data and CRLF in one step.
                        if buf[data_end] != 13 or buf[data_end + 1] != 10:
                            raise ProtocolError(400, "chunk data not followed by CRLF")
                        pieces.append(buf[data_start:data_end])
                        position = data_end + 2
                        wanted -= chunk
                        continue
                    position = data_start
                    self._chunk_left = chunk
                    state = self._DATA
                elif state == self._DATA:
                    take = min(self._chunk_left, wanted, size - position)
                    if take <= 0:
                        break
                    pieces.append(buf[position : position + take])
                    position += take
                    wanted -= take
                    self._chunk_left -= take
                    if self._chunk_left == 0:
                        state = self._DATA_END
                elif state == self._DATA_END:
                    if size - position < 2:
                        if size > position and buf[position] != 13:
                            raise ProtocolError(400, "chunk data not followed by CRLF")
                        break
                    if buf[position] != 13 or buf[position + 1] != 10:
                        raise ProtocolError(400, "chunk data not followed by CRLF")
                    position += 2
                    state = self._SIZE
                elif state == self._TRAILER:
                    room = self._limits.max_header_size - self._trailer_bytes
                    end = self._line_end(buf, position, room)
                    if end < 0:
                        break
                    line = buf[position:end]
                    if line and _abnf.FIELD_LINE_BYTES.fullmatch(line) is None:
                        raise ProtocolError(400, "invalid trailer field")
                    tail += end + 2 - position
                    position = end + 2
                    if not line:
                        state = self._DONE
                        break
                    self._trailer_bytes += len(line) + 2
                else:
                    break
        except ProtocolError as exc:
            self._error = exc
            if not pieces:
                raise
        finally:
            self._state = state
            if position:
                self.wire_bytes += position - tail
                del buf[:position]
        if pieces:
            return bytes(pieces[0]) if len(pieces) == 1 else b"".join(pieces)
        return b"" if state == self._DONE else None

    def _chunk_size(self, line: bytearray, length: int) -> int:
        """The size a chunk-size line gives (RFC 9112 7.1: chunk-size [ chunk-ext ])."""
        if line and not line.translate(None, _abnf.HEXDIG_BYTES):
            digits: bytes | bytearray = line  # 1*HEXDIG and nothing else
        else:
            match = _abnf.CHUNK_LINE.fullmatch(line)
            if match is None:
                raise ProtocolError(400, "invalid chunk size line")
            digits = match.group(1)
        if len(digits) > MAX_CHUNK_SIZE_DIGITS:
            raise ProtocolError(400, "chunk size too large")
        size = int(digits, 16)
        # This line and the CRLF after its data, less what a chunk may spend on framing
        # (as Go counts it): only chunks that are mostly extensions add up.
        excess = self._excess + length + 4 - FRAMING_ALLOWANCE - 2 * size
        if excess > 0:
            if excess > MAX_FRAMING_EXCESS:
                raise ProtocolError(400, "chunked body is mostly framing (chunk extensions)")
            self._excess = excess
        elif self._excess:
            self._excess = 0
        return size

    @staticmethod
    def _line_end(buf: bytearray, start: int, max_length: int) -> int:
        """Where the CRLF ending the line at ``start`` is; -1 while it has not arrived.

        Raises once the line is too long, or as soon as a bare LF or CR shows that the
        client does not end its lines with CRLF: no chunk line or trailer field may hold
        either, and a client that never sends a CRLF would otherwise wait for the body
        timeout (408), as HeadScanner refuses for a head.
        """
        stop = start + max_length + 2
        end = buf.find(CRLF, start, stop)
        if end >= 0:
            return end
        if buf.find(b"\n", start, stop) >= 0:
            raise ProtocolError(400, "bare LF in chunked framing")
        # A CR as the last byte may be the first half of the CRLF.
        if buf.find(b"\r", start, min(stop, len(buf) - 1)) >= 0:
            raise ProtocolError(400, "bare CR in chunked framing")
        if len(buf) - start > max_length + 1:
            raise ProtocolError(400, "chunk line too long")
        return end
