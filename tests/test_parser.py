"""Table-driven unit tests for the request side of the sans-IO HTTP/1.1 core
(``wsgipool.http``; the response side is in ``test_response_protocol.py``).

Every expectation is taken from RFC 9110 / RFC 9112 (section numbers in the ids or comments),
not from what the code happens to do. ``drive()`` (tests/helpers/parsing.py) plays the part
of the connection loop (HeadScanner.find -> parse_head -> body decoder -> next head), as it
does for the property and corpus tests and the fuzz target.
"""

from __future__ import annotations

import pytest

from tests.helpers.parsing import LIMITS, drive
from wsgipool.http import (
    ChunkedBody,
    FixedLengthBody,
    HeadScanner,
    Limits,
    ProtocolError,
    Request,
    parse_head,
)
from wsgipool.http.parser import opens_head_request
from wsgipool.http.response import (
    LAST_CHUNK,
    chunk,
)

HOST = b"Host: example.com"


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def head(*lines: bytes) -> bytes:
    """Join a request line and field lines into a complete head."""
    return b"\r\n".join(lines) + b"\r\n\r\n"


def get(*fields: bytes, line: bytes = b"GET / HTTP/1.1", host: bool = True) -> bytes:
    """An HTTP/1.1 head with a Host field (unless told otherwise) and ``fields``."""
    return head(line, *((HOST,) if host else ()), *fields)


def scan(raw: bytes, limits: Limits = LIMITS) -> Request:
    """Run a single complete head through HeadScanner and parse_head, as the server does."""
    buf = bytearray(raw)
    end = HeadScanner(limits).find(buf)
    assert end == len(raw), f"head end found at {end}, expected {len(raw)}"
    return parse_head(bytes(buf[:end]), limits)


def refuse(raw: bytes, limits: Limits = LIMITS) -> int:
    """The status of the ProtocolError a single head must raise (and no Request)."""
    with pytest.raises(ProtocolError) as info:
        scan(raw, limits)
    return info.value.status


def decode(decoder: ChunkedBody | FixedLengthBody, buf: bytearray, limit: int = 65536) -> bytes:
    """Read a body to its end from a buffer that holds all of it."""
    out = bytearray()
    while True:
        data = decoder.read(buf, limit)
        assert data is not None, "decoder wants more bytes but the whole body was given"
        if data == b"":
            return bytes(out)
        out += data


def decode_bytewise(decoder: ChunkedBody | FixedLengthBody, data: bytes) -> tuple[bytes, bytes]:
    """Feed ``data`` one byte at a time; return (body, bytes left in the buffer)."""
    buf = bytearray()
    out = bytearray()
    finished = False
    for i in range(len(data)):
        buf.append(data[i])
        while True:
            chunk_data = decoder.read(buf, 65536)
            if chunk_data is None:
                break
            if chunk_data == b"":
                finished = True
                break
            out += chunk_data
        if finished:
            return bytes(out), bytes(buf) + data[i + 1 :]
    raise AssertionError("body never finished")


# --------------------------------------------------------------------------------------------
# Request line (RFC 9112 3)
# --------------------------------------------------------------------------------------------

ACCEPTED_REQUEST_LINES = [
    pytest.param(
        b"GET / HTTP/1.1",
        {"method": "GET", "target": "/", "path": "/", "query": "", "version": "HTTP/1.1"},
        id="simple-get",
    ),
    pytest.param(
        b"GET /a/b?x=1&y=2 HTTP/1.1",
        {"path": "/a/b", "query": "x=1&y=2", "target": "/a/b?x=1&y=2"},
        id="origin-form-with-query",
    ),
    pytest.param(b"GET /? HTTP/1.1", {"path": "/", "query": ""}, id="empty-query"),
    pytest.param(
        b"GET /a?b?c/d HTTP/1.1", {"path": "/a", "query": "b?c/d"}, id="query-with-?-and-/"
    ),
    pytest.param(b"GET //x//y HTTP/1.1", {"path": "//x//y"}, id="empty-segments"),
    pytest.param(b"GET /a%20b%2F HTTP/1.1", {"path": "/a%20b%2F"}, id="pct-encoded-kept-raw"),
    pytest.param(
        b"GET /~user/a.b-c_d!$&'()*+,;=:@ HTTP/1.1",
        {"path": "/~user/a.b-c_d!$&'()*+,;=:@"},
        id="all-pchar-classes",
    ),
    pytest.param(
        b'GET /"<>[]^`{|}\\ HTTP/1.1',
        {"path": '/"<>[]^`{|}\\'},
        id="tolerated-rfc3986-forbidden-chars",
    ),
    pytest.param(
        b"GET /q?a={1}&b=[2]&c=|x| HTTP/1.1",
        {"query": "a={1}&b=[2]&c=|x|"},
        id="tolerated-chars-in-query",
    ),
    pytest.param(b"POST /upload HTTP/1.1", {"method": "POST"}, id="post"),
    pytest.param(b"PURGE /x HTTP/1.1", {"method": "PURGE"}, id="extension-method"),
    pytest.param(b"get / HTTP/1.1", {"method": "get"}, id="method-is-case-sensitive-token"),
    pytest.param(
        b"!#$%&'*+-.^_`|~09azAZ / HTTP/1.1",
        {"method": "!#$%&'*+-.^_`|~09azAZ"},
        id="method-all-tchars",
    ),
    pytest.param(b"OPTIONS * HTTP/1.1", {"path": "*", "query": "", "target": "*"}, id="options-*"),
    pytest.param(b"GET / HTTP/1.0", {"version": "HTTP/1.0", "http11": False}, id="http-1.0"),
    pytest.param(
        b"GET / HTTP/1.7",
        {"version": "HTTP/1.1", "http11": True},
        id="http-1.7-answered-as-1.1-rfc9110-6.2",
    ),
    pytest.param(b"GET / HTTP/1.9", {"version": "HTTP/1.1"}, id="http-1.9-as-1.1"),
]


@pytest.mark.parametrize(("line", "expected"), ACCEPTED_REQUEST_LINES)
def test_request_line_accepted(line, expected):
    request = scan(get(line=line))
    for attribute, value in expected.items():
        assert getattr(request, attribute) == value, attribute


@pytest.mark.parametrize(
    ("line", "status"),
    [
        pytest.param(b"GET  / HTTP/1.1", 400, id="two-spaces-after-method"),
        pytest.param(b"GET /  HTTP/1.1", 400, id="two-spaces-before-version"),
        pytest.param(b"GET / HTTP/1.1 ", 400, id="trailing-space"),
        pytest.param(b" GET / HTTP/1.1", 400, id="leading-space"),
        pytest.param(b"GET\t/\tHTTP/1.1", 400, id="tabs-as-separators"),
        pytest.param(b"GET /\tHTTP/1.1", 400, id="tab-before-version"),
        pytest.param(b"GET / HTTP/1.1\x0b", 400, id="vertical-tab-after-version"),
        pytest.param(b"GET /", 400, id="http-0.9-simple-request"),
        pytest.param(b"GET HTTP/1.1", 400, id="missing-target"),
        pytest.param(b"/ HTTP/1.1", 400, id="missing-method"),
        pytest.param(b" / HTTP/1.1", 400, id="empty-method"),
        pytest.param(b"GET / http/1.1", 400, id="lowercase-http-name-rfc9112-2.3"),
        pytest.param(b"GET / Http/1.1", 400, id="mixed-case-http-name"),
        pytest.param(b"GET / HTTPS/1.1", 400, id="https-name"),
        pytest.param(b"GET / HTTP/1", 400, id="version-without-minor"),
        pytest.param(b"GET / HTTP/1.", 400, id="version-empty-minor"),
        pytest.param(b"GET / HTTP/1.10", 400, id="two-digit-minor"),
        pytest.param(b"GET / HTTP/01.1", 400, id="two-digit-major"),
        pytest.param(b"GET / HTTP/1.1x", 400, id="junk-after-version"),
        pytest.param(b"GET / HTTP/1,1", 400, id="comma-in-version"),
        pytest.param(b"GET / HTTP/\xd9\xa1.1", 400, id="non-ascii-digit-in-version"),
        pytest.param(b"GET / HTTP/2.0", 505, id="http-2.0-is-505"),
        pytest.param(b"GET / HTTP/3.0", 505, id="http-3.0-is-505"),
        pytest.param(b"GET / HTTP/0.9", 505, id="http-0.9-major-0-is-505"),
        pytest.param(b"GET / HTTP/9.9", 505, id="http-9.9-is-505"),
        pytest.param(b"G(ET / HTTP/1.1", 400, id="method-with-separator"),
        pytest.param(b"GET\x00 / HTTP/1.1", 400, id="nul-in-method"),
        pytest.param(b"G\x80T / HTTP/1.1", 400, id="obs-text-in-method"),
        pytest.param(b"GET /a#frag HTTP/1.1", 400, id="fragment-in-target"),
        pytest.param(b"GET # HTTP/1.1", 400, id="target-is-#"),
        pytest.param(b"GET /?q#f HTTP/1.1", 400, id="fragment-after-query"),
        pytest.param(b"GET /%zz HTTP/1.1", 400, id="pct-not-hex"),
        pytest.param(b"GET /%4 HTTP/1.1", 400, id="pct-one-digit"),
        pytest.param(b"GET /% HTTP/1.1", 400, id="pct-no-digits"),
        pytest.param(b"GET /%4g HTTP/1.1", 400, id="pct-second-not-hex"),
        pytest.param(b"GET /?a=%%41 HTTP/1.1", 400, id="pct-double-percent"),
        pytest.param(b"GET /\x7f HTTP/1.1", 400, id="del-in-target"),
        pytest.param(b"GET /\x80 HTTP/1.1", 400, id="obs-text-in-target"),
        pytest.param(b"GET /\xff HTTP/1.1", 400, id="xff-in-target"),
        pytest.param(b"GET /\x00 HTTP/1.1", 400, id="nul-in-target"),
        pytest.param(b"GET /\x0b HTTP/1.1", 400, id="vt-in-target"),
        pytest.param(b"GET a/b HTTP/1.1", 400, id="relative-path"),
        pytest.param(b"GET ?x HTTP/1.1", 400, id="query-only"),
        pytest.param(b"GET * HTTP/1.1", 400, id="asterisk-with-get"),
        pytest.param(b"M-SEARCH * HTTP/1.1", 400, id="asterisk-with-extension-method"),
        pytest.param(b"OPTIONS *x HTTP/1.1", 400, id="asterisk-with-junk"),
        pytest.param(b"OPTIONS ** HTTP/1.1", 400, id="double-asterisk"),
        pytest.param(b"GET example.com:80 HTTP/1.1", 400, id="authority-form-with-get"),
        pytest.param(b"POST example.com:443 HTTP/1.1", 400, id="authority-form-with-post"),
        pytest.param(b"CONNECT example.com:443 HTTP/1.1", 501, id="connect-is-501"),
        pytest.param(b"CONNECT [::1]:443 HTTP/1.1", 501, id="connect-ipv6-is-501"),
        pytest.param(b"GET ftp://example.com/ HTTP/1.1", 400, id="absolute-form-ftp-scheme"),
        pytest.param(b"GET http:///x HTTP/1.1", 400, id="absolute-form-empty-host"),
        # RFC 9110 4.2.1: an http(s) URI with an empty host is invalid, port or no port.
        pytest.param(b"GET http://:80/x HTTP/1.1", 400, id="absolute-form-empty-host-port"),
        pytest.param(b"GET http://:/x HTTP/1.1", 400, id="absolute-form-empty-host-colon"),
        pytest.param(b"GET https://:443 HTTP/1.1", 400, id="absolute-form-empty-host-https"),
        pytest.param(b"GET http://u:p@example.com/ HTTP/1.1", 400, id="absolute-form-userinfo"),
        pytest.param(b"GET http://example.com/#f HTTP/1.1", 400, id="absolute-form-fragment"),
        pytest.param(b"GET http://example.com/%zz HTTP/1.1", 400, id="absolute-form-bad-pct"),
        pytest.param(b"GET http://exa%zzmple/ HTTP/1.1", 400, id="absolute-form-bad-pct-host"),
        pytest.param(b"GET http://a:b/ HTTP/1.1", 400, id="absolute-form-bad-port"),
        pytest.param(b"GET http:/a/ HTTP/1.1", 400, id="absolute-form-one-slash"),
        pytest.param(b"GET 1http://a/ HTTP/1.1", 400, id="absolute-form-bad-scheme"),
    ],
)
def test_request_line_refused(line, status):
    assert refuse(get(line=line)) == status


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(b"CONNECT / HTTP/1.1", id="origin-form"),
        pytest.param(b"CONNECT http://example.com/ HTTP/1.1", id="absolute-form"),
        pytest.param(b"CONNECT * HTTP/1.1", id="asterisk-form"),
    ],
)
def test_connect_never_reaches_the_application(line):
    # RFC 9112 3.2.3: CONNECT takes only authority-form; this server does not support CONNECT
    # at all (501), so a CONNECT with any other target is malformed (400) or unsupported (501)
    # but must not be handed to the application as an ordinary request.
    assert refuse(get(line=line)) in (400, 501)


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        pytest.param(b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, id="two-leading-crlf"),
        pytest.param(b"\r\n\r\n", 400, id="only-empty-lines"),
        pytest.param(b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, id="leading-bare-lf"),
        pytest.param(b"\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, id="leading-bare-cr"),
        pytest.param(b" \r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, id="leading-space-line"),
        pytest.param(b"GET / HTTP/1.1\nHost: a\r\n\r\n", 400, id="request-line-ends-bare-lf"),
        pytest.param(b"GET / HTTP/1.1\rHost: a\r\n\r\n", 400, id="request-line-ends-bare-cr"),
        pytest.param(b"GET / HTTP/1.1\r\r\nHost: a\r\n\r\n", 400, id="request-line-cr-cr-lf"),
    ],
)
def test_leading_lines_and_line_ends(raw, status):
    # RFC 9112 2.2: at least one empty line before the request line SHOULD be ignored; this
    # server ignores exactly one. Line ends are CRLF only.
    buf = bytearray(raw)
    end = HeadScanner(LIMITS).find(buf)
    assert end > 0
    with pytest.raises(ProtocolError) as info:
        parse_head(bytes(buf[:end]), LIMITS)
    assert info.value.status == status


def test_one_leading_crlf_is_ignored():
    request = scan(b"\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (request.method, request.path, request.host) == ("GET", "/x", "a")


@pytest.mark.parametrize(
    ("line", "fields", "expected"),
    [
        pytest.param(
            b"GET http://example.org/p?q=1 HTTP/1.1",
            (b"Host: other.example",),
            {"host": "example.org", "path": "/p", "query": "q=1"},
            id="absolute-form-overrides-host-rfc9112-3.2.2",
        ),
        pytest.param(
            b"GET http://example.org HTTP/1.1",
            (HOST,),
            {"host": "example.org", "path": "/", "query": ""},
            id="absolute-form-no-path",
        ),
        pytest.param(
            b"GET http://example.org?x HTTP/1.1",
            (HOST,),
            {"host": "example.org", "path": "/", "query": "x"},
            id="absolute-form-query-no-path",
        ),
        pytest.param(
            b"GET https://example.org:8443/a HTTP/1.1",
            (HOST,),
            {"host": "example.org:8443", "path": "/a"},
            id="absolute-form-https-port",
        ),
        pytest.param(
            b"GET HTTP://Example.ORG/ HTTP/1.1",
            (HOST,),
            {"host": "Example.ORG"},
            id="absolute-form-scheme-case-insensitive",
        ),
        pytest.param(
            b"GET http://[::1]:8080/ HTTP/1.1",
            (HOST,),
            {"host": "[::1]:8080"},
            id="absolute-form-ipv6",
        ),
        pytest.param(
            b"GET http://example.org/ HTTP/1.0",
            (),
            {"host": "example.org", "version": "HTTP/1.0"},
            id="absolute-form-http10-without-host",
        ),
        pytest.param(b"GET / HTTP/1.0", (), {"host": None}, id="http10-may-omit-host"),
        pytest.param(
            b"GET / HTTP/1.0", (b"Host: a.example",), {"host": "a.example"}, id="http10-host"
        ),
    ],
)
def test_host_from_target_and_field(line, fields, expected):
    request = scan(head(line, *fields))
    for attribute, value in expected.items():
        assert getattr(request, attribute) == value, attribute


# --------------------------------------------------------------------------------------------
# Host (RFC 9112 3.2, RFC 9110 7.2)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"example.com", id="name"),
        pytest.param(b"example.com:8080", id="name-port"),
        pytest.param(b"127.0.0.1:80", id="ipv4-port"),
        pytest.param(b"[::1]", id="ipv6"),
        pytest.param(b"[2001:db8::1]:443", id="ipv6-port"),
        pytest.param(b"ex-am_ple~.com", id="unreserved"),
        pytest.param(b"a%41b", id="pct-encoded"),
        pytest.param(b"", id="empty-rfc9110-7.2"),
        pytest.param(b"a:", id="empty-port-rfc3986"),
    ],
)
def test_host_valid(value):
    request = scan(head(b"GET / HTTP/1.1", b"Host: " + value))
    assert request.host == value.decode("latin-1")


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param((), id="missing-in-http11"),
        pytest.param((b"Host: a", b"Host: b"), id="two-different"),
        pytest.param((b"Host: a", b"Host: a"), id="two-identical"),
        pytest.param((b"Host: a", b"host: a"), id="two-different-case"),
        pytest.param((b"Host: a, b",), id="list"),
        pytest.param((b"Host: a b",), id="space"),
        pytest.param((b"Host: a/b",), id="slash"),
        pytest.param((b"Host: a?b",), id="question-mark"),
        pytest.param((b"Host: a#b",), id="hash"),
        pytest.param((b"Host: u@a",), id="userinfo"),
        pytest.param((b"Host: a:b",), id="non-digit-port"),
        pytest.param((b"Host: a:80:80",), id="two-ports"),
        pytest.param((b"Host: [::1",), id="unclosed-ipv6"),
        pytest.param((b"Host: a%zz",), id="bad-pct"),
        pytest.param((b"Host: \xc3\xa9",), id="non-ascii"),
        pytest.param((b'Host: a"b',), id="dquote"),
    ],
)
def test_host_refused(fields):
    # RFC 9112 3.2: 400 for a missing Host in HTTP/1.1, more than one, or an invalid value.
    assert refuse(head(b"GET / HTTP/1.1", *fields)) == 400


def test_invalid_host_refused_even_with_absolute_form():
    assert refuse(head(b"GET http://a/ HTTP/1.1", b"Host: a b")) == 400


def test_absolute_form_still_needs_host_in_http11():
    # RFC 9112 3.2: a client MUST send Host in all HTTP/1.1 requests; the server MUST 400.
    assert refuse(head(b"GET http://a/ HTTP/1.1")) == 400


def test_two_hosts_refused_in_http10():
    assert refuse(head(b"GET / HTTP/1.0", b"Host: a", b"Host: b")) == 400


# --------------------------------------------------------------------------------------------
# Field lines (RFC 9112 5, RFC 9110 5.5)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param((b"X-A : b",), id="space-before-colon-rfc9112-5.1"),
        pytest.param((b"X-A\t: b",), id="tab-before-colon"),
        pytest.param((b": b",), id="empty-name"),
        pytest.param((b":",), id="colon-only"),
        pytest.param((b"X-A b",), id="no-colon"),
        pytest.param((b"X-A",), id="name-only"),
        pytest.param((b"X-A: b", b" c"), id="obs-fold-sp-rfc9112-5.2"),
        pytest.param((b"X-A: b", b"\tc"), id="obs-fold-htab"),
        pytest.param((b"X-A: b", b" X-B: c"), id="obs-fold-looks-like-field"),
        pytest.param((b" X-A: b",), id="leading-space-first-line"),
        pytest.param((b"X A: b",), id="space-in-name"),
        pytest.param((b"X@A: b",), id="at-in-name"),
        pytest.param((b"X(A): b",), id="paren-in-name"),
        pytest.param((b'X"A": b',), id="dquote-in-name"),
        pytest.param((b"X/A: b",), id="slash-in-name"),
        pytest.param((b"X\x7fA: b",), id="del-in-name"),
        pytest.param((b"X\x00A: b",), id="nul-in-name"),
        pytest.param((b"X\xe9A: b",), id="obs-text-in-name"),
        pytest.param((b"X\rA: b",), id="bare-cr-in-name"),
        pytest.param((b"X-A: b\nX-B: c",), id="bare-lf-in-value"),
        pytest.param((b"X-A: b\rX-B: c",), id="bare-cr-in-value"),
        pytest.param((b"X-A: b\r",), id="cr-before-crlf"),
        pytest.param((b"X-A: b\x00",), id="nul-at-end-of-value"),
        pytest.param((b"X-A: \x00b",), id="nul-at-start-of-value"),
        pytest.param((b"X-A: b\x0b",), id="vt-not-trimmed"),
        pytest.param((b"X-A: \x0bb",), id="leading-vt-not-trimmed"),
        pytest.param((b"X-A: b\x0c",), id="ff-not-trimmed"),
        pytest.param((b"X-A: b\x7f",), id="del-in-value"),
        pytest.param((b"X-A: b\x1bc",), id="esc-in-value"),
    ],
)
def test_field_line_refused(fields):
    assert refuse(get(*fields)) == 400


CTLS_BUT_HTAB = [b for b in range(0x20) if b != 0x09] + [0x7F]


@pytest.mark.parametrize("ctl", CTLS_BUT_HTAB, ids=lambda b: f"ctl-{b:#04x}")
@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_every_ctl_in_a_value_refused(ctl, where):
    byte = bytes([ctl])
    value = {"start": byte + b"v", "middle": b"v" + byte + b"v", "end": b"v" + byte}[where]
    raw = get(b"X-A: " + value)
    buf = bytearray(raw)
    end = HeadScanner(LIMITS).find(buf)
    assert end > 0
    # With CR or LF in the value the head may end elsewhere; either way nothing parses.
    with pytest.raises(ProtocolError) as info:
        parse_head(bytes(buf[:end]), LIMITS)
    assert info.value.status == 400


@pytest.mark.parametrize("ctl", CTLS_BUT_HTAB, ids=lambda b: f"ctl-{b:#04x}")
def test_every_ctl_in_the_request_line_refused(ctl):
    raw = head(b"GET /a" + bytes([ctl]) + b"b HTTP/1.1", HOST)
    buf = bytearray(raw)
    end = HeadScanner(LIMITS).find(buf)
    assert end > 0
    with pytest.raises(ProtocolError) as info:
        parse_head(bytes(buf[:end]), LIMITS)
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("field_line", "name", "value"),
    [
        pytest.param(b"X-A: b", "x-a", "b", id="simple"),
        pytest.param(b"X-A:b", "x-a", "b", id="no-ows"),
        pytest.param(b"X-A: \t b \t ", "x-a", "b", id="ows-trimmed"),
        pytest.param(b"X-A: b  c\td", "x-a", "b  c\td", id="inner-whitespace-kept"),
        pytest.param(b"X-A:", "x-a", "", id="empty-value"),
        pytest.param(b"X-A:   ", "x-a", "", id="whitespace-only-value"),
        pytest.param(b"X-A: a:b:c", "x-a", "a:b:c", id="colons-in-value"),
        pytest.param(b"X-A: \x85b\x85", "x-a", "\x85b\x85", id="x85-is-obs-text-not-trimmed"),
        pytest.param(b"X-A: \xa0b\xa0", "x-a", "\xa0b\xa0", id="xa0-is-obs-text-not-trimmed"),
        pytest.param(b"X-A: \xc3\xa9", "x-a", "\xc3\xa9", id="utf8-as-latin1"),
        pytest.param(b"X-A: \xff", "x-a", "\xff", id="xff"),
        pytest.param(b'X-A: "q\\"x"', "x-a", '"q\\"x"', id="quoted"),
        pytest.param(b"X_Forwarded_For: 1", "x_forwarded_for", "1", id="underscore-is-a-tchar"),
        pytest.param(
            b"!#$%&'*+-.^_`|~09azAZ: v", "!#$%&'*+-.^_`|~09azaz", "v", id="all-tchars-in-name"
        ),
    ],
)
def test_field_line_accepted(field_line, name, value):
    request = scan(get(field_line))
    assert request.headers[-1] == (name, value)


def test_fields_keep_order_and_duplicates():
    request = scan(get(b"A: 1", b"B: 2", b"a: 3", b"Cookie: x=1", b"Cookie: y=2"))
    assert request.headers == [
        ("host", "example.com"),
        ("a", "1"),
        ("b", "2"),
        ("a", "3"),
        ("cookie", "x=1"),
        ("cookie", "y=2"),
    ]


# --------------------------------------------------------------------------------------------
# Content-Length (RFC 9110 8.6, RFC 9112 6.3)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "length"),
    [
        pytest.param((b"Content-Length: 0",), 0, id="zero"),
        pytest.param((b"Content-Length: 5",), 5, id="five"),
        pytest.param((b"Content-Length:  5 \t",), 5, id="ows-trimmed"),
        pytest.param((b"content-length: 5",), 5, id="lowercase-name"),
        pytest.param((b"Content-Length: 005",), 5, id="leading-zeros"),
        pytest.param((b"Content-Length: 5, 5",), 5, id="list-of-same"),
        pytest.param((b"Content-Length: 5,5,5",), 5, id="list-of-same-no-ows"),
        pytest.param((b"Content-Length: 5", b"Content-Length: 5"), 5, id="two-fields-same"),
        pytest.param((b"Content-Length: 5", b"Content-Length: 05"), 5, id="same-decimal-value"),
        pytest.param((b"Content-Length: " + b"9" * 18,), 10**18 - 1, id="18-digits"),
        pytest.param((), None, id="absent"),
    ],
)
def test_content_length_accepted(fields, length):
    request = scan(head(b"POST / HTTP/1.1", HOST, *fields))
    assert request.content_length == length
    assert request.chunked is False
    assert request.has_body is bool(length)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"+5", id="plus-sign"),
        pytest.param(b"-5", id="minus-sign"),
        pytest.param(b"-0", id="minus-zero"),
        pytest.param(b"0x5", id="hex-prefix"),
        pytest.param(b"5_0", id="underscore"),
        pytest.param(b"5 0", id="space-inside"),
        pytest.param(b"5\t0", id="tab-inside"),
        pytest.param(b"5.0", id="decimal-point"),
        pytest.param(b"5e1", id="exponent"),
        pytest.param(b"\xd9\xa1", id="arabic-indic-digit-utf8"),
        pytest.param(b"\xef\xbc\x95", id="fullwidth-digit-utf8"),
        pytest.param(b"\xb2", id="superscript-two-latin1"),
        pytest.param(b"", id="empty"),
        pytest.param(b",", id="empty-list"),
        pytest.param(b"5,", id="trailing-empty-element"),
        pytest.param(b"5, 6", id="list-of-different"),
        pytest.param(b"5\x0b", id="vertical-tab"),
        pytest.param(b"5\x0c", id="form-feed"),
        pytest.param(b"5\x00", id="nul"),
        pytest.param(b'"5"', id="quoted"),
        pytest.param(b"1" * 19, id="19-digits"),
        pytest.param(b"0" * 19, id="19-zeros"),
        pytest.param(b"9" * 100, id="100-digits"),
    ],
)
def test_content_length_refused(value):
    assert refuse(head(b"POST / HTTP/1.1", HOST, b"Content-Length: " + value)) == 400


def test_two_content_length_fields_with_different_values_refused():
    raw = head(b"POST / HTTP/1.1", HOST, b"Content-Length: 5", b"Content-Length: 6")
    assert refuse(raw) == 400


def test_content_length_name_with_space_before_colon_refused():
    assert refuse(head(b"POST / HTTP/1.1", HOST, b"Content-Length : 5")) == 400


# --------------------------------------------------------------------------------------------
# Transfer-Encoding (RFC 9112 6.1, 6.3)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param((b"Transfer-Encoding: chunked",), id="chunked"),
        pytest.param((b"Transfer-Encoding: CHUNKED",), id="uppercase"),
        pytest.param((b"Transfer-Encoding: ChUnKeD",), id="mixed-case"),
        pytest.param((b"transfer-encoding: chunked",), id="lowercase-name"),
        pytest.param((b"Transfer-Encoding:\tchunked",), id="htab-ows"),
        pytest.param((b"Transfer-Encoding:chunked",), id="no-ows"),
        pytest.param((b"Transfer-Encoding:  chunked \t ",), id="trailing-ows"),
    ],
)
def test_transfer_encoding_chunked(fields):
    request = scan(head(b"POST / HTTP/1.1", HOST, *fields))
    assert request.chunked is True
    assert request.content_length is None
    assert request.has_body is True


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        pytest.param((b"Transfer-Encoding: chunked, chunked",), 400, id="chunked-twice"),
        pytest.param(
            (b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"),
            400,
            id="chunked-twice-two-fields",
        ),
        pytest.param(
            (b"Transfer-Encoding: chunked", b"Transfer-Encoding: x"), 400, id="chunked-then-x"
        ),
        pytest.param((b"Transfer-Encoding: xchunked",), 400, id="xchunked"),
        pytest.param((b"Transfer-Encoding: chunkedx",), 400, id="chunkedx"),
        pytest.param((b"Transfer-Encoding: chunked;x",), 400, id="chunked-with-param"),
        pytest.param((b"Transfer-Encoding: chunked;q=1",), 400, id="chunked-with-q"),
        pytest.param((b'Transfer-Encoding: "chunked"',), 400, id="quoted"),
        pytest.param((b"Transfer-Encoding: chunk ed",), 400, id="space-inside"),
        pytest.param((b"Transfer-Encoding: chunked\x0b",), 400, id="trailing-vt"),
        pytest.param((b"Transfer-Encoding:\x0bchunked",), 400, id="leading-vt"),
        pytest.param((b"Transfer-Encoding:\x0cchunked",), 400, id="leading-ff"),
        pytest.param((b"Transfer-Encoding: chunked\xa0",), 400, id="trailing-nbsp"),
        pytest.param((b"Transfer-Encoding: chunked\x85",), 400, id="trailing-nel"),
        pytest.param((b"Transfer-Encoding: chun\xe2\x84\xaaed",), 400, id="kelvin-sign-k"),
        pytest.param((b"Transfer-Encoding: gzip",), 400, id="gzip-final-not-chunked"),
        pytest.param((b"Transfer-Encoding: identity",), 400, id="identity"),
        pytest.param((b"Transfer-Encoding: chunked, gzip",), 400, id="chunked-not-final"),
        pytest.param((b"Transfer-Encoding: ",), 400, id="empty"),
        pytest.param((b"Transfer-Encoding: ,",), 400, id="empty-list"),
        pytest.param((b"Transfer-Encoding: gzip, chunked",), 501, id="gzip-chunked-is-501"),
        pytest.param(
            (b"Transfer-Encoding: gzip", b"Transfer-Encoding: chunked"),
            501,
            id="gzip-chunked-two-fields-501",
        ),
        pytest.param((b"Transfer-Encoding: chunked", b"Content-Length: 5"), 400, id="te-and-cl"),
        pytest.param((b"Content-Length: 5", b"Transfer-Encoding: chunked"), 400, id="cl-and-te"),
        pytest.param((b"Content-Length: 0", b"Transfer-Encoding: chunked"), 400, id="cl-0-and-te"),
        pytest.param(
            (b"Transfer-Encoding: gzip, chunked", b"Content-Length: 5"),
            400,
            id="te-unsupported-and-cl",
        ),
        pytest.param((b"Transfer-Encoding : chunked",), 400, id="space-before-colon"),
    ],
)
def test_transfer_encoding_refused(fields, status):
    assert refuse(head(b"POST / HTTP/1.1", HOST, *fields)) == status


def test_transfer_encoding_refused_in_http10():
    # RFC 9112 6.1: a server MUST NOT assume an HTTP/1.0 message with TE is framed by it.
    assert refuse(head(b"POST / HTTP/1.0", b"Transfer-Encoding: chunked")) == 400


def test_transfer_encoding_underscore_is_not_transfer_encoding():
    request = scan(
        head(b"POST / HTTP/1.1", HOST, b"Transfer_Encoding: chunked", b"Content-Length: 3")
    )
    assert request.chunked is False
    assert request.content_length == 3


# --------------------------------------------------------------------------------------------
# Expect (RFC 9110 10.1.1) and Connection (RFC 9112 9.3)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "fields", "expected"),
    [
        pytest.param(b"HTTP/1.1", (b"Expect: 100-continue",), True, id="100-continue"),
        pytest.param(b"HTTP/1.1", (b"Expect: 100-Continue",), True, id="case-insensitive"),
        pytest.param(b"HTTP/1.1", (b"Expect:  100-CONTINUE ",), True, id="upper-with-ows"),
        pytest.param(b"HTTP/1.1", (), False, id="absent"),
        pytest.param(b"HTTP/1.0", (b"Expect: 100-continue",), False, id="ignored-in-http10"),
        # Expect is a list (RFC 9110 5.6.1, 5.3): one field with both members means what
        # two fields do, and empty elements are ignored.
        pytest.param(b"HTTP/1.1", (b"Expect: 100-continue, 100-continue",), True, id="list-of-two"),
        pytest.param(
            b"HTTP/1.1",
            (b"Expect: 100-continue", b"Expect: 100-continue"),
            True,
            id="two-fields",
        ),
        pytest.param(b"HTTP/1.1", (b"Expect: 100-continue,",), True, id="trailing-comma"),
        pytest.param(b"HTTP/1.1", (b"Expect: , 100-continue",), True, id="leading-comma"),
        pytest.param(b"HTTP/1.1", (b"Expect: 100-continue", b"Expect:"), True, id="then-empty"),
        pytest.param(b"HTTP/1.1", (b"Expect:",), False, id="empty-is-no-expectation"),
        pytest.param(b"HTTP/1.1", (b"Expect: ,",), False, id="only-empty-elements"),
    ],
)
def test_expect_continue(version, fields, expected):
    host = (HOST,) if version == b"HTTP/1.1" else ()
    request = scan(head(b"POST / " + version, *host, *fields))
    assert request.expect_continue is expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"100-continuex", id="suffix"),
        pytest.param(b"200-ok", id="other"),
        pytest.param(b"100-continue, foo", id="list-with-other"),
        pytest.param(b"foo, 100-continue", id="other-first"),
        pytest.param(b"100-continue;x=1", id="with-parameter"),
        pytest.param(b"foo", id="foo"),
    ],
)
def test_expect_other_is_417(value):
    assert refuse(get(b"Expect: " + value)) == 417


@pytest.mark.parametrize(
    ("version", "fields", "keep_alive"),
    [
        pytest.param(b"HTTP/1.1", (), True, id="http11-default"),
        pytest.param(b"HTTP/1.1", (b"Connection: close",), False, id="http11-close"),
        pytest.param(b"HTTP/1.1", (b"Connection: Close",), False, id="http11-close-case"),
        pytest.param(
            b"HTTP/1.1", (b"Connection: keep-alive, close",), False, id="http11-close-in-list"
        ),
        pytest.param(
            b"HTTP/1.1", (b"Connection: x", b"Connection: close"), False, id="http11-close-2nd"
        ),
        pytest.param(b"HTTP/1.1", (b"Connection: keep-alive",), True, id="http11-keep-alive"),
        pytest.param(b"HTTP/1.1", (b"Connection: closed",), True, id="http11-closed-not-close"),
        pytest.param(b"HTTP/1.1", (b"Connection: upgrade",), True, id="http11-other-token"),
        pytest.param(b"HTTP/1.7", (b"Connection: close",), False, id="http17-close"),
        pytest.param(b"HTTP/1.0", (), False, id="http10-default"),
        pytest.param(b"HTTP/1.0", (b"Connection: keep-alive",), True, id="http10-keep-alive"),
        pytest.param(b"HTTP/1.0", (b"Connection: Keep-Alive",), True, id="http10-ka-case"),
        pytest.param(
            b"HTTP/1.0", (b"Connection: foo,  keep-alive ",), True, id="http10-ka-in-list"
        ),
        pytest.param(
            b"HTTP/1.0", (b"Connection: keep-alive, close",), False, id="http10-ka-and-close"
        ),
        pytest.param(b"HTTP/1.0", (b"Connection: keep-alivex",), False, id="http10-ka-suffix"),
    ],
)
def test_keep_alive(version, fields, keep_alive):
    request = scan(head(b"GET / " + version, HOST, *fields))
    assert request.keep_alive is keep_alive


# --------------------------------------------------------------------------------------------
# Limits and HeadScanner
# --------------------------------------------------------------------------------------------


def request_line_of(length: int) -> bytes:
    line = b"GET /" + b"a" * (length - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"
    assert len(line) == length
    return line


def feed_bytewise(raw: bytes, limits: Limits = LIMITS) -> tuple[int, bytearray]:
    """Feed ``raw`` one byte at a time; return (head length, buffer) at the first find."""
    scanner = HeadScanner(limits)
    buf = bytearray()
    for i in range(len(raw)):
        buf.append(raw[i])
        end = scanner.find(buf)
        if end >= 0:
            return end, buf
    return -1, buf


def test_limits_defaults():
    assert Limits() == Limits(
        max_request_line=8192, max_header_size=65536, max_header_count=100, max_chunk_line=4096
    )


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
def test_request_line_at_limit_accepted(bytewise):
    raw = get(line=request_line_of(LIMITS.max_request_line))
    if bytewise:
        end, buf = feed_bytewise(raw)
        assert end == len(raw)
        request = parse_head(bytes(buf[:end]), LIMITS)
    else:
        request = scan(raw)
    assert len(request.target) == LIMITS.max_request_line - len("GET  HTTP/1.1")


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
def test_request_line_over_limit_is_414(bytewise):
    raw = get(line=request_line_of(LIMITS.max_request_line + 1))
    if not bytewise:
        assert refuse(raw) == 414
        return
    with pytest.raises(ProtocolError) as info:
        end, buf = feed_bytewise(raw)
        parse_head(bytes(buf[:end]), LIMITS)
    assert info.value.status == 414


def test_request_line_over_limit_raised_before_the_line_ends():
    # No CRLF yet: the scanner must not wait for one (or for the head limit).
    scanner = HeadScanner(LIMITS)
    buf = bytearray(b"GET /" + b"a" * LIMITS.max_request_line)
    with pytest.raises(ProtocolError) as info:
        scanner.find(buf)
    assert info.value.status == 414


def test_request_line_over_limit_with_leading_crlf():
    buf = bytearray(b"\r\nGET /" + b"a" * LIMITS.max_request_line)
    with pytest.raises(ProtocolError) as info:
        HeadScanner(LIMITS).find(buf)
    assert info.value.status == 414


def test_head_over_limit_raised_while_incomplete():
    scanner = HeadScanner(LIMITS)
    buf = bytearray(b"GET / HTTP/1.1\r\nHost: a\r\n")
    filler = b"X-Filler: " + b"a" * 1000 + b"\r\n"
    with pytest.raises(ProtocolError) as info:
        while len(buf) <= LIMITS.max_header_size + len(filler):
            buf += filler
            assert scanner.find(buf) == -1
    assert info.value.status == 431


def test_head_over_limit_in_one_read_is_431():
    # The same head must get the same answer however TCP happened to segment it: a head
    # larger than max_header_size that arrives complete in one read is still 431.
    raw = get(b"X-Big: " + b"a" * (LIMITS.max_header_size + 1000))
    buf = bytearray(raw)
    with pytest.raises(ProtocolError) as info:
        end = HeadScanner(LIMITS).find(buf)
        assert end == len(raw)
        parse_head(bytes(buf[:end]), LIMITS)
    assert info.value.status == 431


def test_head_over_limit_in_one_read_is_431_small_limits():
    limits = Limits(max_request_line=64, max_header_size=128, max_header_count=10)
    raw = get(b"X-Big: " + b"a" * 200)
    with pytest.raises(ProtocolError) as info:
        scan(raw, limits)
    assert info.value.status == 431


def test_head_at_limit_accepted():
    # A complete head of exactly max_header_size bytes (CRLFCRLF included) is within the limit.
    pad = LIMITS.max_header_size - len(get(b"X-Big: "))
    raw = get(b"X-Big: " + b"a" * pad)
    assert len(raw) == LIMITS.max_header_size
    assert scan(raw).headers[-1] == ("x-big", "a" * pad)
    end, _ = feed_bytewise(raw)
    assert end == len(raw)


@pytest.mark.parametrize(
    ("count", "status"),
    [
        pytest.param(100, None, id="100-fields-ok"),
        pytest.param(101, 431, id="101-fields-431"),
        pytest.param(1000, 431, id="1000-fields-431"),
    ],
)
def test_header_count_limit(count, status):
    fields = [HOST] + [b"X-%d: v" % i for i in range(count - 1)]
    raw = head(b"GET / HTTP/1.1", *fields)
    if status is None:
        assert len(scan(raw).headers) == count
    else:
        assert refuse(raw) == status


def test_custom_limits_are_used():
    limits = Limits(max_request_line=20, max_header_size=100, max_header_count=2)
    assert refuse(get(line=b"GET /abcdefghijklmnop HTTP/1.1"), limits) == 414
    assert refuse(get(b"A: 1", b"B: 2"), limits) == 431
    assert scan(get(b"A: 1"), limits).headers == [("host", "example.com"), ("a", "1")]


def test_scanner_bytewise_finds_exact_end():
    first = get(b"X-A: b")
    second = get(line=b"GET /second HTTP/1.1")
    end, buf = feed_bytewise(first + second)
    assert end == len(first)
    assert bytes(buf) == first


def test_scanner_returns_first_head_of_many():
    first = get(line=b"GET /1 HTTP/1.1")
    buf = bytearray(first + get(line=b"GET /2 HTTP/1.1") + b"GET /3")
    assert HeadScanner(LIMITS).find(buf) == len(first)


SPLIT_HEAD = b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\r\n"


@pytest.mark.parametrize("split", range(1, len(SPLIT_HEAD)))
def test_scanner_any_two_way_split(split):
    scanner = HeadScanner(LIMITS)
    buf = bytearray(SPLIT_HEAD[:split])
    assert scanner.find(buf) == -1
    buf += SPLIT_HEAD[split:] + b"GET"
    assert scanner.find(buf) == len(SPLIT_HEAD)


@pytest.mark.parametrize(
    "prefix",
    [b"\r", b"\r\n", b"\r\n\r"],
    ids=["cr", "crlf", "crlfcr"],
)
def test_scanner_end_marker_across_feeds(prefix):
    # The scanner resumes 3 bytes back, so a CRLFCRLF split anywhere is still found.
    body = b"GET / HTTP/1.1\r\nHost: a"
    scanner = HeadScanner(LIMITS)
    buf = bytearray(body + prefix)
    assert scanner.find(buf) == -1
    buf += b"\r\n\r\n"[len(prefix) :] + b"NEXT"
    assert scanner.find(buf) == len(body) + 4


def test_scanner_does_not_rescan_old_bytes():
    starts: list[int] = []

    class RecordingBuffer(bytearray):
        def find(self, sub, *args):
            if sub == b"\r\n\r\n":
                starts.append(args[0] if args else 0)
            return super().find(sub, *args)

    raw = get(b"X-A: " + b"b" * 200)
    scanner = HeadScanner(LIMITS)
    buf = RecordingBuffer()
    previous = 0
    for i in range(len(raw)):
        buf.append(raw[i])
        starts.clear()
        end = scanner.find(buf)
        assert starts, "the scanner no longer searches the buffer for CRLFCRLF"
        assert all(start >= previous - 3 for start in starts), (i, starts)
        previous = len(buf)
        if end >= 0:
            assert end == len(raw)
            break


def test_scanner_reset_and_reuse_for_pipelined_heads():
    scanner = HeadScanner(LIMITS)
    buf = bytearray(b"GET /1 HTTP/1.1\r\nHost: a\r\n")
    assert scanner.find(buf) == -1
    scanner.reset()
    buf += b"\r\n"
    end = scanner.find(buf)
    assert end == len(buf)
    del buf[:end]
    buf += b"GET /2 HTTP/1.1\r\nHo"
    assert scanner.find(buf) == -1
    buf += b"st: a\r\n\r\n"
    assert scanner.find(buf) == len(buf)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"GET / HTTP/1.1\nHost: a\n\n", id="all-bare-lf"),
        pytest.param(b"GET / HTTP/1.1\nHo", id="bare-lf-after-request-line"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\n", id="bare-lf-after-field"),
        pytest.param(b"\nGET / HTTP/1.1", id="leading-bare-lf"),
    ],
)
@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
def test_scanner_refuses_bare_lf_before_the_head_ends(raw, bytewise):
    # A head that can never end in CRLFCRLF is a 400 at once, not a wait for a timeout.
    scanner = HeadScanner(LIMITS)
    buf = bytearray()
    with pytest.raises(ProtocolError) as info:
        for piece in [bytes([b]) for b in raw] if bytewise else [raw]:
            buf += piece
            assert scanner.find(buf) == -1
    assert info.value.status == 400


def test_scanner_crlf_split_across_feeds_is_not_bare_lf():
    scanner = HeadScanner(LIMITS)
    buf = bytearray(b"GET / HTTP/1.1\r")
    assert scanner.find(buf) == -1
    buf += b"\nHost: a\r"
    assert scanner.find(buf) == -1
    buf += b"\n\r"
    assert scanner.find(buf) == -1
    buf += b"\n"
    assert scanner.find(buf) == len(buf)


def test_scanner_two_leading_crlf_found_as_empty_head():
    buf = bytearray(b"\r\n\r\nGET / HTTP/1.1\r\n")
    end = HeadScanner(LIMITS).find(buf)
    assert end == 4
    with pytest.raises(ProtocolError) as info:
        parse_head(bytes(buf[:end]), LIMITS)
    assert info.value.status == 400


# --------------------------------------------------------------------------------------------
# Chunked body (RFC 9112 7.1)
# --------------------------------------------------------------------------------------------

CHUNKED_VALID = [
    pytest.param(b"0\r\n\r\n", b"", id="empty-body"),
    pytest.param(b"5\r\nhello\r\n0\r\n\r\n", b"hello", id="one-chunk"),
    pytest.param(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world", id="two-chunks"),
    pytest.param(b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789", id="uppercase-hex"),
    pytest.param(b"a\r\n0123456789\r\n0\r\n\r\n", b"0123456789", id="lowercase-hex"),
    pytest.param(b"0005\r\nhello\r\n000\r\n\r\n", b"hello", id="leading-zeros"),
    pytest.param(b"0000000000000005\r\nhello\r\n0\r\n\r\n", b"hello", id="16-digits-with-zeros"),
    pytest.param(b"5;a\r\nhello\r\n0\r\n\r\n", b"hello", id="ext-name"),
    pytest.param(b"5;a=b\r\nhello\r\n0;z\r\n\r\n", b"hello", id="ext-name-token"),
    pytest.param(b'5;a="b c"\r\nhello\r\n0\r\n\r\n', b"hello", id="ext-quoted"),
    pytest.param(b'5;a="\\"q\\\\"\r\nhello\r\n0\r\n\r\n', b"hello", id="ext-quoted-pair"),
    pytest.param(b'5;a=""\r\nhello\r\n0\r\n\r\n', b"hello", id="ext-empty-quoted"),
    pytest.param(b"5;a;b=c;d\r\nhello\r\n0\r\n\r\n", b"hello", id="ext-several"),
    pytest.param(b"5 ; a = b\r\nhello\r\n0\r\n\r\n", b"hello", id="ext-bws"),
    pytest.param(b"5\t;\ta\t=\tb\r\nhello\r\n0\r\n\r\n", b"hello", id="ext-bws-htab"),
    pytest.param(b'5;a="\xe9"\r\nhello\r\n0\r\n\r\n', b"hello", id="ext-quoted-obs-text"),
    pytest.param(b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n", b"hello", id="trailer"),
    pytest.param(
        b"5\r\nhello\r\n0\r\nX-T: 1\r\nX-U:\r\nX-V: \xff a\r\n\r\n", b"hello", id="trailers"
    ),
    pytest.param(
        b"5\r\nhello\r\n0\r\nContent-Length: 99\r\n\r\n", b"hello", id="trailer-cl-discarded"
    ),
    pytest.param(b"3\r\n\r\n\r\r\n0\r\n\r\n", b"\r\n\r", id="crlf-inside-data"),
    pytest.param(b"2\r\n0\r\r\n0\r\n\r\n", b"0\r", id="data-looks-like-size"),
]


@pytest.mark.parametrize(("raw", "payload"), CHUNKED_VALID)
@pytest.mark.parametrize("tail", [b"", b"GET / HTTP/1.1\r\n"], ids=["no-tail", "pipelined-tail"])
def test_chunked_valid(raw, payload, tail):
    buf = bytearray(raw + tail)
    decoder = ChunkedBody(LIMITS)
    assert decode(decoder, buf) == payload
    assert decoder.done
    assert bytes(buf) == tail
    assert decoder.read(buf, 100) == b""
    # Byte-at-a-time gives the same answer and finishes on the exact last byte.
    body, rest = decode_bytewise(ChunkedBody(LIMITS), raw + tail)
    assert (body, rest) == (payload, tail)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"0x5\r\nhello\r\n0\r\n\r\n", id="0x-prefix"),
        pytest.param(b"0X5\r\nhello\r\n0\r\n\r\n", id="0X-prefix"),
        pytest.param(b"+5\r\nhello\r\n0\r\n\r\n", id="plus-sign"),
        pytest.param(b"-5\r\nhello\r\n0\r\n\r\n", id="minus-sign"),
        pytest.param(b"-0\r\n\r\n", id="minus-zero"),
        pytest.param(b"5_0\r\n", id="underscore"),
        pytest.param(b"\xd9\xa5\r\nhello\r\n0\r\n\r\n", id="arabic-indic-five"),
        pytest.param(b"\r\nhello\r\n0\r\n\r\n", id="empty-size"),
        pytest.param(b" 5\r\nhello\r\n0\r\n\r\n", id="space-before-size"),
        pytest.param(b"\t5\r\nhello\r\n0\r\n\r\n", id="tab-before-size"),
        pytest.param(b"5 \r\nhello\r\n0\r\n\r\n", id="space-after-size"),
        pytest.param(b"5\t\r\nhello\r\n0\r\n\r\n", id="tab-after-size"),
        pytest.param(b"5\x0b\r\nhello\r\n0\r\n\r\n", id="vt-after-size"),
        pytest.param(b"5\x00\r\nhello\r\n0\r\n\r\n", id="nul-after-size"),
        pytest.param(b"g\r\n", id="not-hex"),
        pytest.param(b"5g\r\nhello\r\n", id="hex-then-junk"),
        pytest.param(b"1" + b"0" * 16 + b"\r\n", id="17-digits"),
        pytest.param(b"0" * 16 + b"5\r\nhello\r\n", id="17-digits-leading-zeros"),
        pytest.param(b"f" * 100 + b"\r\n", id="100-digits"),
        pytest.param(b"5;\r\nhello\r\n0\r\n\r\n", id="ext-semicolon-alone"),
        pytest.param(b"5;;a\r\nhello\r\n", id="ext-double-semicolon"),
        pytest.param(b"5;=b\r\nhello\r\n", id="ext-empty-name"),
        pytest.param(b"5;a=\r\nhello\r\n", id="ext-empty-value"),
        pytest.param(b"5;a=b c\r\nhello\r\n", id="ext-value-with-space"),
        pytest.param(b"5;a b\r\nhello\r\n", id="ext-name-with-space"),
        pytest.param(b'5;a="b\r\nhello\r\n', id="ext-unterminated-quote"),
        pytest.param(b'5;a="b"c\r\nhello\r\n', id="ext-junk-after-quote"),
        pytest.param(b'5;a="\x00"\r\nhello\r\n', id="ext-nul-in-quoted"),
        pytest.param(b'5;a="\x7f"\r\nhello\r\n', id="ext-del-in-quoted"),
        pytest.param(b"5;a=\x7f\r\nhello\r\n", id="ext-del"),
        pytest.param(b"5;a@b\r\nhello\r\n", id="ext-name-separator"),
        pytest.param(b"5;a\rb\r\nhello\r\n", id="ext-bare-cr"),
        pytest.param(b"5;a=b\x0b\r\nhello\r\n", id="ext-trailing-vt"),
        pytest.param(b"5\nhello\r\n0\r\n\r\n", id="size-line-bare-lf"),
        pytest.param(b"5\rhello\r\n0\r\n\r\n", id="size-line-bare-cr"),
        pytest.param(b"5\r\nhelloXX0\r\n\r\n", id="data-not-followed-by-crlf"),
        pytest.param(b"5\r\nhello\n0\r\n\r\n", id="data-followed-by-bare-lf"),
        pytest.param(b"5\r\nhello\r0\r\n\r\n", id="data-followed-by-bare-cr"),
        pytest.param(b"5\r\nhello\n\r\n0\r\n\r\n", id="data-followed-by-lf-crlf"),
        pytest.param(b"3\r\nhello\r\n0\r\n\r\n", id="size-shorter-than-data"),
        pytest.param(b"0\r\nX-T : 1\r\n\r\n", id="trailer-space-before-colon"),
        pytest.param(b"0\r\nX-T: 1\r\n folded\r\n\r\n", id="trailer-obs-fold"),
        pytest.param(b"0\r\nno-colon\r\n\r\n", id="trailer-without-colon"),
        pytest.param(b"0\r\n: v\r\n\r\n", id="trailer-empty-name"),
        pytest.param(b"0\r\nX-T: a\x00b\r\n\r\n", id="trailer-nul"),
        pytest.param(b"0\r\nX-T: a\rb\r\n\r\n", id="trailer-bare-cr"),
        pytest.param(b"0\r\nX-T: a\x0b\r\n\r\n", id="trailer-vt"),
        pytest.param(b"0\r\nX-T: a\nX-U: b\r\n\r\n", id="trailer-bare-lf"),
        pytest.param(
            b"0\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n", id="request-line-as-trailer"
        ),
        pytest.param(b"5;" + b"a" * 5000 + b"\r\nhello\r\n", id="size-line-over-limit"),
    ],
)
def test_chunked_refused(raw):
    with pytest.raises(ProtocolError) as info:
        decode(ChunkedBody(LIMITS), bytearray(raw))
    assert info.value.status == 400
    with pytest.raises(ProtocolError) as info:
        decode_bytewise(ChunkedBody(LIMITS), raw)
    assert info.value.status == 400


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"5\nhello\n0\n\n", id="all-bare-lf"),
        pytest.param(b"5\nhel", id="size-line-bare-lf"),
        pytest.param(b"5;a=b\rhel", id="size-line-bare-cr"),
        pytest.param(b"5\r\nhello\r\n0\n", id="last-chunk-bare-lf"),
        pytest.param(b"0\r\n\n", id="trailer-section-ends-bare-lf"),
        pytest.param(b"0\r\nX-T: a\nX-U", id="trailer-field-bare-lf"),
        pytest.param(b"0\r\nX-T: a\rX-U", id="trailer-field-bare-cr"),
    ],
)
def test_bare_lf_or_cr_in_chunked_framing_refused_before_any_crlf(raw):
    # No CRLF follows, so the line never ends: the bare LF or CR itself must be refused,
    # not left waiting for more bytes (the client would get a 408 after --body-timeout).
    with pytest.raises(ProtocolError) as info:
        decode(ChunkedBody(LIMITS), bytearray(raw))
    assert info.value.status == 400


def test_cr_at_the_end_of_what_arrived_waits_for_its_lf():
    decoder = ChunkedBody(LIMITS)
    buf = bytearray(b"5;a=b\r")
    assert decoder.read(buf, 100) is None
    buf += b"\nhello\r\n0\r\nX-T: a\r"
    assert decoder.read(buf, 100) == b"hello"
    assert decoder.read(buf, 100) is None
    buf += b"\n\r\n"
    assert decoder.read(buf, 100) == b""


def test_chunk_line_over_limit_raised_before_crlf():
    decoder = ChunkedBody(LIMITS)
    buf = bytearray(b"5;" + b"a" * LIMITS.max_chunk_line)
    with pytest.raises(ProtocolError) as info:
        decoder.read(buf, 100)
    assert info.value.status == 400


def test_chunk_line_at_limit_accepted():
    line = b"5;" + b"a" * (LIMITS.max_chunk_line - 2)
    assert len(line) == LIMITS.max_chunk_line
    raw = line + b"\r\nhello\r\n0\r\n\r\n"
    assert decode(ChunkedBody(LIMITS), bytearray(raw)) == b"hello"
    assert decode_bytewise(ChunkedBody(LIMITS), raw) == (b"hello", b"")


def test_trailer_section_over_limit_refused():
    limits = Limits(max_header_size=64)
    raw = b"0\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 20) for i in range(10)) + b"\r\n"
    with pytest.raises(ProtocolError) as info:
        decode(ChunkedBody(limits), bytearray(raw))
    assert info.value.status in (400, 431)


def test_huge_chunk_size_streams_without_reading_it_all():
    decoder = ChunkedBody(LIMITS)
    buf = bytearray(b"ffffffffffffffff\r\n" + b"x" * 10)
    assert decoder.read(buf, 4) == b"xxxx"
    assert decoder.read(buf, 100) == b"x" * 6
    assert decoder.read(buf, 100) is None
    assert not decoder.done


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 100])
def test_chunked_read_respects_limit(limit):
    payload = bytes(range(256)) * 3
    raw = b"".join(chunk(payload[i : i + 100]) for i in range(0, len(payload), 100)) + LAST_CHUNK
    buf = bytearray(raw)
    decoder = ChunkedBody(LIMITS)
    out = bytearray()
    while (data := decoder.read(buf, limit)) != b"":
        assert data is not None
        assert 0 < len(data) <= limit
        out += data
    assert bytes(out) == payload


def test_chunked_returns_none_until_more_bytes():
    decoder = ChunkedBody(LIMITS)
    buf = bytearray(b"5\r")
    assert decoder.read(buf, 100) is None
    buf += b"\nhel"
    assert decoder.read(buf, 100) == b"hel"
    assert decoder.read(buf, 100) is None
    buf += b"lo\r"
    assert decoder.read(buf, 100) == b"lo"
    assert decoder.read(buf, 100) is None
    buf += b"\n0\r\n\r"
    assert decoder.read(buf, 100) is None
    assert not decoder.done
    buf += b"\nNEXT"
    assert decoder.read(buf, 100) == b""
    assert decoder.done
    assert buf == b"NEXT"


# --------------------------------------------------------------------------------------------
# Fixed-length body (RFC 9112 6.2)
# --------------------------------------------------------------------------------------------


def test_fixed_length_exact_and_remainder():
    buf = bytearray(b"helloGET / HTTP/1.1\r\n")
    decoder = FixedLengthBody(5)
    assert not decoder.done
    assert decode(decoder, buf) == b"hello"
    assert decoder.done
    assert buf == b"GET / HTTP/1.1\r\n"
    assert decoder.read(buf, 100) == b""
    assert buf == b"GET / HTTP/1.1\r\n"


def test_fixed_length_zero():
    buf = bytearray(b"rest")
    decoder = FixedLengthBody(0)
    assert decoder.done
    assert decoder.read(buf, 100) == b""
    assert buf == b"rest"


def test_fixed_length_incremental_and_limit():
    decoder = FixedLengthBody(10)
    buf = bytearray()
    assert decoder.read(buf, 100) is None
    buf += b"abc"
    assert decoder.read(buf, 2) == b"ab"
    assert decoder.read(buf, 100) == b"c"
    assert decoder.read(buf, 100) is None
    buf += b"defghijklm"
    assert decoder.read(buf, 100) == b"defghij"
    assert decoder.read(buf, 100) == b""
    assert buf == b"klm"


def test_fixed_length_bytewise():
    assert decode_bytewise(FixedLengthBody(5), b"helloworld") == (b"hello", b"world")


# --------------------------------------------------------------------------------------------
# Pipelining (RFC 9112 9.3.2) through the whole core
# --------------------------------------------------------------------------------------------

GET_A = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
GET_B = b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
POST_CL = b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
POST_CHUNKED = (
    b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"
)


@pytest.mark.parametrize(
    ("stream", "targets", "bodies", "end"),
    [
        pytest.param(GET_A + GET_B, ["/a", "/b"], [b"", b""], "ok", id="two-gets"),
        pytest.param(POST_CL + GET_B, ["/p", "/b"], [b"hello", b""], "ok", id="cl-then-get"),
        pytest.param(
            POST_CHUNKED + GET_B, ["/c", "/b"], [b"hello", b""], "ok", id="chunked-then-get"
        ),
        pytest.param(
            POST_CHUNKED + POST_CL + POST_CHUNKED,
            ["/c", "/p", "/c"],
            [b"hello"] * 3,
            "ok",
            id="three-with-bodies",
        ),
        pytest.param(
            POST_CL + b"\r\n" + GET_B,
            ["/p", "/b"],
            [b"hello", b""],
            "ok",
            id="extra-crlf-after-body-rfc9112-2.2",
        ),
        pytest.param(
            POST_CL + b"\r\n\r\n" + GET_B,
            ["/p"],
            [b"hello"],
            "400",
            id="two-crlf-after-body",
        ),
        pytest.param(GET_A + b"GET /b HTTP/1.1\r\n", ["/a"], [b""], "incomplete", id="partial"),
        pytest.param(
            GET_A + b"GET /bad HTTP/1.1\r\nHost: x\r\nX : y\r\n\r\n" + GET_B,
            ["/a"],
            [b""],
            "400",
            id="error-stops-pipeline",
        ),
        pytest.param(
            b"GET /bad  HTTP/1.1\r\nHost: x\r\n\r\n" + GET_A,
            [],
            [],
            "400",
            id="first-bad-nothing-parsed",
        ),
        pytest.param(
            b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhelloXX\r\n0\r\n\r\n" + GET_B,
            ["/c"],
            [],
            "400",
            id="error-in-body-stops-pipeline",
        ),
        pytest.param(
            b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" + GET_A,
            ["/p", "/a"],
            [b"abc", b""],
            "ok",
            id="cl-exact-then-next",
        ),
    ],
)
def test_pipelining(stream, targets, bodies, end):
    for pieces in ([stream], [bytes([b]) for b in stream]):
        outcome = drive(pieces)
        assert [r.target for r in outcome.requests] == targets
        assert outcome.bodies == bodies
        assert outcome.end == end


def test_error_produces_no_request():
    outcome = drive([b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"])
    assert outcome.requests == []
    assert outcome.status == 400


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(b"HEAD / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", True, id="whole"),
        pytest.param(b"HEAD /", True, id="started"),
        pytest.param(bytearray(b"HEAD /"), True, id="bytearray"),
        pytest.param(b"\r\nHEAD / HTTP/1.1\r\n\r\n", True, id="after-one-leading-crlf"),
        pytest.param(b"\r\n\r\nHEAD / HTTP/1.1\r\n\r\n", False, id="after-two"),
        pytest.param(b"HEA", False, id="too-short-to-tell"),
        pytest.param(b"HEADER / HTTP/1.1", False, id="longer-method"),
        pytest.param(b"head / HTTP/1.1", False, id="methods-are-case-sensitive"),
        pytest.param(b"GET / HTTP/1.1", False, id="get"),
        pytest.param(b"", False, id="nothing"),
    ],
)
def test_opens_head_request(data, expected):
    """What tells a HEAD refused before it parsed (its answer gets no content)."""
    assert opens_head_request(data) is expected
