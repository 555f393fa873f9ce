"""End to end over real sockets: connection management, framing, bad requests, Unix sockets.

Every test starts a real server (127.0.0.1 port 0, or a Unix socket) and talks raw HTTP/1.x
to it, so the exact bytes on the wire are checked. Valid test apps run under
``wsgiref.validate`` with warnings as errors, so each request also checks the server's
environ and ``start_response`` against PEP 3333.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import struct
import threading

import pytest

from tests.helpers.apps import validated
from tests.helpers.http import ResponseReader, build_request, chunked, pending
from tests.helpers.live import exchange
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.filterwarnings("error")

IMF_FIXDATE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"\d{4} \d\d:\d\d:\d\d GMT"
)


# --- test applications ---------------------------------------------------------------------


class PathApp:
    """Answers with ``METHOD PATH`` (plus the body it read when ``?read``) and a Content-Length;
    remembers every path it was asked for, so a test can tell which requests reached it."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, environ, start_response):
        self.seen.append(environ["PATH_INFO"])
        body = f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}".encode("latin-1")
        if environ["QUERY_STRING"] == "read":
            stream = environ["wsgi.input"]
            while data := stream.read(65536):
                body += b" " + data
        start_response(
            "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        )
        return [body]


def stream_app(environ, start_response):
    """A body of several pieces and no Content-Length: chunked on 1.1, close-delimited on 1.0."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return iter([b"one ", b"two ", b"three"])


def hello_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, World!"]


def start_unix(serve, tmp_path, app):
    return serve(app, bind=("unix:" + str(tmp_path / "s.sock"),))


# --- keep-alive and Connection ------------------------------------------------------------


def test_http11_keeps_the_connection_by_default(serve):
    app = PathApp()
    live = serve(validated(app))
    with live.connect() as sock:
        reader = ResponseReader(sock)
        for path in ("/a", "/b", "/c"):
            sock.sendall(build_request("GET", path))
            response = reader.read()
            assert response.status_line == b"HTTP/1.1 200 OK"
            assert response.body == f"GET {path}".encode()
            assert "close" not in response.connection_tokens
    assert app.seen == ["/a", "/b", "/c"]


def test_http11_connection_close_is_honoured(serve):
    app = PathApp()
    live = serve(validated(app))
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(
            build_request("GET", "/first", {"Connection": "close"}) + build_request("GET", "/after")
        )
        response = reader.read()
        assert response.status == 200
        assert response.body == b"GET /first"
        assert "close" in response.connection_tokens
        reader.expect_close()
    assert app.seen == ["/first"]


def test_http10_closes_by_default(serve):
    live = serve(validated(PathApp()))
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(build_request("GET", "/x", version="HTTP/1.0", host=None))
        response = reader.read()
        assert response.status == 200
        # RFC 9110 6.2: a server answers with the highest minor version it speaks.
        assert response.version == "HTTP/1.1"
        assert response.body == b"GET /x"
        assert "keep-alive" not in response.connection_tokens
        reader.expect_close()


def test_http10_keep_alive_with_a_known_length(serve):
    app = PathApp()
    live = serve(validated(app))
    with live.connect() as sock:
        reader = ResponseReader(sock)
        for path in ("/one", "/two"):
            sock.sendall(
                build_request("GET", path, {"Connection": "keep-alive"}, version="HTTP/1.0")
            )
            response = reader.read()
            assert response.status == 200
            assert response.body == f"GET {path}".encode()
            assert "keep-alive" in response.connection_tokens
        # Without the token the HTTP/1.0 default (close) applies again.
        sock.sendall(build_request("GET", "/three", version="HTTP/1.0"))
        response = reader.read()
        assert response.body == b"GET /three"
        assert "keep-alive" not in response.connection_tokens
        reader.expect_close()
    assert app.seen == ["/one", "/two", "/three"]


def test_http10_keep_alive_without_a_length_is_close_delimited(serve):
    live = serve(validated(stream_app))
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(build_request("GET", "/", {"Connection": "keep-alive"}, version="HTTP/1.0"))
        response = reader.read()  # no length, no chunks: read until the close
        assert response.status == 200
        assert not response.has("transfer-encoding")
        assert not response.has("content-length")
        assert "keep-alive" not in response.connection_tokens
        assert response.body == b"one two three"
        assert reader.eof


def test_pipelined_requests_are_answered_in_order(serve):
    app = PathApp()
    live = serve(validated(app))
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(
            build_request("GET", "/first")
            + build_request("POST", "/second?read", body=b"payload")
            + build_request("GET", "/third")
        )
        bodies = [reader.read().body for _ in range(3)]
        assert bodies == [b"GET /first", b"POST /second payload", b"GET /third"]
        # Still open and in step.
        sock.sendall(build_request("GET", "/fourth"))
        assert reader.read().body == b"GET /fourth"
    assert app.seen == ["/first", "/second", "/third", "/fourth"]


def test_many_pipelined_requests_in_one_write(serve):
    app = PathApp()
    live = serve(validated(app))
    paths = [f"/{index}" for index in range(60)]
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(b"".join(build_request("GET", path) for path in paths))
        assert [reader.read().body for _ in paths] == [f"GET {p}".encode() for p in paths]
    assert app.seen == paths


def test_pipelined_head_and_get(serve):
    live = serve(validated(hello_app))
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(build_request("HEAD", "/") + build_request("GET", "/"))
        head = reader.read("HEAD")
        assert head.status == 200
        assert head.get("content-length") == "13"
        get = reader.read()
        assert get.status_line == b"HTTP/1.1 200 OK"
        assert get.body == b"Hello, World!"


class SlowClose:
    """A one-chunk body whose ``close()`` (run after the response went out, before the
    worker is done with the connection) waits until the test lets it finish."""

    def __init__(self) -> None:
        self.closing = threading.Event()
        self.proceed = threading.Event()

    def __call__(self, environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return self if environ["PATH_INFO"] == "/slow-close" else [b"ok"]

    def __iter__(self):
        yield b"ok"

    def close(self) -> None:
        self.closing.set()
        self.proceed.wait(10)


@pytest.mark.parametrize("poller", ["auto", "selectors"])
def test_request_sent_before_the_worker_is_done_is_answered(serve, poller):
    """A keep-alive client sends its next request as soon as it has the response, while the
    worker still runs the app's close(). With the edge-triggered poller that request's edge
    reaches the listener while the worker owns the connection; it must not be lost when the
    worker hands the connection back."""
    app = SlowClose()
    live = serve(validated(app), poller=poller)
    listener = live.server._listener  # Only to wait until it has seen the edge.
    with live.connect() as sock:
        reader = ResponseReader(sock)
        # One request first: a connection accepted with its first bytes (TCP_DEFER_ACCEPT)
        # joins the poller when it is first handed back.
        sock.sendall(build_request("GET", "/"))
        assert reader.read().body == b"ok"
        for _ in range(3):
            app.closing.clear()
            app.proceed.clear()
            sock.sendall(build_request("GET", "/slow-close"))
            assert reader.read().body == b"ok"
            assert app.closing.wait(10)
            sock.sendall(build_request("GET", "/next"))
            if poller == "auto":
                wait_for(lambda: bool(listener._missed))
            app.proceed.set()
            assert reader.read().body == b"ok"


# --- request bodies the app did not read -----------------------------------------------------


def smuggled_looking_body(size: int) -> bytes:
    """A body that is itself a valid request: parsing it as one would answer /smuggled."""
    body = build_request("GET", "/smuggled")
    return body + b"x" * (size - len(body))


def test_small_unread_body_is_drained_not_parsed(serve):
    app = PathApp()
    live = serve(validated(app))
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(
            build_request("POST", "/ignored", body=smuggled_looking_body(4000))
            + build_request("GET", "/next")
        )
        first, second = reader.read(), reader.read()
        assert first.body == b"POST /ignored"
        assert "close" not in first.connection_tokens
        assert second.body == b"GET /next"
        sock.sendall(build_request("GET", "/still-open"))
        assert reader.read().body == b"GET /still-open"
    assert app.seen == ["/ignored", "/next", "/still-open"]


def test_partly_read_body_is_drained(serve):
    read = []

    def app(environ, start_response):
        read.append(environ["wsgi.input"].read(10))
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    live = serve(validated(app))
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(
            build_request("POST", "/", body=smuggled_looking_body(5000))
            + build_request("POST", "/", body=b"0123456789abc")
        )
        assert reader.read().body == b"ok"
        assert reader.read().body == b"ok"
    assert read == [smuggled_looking_body(5000)[:10], b"0123456789"]


def test_small_unread_chunked_body_is_drained_not_parsed(serve):
    app = PathApp()
    live = serve(validated(app))
    body = smuggled_looking_body(300)
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(
            build_request("POST", "/ignored", {"Transfer-Encoding": "chunked"})
            + chunked(body[:100], body[100:])
            + build_request("GET", "/next")
        )
        assert reader.read().body == b"POST /ignored"
        assert reader.read().body == b"GET /next"
    assert app.seen == ["/ignored", "/next"]


def test_large_unread_body_closes_the_connection(serve):
    app = PathApp()
    live = serve(validated(app))
    with live.connect() as sock:
        reader = ResponseReader(sock)
        # Announce 300 KiB, send only the start (which looks like a request): the server must
        # neither wait for the rest nor read it as the next request.
        head = build_request("POST", "/big", {"Content-Length": str(300 * 1024)})
        sock.sendall(head + smuggled_looking_body(1024))
        response = reader.read()
        assert response.status == 200
        assert response.body == b"POST /big"
        assert "close" in response.connection_tokens
        reader.expect_close()
    assert app.seen == ["/big"]


def test_large_unread_chunked_body_closes_the_connection(serve):
    app = PathApp()
    live = serve(validated(app))
    body = smuggled_looking_body(64 * 1024)
    data = (
        build_request("POST", "/big", {"Transfer-Encoding": "chunked"})
        + chunked(*([body] * 6))  # 384 KiB, more than the server drains
        + build_request("GET", "/after")
    )
    with live.connect() as sock:
        # The server may stop reading (and close) before all of it went out: send from a
        # thread that ignores the broken pipe, read the answer here.
        def send():
            with contextlib.suppress(OSError):
                sock.sendall(data)

        sender = threading.Thread(target=send)
        sender.start()
        try:
            reader = ResponseReader(sock)
            response = reader.read()
            assert response.status == 200
            assert response.body == b"POST /big"
            reader.expect_close()
        finally:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sender.join(10)
    assert app.seen == ["/big"]


# --- Expect: 100-continue -------------------------------------------------------------------


def echo_body_app(environ, start_response):
    """Answers "got " and the whole request body."""
    data = environ["wsgi.input"].read(-1)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"got " + data]


def test_100_continue_is_sent_when_the_app_first_reads(serve):
    entered, go = threading.Event(), threading.Event()

    def app(environ, start_response):
        entered.set()
        go.wait(10)
        data = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"got " + data]

    live = serve(validated(app))
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(build_request("POST", "/", {"Expect": "100-continue", "Content-Length": "5"}))
        try:
            assert entered.wait(10)
            assert pending(sock) is None, "100 Continue sent before the app read the body"
        finally:
            go.set()
        # A careful client: the body goes only after the interim response.
        interim = reader.read()
        assert interim.status_line == b"HTTP/1.1 100 Continue"
        assert interim.headers == []
        sock.sendall(b"hello")
        final = reader.read()
        assert final.status == 200
        assert final.body == b"got hello"
        assert "close" not in final.connection_tokens
        # The connection goes on.
        sock.sendall(build_request("POST", "/", {"Content-Length": "2"}, b"hi"))
        assert reader.read().body == b"got hi"


def test_100_continue_with_a_chunked_body(serve):
    live = serve(validated(echo_body_app))
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(
            build_request("PUT", "/", {"Expect": "100-continue", "Transfer-Encoding": "chunked"})
        )
        assert reader.read().status == 100
        sock.sendall(chunked(b"abc", b"def"))
        final = reader.read()
        assert final.body == b"got abcdef"


@pytest.mark.parametrize(
    "expect",
    [
        pytest.param("100-continue, 100-continue", id="two-fields-folded-into-one"),
        pytest.param("100-continue,", id="empty-list-element"),
    ],
)
def test_100_continue_from_an_expect_list(serve, expect):
    """Expect is a list (RFC 9110 5.6.1): what a proxy makes of two Expect fields, or an
    empty element, is still only 100-continue, not an unknown expectation (417)."""

    live = serve(validated(echo_body_app))
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(build_request("POST", "/", {"Expect": expect, "Content-Length": "5"}))
        assert reader.read().status == 100
        sock.sendall(b"hello")
        assert reader.read().body == b"got hello"


def test_no_100_continue_when_the_app_answers_without_reading(serve):
    app = PathApp()
    live = serve(validated(app))
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(
            build_request("POST", "/nope", {"Expect": "100-continue", "Content-Length": "100"})
        )
        response = reader.read()  # the client never sends the body
        assert response.status == 200, "only the final response, no 100 Continue"
        assert response.body == b"POST /nope"
        assert "close" in response.connection_tokens
        reader.expect_close()


def test_no_100_continue_when_the_body_is_over_the_limit(serve):
    app = PathApp()
    live = serve(validated(app), max_body_size=10)
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(
            build_request("POST", "/?read", {"Expect": "100-continue", "Content-Length": "11"})
        )
        response = reader.read()
        assert response.status == 413
        assert "close" in response.connection_tokens
        reader.expect_close()
    assert app.seen == []


def test_no_100_continue_for_http10(serve):
    def app(environ, start_response):
        data = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "8")])
        return [b"got " + data]

    live = serve(validated(app))
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(
            build_request(
                "POST", "/", {"Expect": "100-continue"}, b"data", version="HTTP/1.0", host=None
            )
        )
        response = reader.read()
        assert response.status == 200
        assert response.body == b"got data"
        reader.expect_close()


# --- HEAD, 204, 304 ---------------------------------------------------------------------------


def test_head_sends_no_body_and_keeps_the_apps_content_length(serve):
    live = serve(validated(hello_app))
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(build_request("HEAD", "/"))
        head = reader.read("HEAD")
        assert head.status == 200
        assert head.get("content-length") == "13"
        sock.sendall(build_request("GET", "/"))
        get = reader.read()
        assert get.status_line == b"HTTP/1.1 200 OK", "body bytes leaked after the HEAD response"
        assert get.body == b"Hello, World!"


def test_head_of_a_streamed_response(serve):
    closed = []

    class Body:
        def __iter__(self):
            yield b"chunk one"
            yield b"chunk two"

        def close(self):
            closed.append(True)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body()

    live = serve(validated(app))
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(build_request("HEAD", "/") + build_request("GET", "/"))
        head = reader.read("HEAD")
        assert head.status == 200
        get = reader.read()
        assert get.status_line == b"HTTP/1.1 200 OK"
        assert get.body == b"chunk onechunk two"
    wait_for(lambda: len(closed) == 2)


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_bodyless_statuses_carry_no_body(serve, status):
    def app(environ, start_response):
        start_response(status, [("X-Status", status[:3])])
        # Not valid for these statuses; the server must drop it rather than send it.
        return [b"this must not be sent"]

    live = serve(app)
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(build_request("GET", "/") + build_request("GET", "/again"))
        for _ in range(2):
            response = reader.read()
            assert response.status == int(status[:3])
            assert response.get("x-status") == status[:3]
            assert not response.has("transfer-encoding")
            if status.startswith("204"):
                assert not response.has("content-length")  # RFC 9110 8.6: MUST NOT
        sock.sendall(build_request("GET", "/third"))
        assert reader.read().status == int(status[:3])


@pytest.mark.parametrize("streamed", [False, True], ids=["list", "generator"])
def test_a_205_carries_no_content_whatever_the_app_returns(serve, streamed):
    """RFC 9110 15.3.6: a server MUST NOT send content in a 205. The app's body is
    dropped and the head says Content-Length: 0, so a client that reads no body after a
    205 finds the next response where it starts."""

    def app(environ, start_response):
        start_response("205 Reset Content", [("X-Status", "205")])
        body = [b"this must not be sent"]
        return iter(body) if streamed else body

    live = serve(app)
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(build_request("POST", "/") + build_request("POST", "/again"))
        for _ in range(2):
            response = reader.read()
            assert response.status == 205
            assert response.get("content-length") == "0"
            assert not response.has("transfer-encoding")
            assert response.body == b""


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_bodyless_statuses_from_a_valid_streaming_app(serve, status):
    def app(environ, start_response):
        start_response(status, [])
        return iter([])

    live = serve(validated(app))
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(build_request("GET", "/") + build_request("GET", "/"))
        for _ in range(2):
            response = reader.read()
            assert response.status == int(status[:3])
            assert not response.has("transfer-encoding")


# --- Date, Server and response framing ------------------------------------------------------


def test_date_and_server_are_added(serve):
    live = serve(validated(hello_app))
    response = exchange(live, build_request("GET", "/"))
    assert len(response.all("date")) == 1
    assert IMF_FIXDATE.fullmatch(response.get("date"))
    assert len(response.all("server")) == 1
    assert response.get("server").startswith("wsgipool")


def test_date_and_server_from_the_app_are_kept(serve):
    def app(environ, start_response):
        start_response(
            "200 OK",
            [
                ("Content-Type", "text/plain"),
                ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
                ("SERVER", "custom/1.0"),
            ],
        )
        return [b"x"]

    live = serve(validated(app))
    response = exchange(live, build_request("GET", "/"))
    assert response.all("date") == ["Sun, 06 Nov 1994 08:49:37 GMT"]
    assert response.all("server") == ["custom/1.0"]


def test_http11_without_a_length_is_chunked_and_kept(serve):
    live = serve(validated(stream_app))
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(build_request("GET", "/"))
        response = reader.read()
        assert response.get("transfer-encoding") == "chunked"
        assert not response.has("content-length")
        assert response.body == b"one two three"
        assert "close" not in response.connection_tokens
        sock.sendall(build_request("GET", "/"))
        assert reader.read().body == b"one two three"


def test_http10_without_a_length_is_close_delimited(serve):
    live = serve(validated(stream_app))
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(build_request("GET", "/", version="HTTP/1.0"))
        response = reader.read()
        assert not response.has("transfer-encoding")
        assert not response.has("content-length")
        assert response.body == b"one two three"
        assert reader.eof


def test_a_one_item_list_gets_a_content_length(serve):
    def app(environ, start_response):  # not validated: the validator hides the list
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"all at once"]

    live = serve(app)
    with live.connect() as sock:
        reader = ResponseReader(sock)
        for version in ("HTTP/1.1", "HTTP/1.0"):
            sock.sendall(build_request("GET", "/", {"Connection": "keep-alive"}, version=version))
            response = reader.read()
            assert response.get("content-length") == "11"
            assert not response.has("transfer-encoding")
            assert response.body == b"all at once"


def test_never_more_bytes_than_the_apps_content_length(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return iter([b"012", b"3456789", b"more"])

    live = serve(validated(app))
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(build_request("GET", "/") + build_request("GET", "/"))
        for _ in range(2):
            response = reader.read()
            assert response.get("content-length") == "5"
            assert response.body == b"01234"


def test_fewer_bytes_than_the_content_length_closes(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "10")])
        return iter([b"abc"])

    live = serve(validated(app))
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(build_request("GET", "/") + build_request("GET", "/"))
        response = reader.read(allow_truncated=True)
        assert not response.complete
        assert response.body == b"abc"
        assert reader.eof


# --- bad requests -----------------------------------------------------------------------------

AFTER = build_request("GET", "/after")


def head_with_fields(count: int, size: int) -> bytes:
    fields = [(f"X-Field-{i}", "v" * size) for i in range(count)]
    return build_request("GET", "/", fields)


BAD_REQUESTS = [
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n", 400, {}, id="bare-LF-in-head"),
    pytest.param(
        b"GET / HTTP/1.1\nHost: x\n\n",
        400,
        {"header_timeout": 2.0},
        id="bare-LF-line-endings-then-a-CRLF-request",
    ),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\rX-A: b\r\n\r\n", 400, {}, id="bare-CR"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400, {}, id="NUL-in-value"),
    pytest.param(
        build_request("POST", "/", [("Transfer-Encoding", "chunked"), ("Content-Length", "5")])
        + b"0\r\n\r\n",
        400,
        {},
        id="TE-and-CL",
    ),
    pytest.param(build_request("POST", "/", {"Content-Length": "abc"}), 400, {}, id="CL-abc"),
    pytest.param(build_request("POST", "/", {"Content-Length": "-1"}), 400, {}, id="CL-negative"),
    pytest.param(build_request("POST", "/", {"Content-Length": "+5"}), 400, {}, id="CL-plus"),
    pytest.param(build_request("POST", "/", {"Content-Length": "1, 2"}), 400, {}, id="CL-list"),
    pytest.param(
        build_request("POST", "/", [("Content-Length", "3"), ("Content-Length", "4")]) + b"abcd",
        400,
        {},
        id="CL-twice",
    ),
    pytest.param(build_request("GET", "/", host=None), 400, {}, id="missing-Host"),
    pytest.param(
        build_request("GET", "/", [("Host", "a"), ("Host", "b")]), 400, {}, id="two-Hosts"
    ),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400, {}, id="obs-fold"),
    pytest.param(b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400, {}, id="space-before-colon"),
    pytest.param(b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400, {}, id="space-in-target"),
    pytest.param(b"GET /a#frag HTTP/1.1\r\nHost: x\r\n\r\n", 400, {}, id="fragment"),
    pytest.param(b"GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400, {}, id="bad-percent"),
    pytest.param(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505, {}, id="HTTP/2.0"),
    pytest.param(build_request("GET", "/", {"Expect": "magic"}), 417, {}, id="Expect-unknown"),
    pytest.param(
        build_request("POST", "/", {"Transfer-Encoding": "gzip, chunked"}) + b"0\r\n\r\n",
        501,
        {},
        id="TE-gzip",
    ),
    pytest.param(
        build_request("POST", "/", {"Transfer-Encoding": "chunked"}, version="HTTP/1.0")
        + b"0\r\n\r\n",
        400,
        {},
        id="TE-in-HTTP/1.0",
    ),
    pytest.param(
        build_request("POST", "/?read", {"Transfer-Encoding": "chunked"})
        + b"zz\r\nab\r\n0\r\n\r\n",
        400,
        {},
        id="bad-chunk-size",
    ),
    pytest.param(build_request("GET", "/" + "a" * 9000), 414, {}, id="request-line-too-long"),
    pytest.param(
        build_request("GET", "/" + "a" * 200),
        414,
        {"max_request_line": 100},
        id="request-line-limit",
    ),
    pytest.param(
        head_with_fields(2, 3000), 431, {"max_header_size": 4096}, id="head-over-max-header-size"
    ),
    pytest.param(head_with_fields(90, 800), 431, {}, id="head-over-64KiB-default"),
    pytest.param(head_with_fields(101, 1), 431, {}, id="too-many-fields"),
    pytest.param(head_with_fields(11, 1), 431, {"max_header_count": 10}, id="field-count-limit"),
    pytest.param(
        build_request("POST", "/?read", {"Content-Length": "1000"}),  # the body is never sent
        413,
        {"max_body_size": 100},
        id="Content-Length-over-max-body-size",
    ),
    pytest.param(
        build_request("POST", "/?read", {"Transfer-Encoding": "chunked"})
        + chunked(b"x" * 60, b"y" * 60),
        413,
        {"max_body_size": 100},
        id="chunked-over-max-body-size",
    ),
]


@pytest.mark.parametrize(("data", "status", "options"), BAD_REQUESTS)
def test_bad_request_is_refused_and_the_connection_closed(serve, data, status, options):
    app = PathApp()
    live = serve(validated(app), **options)
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(data + AFTER)
        response = reader.read()
        assert response.status == status, response
        assert "close" in response.connection_tokens
        reader.expect_close()
    assert "/after" not in app.seen, "a request sent after a bad one was answered"


@pytest.mark.parametrize(
    ("data", "status", "options"),
    [
        pytest.param(b"HEAD / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, {}, id="two-hosts"),
        pytest.param(b"HEAD / HTTP/1.1\r\nHost: a\r\nX : b\r\n\r\n", 400, {}, id="bad-field"),
        pytest.param(b"HEAD / HTTP/2.0\r\nHost: a\r\n\r\n", 505, {}, id="version"),
        pytest.param(b"\r\nHEAD / HTTP/1.1\r\n\r\n", 400, {}, id="leading-crlf-no-host"),
        pytest.param(b"HEAD / HTTP/1.1\nHost: a\n", 400, {}, id="bare-lf-while-incomplete"),
        pytest.param(
            b"HEAD / HTTP/1.1\r\nHost: a\r\nX-A: " + b"a" * 5000,
            431,
            {"max_header_size": 4096},
            id="head-too-large-while-incomplete",
        ),
    ],
)
def test_a_refused_head_request_gets_no_content(serve, data, status, options):
    """RFC 9110 9.3.2: no content in any response to HEAD, also when the request is refused
    before it parsed; the head keeps its Content-Length, as for a GET."""
    live = serve(validated(PathApp()), **options)
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(data)
        response = reader.read("HEAD")
        assert response.status == status, response
        assert "close" in response.connection_tokens
        assert int(response.get("content-length") or 0) > 0
        reader.expect_close()  # and no content before it


def test_head_with_only_bare_lf_line_endings_is_refused(serve):
    # Nothing follows, so no CRLFCRLF ever arrives: the bare LF itself must be refused with
    # 400, not left to run into the header timeout (408).
    app = PathApp()
    live = serve(validated(app), header_timeout=2.0)
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(b"GET / HTTP/1.1\nHost: x\n\n")
        response = reader.read()
        assert response.status == 400, response
        assert "close" in response.connection_tokens
        reader.expect_close()
    assert app.seen == []


def test_chunked_body_with_only_bare_lf_line_endings_is_refused(serve):
    # As for a head: no CRLF ever arrives, so the bare LF itself must be refused with 400,
    # not left to run into the body timeout (408).
    live = serve(validated(PathApp()), body_timeout=2.0)
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(
            build_request("POST", "/?read", {"Transfer-Encoding": "chunked"}) + b"5\nhello\n0\n\n"
        )
        response = reader.read()
        assert response.status == 400, response
        assert "close" in response.connection_tokens
        reader.expect_close()


def test_body_over_the_limit_is_refused_before_it_is_read(serve):
    # The client sends the head only and waits: the answer must come from Content-Length.
    app = PathApp()
    live = serve(validated(app), max_body_size=1024)
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(build_request("PUT", "/?read", {"Content-Length": str(10 * 1024 * 1024)}))
        response = reader.read()
        assert response.status == 413
        assert "close" in response.connection_tokens
        reader.expect_close()
    assert app.seen == []


def test_body_at_the_limit_is_accepted(serve):
    live = serve(validated(PathApp()), max_body_size=100)
    response = exchange(live, build_request("POST", "/?read", body=b"z" * 100))
    assert response.status == 200
    assert response.body == b"POST / " + b"z" * 100


def test_server_keeps_serving_after_bad_requests(serve):
    live = serve(validated(hello_app), threads=2)
    for param in BAD_REQUESTS[:12]:
        data, _, options = param.values
        if options:
            continue
        with live.connect() as sock:
            sock.sendall(data)
            ResponseReader(sock).read()
    assert live.server.alive_workers == 2
    assert exchange(live, build_request("GET", "/")).body == b"Hello, World!"


# --- Unix socket ------------------------------------------------------------------------------


class TestUnixSocket:
    def test_keep_alive_and_pipelining(self, serve, tmp_path):
        app = PathApp()
        live = start_unix(serve, tmp_path, validated(app))
        assert live.unix_path == str(tmp_path / "s.sock")
        with live.connect() as sock:
            assert sock.family == socket.AF_UNIX
            reader = ResponseReader(sock)
            sock.sendall(
                build_request("GET", "/1")
                + build_request("POST", "/2?read", body=b"body")
                + build_request("GET", "/3")
            )
            assert [reader.read().body for _ in range(3)] == [b"GET /1", b"POST /2 body", b"GET /3"]
            sock.sendall(build_request("GET", "/4", {"Connection": "close"}))
            assert "close" in reader.read().connection_tokens
            reader.expect_close()

    @pytest.mark.parametrize(("scheme", "port"), [("http", "80"), ("https", "443")])
    def test_environ_has_no_peer_address(self, serve, tmp_path, scheme, port):
        seen = []

        def app(environ, start_response):
            seen.append({k: v for k, v in environ.items() if "." not in k})
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]

        live = serve(validated(app), bind=("unix:" + str(tmp_path / "s.sock"),), url_scheme=scheme)
        response = exchange(live, build_request("GET", "/p?q=1"))
        assert response.status == 200
        (environ,) = seen
        assert environ["REMOTE_ADDR"] == ""
        assert environ["PATH_INFO"] == "/p"
        assert environ["QUERY_STRING"] == "q=1"
        assert environ["HTTP_HOST"] == "x"
        # PEP 3333: SERVER_NAME and SERVER_PORT are never empty. A Unix socket has no
        # port: the scheme's default stands for it (as gunicorn's).
        assert environ["SERVER_NAME"] == live.unix_path
        assert environ["SERVER_PORT"] == port

    def test_socket_path_beyond_ascii_is_a_wsgi_string(self, serve, tmp_path):
        """PEP 3333: no environ string holds a code point above U+00FF; SERVER_NAME is the
        socket path's bytes, one code point each."""
        seen = []

        def app(environ, start_response):
            seen.append(environ["SERVER_NAME"])
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]

        path = tmp_path / "\u65e5\u00e9.sock"
        live = serve(validated(app), bind=(f"unix:{path}",))
        assert exchange(live, build_request("GET", "/")).status == 200
        assert seen == [os.fsencode(path).decode("latin-1")]

    def test_chunked_upload_with_100_continue(self, serve, tmp_path):
        def app(environ, start_response):
            assert "CONTENT_LENGTH" not in environ
            digest = hashlib.sha256(environ["wsgi.input"].read(-1)).hexdigest().encode()
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [digest]

        live = start_unix(serve, tmp_path, validated(app))
        parts = [bytes([i]) * 5000 for i in range(20)]
        with live.connect() as sock:
            reader = ResponseReader(sock)
            sock.sendall(
                build_request(
                    "POST", "/", {"Transfer-Encoding": "chunked", "Expect": "100-continue"}
                )
            )
            assert reader.read().status == 100
            sock.sendall(chunked(*parts))
            response = reader.read()
            assert response.get("transfer-encoding") == "chunked"
            assert response.body == hashlib.sha256(b"".join(parts)).hexdigest().encode()

    def test_file_wrapper(self, serve, tmp_path):
        path = tmp_path / "data.bin"
        data = bytes(range(256)) * 400
        path.write_bytes(data)

        def app(environ, start_response):
            f = open(path, "rb")  # noqa: SIM115 -- closed by the server via the wrapper
            f.seek(256)
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return environ["wsgi.file_wrapper"](f)

        live = start_unix(serve, tmp_path, app)
        with live.connect() as sock:
            reader = ResponseReader(sock)
            sock.sendall(build_request("GET", "/") + build_request("GET", "/"))
            for _ in range(2):
                response = reader.read()
                assert response.body == data[256:]

    def test_bad_request(self, serve, tmp_path):
        app = PathApp()
        live = start_unix(serve, tmp_path, validated(app))
        with live.connect() as sock:
            reader = ResponseReader(sock)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n" + AFTER)
            response = reader.read()
            assert response.status == 400
            assert "close" in response.connection_tokens
            reader.expect_close()
        assert app.seen == []

    def test_streaming_response(self, serve, tmp_path):
        live = start_unix(serve, tmp_path, validated(stream_app))
        response = exchange(live, build_request("GET", "/"))
        assert response.get("transfer-encoding") == "chunked"
        assert response.body == b"one two three"


# --- concurrency and clients that go away ---------------------------------------------------


def test_requests_run_concurrently_on_the_worker_threads(serve):
    barrier = threading.Barrier(4, timeout=10)

    def app(environ, start_response):
        barrier.wait()  # only passes once four requests are in the app at the same time
        body = threading.current_thread().name.encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    live = serve(validated(app), threads=4)
    socks = [live.connect() for _ in range(4)]
    try:
        for sock in socks:
            sock.sendall(build_request("GET", "/"))
        names = {ResponseReader(sock).read().body for sock in socks}
    finally:
        for sock in socks:
            sock.close()
    assert len(names) == 4


def test_client_reset_mid_request_head_does_not_cost_a_worker(serve):
    live = serve(validated(hello_app), threads=2)
    for _ in range(10):
        sock = live.connect()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(b"GET / HTTP/1.1\r\nHost")
        sock.close()  # RST
    wait_for(lambda: live.server.connection_count == 0)
    assert live.server.alive_workers == 2
    assert exchange(live, build_request("GET", "/")).body == b"Hello, World!"
