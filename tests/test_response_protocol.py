"""Unit tests for the response side of the sans-IO HTTP/1.1 core (``wsgipool.http.response``).

No sockets: each test hands the protocol functions a status, fields and what the request
said, and reads the bytes that would go on the wire, as ``test_parser.py`` does for requests.
Expectations come from RFC 9110 / RFC 9112 (section numbers in ids and comments).
"""

from __future__ import annotations

import ast
import email.utils
import re
import time
from pathlib import Path

import pytest

import wsgipool.http
from wsgipool.http import ChunkedBody, Limits, Request, parse_head
from wsgipool.http.response import (
    CHUNK_END,
    CHUNKED,
    CLOSE_DELIMITED,
    CONTENT_LENGTH,
    CONTINUE_100,
    HOP_BY_HOP,
    LAST_CHUNK,
    NO_BODY,
    SERVER_LINE,
    check_response,
    chunk,
    chunk_head,
    error_response,
    has_no_body,
    http_date,
    response_head,
    status_line,
)

HTTP_PACKAGE = Path(wsgipool.http.__file__).parent


# --------------------------------------------------------------------------------------------
# The protocol core stands alone
# --------------------------------------------------------------------------------------------


def _wsgipool_imports(path: Path) -> list[str]:
    """The wsgipool modules ``path`` (a module of wsgipool.http) imports, as absolute names."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.startswith("wsgipool")]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module and node.module.startswith("wsgipool"):
                    found.append(node.module)
                continue
            base = ["wsgipool", "http"][: 2 - (node.level - 1)]
            module = ".".join([*base, *([node.module] if node.module else [])])
            if node.module:
                found.append(module)
            else:
                found += [f"{module}.{alias.name}" for alias in node.names]
    return found


def test_http_imports_nothing_of_wsgipool_but_itself_and_the_version():
    """The sans-IO core must not pull in the server (``from .. import __version__`` did, by
    way of the package root): only ``wsgipool.http.*`` and ``wsgipool._version``."""
    modules = sorted(HTTP_PACKAGE.glob("*.py"))
    assert modules
    for path in modules:
        for name in _wsgipool_imports(path):
            assert name.startswith("wsgipool.http.") or name in (
                "wsgipool.http",
                "wsgipool._version",
            ), f"{path.name} imports {name}"


# --------------------------------------------------------------------------------------------
# check_response: the application's status and fields
# --------------------------------------------------------------------------------------------

LIMITS = Limits()


@pytest.mark.parametrize(
    "status",
    ["200 OK", "404 Not Found", "599 Custom", "200 ", "201 caf\xe9", "302 Found\tthere", "500 x"],
    ids=repr,
)
def test_a_final_status_is_accepted(status):
    # RFC 9112 4: status-code SP [ reason-phrase ]; reason-phrase may hold HTAB and obs-text.
    assert check_response(status, []) == (None, False, False)


@pytest.mark.parametrize(
    "status",
    [
        "200",  # the SP is not optional
        "OK 200",
        200,
        b"200 OK",
        "200OK",
        "20 OK",
        "2000 OK",
        "200 OK\r\nX-Injected: 1",
        "200 OK\n",
        "200 \u20ac",  # beyond latin-1: not obs-text
        "200 a\x00b",
        "099 Low",  # RFC 9110 15: 100..599
        "600 High",
        " 200 OK",
        None,
    ],
    ids=repr,
)
def test_a_bad_status_is_refused(status):
    with pytest.raises(ValueError, match="expected '200 OK'"):
        check_response(status, [])


@pytest.mark.parametrize("status", ["100 Continue", "101 Switching Protocols", "103 "])
def test_an_interim_status_is_refused_and_explained(status):
    # RFC 9110 15.2: 1xx is interim; the server sends 100 Continue itself.
    with pytest.raises(ValueError, match="1xx status is interim"):
        check_response(status, [])


def test_fields_report_content_length_date_and_server_in_any_spelling():
    assert check_response("200 OK", [("Content-Type", "text/plain")]) == (None, False, False)
    assert check_response("200 OK", [("content-length", "12")]) == (12, False, False)
    assert check_response("200 OK", [("CONTENT-LENGTH", "0"), ("DATE", "x")]) == (0, True, False)
    assert check_response("200 OK", [("Server", "mine"), ("date", "x")]) == (None, True, True)


@pytest.mark.parametrize(
    ("value"),
    ["caf\xe9", "", "a\tb", " padded ", "a" * 10_000, "!#$%&'*+-.^_`|~\x80\xff"],
    ids=repr,
)
def test_field_values_may_hold_htab_sp_vchar_and_obs_text(value):
    # RFC 9110 5.5: field-value = *field-content, over VCHAR, obs-text, SP and HTAB.
    assert check_response("200 OK", [("X-A", value)]) == (None, False, False)


@pytest.mark.parametrize(
    ("headers", "error", "message"),
    [
        pytest.param((("X-A", "b"),), TypeError, "must be a list", id="not-a-list"),
        pytest.param([["X-A", "b"]], TypeError, "not a \\(name, value\\) tuple", id="list-item"),
        pytest.param([("X-A", "b", "c")], TypeError, "not a \\(name, value\\)", id="triple"),
        pytest.param([("X-A",)], TypeError, "not a \\(name, value\\)", id="single"),
        pytest.param([(b"X-A", "b")], ValueError, "header name", id="bytes-name"),
        # RFC 9110 5.1: field-name = token
        pytest.param([("", "b")], ValueError, "header name", id="empty-name"),
        pytest.param([("X A", "b")], ValueError, "header name", id="space-in-name"),
        pytest.param([("X:A", "b")], ValueError, "header name", id="colon-in-name"),
        pytest.param([("X-A\r\n", "b")], ValueError, "header name", id="crlf-in-name"),
        pytest.param([("X-\xe9", "b")], ValueError, "header name", id="non-ascii-name"),
        pytest.param([("X-A ", "b")], ValueError, "header name", id="trailing-space-name"),
        # RFC 9110 5.5: no CTL but HTAB in a value (CR, LF would start another field)
        pytest.param([("X-A", "a\r\nb")], ValueError, "header value", id="crlf-in-value"),
        pytest.param([("X-A", "a\nX-Injected: 1")], ValueError, "header value", id="lf"),
        pytest.param([("X-A", "a\rb")], ValueError, "header value", id="cr"),
        pytest.param([("X-A", "a\x00b")], ValueError, "header value", id="nul"),
        pytest.param([("X-A", "a\x7fb")], ValueError, "header value", id="del"),
        pytest.param([("X-A", "\u20ac")], ValueError, "header value", id="beyond-latin-1"),
        pytest.param([("X-A", b"b")], ValueError, "header value", id="bytes-value"),
        pytest.param([("X-A", 5)], ValueError, "header value", id="int-value"),
        # RFC 9110 8.6: Content-Length = 1*DIGIT, once
        pytest.param([("Content-Length", "abc")], ValueError, "Content-Length", id="cl-text"),
        pytest.param([("Content-Length", "-1")], ValueError, "Content-Length", id="cl-minus"),
        pytest.param([("Content-Length", "+5")], ValueError, "Content-Length", id="cl-plus"),
        pytest.param([("Content-Length", " 5")], ValueError, "Content-Length", id="cl-space"),
        pytest.param([("Content-Length", "1_0")], ValueError, "Content-Length", id="cl-under"),
        pytest.param([("Content-Length", "\u0665")], ValueError, "Content-Length", id="cl-arabic"),
        pytest.param([("Content-Length", "")], ValueError, "Content-Length", id="cl-empty"),
        pytest.param(
            [("Content-Length", "1"), ("content-length", "1")],
            ValueError,
            "repeated Content-Length",
            id="cl-twice",
        ),
    ],
)
def test_bad_fields_are_refused(headers, error, message):
    with pytest.raises(error, match=message):
        check_response("200 OK", headers)


@pytest.mark.parametrize("name", [*sorted(HOP_BY_HOP), "Connection", "TRANSFER-ENCODING"])
def test_hop_by_hop_fields_are_the_servers(name):
    # RFC 9110 7.6.1: the connection's own fields; the server frames and persists.
    for _ in range(2):  # and again, once names have been seen
        with pytest.raises(ValueError, match="hop-by-hop"):
            check_response("200 OK", [("X-Fine", "1"), (name, "close")])


def test_a_refused_name_is_refused_every_time():
    # Only valid names are remembered; a bad one never slips through on a second try.
    for _ in range(3):
        with pytest.raises(ValueError, match="header name"):
            check_response("200 OK", [("Bad Name", "v")])
    assert check_response("200 OK", [("Good-Name", "v")]) == (None, False, False)


def test_names_beyond_what_is_remembered_get_the_same_checks():
    for index in range(3000):
        assert check_response("200 OK", [(f"X-{index}", "v"), ("Date", "d")]) == (
            None,
            True,
            False,
        )
    with pytest.raises(ValueError, match="hop-by-hop"):
        check_response("200 OK", [("Keep-Alive", "timeout=5")])


# --------------------------------------------------------------------------------------------
# response_head: framing, keep-alive and the head's bytes
# --------------------------------------------------------------------------------------------

DATE = ("Date", "Sun, 06 Nov 1994 08:49:37 GMT")
SERVER = ("Server", "test")


def request(method: str = "GET", version: str = "HTTP/1.1", *fields: bytes) -> Request:
    lines = [f"{method} / {version}".encode(), b"Host: example.com", *fields]
    return parse_head(b"\r\n".join(lines) + b"\r\n\r\n", LIMITS)


def head_for(
    req: Request,
    status: str = "200 OK",
    headers: list[tuple[str, str]] | None = None,
    body_length: int | None = None,
    keep_alive: bool = True,
) -> tuple[bytes, int, int | None, bool]:
    """response_head for ``headers`` (with Date and Server given, so the bytes are fixed)."""
    headers = [*(headers or []), DATE, SERVER]
    return response_head(
        req, status, headers, check_response(status, headers), body_length, keep_alive
    )


def fields_of(head: bytes) -> list[str]:
    assert head.endswith(b"\r\n\r\n")
    return head[:-4].decode("latin-1").split("\r\n")[1:]


def test_the_head_is_the_status_line_the_fields_and_an_empty_line():
    head, framing, length, keep_alive = head_for(
        request(), headers=[("Content-Type", "text/plain"), ("Content-Length", "5")]
    )
    assert head == (
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Type: text/plain\r\n"
        b"Content-Length: 5\r\n"
        b"Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
        b"Server: test\r\n"
        b"\r\n"
    )
    assert (framing, length, keep_alive) == (CONTENT_LENGTH, 5, True)


def test_the_answer_is_http_1_1_whatever_the_request_version():
    # RFC 9110 6.2: the highest minor version the server supports.
    head, *_ = head_for(request(version="HTTP/1.0"), headers=[("Content-Length", "0")])
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")


def test_date_and_server_are_added_unless_the_app_gave_them():
    status = "200 OK"
    headers = [("Content-Length", "0")]
    head, *_ = response_head(
        request(), status, headers, check_response(status, headers), None, True
    )
    names = [field.partition(":")[0] for field in fields_of(head)]
    assert names == ["Content-Length", "Date", "Server"]
    date = fields_of(head)[1].partition(": ")[2]
    assert date == http_date()
    assert fields_of(head)[2] == SERVER_LINE.strip()
    head, *_ = head_for(request(), headers=[("Content-Length", "0")])
    assert fields_of(head).count(f"{DATE[0]}: {DATE[1]}") == 1
    assert not any(field.startswith("Server: wsgipool") for field in fields_of(head))


@pytest.mark.parametrize(
    ("method", "version", "status", "headers", "body_length", "expected"),
    [
        # RFC 9112 6.3: the app's Content-Length frames the body.
        ("GET", "HTTP/1.1", "200 OK", [("Content-Length", "7")], None, (CONTENT_LENGTH, 7, [])),
        ("GET", "HTTP/1.1", "200 OK", [("Content-Length", "7")], 3, (CONTENT_LENGTH, 7, [])),
        # The whole body known before the head: a Content-Length of its size.
        ("GET", "HTTP/1.1", "200 OK", [], 5, (CONTENT_LENGTH, 5, ["Content-Length: 5"])),
        ("GET", "HTTP/1.1", "200 OK", [], 0, (CONTENT_LENGTH, 0, ["Content-Length: 0"])),
        ("GET", "HTTP/1.0", "200 OK", [], 5, (CONTENT_LENGTH, 5, ["Content-Length: 5"])),
        # A streamed body: chunked for HTTP/1.1 (RFC 9112 7.1), the close for HTTP/1.0.
        (
            "GET",
            "HTTP/1.1",
            "200 OK",
            [],
            None,
            (CHUNKED, None, ["Transfer-Encoding: chunked"]),
        ),
        (
            "POST",
            "HTTP/1.1",
            "201 Created",
            [],
            None,
            (CHUNKED, None, ["Transfer-Encoding: chunked"]),
        ),
        ("GET", "HTTP/1.0", "200 OK", [], None, (CLOSE_DELIMITED, None, [])),
        # RFC 9110 9.3.2: HEAD, no body; a Content-Length only when it is what GET sends.
        ("HEAD", "HTTP/1.1", "200 OK", [("Content-Length", "7")], None, (NO_BODY, 7, [])),
        ("HEAD", "HTTP/1.1", "200 OK", [], 5, (NO_BODY, None, ["Content-Length: 5"])),
        ("HEAD", "HTTP/1.1", "200 OK", [], 0, (NO_BODY, None, [])),
        ("HEAD", "HTTP/1.1", "200 OK", [], None, (NO_BODY, None, [])),
        ("HEAD", "HTTP/1.0", "200 OK", [], None, (NO_BODY, None, [])),
        # RFC 9110 6.4.1: 204 and 304 never have content; 204 never a Content-Length (8.6).
        (
            "GET",
            "HTTP/1.1",
            "204 No Content",
            [("Content-Length", "0")],
            None,
            (NO_BODY, None, []),
        ),
        ("GET", "HTTP/1.1", "204 No Content", [], 0, (NO_BODY, None, [])),
        ("GET", "HTTP/1.1", "204 No Content", [], None, (NO_BODY, None, [])),
        (
            "GET",
            "HTTP/1.1",
            "304 Not Modified",
            [("Content-Length", "9")],
            None,
            (NO_BODY, 9, []),
        ),
        ("GET", "HTTP/1.1", "304 Not Modified", [], None, (NO_BODY, None, [])),
        ("GET", "HTTP/1.0", "304 Not Modified", [], None, (NO_BODY, None, [])),
    ],
    ids=lambda value: repr(value) if isinstance(value, (list, int, type(None))) else str(value),
)
def test_framing(method, version, status, headers, body_length, expected):
    head, framing, length, _ = head_for(request(method, version), status, headers, body_length)
    expected_framing, expected_length, added = expected
    assert (framing, length) == (expected_framing, expected_length)
    given = [f"{name}: {value}" for name, value in headers if not status.startswith("204")]
    framing_fields = [
        field
        for field in fields_of(head)
        if field.startswith(("Content-Length", "Transfer-Encoding"))
    ]
    assert framing_fields == [
        *[field for field in given if field.startswith("Content-Length")],
        *added,
    ]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize(
    ("headers", "body_length"),
    [
        pytest.param([], None, id="streamed"),
        pytest.param([], 5, id="one-item-body"),
        pytest.param([("Content-Length", "5")], None, id="apps-length"),
        pytest.param([("content-length", "0")], 0, id="apps-zero"),
    ],
)
def test_a_205_has_no_content_and_says_so(method, headers, body_length):
    """RFC 9110 15.3.6: never content in a 205, whatever the app gives; its one framing
    field is the server's Content-Length: 0."""
    head, framing, length, kept = head_for(
        request(method), "205 Reset Content", [*headers, ("X-Kept", "yes")], body_length
    )
    assert "X-Kept: yes" in fields_of(head)
    framing_fields = [
        field
        for field in fields_of(head)
        if field.lower().startswith(("content-length", "transfer-encoding"))
    ]
    assert framing_fields == ["Content-Length: 0"]
    assert (framing, length, kept) == (NO_BODY, None, True)


def test_no_content_length_on_a_204_even_in_a_head():
    head, framing, length, _ = head_for(
        request(), "204 No Content", [("content-length", "0"), ("X-Kept", "yes")]
    )
    assert "X-Kept: yes" in fields_of(head)
    assert not any(field.lower().startswith("content-length") for field in fields_of(head))
    assert (framing, length) == (NO_BODY, None)


@pytest.mark.parametrize(
    ("version", "body_length", "keep_alive", "expected", "connection"),
    [
        # RFC 9112 9.3: HTTP/1.1 persists unless a "close" says otherwise.
        ("HTTP/1.1", 5, True, True, None),
        ("HTTP/1.1", None, True, True, None),  # chunked ends on its own
        ("HTTP/1.1", 5, False, False, "close"),
        ("HTTP/1.1", None, False, False, "close"),
        # HTTP/1.0 persists only when told "keep-alive", and only with a delimited body.
        ("HTTP/1.0", 5, True, True, "keep-alive"),
        ("HTTP/1.0", 5, False, False, None),
        ("HTTP/1.0", None, True, False, None),  # the close delimits the body
        ("HTTP/1.0", None, False, False, None),
    ],
)
def test_keep_alive_and_the_connection_field(
    version, body_length, keep_alive, expected, connection
):
    head, _, _, kept = head_for(
        request(version=version), body_length=body_length, keep_alive=keep_alive
    )
    assert kept is expected
    connection_fields = [field for field in fields_of(head) if field.startswith("Connection")]
    assert connection_fields == ([f"Connection: {connection}"] if connection else [])


def test_a_head_response_keeps_the_connection_whatever_would_follow_for_get():
    for version in ("HTTP/1.1", "HTTP/1.0"):
        _, framing, _, kept = head_for(request("HEAD", version), keep_alive=True)
        assert framing == NO_BODY
        assert kept


def test_field_order_and_values_are_the_apps():
    headers = [("Set-Cookie", "a=1"), ("X-B", "caf\xe9"), ("Set-Cookie", "b=2")]
    head, *_ = head_for(request(), headers=headers, body_length=0)
    assert fields_of(head)[:3] == ["Set-Cookie: a=1", "X-B: caf\xe9", "Set-Cookie: b=2"]
    assert b"X-B: caf\xe9\r\n" in head  # latin-1: one byte


# --------------------------------------------------------------------------------------------
# Chunks, the server's own responses, Date and status lines
# --------------------------------------------------------------------------------------------

IMF_FIXDATE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    r"[0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(b"hello", b"5\r\nhello\r\n", id="five"),
        pytest.param(b"x" * 255, b"ff\r\n" + b"x" * 255 + b"\r\n", id="lowercase-hex"),
        pytest.param(b"x" * 4096, b"1000\r\n" + b"x" * 4096 + b"\r\n", id="4096"),
        pytest.param(b"\r\n", b"2\r\n\r\n\r\n", id="crlf-data"),
    ],
)
def test_chunk(data, expected):
    assert chunk(data) == expected


def test_chunk_of_nothing_is_not_the_last_chunk():
    # RFC 9112 7.1: a zero-size chunk IS the last-chunk; "one chunk of b''" must serialise to
    # nothing, or a write of b"" would end the body early and the rest would be read as the
    # next response.
    assert chunk(b"") == b""


def test_constants():
    assert LAST_CHUNK == b"0\r\n\r\n"
    assert CONTINUE_100 == b"HTTP/1.1 100 Continue\r\n\r\n"


def split_response(raw: bytes) -> tuple[bytes, dict[str, str], bytes]:
    head_bytes, sep, body = raw.partition(b"\r\n\r\n")
    assert sep
    status, *lines = head_bytes.decode("latin-1").split("\r\n")
    fields: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(": ")
        assert colon, line
        assert name.lower() not in fields, f"duplicate {name}"
        fields[name.lower()] = value
    return status.encode("latin-1"), fields, body


@pytest.mark.parametrize("status", [400, 408, 414, 417, 431, 501, 503, 505])
def test_error_response(status):
    raw = error_response(status, "some detail")
    status_bytes, fields, body = split_response(raw)
    # Reason phrases are informative only (RFC 9112 4); Python's table may use older names.
    assert status_bytes.decode().startswith(f"HTTP/1.1 {status} ")
    assert status_bytes.decode() == f"HTTP/1.1 {status_line(status)}"
    assert fields["connection"] == "close"
    assert int(fields["content-length"]) == len(body)
    assert IMF_FIXDATE.fullmatch(fields["date"])
    assert fields["server"].startswith("wsgipool/")
    assert b"some detail" in body


def test_error_response_without_detail_and_extra_headers():
    raw = error_response(503, extra_headers="Retry-After: 1\r\n")
    _, fields, body = split_response(raw)
    assert fields["retry-after"] == "1"
    assert fields["connection"] == "close"
    assert int(fields["content-length"]) == len(body)
    assert body


def test_error_response_body_matches_declared_charset():
    raw = error_response(400, "caf\u00e9 \u2603")
    _, fields, body = split_response(raw)
    assert "charset=utf-8" in fields["content-type"]
    assert int(fields["content-length"]) == len(body)
    assert "caf\u00e9" in body.decode("utf-8")


def test_error_response_is_parseable_by_http_client():
    import http.client
    import io

    class FakeSocket:
        def __init__(self, data: bytes) -> None:
            self._file = io.BytesIO(data)

        def makefile(self, *args, **kwargs):
            return self._file

    response = http.client.HTTPResponse(FakeSocket(error_response(431, "too big")))  # type: ignore[arg-type]
    response.begin()
    assert response.status == 431
    assert response.will_close
    assert b"too big" in response.read()


def test_http_date_is_imf_fixdate_and_now():
    value = http_date()
    assert IMF_FIXDATE.fullmatch(value), value
    parsed = email.utils.parsedate_to_datetime(value).timestamp()
    assert abs(parsed - time.time()) < 5
    assert http_date() in (value, http_date())


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (100, True),
        (101, True),
        (103, True),
        (199, True),
        (200, False),
        (201, False),
        (204, True),
        (205, False),
        (206, False),
        (301, False),
        (304, True),
        (404, False),
        (500, False),
    ],
    ids=lambda v: str(v),
)
def test_has_no_body(status, expected):
    assert has_no_body(status) is expected


def test_status_line():
    assert status_line(404) == "404 Not Found"
    assert status_line(599) == "599 Unknown"


@pytest.mark.parametrize("size", [1, 9, 10, 15, 16, 255, 4096, 65536, 2**24 + 3])
def test_chunk_head_is_the_size_in_hex(size):
    # RFC 9112 7.1: chunk-size = 1*HEXDIG, then CRLF; the data, then CRLF.
    assert chunk_head(size) == f"{size:x}\r\n".encode()
    assert CHUNK_END == b"\r\n"


def test_chunks_framed_piecewise_decode_to_the_body():
    parts = [b"a", b"bc" * 100, b"\r\n0\r\n\r\n", bytes(range(256))]
    wire = b"".join(chunk_head(len(part)) + part + CHUNK_END for part in parts)
    assert wire == b"".join(chunk(part) for part in parts)
    buffer = bytearray(wire + LAST_CHUNK + b"NEXT")
    decoder = ChunkedBody(LIMITS)
    body = b""
    while data := decoder.read(buffer, 65536):
        body += data
    assert decoder.done
    assert body == b"".join(parts)
    assert buffer == b"NEXT"
