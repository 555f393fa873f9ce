"""PEP 3333 conformance through a live server: environ, wsgi.input, start_response, exc_info,
streaming, close(), application errors and wsgi.file_wrapper.

Valid apps run under ``wsgiref.validate`` with warnings as errors; apps that break PEP 3333
on purpose (to see the server refuse them) run bare.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import struct
import sys
import threading
import urllib.parse
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.apps import validated
from tests.helpers.http import ResponseReader, build_request, chunked, pending
from tests.helpers.live import exchange
from tests.helpers.waiting import wait_for
from wsgipool.connection import Connection, is_loopback_peer
from wsgipool.http import Limits

pytestmark = pytest.mark.filterwarnings("error")


def ok(body: bytes = b"ok", status: str = "200 OK"):
    """An app answering ``body`` with a Content-Length."""

    def app(environ, start_response):
        start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    return app


class Capture:
    """Records the environ the server built (before any validator wraps its streams), then
    hands the request on, by default to a valid app that reads the whole body."""

    def __init__(self, app: Any = None) -> None:
        self.environs: list[dict[str, Any]] = []
        self.bodies: list[bytes] = []
        self.app = app if app is not None else validated(self._read_all)

    def _read_all(self, environ, start_response):
        stream = environ["wsgi.input"]
        parts = []
        while data := stream.read(8192):
            parts.append(data)
        self.bodies.append(b"".join(parts))
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    def __call__(self, environ, start_response):
        self.environs.append(dict(environ))
        return self.app(environ, start_response)

    @property
    def last(self) -> dict[str, Any]:
        return self.environs[-1]


def get_environ(serve, data: bytes, **options) -> dict[str, Any]:
    capture = Capture()
    live = serve(capture, **options)
    response = exchange(live, data)
    assert response.status == 200, response
    return capture.last


# --- environ ---------------------------------------------------------------------------------


def test_environ_core_keys(serve):
    capture = Capture()
    live = serve(capture)
    with live.connect() as sock:
        sock.sendall(
            build_request(
                "POST",
                "/caf%C3%A9/x?a=%20b&c=d+e",
                [
                    ("Host", "example.org:8080"),
                    ("Content-Type", "text/plain; charset=utf-8"),
                    ("User-Agent", "test-agent"),
                ],
                b"hello",
            )
        )
        response = ResponseReader(sock).read()
        client_port = sock.getsockname()[1]
    assert response.status == 200, response
    environ = capture.last
    assert capture.bodies == [b"hello"]

    assert environ["REQUEST_METHOD"] == "POST"
    assert environ["SCRIPT_NAME"] == ""
    assert environ["PATH_INFO"] == "/caf\xc3\xa9/x"  # percent-decoded, bytes as latin-1
    assert environ["QUERY_STRING"] == "a=%20b&c=d+e"  # raw
    assert environ["REQUEST_URI"] == environ["RAW_URI"] == "/caf%C3%A9/x?a=%20b&c=d+e"
    assert environ["CONTENT_TYPE"] == "text/plain; charset=utf-8"
    assert environ["CONTENT_LENGTH"] == "5"
    assert "HTTP_CONTENT_TYPE" not in environ
    assert "HTTP_CONTENT_LENGTH" not in environ
    assert environ["HTTP_HOST"] == "example.org:8080"
    assert environ["HTTP_USER_AGENT"] == "test-agent"
    assert environ["SERVER_NAME"] == "127.0.0.1"
    assert environ["SERVER_PORT"] == str(live.port)
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert environ["REMOTE_ADDR"] == "127.0.0.1"
    assert environ["REMOTE_PORT"] == str(client_port)

    assert environ["wsgi.version"] == (1, 0)
    assert type(environ["wsgi.version"]) is tuple
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["wsgi.multithread"] is True
    assert environ["wsgi.multiprocess"] is False
    assert environ["wsgi.run_once"] is False
    assert environ["wsgi.input_terminated"] is True
    for method in ("read", "readline", "readlines", "__iter__"):
        assert callable(getattr(environ["wsgi.input"], method))
    for method in ("write", "writelines", "flush"):
        assert callable(getattr(environ["wsgi.errors"], method))
    assert callable(environ["wsgi.file_wrapper"])


def assert_cgi_values_are_latin1_str(environ: dict[str, Any]) -> None:
    for key, value in environ.items():
        if "." in key:
            continue
        assert type(key) is str and type(value) is str, (key, value)
        assert all(ord(char) < 256 for char in value), (key, value)


def test_every_cgi_value_is_a_latin1_str(serve):
    environ = get_environ(
        serve,
        build_request(
            "GET",
            "/%E2%82%AC/%ff?q=%E2%82%AC",
            [("X-Latin", "caf\u00e9"), ("X-Utf8", "\u00e2\u0082\u00ac")],
        ),
    )
    assert_cgi_values_are_latin1_str(environ)
    assert environ["PATH_INFO"] == "/\xe2\x82\xac/\xff"
    assert environ["HTTP_X_LATIN"] == "caf\xe9"
    assert environ["HTTP_X_UTF8"] == "\xe2\x82\xac"  # the raw UTF-8 bytes, one code point each


def test_query_string_is_empty_when_absent(serve):
    environ = get_environ(serve, build_request("GET", "/p"))
    assert environ["QUERY_STRING"] == ""
    assert environ["PATH_INFO"] == "/p"
    assert "CONTENT_LENGTH" not in environ or environ["CONTENT_LENGTH"] in ("", "0")


def test_empty_query_string(serve):
    environ = get_environ(serve, build_request("GET", "/p?"))
    assert environ["QUERY_STRING"] == ""
    assert environ["REQUEST_URI"] == "/p?"


@pytest.mark.parametrize(
    ("target", "script_name", "path_info"),
    [
        ("/api/x", "/api", "/x"),
        ("/api/x/y%20z", "/api", "/x/y z"),
        ("/api", "/api", ""),
        ("/api/", "/api", "/"),
    ],
)
def test_root_path_becomes_script_name(serve, target, script_name, path_info):
    environ = get_environ(serve, build_request("GET", target + "?k=v"), root_path="/api")
    assert environ["SCRIPT_NAME"] == script_name
    assert environ["PATH_INFO"] == path_info
    assert environ["QUERY_STRING"] == "k=v"
    assert environ["REQUEST_URI"] == target + "?k=v"


@pytest.mark.parametrize("root_path", ["/caf\u00e9", "/\u65e5\u672c"])
def test_root_path_beyond_ascii_is_matched_as_utf8(serve, root_path):
    """A root path is matched against the request's path as URLs carry it, UTF-8, and
    given as PEP 3333 wants an environ string: its bytes, one code point each."""
    encoded = urllib.parse.quote(root_path)
    environ = get_environ(serve, build_request("GET", encoded + "/x"), root_path=root_path)
    assert environ["SCRIPT_NAME"] == root_path.encode("utf-8").decode("latin-1")
    assert environ["PATH_INFO"] == "/x"
    assert_cgi_values_are_latin1_str(environ)


def test_repeated_fields_are_joined(serve):
    environ = get_environ(
        serve,
        build_request(
            "GET",
            "/",
            [
                ("X-Multi", "a"),
                ("Accept", "text/html"),
                ("x-multi", "b"),
                ("ACCEPT", "text/plain;q=0.5"),
                ("X-Multi", "c, d"),
            ],
        ),
    )
    assert environ["HTTP_X_MULTI"] == "a, b, c, d"
    assert environ["HTTP_ACCEPT"] == "text/html, text/plain;q=0.5"


def test_repeated_cookie_fields_are_joined_as_one_cookie_list(serve):
    # RFC 6265 5.4: one Cookie field; split ones rejoin with "; " (as HTTP/2 does).
    environ = get_environ(serve, build_request("GET", "/", [("Cookie", "a=1"), ("Cookie", "b=2")]))
    assert environ["HTTP_COOKIE"] == "a=1; b=2"


def test_field_names_with_underscores_are_dropped(serve):
    environ = get_environ(
        serve,
        build_request(
            "GET",
            "/",
            [("X_Forwarded_For", "6.6.6.6"), ("X-Forwarded-For", "1.2.3.4"), ("X_Only", "1")],
        ),
    )
    assert environ["HTTP_X_FORWARDED_FOR"] == "1.2.3.4"
    assert "HTTP_X_ONLY" not in environ
    assert "6.6.6.6" not in repr(environ)


def test_underscore_field_alone_never_poses_as_the_dash_one(serve):
    environ = get_environ(serve, build_request("GET", "/", [("X_Forwarded_For", "6.6.6.6")]))
    assert "HTTP_X_FORWARDED_FOR" not in environ


def test_absolute_form_target_sets_host_from_the_uri(serve):
    target = "http://example.com:8080/p/q%41?x=1"
    environ = get_environ(serve, build_request("GET", target, [("Host", "other.example")]))
    assert environ["HTTP_HOST"] == "example.com:8080"
    assert environ["PATH_INFO"] == "/p/qA"
    assert environ["QUERY_STRING"] == "x=1"
    assert environ["REQUEST_URI"] == environ["RAW_URI"] == target


def test_http10_without_host(serve):
    environ = get_environ(serve, build_request("GET", "/old", version="HTTP/1.0", host=None))
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.0"
    assert "HTTP_HOST" not in environ
    assert environ["SERVER_NAME"] == "127.0.0.1"


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
def test_request_method(serve, method):
    capture = Capture()
    live = serve(capture)
    response = exchange(live, build_request(method, "/m", body=b"x"), method=method)
    assert response.status == 200
    assert capture.last["REQUEST_METHOD"] == method


def test_extension_method_is_passed_through(serve):
    capture = Capture(ok())  # the validator warns about methods it does not know
    live = serve(capture)
    assert exchange(live, build_request("PURGE", "/cache")).status == 200
    assert capture.last["REQUEST_METHOD"] == "PURGE"


def test_url_scheme_option(serve):
    environ = get_environ(serve, build_request("GET", "/"), url_scheme="https")
    assert environ["wsgi.url_scheme"] == "https"


def test_chunked_request_has_no_content_length(serve):
    capture = Capture()
    live = serve(capture)
    data = build_request("POST", "/", {"Transfer-Encoding": "chunked"}) + chunked(b"ab", b"cd")
    assert exchange(live, data).status == 200
    assert "CONTENT_LENGTH" not in capture.last
    assert capture.last["HTTP_TRANSFER_ENCODING"] == "chunked"
    assert capture.bodies == [b"abcd"]


def test_environ_is_fresh_for_each_request_on_a_connection(serve):
    capture = Capture()
    live = serve(capture)
    with live.connect() as sock:
        sock.sendall(
            build_request("POST", "/a", [("X-Only-First", "1"), ("Content-Type", "a/b")], b"xy")
            + build_request("GET", "/b")
        )
        reader = ResponseReader(sock)
        reader.read()
        reader.read()
    first, second = capture.environs
    assert first["HTTP_X_ONLY_FIRST"] == "1"
    assert "HTTP_X_ONLY_FIRST" not in second
    assert "CONTENT_TYPE" not in second
    assert second.get("CONTENT_LENGTH", "") in ("", "0")
    assert second["wsgi.input"] is not first["wsgi.input"]


# --- wsgi.input --------------------------------------------------------------------------------

BODY = b"line one\nline two\n\nthird line is longer than the others\nno newline at the end"


def ops_read_sized(stream):
    out = []
    while True:
        data = stream.read(7)
        out.append(data)
        if not data:
            break
    out.append(stream.read(7))  # still b"" after the end
    return out


def ops_read_minus_one(stream):
    return [stream.read(-1), stream.read(-1), stream.read(3)]


def ops_read_no_argument(stream):
    return [stream.read(), stream.read()]


def ops_read_none(stream):
    return [stream.read(None), stream.read(None)]


def ops_readline(stream):
    out = []
    while True:
        line = stream.readline()
        out.append(line)
        if not line:
            break
    return out


def ops_readline_sized(stream):
    return [
        stream.readline(4),
        stream.readline(100),
        stream.readline(0),
        stream.readline(5),
        stream.readline(-1),
        stream.readline(None),
        stream.read(-1),
        stream.readline(),
    ]


def ops_readlines(stream):
    return [stream.readlines(), stream.readlines()]


def ops_readlines_hint(stream):
    return [stream.readlines(10), stream.readlines(1), stream.read(-1)]


def ops_iterate(stream):
    return list(stream)


def ops_mixed(stream):
    out = [stream.read(3), stream.readline(), stream.read(2)]
    for line in stream:
        out.append(line)
        break
    out.append(stream.readlines())
    out.append(stream.read(10))
    return out


def ops_read_zero(stream):
    return [stream.read(0), stream.read(4), stream.read(0), stream.read(-1), stream.read(0)]


# (operations, whether wsgiref.validate allows them: it wants read() with exactly one argument)
INPUT_OPS = [
    (ops_read_sized, True),
    (ops_read_minus_one, True),
    (ops_read_no_argument, False),
    (ops_read_none, False),
    (ops_readline, True),
    (ops_readline_sized, False),
    (ops_readlines, True),
    (ops_readlines_hint, True),
    (ops_iterate, True),
    (ops_mixed, True),
    (ops_read_zero, True),
]


def framed(framing: str, body: bytes) -> bytes:
    if framing == "content-length":
        return build_request("POST", "/", body=body)
    if framing == "chunked":  # small chunks: lines straddle chunk boundaries
        parts = [body[i : i + 5] for i in range(0, len(body), 5)]
        return build_request("POST", "/", {"Transfer-Encoding": "chunked"}) + chunked(*parts)
    if framing == "chunked-one":
        return build_request("POST", "/", {"Transfer-Encoding": "chunked"}) + chunked(body)
    raise AssertionError(framing)


def input_app(results: list, ops, environ_seen: list):
    def app(environ, start_response):
        environ_seen.append(dict(environ))
        results.append(ops(environ["wsgi.input"]))
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
        return [b"done"]

    return app


@pytest.mark.parametrize("framing", ["content-length", "chunked", "chunked-one"])
@pytest.mark.parametrize(("ops", "valid"), INPUT_OPS, ids=[op.__name__[4:] for op, _ in INPUT_OPS])
def test_wsgi_input_behaves_like_a_file(serve, framing, ops, valid):
    results: list = []
    environs: list = []
    app = input_app(results, ops, environs)
    # A short body timeout: a read that wrongly waits for more fails fast instead of in 30 s.
    live = serve(validated(app) if valid else app, body_timeout=1.0)
    with live.connect() as sock:
        # The client keeps its side open: any read past the body's end would block.
        sock.sendall(framed(framing, BODY))
        response = ResponseReader(sock).read()
    assert response.status == 200, response
    assert results == [ops(io.BytesIO(BODY))]
    if framing == "content-length":
        assert environs[0]["CONTENT_LENGTH"] == str(len(BODY))
    else:
        assert "CONTENT_LENGTH" not in environs[0]


@pytest.mark.parametrize("framing", ["none", "content-length-0", "chunked-empty"])
def test_wsgi_input_without_a_body_is_empty(serve, framing):
    results: list = []
    app = input_app(results, lambda s: [s.read(10), s.readline(), s.readlines(), s.read(-1)], [])
    live = serve(validated(app), body_timeout=3.0)
    data = {
        "none": build_request("POST", "/"),
        "content-length-0": build_request("POST", "/", {"Content-Length": "0"}),
        "chunked-empty": build_request("POST", "/", {"Transfer-Encoding": "chunked"}) + chunked(),
    }[framing]
    with live.connect() as sock:
        sock.sendall(data)
        assert ResponseReader(sock).read().status == 200
    assert results == [[b"", b"", [], b""]]


def test_readline_waits_for_the_rest_of_a_line(serve):
    entered = threading.Event()
    results = []

    def app(environ, start_response):
        stream = environ["wsgi.input"]
        results.append(stream.read(3))
        entered.set()
        results.append(stream.readline())
        results.append(stream.read(100))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    live = serve(validated(app))
    with live.connect() as sock:
        sock.sendall(build_request("POST", "/", {"Content-Length": "17"}) + b"abcde")
        assert entered.wait(10)
        sock.sendall(b"f\nghijklmnop")
        assert ResponseReader(sock).read().status == 200
    assert results == [b"abc", b"def\n", b"ghijklmnop"]


def test_large_body_streams_through_wsgi_input(serve):
    body = os.urandom(3 * 1024 * 1024 + 17)

    def app(environ, start_response):
        digest = hashlib.sha256()
        stream = environ["wsgi.input"]
        while data := stream.read(100_000):
            digest.update(data)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [digest.hexdigest().encode()]

    live = serve(validated(app))
    expected = hashlib.sha256(body).hexdigest().encode()
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(build_request("PUT", "/", body=body))
        assert reader.read().body == expected
        parts = [body[i : i + 70_000] for i in range(0, len(body), 70_000)]
        sock.sendall(build_request("PUT", "/", {"Transfer-Encoding": "chunked"}) + chunked(*parts))
        assert reader.read().body == expected


def test_client_gone_mid_body_costs_no_worker(serve):
    outcome: list = []
    entered = threading.Event()

    def app(environ, start_response):
        stream = environ["wsgi.input"]
        try:
            outcome.append(stream.read(5))
            entered.set()
            stream.read(1000)
        except Exception as exc:
            outcome.append(exc)
            raise
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"unexpected"]

    live = serve(validated(app), threads=2)
    with live.connect() as sock:
        sock.sendall(build_request("POST", "/", {"Content-Length": "1000"}) + b"12345")
        assert entered.wait(10)
    wait_for(lambda: len(outcome) == 2)
    assert outcome[0] == b"12345"
    assert isinstance(outcome[1], OSError)  # wsgi.input fails rather than inventing an end
    wait_for(lambda: live.server.connection_count == 0)
    assert live.server.alive_workers == 2
    # Still serving (a request without a body reads b"" and gets the app's answer).
    assert exchange(live, build_request("GET", "/")).body == b"unexpected"


def test_stalled_body_times_out_with_408(serve):
    outcome: list = []

    def app(environ, start_response):
        try:
            environ["wsgi.input"].read(10)
        except Exception as exc:
            outcome.append(exc)
            raise
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"unexpected"]

    live = serve(validated(app), body_timeout=0.5)
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(build_request("POST", "/", {"Content-Length": "10"}) + b"12")
        response = reader.read()  # the client stalls; the server gives up on the body
        assert response.status == 408
        assert "close" in response.connection_tokens
        reader.expect_close()
    assert len(outcome) == 1
    assert isinstance(outcome[0], OSError)


_read_op = st.one_of(
    st.tuples(st.just("read"), st.integers(min_value=1, max_value=40)),
    st.tuples(st.just("read"), st.just(-1)),
    st.tuples(st.just("readline"), st.integers(min_value=-1, max_value=40)),
    st.tuples(st.just("readlines"), st.integers(min_value=-1, max_value=40)),
    st.tuples(st.just("next"), st.just(0)),
)


def _apply(stream, program):
    out = []
    for name, arg in program:
        if name == "next":
            out.append(next(iter(stream), None))
        elif name == "read":
            out.append(stream.read(arg))
        else:
            out.append(getattr(stream, name)(arg))
    return out


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=st.binary(max_size=300).map(lambda b: b.replace(b"\x00", b"\n")),
    splits=st.lists(st.integers(min_value=1, max_value=50), max_size=8),
    use_chunked=st.booleans(),
    program=st.lists(_read_op, max_size=12),
)
def test_wsgi_input_matches_bytesio(serve, body, splits, use_chunked, program):
    state = getattr(test_wsgi_input_matches_bytesio, "_state", None)
    if state is None or state["serve"] is not serve:
        box: dict[str, Any] = {}

        def app(environ, start_response):
            box["result"] = _apply(environ["wsgi.input"], box["program"])
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]

        state = {"serve": serve, "live": serve(validated(app), body_timeout=3.0), "box": box}
        test_wsgi_input_matches_bytesio._state = state
    state["box"]["program"] = program
    if use_chunked:
        parts, rest = [], body
        for size in splits:
            parts.append(rest[:size])
            rest = rest[size:]
        parts.append(rest)
        data = build_request("POST", "/", {"Transfer-Encoding": "chunked"}) + chunked(*parts)
    else:
        data = build_request("POST", "/", {"Content-Length": str(len(body))}, body)
    response = exchange(state["live"], data)
    assert response.status == 200, response
    assert state["box"]["result"] == _apply(io.BytesIO(body), program)


# --- start_response checks ---------------------------------------------------------------------


def refusing_app(status, headers, raised: list):
    """Calls start_response with what it is given, remembering what it raised."""

    def app(environ, start_response):
        try:
            start_response(status, headers)
        except Exception as exc:
            raised.append(exc)
            raise
        return [b"should never be sent"]

    return app


def assert_500_and_still_serving(live, raised: list) -> None:
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(build_request("GET", "/") + build_request("GET", "/after"))
        response = reader.read()
        assert response.status == 500, response
        assert b"should never be sent" not in response.body
        assert "close" in response.connection_tokens
        reader.expect_close()
    assert len(raised) == 1, "start_response did not raise when called"
    # The server goes on serving (the same app, so it raises again).
    assert exchange(live, build_request("GET", "/")).status == 500
    assert live.server.alive_workers == 4


@pytest.mark.parametrize(
    "status",
    [
        "200",
        "OK 200",
        200,
        "200OK",
        "20 OK",
        "2000 OK",
        b"200 OK",
        "200 OK\r\nX-Injected: 1",
        "200 OK\n",
        "200 \u20ac",
        "099 Low",
        "600 High",
        " 200 OK",
    ],
    ids=repr,
)
def test_start_response_refuses_a_bad_status(serve, status):
    raised: list = []
    live = serve(refusing_app(status, [("Content-Type", "text/plain")], raised))
    assert_500_and_still_serving(live, raised)


BAD_HEADERS = [
    [("X-A", "a\r\nb")],
    [("X-A", "a\nX-Injected: 1")],
    [("X-A", "a\rb")],
    [("X-A", "a\x00b")],
    [("X-A", "a\x7fb")],
    [("X-A", "\u20ac")],
    [("X-A\r\n", "b")],
    [("X A", "b")],
    [("X:A", "b")],
    [("", "b")],
    [("X-\u00e9", "b")],
    [(b"X-A", "b")],
    [("X-A", b"b")],
    [("X-A", 5)],
    [["X-A", "b"]],
    [("X-A", "b", "c")],
    (("X-A", "b"),),
    [("Content-Length", "abc")],
    [("Content-Length", "-1")],
    [("Content-Length", "+5")],
    [("Content-Length", "1"), ("Content-Length", "2")],
]
HOP_BY_HOP = [
    "Connection",
    "Transfer-Encoding",
    "Keep-Alive",
    "Upgrade",
    "TE",
    "Trailer",
    "Proxy-Connection",
    "connection",
    "TRANSFER-ENCODING",
]


@pytest.mark.parametrize("headers", BAD_HEADERS, ids=repr)
def test_start_response_refuses_bad_headers(serve, headers):
    raised: list = []
    live = serve(refusing_app("200 OK", headers, raised))
    assert_500_and_still_serving(live, raised)


@pytest.mark.parametrize("name", HOP_BY_HOP)
def test_start_response_refuses_hop_by_hop_headers(serve, name):
    raised: list = []
    value = "chunked" if "encoding" in name.lower() else "close"
    live = serve(refusing_app("200 OK", [("Content-Type", "text/plain"), (name, value)], raised))
    assert_500_and_still_serving(live, raised)


def test_response_header_names_in_any_spelling_and_number(serve):
    """Names are matched without regard to case, and thousands of distinct ones (more than
    the server remembers) each get the same checks."""
    spellings = ["Content-Length", "content-length", "CONTENT-LENGTH"]

    def app(environ, start_response):
        index = int(environ["PATH_INFO"][1:])
        headers = [(f"X-Name-{index}", "v"), (spellings[index % 3], "2")]
        if index % 500 == 0:
            headers.append(("Keep-Alive", "timeout=5"))  # Hop-by-hop: refused, every time.
        start_response("200 OK", headers)
        return [b"okEXTRA"]

    live = serve(app)
    with live.connect() as sock:
        reader = ResponseReader(sock)
        for index in range(1, 3000):
            if index % 500 == 0:
                continue
            sock.sendall(build_request("GET", f"/{index}"))
            response = reader.read()
            assert response.get(f"x-name-{index}") == "v"
            assert response.body == b"ok", "the app's Content-Length, in any case, frames it"
    for index in (500, 1000):
        assert exchange(live, build_request("GET", f"/{index}")).status == 500


def test_latin1_header_values_and_empty_reason_are_accepted(serve):
    def app(environ, start_response):
        start_response("200 ", [("X-Latin", "caf\xe9"), ("X-Empty", ""), ("X-Tab", "a\tb")])
        return [b"ok"]

    live = serve(app)
    with live.connect() as sock:
        sock.sendall(build_request("GET", "/"))
        reader = ResponseReader(sock)
        response = reader.read()
    assert response.status_line == b"HTTP/1.1 200 "
    assert response.get("x-latin") == "caf\xe9"  # sent as the one byte 0xE9
    assert response.get("x-empty") == ""
    assert response.get("x-tab") == "a\tb"


def test_headers_changed_after_start_response_are_not_sent(serve):
    """The head is what start_response checked: a list the app changes afterwards (before
    the head goes, with the first body data) can smuggle neither a second framing nor a
    header line past the checks."""

    def app(environ, start_response):
        headers = [("Content-Type", "text/plain")]
        start_response("200 OK", headers)
        yield b""
        headers.append(("Content-Length", "1"))
        headers.append(("X-Late", "a\r\nX-Injected: 1"))
        yield b"streamed"

    live = serve(app)
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(build_request("GET", "/") + build_request("GET", "/"))
        for _ in range(2):
            response = reader.read()
            assert response.status == 200
            assert response.get("transfer-encoding") == "chunked"
            assert not response.has("content-length")
            assert not response.has("x-late")
            assert not response.has("x-injected")
            assert response.body == b"streamed"


def test_start_response_returns_a_working_write(serve):
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        write(b"then ")
        return [b"returned"]

    live = serve(validated(app))
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(build_request("GET", "/") + build_request("GET", "/"))
        for _ in range(2):
            assert reader.read().body == b"written then returned"


def test_write_only_app_with_content_length(serve):
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "6")])
        write(b"abc")
        write(b"def")
        return []

    live = serve(validated(app))
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(build_request("GET", "/") + build_request("GET", "/"))
        for _ in range(2):
            response = reader.read()
            assert response.get("content-length") == "6"
            assert response.body == b"abcdef"


def test_second_start_response_without_exc_info_raises(serve):
    raised: list = []

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-First", "1")])
        try:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
        except Exception as exc:
            raised.append(exc)
        return [b"first wins"]

    live = serve(app)
    response = exchange(live, build_request("GET", "/"))
    assert len(raised) == 1
    assert response.status == 200
    assert response.get("x-first") == "1"
    assert response.body == b"first wins"


def test_exc_info_before_headers_are_sent_replaces_them(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Good", "1")])
        try:
            raise ValueError("oops")
        except ValueError:
            start_response(
                "503 Service Unavailable",
                [("Content-Type", "text/plain"), ("X-Error", "1")],
                sys.exc_info(),
            )
        return [b"error page"]

    live = serve(validated(app))
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(build_request("GET", "/") + build_request("GET", "/"))
        for _ in range(2):
            response = reader.read()
            assert response.status == 503
            assert response.get("x-error") == "1"
            assert not response.has("x-good")
            assert response.body == b"error page"


def test_exc_info_after_headers_are_sent_reraises(serve):
    outcome: dict[str, Any] = {}

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"first part"
        try:
            raise ValueError("late failure")
        except ValueError as original:
            outcome["original"] = original
            try:
                start_response(
                    "500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info()
                )
            except BaseException as exc:
                outcome["raised"] = exc
                raise
            outcome["raised"] = None
        yield b"never"

    live = serve(validated(app))
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(build_request("GET", "/"))
        response = reader.read(allow_truncated=True)
        assert response.status == 200
        assert not response.complete, "an aborted chunked body must not end with its last chunk"
        assert response.body == b"first part"
    assert outcome["raised"] is outcome["original"]
    assert exchange(live, build_request("GET", "/"), allow_truncated=True).status == 200
    assert live.server.alive_workers == 4


def test_exc_info_none_is_a_first_call(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")], None)
        return [b"fine"]

    live = serve(validated(app))
    assert exchange(live, build_request("GET", "/")).body == b"fine"


# --- streaming ---------------------------------------------------------------------------------


def test_headers_wait_for_the_first_non_empty_chunk(serve):
    reached, go = threading.Event(), threading.Event()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b""
        yield b""
        reached.set()
        go.wait(10)
        yield b"data"

    live = serve(validated(app))
    with live.connect() as sock:
        sock.sendall(build_request("GET", "/"))
        try:
            assert reached.wait(10)
            assert pending(sock) is None, "headers sent before any body data"
        finally:
            go.set()
        response = ResponseReader(sock).read()
    assert response.status == 200
    assert response.body == b"data"


def test_error_after_only_empty_chunks_is_still_a_500(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b""
        raise RuntimeError("before any data")

    live = serve(validated(app))
    response = exchange(live, build_request("GET", "/"))
    assert response.status == 500


def test_empty_chunks_never_end_a_chunked_body(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"a", b"", b"b", b"", b"", b"c"])

    live = serve(validated(app))
    with live.connect() as sock:
        sock.sendall(build_request("GET", "/"))
        reader = ResponseReader(sock)
        _, headers = reader.read_head()
        raw = reader.read_until(b"0\r\n\r\n")
    assert dict((k.lower(), v) for k, v in headers)["transfer-encoding"] == "chunked"
    assert raw == b"1\r\na\r\n1\r\nb\r\n1\r\nc\r\n0\r\n\r\n"


def test_first_chunk_reaches_the_client_before_the_generator_blocks(serve):
    go = threading.Event()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"first"
        go.wait(10)
        yield b"second"

    live = serve(validated(app))
    with live.connect() as sock:
        sock.sendall(build_request("GET", "/"))
        reader = ResponseReader(sock)
        try:
            status_line, _ = reader.read_head()
            assert status_line == b"HTTP/1.1 200 OK"
            assert reader.read_until(b"first\r\n") == b"5\r\nfirst\r\n"
        finally:
            go.set()
        assert reader.read_until(b"0\r\n\r\n") == b"6\r\nsecond\r\n0\r\n\r\n"


def test_write_reaches_the_client_before_the_app_returns(serve):
    go = threading.Event()

    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"early")
        go.wait(10)
        return [b"late"]

    live = serve(validated(app))
    with live.connect() as sock:
        sock.sendall(build_request("GET", "/"))
        reader = ResponseReader(sock)
        try:
            reader.read_head()
            assert reader.read_until(b"early\r\n") == b"5\r\nearly\r\n"
        finally:
            go.set()
        assert reader.read_until(b"0\r\n\r\n") == b"4\r\nlate\r\n0\r\n\r\n"


# --- close() of the iterable ---------------------------------------------------------------------


class Tracked:
    """An iterable that counts close() calls; optionally fails or never ends."""

    def __init__(self, chunks=(b"a", b"b"), fail_after: int | None = None, endless=False):
        self.chunks = list(chunks)
        self.fail_after = fail_after
        self.endless = endless
        self.closed = 0

    def __iter__(self):
        for index, chunk in enumerate(self.chunks):
            if index == self.fail_after:
                raise RuntimeError("failure mid-iteration")
            yield chunk
        while self.endless:
            yield b"x" * 65536

    def close(self):
        self.closed += 1


def tracked_app(body: Tracked, headers=()):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), *headers])
        return body

    return app


@pytest.mark.parametrize(
    ("case", "method"),
    [
        ("normal", "GET"),
        ("head", "HEAD"),
        ("content-length-reached", "GET"),
        ("error-mid-iteration", "GET"),
        ("error-before-first-chunk", "GET"),
    ],
)
def test_close_is_called_exactly_once(serve, case, method):
    body = {
        "normal": Tracked(),
        "head": Tracked(endless=True),
        "content-length-reached": Tracked([b"abc", b"def", b"never"]),
        "error-mid-iteration": Tracked([b"a", b"b"], fail_after=1),
        "error-before-first-chunk": Tracked([b"a"], fail_after=0),
    }[case]
    headers = [("Content-Length", "6")] if case == "content-length-reached" else []
    live = serve(validated(tracked_app(body, headers)))
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(build_request(method, "/"))
        response = reader.read(method, allow_truncated=True)
        if case == "error-before-first-chunk":
            assert response.status == 500
        elif case == "error-mid-iteration":
            assert not response.complete
        elif case == "content-length-reached":
            assert response.body == b"abcdef"
        wait_for(lambda: body.closed >= 1)
    wait_for(lambda: live.server.connection_count == 0)
    assert body.closed == 1


def test_close_is_called_once_when_the_client_goes_away(serve):
    body = Tracked([b"start"], endless=True)
    live = serve(validated(tracked_app(body)))
    sock = live.connect()
    try:
        sock.sendall(build_request("GET", "/"))
        ResponseReader(sock).read_head()
    finally:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # a reset, mid-response
    wait_for(lambda: body.closed >= 1)
    wait_for(lambda: live.server.connection_count == 0)
    assert body.closed == 1
    assert exchange(live, build_request("HEAD", "/"), "HEAD").status == 200
    assert live.server.alive_workers == 4


def test_close_raising_is_logged_and_the_server_goes_on(serve):
    class BadClose:
        def __iter__(self):
            yield b"body"

        def close(self):
            raise RuntimeError("close failed")

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return BadClose()

    live = serve(app)
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(build_request("GET", "/"))
        assert reader.read().body == b"body"
    assert exchange(live, build_request("GET", "/")).body == b"body"
    assert live.server.alive_workers == 4


# --- application errors ------------------------------------------------------------------------


def failing_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    raise ZeroDivisionError("secret detail 1/0")


@pytest.mark.parametrize("expose", [False, True])
def test_error_before_headers_is_a_500(serve, expose):
    live = serve(validated(failing_app), expose_tracebacks=expose)
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(build_request("GET", "/") + build_request("GET", "/"))
        response = reader.read()
        assert response.status == 500
        assert "close" in response.connection_tokens
        reader.expect_close()
    if expose:
        assert b"Traceback" in response.body
        assert b"ZeroDivisionError" in response.body
        assert b"secret detail" in response.body
    else:
        assert b"Traceback" not in response.body
        assert b"secret detail" not in response.body
        assert b"ZeroDivisionError" not in response.body


def test_error_after_headers_aborts_the_connection(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"partial"
        raise RuntimeError("mid-body")

    live = serve(validated(app))
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(build_request("GET", "/") + build_request("GET", "/"))
        response = reader.read(allow_truncated=True)
        assert response.status == 200
        assert not response.complete
        assert response.body == b"partial"
        assert reader.eof and reader.buf == b""
    assert exchange(live, build_request("GET", "/"), allow_truncated=True).status == 200


def test_error_after_content_length_headers_closes_short(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])
        yield b"partial"
        raise RuntimeError("mid-body")

    live = serve(validated(app))
    response = exchange(live, build_request("GET", "/"), allow_truncated=True)
    assert response.status == 200
    assert not response.complete
    assert response.body == b"partial"


@pytest.mark.parametrize("kind", ["one-item-list", "iterator", "write"])
def test_str_instead_of_bytes_before_any_output_is_a_500(serve, kind):
    # PEP 3333: body data must be bytes. Nothing has been sent when the first piece turns out
    # to be a str, so the client can still be told 500 instead of getting an empty reply.
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        if kind == "write":
            write("text")
            return []
        if kind == "iterator":
            return iter(["text", b"bytes"])
        return ["text"]

    live = serve(app)
    with live.connect() as sock:
        sock.sendall(build_request("GET", "/"))
        reader = ResponseReader(sock)
        response = reader.read()
        assert response.status == 500, response
        assert b"text" not in response.body
        reader.expect_close()
    assert live.server.alive_workers == 4


def _error_apps():
    def raise_at_once(environ, start_response):
        raise ValueError("at once")

    def raise_in_iteration(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"x"
        raise KeyError("later")

    def return_none(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])

    def no_start_response(environ, start_response):
        return [b"body without a status"]

    def raise_system_exit(environ, start_response):
        raise SystemExit(3)

    def bad_chunk_type(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ["text, not bytes"]

    return [
        raise_at_once,
        raise_in_iteration,
        return_none,
        no_start_response,
        raise_system_exit,
        bad_chunk_type,
        failing_app,
    ]


def test_many_errors_cost_no_worker(serve):
    apps = _error_apps()

    def router(environ, start_response):
        if environ["PATH_INFO"] == "/ok":
            return ok()(environ, start_response)
        return apps[int(environ["PATH_INFO"][1:]) % len(apps)](environ, start_response)

    live = serve(router, threads=2)
    for index in range(6 * len(apps)):
        with live.connect() as sock:
            sock.sendall(build_request("GET", f"/{index}"))
            try:
                response = ResponseReader(sock).read(allow_truncated=True)
            except ConnectionError:
                continue  # the connection was dropped without a response
            assert response.status in (200, 500), response
    wait_for(lambda: live.server.connection_count == 0)
    assert live.server.alive_workers == 2
    assert exchange(live, build_request("GET", "/ok")).body == b"ok"


# --- wsgi.file_wrapper --------------------------------------------------------------------------


@pytest.fixture
def data_file(tmp_path):
    data = os.urandom(300_000)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    return path, data


def file_app(path, position=0, headers=(), opened: list | None = None):
    def app(environ, start_response):
        f = open(path, "rb")  # noqa: SIM115 -- the server closes it through the wrapper
        if opened is not None:
            opened.append(f)
        f.seek(position)
        start_response("200 OK", [("Content-Type", "application/octet-stream"), *headers])
        return environ["wsgi.file_wrapper"](f, 8192)

    return app


# "auto" copies to these loopback clients; "on" uses sendfile() all the same.
SENDFILE_MODES = pytest.mark.parametrize("sendfile", ["auto", "on", "off"])


@SENDFILE_MODES
def test_file_wrapper_sends_a_real_file_from_its_position(serve, data_file, sendfile):
    path, data = data_file
    opened: list = []
    live = serve(file_app(path, position=1000, opened=opened), sendfile=sendfile)
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(build_request("GET", "/") + build_request("GET", "/"))
        for _ in range(2):
            response = reader.read()
            # sendfile knows the size: a Content-Length, not chunks.
            assert response.get("content-length") == str(len(data) - 1000)
            assert response.body == data[1000:]
    wait_for(lambda: len(opened) == 2 and all(f.closed for f in opened))


@SENDFILE_MODES
def test_file_wrapper_honours_a_shorter_content_length(serve, data_file, sendfile):
    path, data = data_file
    live = serve(
        file_app(path, position=10, headers=[("Content-Length", "100")]), sendfile=sendfile
    )
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(build_request("GET", "/") + build_request("GET", "/"))
        for _ in range(2):
            response = reader.read()
            assert response.get("content-length") == "100"
            assert response.body == data[10:110]
        sock.sendall(build_request("HEAD", "/"))
        head = reader.read("HEAD")
        assert head.get("content-length") == "100"
        sock.sendall(build_request("GET", "/"))
        assert reader.read().body == data[10:110], "stray bytes after the HEAD response"


@SENDFILE_MODES
def test_file_wrapper_with_a_longer_content_length_closes(serve, data_file, sendfile):
    path, data = data_file
    live = serve(
        file_app(path, position=len(data) - 50, headers=[("Content-Length", "80")]),
        sendfile=sendfile,
    )
    response = exchange(live, build_request("GET", "/"), allow_truncated=True)
    assert not response.complete
    assert response.body == data[-50:]


def test_only_tcp_peers_on_this_host_count_as_loopback():
    listener = socket.create_server(("127.0.0.1", 0))
    with listener, socket.create_connection(listener.getsockname()):
        accepted, _ = listener.accept()
        with accepted:
            assert is_loopback_peer(accepted)
    unix_a, unix_b = socket.socketpair()
    with unix_a, unix_b:
        assert not is_loopback_peer(unix_a)
    if socket.has_ipv6:
        try:
            listener6 = socket.create_server(("::1", 0), family=socket.AF_INET6)
        except OSError:
            return  # No IPv6 loopback on this machine.
        with listener6, socket.create_connection(listener6.getsockname()[:2]):
            accepted6, _ = listener6.accept()
            with accepted6:
                assert is_loopback_peer(accepted6)


@SENDFILE_MODES
def test_connection_sendfile_sends_the_file_in_every_mode(data_file, sendfile):
    """Every file goes out through Connection.sendfile (never the socket itself): from its
    offset, saying how many bytes went, fewer when the file holds less than asked."""
    path, data = data_file
    ours, theirs = socket.socketpair()
    received = bytearray()

    def read() -> None:
        while piece := theirs.recv(65536):
            received.extend(piece)

    reader = threading.Thread(target=read)
    with ours, theirs, open(path, "rb") as file:
        reader.start()
        conn = Connection(ours, None, None, Limits())
        sent = conn.sendfile(file.fileno(), 1000, len(data), sendfile)
        ours.shutdown(socket.SHUT_WR)
        reader.join(timeout=60)
    assert sent == len(data) - 1000
    assert received == data[1000:]


def test_file_wrapper_over_a_unix_socket(serve, data_file, tmp_path):
    path, data = data_file
    serve(file_app(path, position=3), bind=[f"unix:{tmp_path / 'app.sock'}"])
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(tmp_path / "app.sock"))
        reader = ResponseReader(sock)
        sock.sendall(build_request("GET", "/"))
        assert reader.read().body == data[3:]


def test_file_wrapper_head(serve, data_file):
    path, data = data_file
    opened: list = []
    live = serve(file_app(path, opened=opened))
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(build_request("HEAD", "/") + build_request("GET", "/"))
        head = reader.read("HEAD")
        assert head.get("content-length") == str(len(data))
        assert reader.read().body == data
    wait_for(lambda: len(opened) == 2 and all(f.closed for f in opened))


def test_file_wrapper_under_the_validator(serve, data_file):
    path, data = data_file
    live = serve(validated(file_app(path, position=5)))
    assert exchange(live, build_request("GET", "/")).body == data[5:]


def test_file_wrapper_bytesio_falls_back_to_reading(serve):
    data = os.urandom(100_000)
    buffers: list = []

    def app(environ, start_response):
        buffer = io.BytesIO(data)
        buffer.seek(7)
        buffers.append(buffer)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](buffer, 4096)

    live = serve(app)
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(build_request("GET", "/") + build_request("GET", "/"))
        for _ in range(2):
            response = reader.read()
            assert response.body == data[7:]
    wait_for(lambda: len(buffers) == 2 and all(b.closed for b in buffers))


def test_file_wrapper_bytesio_with_content_length(serve):
    data = b"0123456789" * 100

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "25")])
        return environ["wsgi.file_wrapper"](io.BytesIO(data), 10)

    live = serve(validated(app))
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(build_request("GET", "/") + build_request("GET", "/"))
        for _ in range(2):
            assert reader.read().body == data[:25]


def test_file_wrapper_empty_file(serve, tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(b"")
    live = serve(file_app(path))
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(build_request("GET", "/") + build_request("GET", "/"))
        for _ in range(2):
            response = reader.read()
            assert response.get("content-length") == "0"
            assert response.body == b""


def test_file_wrapper_json_sanity(serve, tmp_path):
    path = tmp_path / "doc.json"
    path.write_text(json.dumps({"k": list(range(100))}))
    live = serve(file_app(path, headers=[("Content-Length", str(path.stat().st_size))]))
    assert json.loads(exchange(live, build_request("GET", "/")).body) == {"k": list(range(100))}
