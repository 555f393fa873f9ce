"""Response integrity: every mix of PEP 3333 features an application may use gives one whole,
correctly framed response, and the connection goes on (or closes) exactly as announced.

Each request is followed by a pipelined second one on the same connection: a response that
is framed wrong swallows it, or shows up inside it. Apps run bare here, not under
``wsgiref.validate``, which wraps the iterable and so never reaches the list and file fast
paths; a few cases run under it too.
"""

from __future__ import annotations

import io
import itertools
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from tests.helpers.apps import validated
from tests.helpers.http import HTTPResponse, ResponseReader, build_request, chunked
from tests.helpers.waiting import wait_for

NEXT = build_request("GET", "/next")
DEADLINE = 10.0


def next_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes] | None:
    """Answers the pipelined /next request; None for any other path."""
    if environ["PATH_INFO"] != "/next":
        return None
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
    return [b"next"]


def with_next(app: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        return next_app(environ, start_response) or app(environ, start_response)

    return wrapper


def assert_next_is_served(reader: ResponseReader) -> None:
    response = reader.read()
    assert (response.status, response.body) == (200, b"next"), response


def answer_then_next(live: Any, request: bytes, method: str = "GET") -> HTTPResponse:
    """Send ``request`` and a pipelined /next on one connection; return the answer to the
    first after checking that /next was served behind it."""
    with live.connect() as sock:
        sock.settimeout(DEADLINE)
        sock.sendall(request + NEXT)
        reader = ResponseReader(sock)
        response = reader.read(method)
        assert_next_is_served(reader)
    return response


# --- every mix of write(), the returned iterable and file_wrapper ---------------------------

FILE_DATA = bytes(range(256)) * 400  # 102,400 bytes


def make_result(kind: str, environ: dict[str, Any], parts: list[bytes]) -> Iterable[bytes]:
    """The body ``parts`` returned as ``kind`` of iterable."""
    if kind == "list":
        return list(parts)
    if kind == "tuple":
        return tuple(parts)
    if kind == "generator":
        return (part for part in parts)
    if kind == "file_wrapper_bytesio":
        return environ["wsgi.file_wrapper"](io.BytesIO(b"".join(parts)), 8192)
    raise AssertionError(kind)


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(FILE_DATA)
    return path


WRITES = {"none": [], "empty": [b""], "one": [b"written;"], "two": [b"w1;", b"w2;"]}
RESULTS = {
    "empty-list": ("list", []),
    "one-item-list": ("list", [b"returned"]),
    "one-item-tuple": ("tuple", [b"returned"]),
    "two-item-list": ("list", [b"ret", b"urned"]),
    "generator": ("generator", [b"gen", b"", b"erated"]),
    "bytesio-wrapper": ("file_wrapper_bytesio", [b"from a BytesIO"]),
}


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
@pytest.mark.parametrize("with_length", [False, True], ids=["no-length", "content-length"])
@pytest.mark.parametrize("writes", list(WRITES), ids=[f"write-{w}" for w in WRITES])
@pytest.mark.parametrize("result", list(RESULTS))
def test_write_and_result_mixes(serve, method, version, with_length, writes, result):
    """write() in any amount, then any kind of iterable: one whole response, the next
    request served (HTTP/1.1) or an orderly close (HTTP/1.0, no Content-Length)."""
    kind, parts = RESULTS[result]
    written = WRITES[writes]
    expected = b"".join(written) + b"".join(parts)

    def app(environ, start_response):
        headers = [("Content-Type", "application/octet-stream")]
        if with_length:
            headers.append(("Content-Length", str(len(expected))))
        write = start_response("200 OK", headers)
        for data in written:
            write(data)
        return make_result(kind, environ, parts)

    live = serve(with_next(app))
    keep_alive = {"Connection": "keep-alive"} if version == "HTTP/1.0" else {}
    with live.connect() as sock:
        sock.settimeout(DEADLINE)
        sock.sendall(
            build_request(method, "/", keep_alive, version=version)
            + build_request("GET", "/next", keep_alive, version=version)
        )
        reader = ResponseReader(sock)
        response = reader.read(method)
        assert response.status == 200, response
        assert b"HTTP/1.1" not in response.body
        if method == "HEAD":
            assert response.body == b""
            length = response.get("content-length")
            assert length is None or int(length) == len(expected), response
            assert response.get("transfer-encoding") is None, response
        else:
            assert response.body == expected, response
        if "close" in response.connection_tokens or (
            version == "HTTP/1.0" and "keep-alive" not in response.connection_tokens
        ):
            reader.expect_close()
        else:
            assert_next_is_served(reader)


@pytest.mark.parametrize("writes", list(WRITES), ids=[f"write-{w}" for w in WRITES])
@pytest.mark.parametrize("sendfile", ["on", "off"])
@pytest.mark.parametrize("with_length", [False, True], ids=["no-length", "content-length"])
def test_file_wrapper_after_write_follows_what_was_written(
    serve, data_file, writes, sendfile, with_length
):
    """write() then wsgi.file_wrapper(real file): the file follows what was written, in the
    framing already chosen (it was dropped: 0 of 100,000 bytes)."""
    written = WRITES[writes]
    expected = b"".join(written) + FILE_DATA

    def app(environ, start_response):
        headers = [("Content-Type", "application/octet-stream")]
        if with_length:
            headers.append(("Content-Length", str(len(expected))))
        write = start_response("200 OK", headers)
        for data in written:
            write(data)
        return environ["wsgi.file_wrapper"](open(data_file, "rb"))

    live = serve(with_next(app), sendfile=sendfile)
    response = answer_then_next(live, build_request("GET", "/"))
    assert response.status == 200
    assert len(response.body) == len(expected)
    assert response.body == expected


def test_write_then_one_item_list_under_the_validator(serve):
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"first ")
        return [b"second"]

    live = serve(with_next(validated(app)))
    assert answer_then_next(live, build_request("GET", "/")).body == b"first second"


# --- a kept write() callable ----------------------------------------------------------------


def test_write_kept_past_its_response_raises_and_sends_nothing(serve):
    """A write callable used after its response ended must not put bytes on the socket:
    on a kept-alive connection they would land inside a later response."""
    kept: list[Callable[[bytes], None]] = []
    errors: list[BaseException] = []

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/first":
            write = start_response("200 OK", [("Content-Length", "5")])
            kept.append(write)
            return [b"first"]
        try:
            kept[0](b"INJECTED")
        except Exception as exc:
            errors.append(exc)
        start_response("200 OK", [("Content-Length", "6")])
        return [b"second"]

    live = serve(app, threads=1)
    with live.connect() as sock:
        sock.settimeout(DEADLINE)
        reader = ResponseReader(sock)
        sock.sendall(build_request("GET", "/first"))
        assert reader.read().body == b"first"
        sock.sendall(build_request("GET", "/second"))
        response = reader.read()
        assert response.body == b"second"
        assert b"INJECTED" not in response.body + reader.buf
    assert len(errors) == 1
    assert isinstance(errors[0], RuntimeError), errors


def test_write_from_close_raises(serve):
    """close() runs after the response ended: a write() from there raises too."""
    errors: list[BaseException] = []

    class Body:
        def __init__(self, write):
            self.write = write

        def __iter__(self):
            yield b"body"

        def close(self):
            try:
                self.write(b"late")
            except Exception as exc:
                errors.append(exc)

    def app(environ, start_response):
        return Body(start_response("200 OK", [("Content-Length", "4")]))

    live = serve(with_next(app))
    assert answer_then_next(live, build_request("GET", "/")).body == b"body"
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)


# --- 100 Continue ---------------------------------------------------------------------------


def test_no_100_continue_once_the_response_started(serve):
    """write() first, then read wsgi.input of an Expect: 100-continue request: a 1xx may
    only precede the final head (RFC 9110 15.2), so none is sent; the connection closes as
    the head said it would."""
    read_back: list[bytes] = []

    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"started;")
        data = environ["wsgi.input"].read()
        read_back.append(data)
        return [b"read:" + data]

    live = serve(app)
    with live.connect() as sock:
        sock.settimeout(DEADLINE)
        sock.sendall(build_request("POST", "/", {"Content-Length": "5", "Expect": "100-continue"}))
        reader = ResponseReader(sock)
        status_line, headers = reader.read_head()
        assert status_line.startswith(b"HTTP/1.1 200"), status_line
        assert ("Connection", "close") in headers
        # The client gives up waiting for 100 Continue and sends the body anyway.
        sock.sendall(b"hello")
        rest = b""
        while not rest.endswith(b"0\r\n\r\n"):
            reader._fill()
            rest, reader.buf = rest + reader.buf, b""
        assert b"HTTP/1.1 100" not in rest
        assert b"read:hello" in rest
        reader.expect_close()
    assert read_back == [b"hello"]


def test_100_continue_still_precedes_the_head(serve):
    def app(environ, start_response):
        data = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Length", str(len(data)))])
        return [data]

    live = serve(app)
    with live.connect() as sock:
        sock.settimeout(DEADLINE)
        sock.sendall(build_request("POST", "/", {"Content-Length": "5", "Expect": "100-continue"}))
        reader = ResponseReader(sock)
        assert reader.read().status == 100
        sock.sendall(b"hello")
        assert reader.read().body == b"hello"


# --- HEAD and body-less statuses ------------------------------------------------------------


def test_head_of_a_streamed_flask_response_has_no_content_length(serve):
    """werkzeug answers every HEAD with an empty body; a Content-Length: 0 would be a lie
    about the streamed GET (RFC 9110 8.6)."""
    flask = pytest.importorskip("flask")
    app = flask.Flask(__name__)

    @app.route("/stream")
    def stream():
        return flask.Response(part for part in (b"a", b"b", b"c"))

    @app.route("/fixed")
    def fixed():
        return "twelve bytes"

    live = serve(app)
    with live.connect() as sock:
        sock.settimeout(DEADLINE)
        reader = ResponseReader(sock)
        sock.sendall(build_request("HEAD", "/stream"))
        head = reader.read("HEAD")
        assert head.status == 200
        assert head.get("content-length") is None, head
        sock.sendall(build_request("GET", "/stream"))
        assert reader.read().body == b"abc"
        sock.sendall(build_request("HEAD", "/fixed"))
        assert reader.read("HEAD").get("content-length") == "12"


def test_head_with_a_whole_body_says_its_length(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"]

    live = serve(with_next(app))
    head = answer_then_next(live, build_request("HEAD", "/"), "HEAD")
    assert head.get("content-length") == "5"


@pytest.mark.parametrize("body", [[], [b""], [b"ignored"]])
def test_no_content_length_on_204(serve, body, caplog):
    def app(environ, start_response):
        start_response("204 No Content", [("Content-Length", "0"), ("X-Kept", "yes")])
        return body

    live = serve(with_next(app))
    with caplog.at_level(logging.DEBUG, "wsgipool.error"), live.connect() as sock:
        sock.settimeout(DEADLINE)
        sock.sendall(build_request("GET", "/") + NEXT)
        reader = ResponseReader(sock)
        response = reader.read()
        assert response.status == 204
        assert response.get("content-length") is None, response
        assert response.get("x-kept") == "yes"
        assert_next_is_served(reader)
    assert "Content-Length" in caplog.text


def test_error_answer_to_head_has_no_body(serve):
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/next":
            return next_app(environ, start_response)
        raise RuntimeError("boom")

    live = serve(app)
    with live.connect() as sock:
        sock.settimeout(DEADLINE)
        sock.sendall(build_request("HEAD", "/"))
        reader = ResponseReader(sock)
        response = reader.read("HEAD")
        assert response.status == 500
        assert response.get("content-length") is not None
        reader.expect_close()  # nothing after the head: no body bytes


def test_interim_status_from_the_app_is_explained(serve):
    def app(environ, start_response):
        start_response("100 Continue", [])
        return [b""]

    live = serve(app, expose_tracebacks=True)
    with live.connect() as sock:
        sock.settimeout(DEADLINE)
        sock.sendall(build_request("GET", "/"))
        response = ResponseReader(sock).read()
        assert response.status == 500
        assert b"1xx status is interim" in response.body


# --- unread request bodies ------------------------------------------------------------------


def ignore_body(environ, start_response):
    if environ["PATH_INFO"] == "/next":
        return next_app(environ, start_response)
    start_response("200 OK", [("Content-Length", "7")])
    return [b"ignored"]


def test_large_unread_chunked_body_is_announced_as_close(serve):
    """A chunked body over the drain limit that the app leaves unread: the head must say
    Connection: close (the connection cannot be kept), not keep-alive and then an abort."""
    big = chunked(*[b"x" * 65536] * 5)  # 320 KiB, over the 256 KiB drain limit
    live = serve(ignore_body)
    with live.connect() as sock:
        sock.settimeout(DEADLINE)
        sock.sendall(build_request("POST", "/", {"Transfer-Encoding": "chunked"}) + big + NEXT)
        reader = ResponseReader(sock)
        response = reader.read()
        assert response.body == b"ignored"
        assert "close" in response.connection_tokens, response


@pytest.mark.parametrize("split", [False, True], ids=["whole", "body-late"])
def test_small_unread_chunked_body_keeps_the_connection(serve, split):
    live = serve(ignore_body)
    with live.connect() as sock:
        sock.settimeout(DEADLINE)
        head = build_request("POST", "/", {"Transfer-Encoding": "chunked"})
        body = chunked(b"small", b"body")
        if split:
            sock.sendall(head)
        else:
            sock.sendall(head + body + NEXT)
        reader = ResponseReader(sock)
        response = reader.read()
        assert response.body == b"ignored"
        if split:
            # The body had not arrived as the head went out: the server could not know
            # its size, so it closes rather than wait for a body nobody reads.
            assert "close" in response.connection_tokens
        else:
            assert "close" not in response.connection_tokens
            assert_next_is_served(reader)


def test_read_ahead_of_a_chunked_body_is_still_read_by_the_app(serve):
    """The server decodes what has arrived of a chunked body before the head goes out, to
    decide keep-alive; an app that reads the body afterwards still gets all of it."""
    bodies: list[bytes] = []

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/next":
            return next_app(environ, start_response)
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"head;")
        bodies.append(environ["wsgi.input"].read())
        return [b"done"]

    live = serve(app)
    with live.connect() as sock:
        sock.settimeout(DEADLINE)
        sock.sendall(
            build_request("POST", "/", {"Transfer-Encoding": "chunked"})
            + chunked(b"abc", b"def", b"ghi")
            + NEXT
        )
        reader = ResponseReader(sock)
        assert reader.read().body == b"head;done"
        assert_next_is_served(reader)
    assert bodies == [b"abcdefghi"]


# --- failures -------------------------------------------------------------------------------


class AppInterrupt(BaseException):
    pass


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit, AppInterrupt, GeneratorExit])
def test_base_exception_from_the_app_is_a_500(serve, error):
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/next":
            return next_app(environ, start_response)
        raise error("from the app")

    live = serve(app, threads=1)
    with live.connect() as sock:
        sock.settimeout(DEADLINE)
        sock.sendall(build_request("GET", "/"))
        reader = ResponseReader(sock)
        assert reader.read().status == 500
        reader.expect_close()
    with live.connect() as sock:  # and the only worker still serves
        sock.settimeout(DEADLINE)
        sock.sendall(NEXT)
        assert_next_is_served(ResponseReader(sock))
    assert live.server.alive_workers == 1


@pytest.mark.parametrize("error", [SystemExit, KeyboardInterrupt, RuntimeError])
def test_close_raising_after_a_complete_response_keeps_the_connection(serve, error):
    class Body:
        def __iter__(self):
            yield b"complete"

        def close(self):
            raise error("from close()")

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "8")])
        return Body()

    live = serve(with_next(app), threads=1)
    assert answer_then_next(live, build_request("GET", "/")).body == b"complete"


def test_error_after_the_last_content_length_byte_keeps_the_connection(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "8")])
        yield b"complete"
        raise RuntimeError("after the whole body")

    live = serve(with_next(app))
    assert answer_then_next(live, build_request("GET", "/")).body == b"complete"


def test_failure_of_a_close_delimited_body_is_a_reset(serve):
    """HTTP/1.0 without a length: the body ends where the connection does, so a response
    that fails part-way must not end in an orderly close the client takes for its end."""

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"part"
        raise RuntimeError("mid-body")

    live = serve(app)
    with live.connect() as sock:
        sock.settimeout(DEADLINE)
        sock.sendall(build_request("GET", "/", version="HTTP/1.0"))
        received = b""
        with pytest.raises(ConnectionResetError):
            while data := sock.recv(65536):
                received += data
        assert received.endswith(b"part")


# --- code after the last yield --------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_code_after_the_last_yield_runs(serve, method):
    finished = threading.Event()

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/next":
            yield from next_app(environ, start_response) or []
            return
        start_response("200 OK", [("Content-Length", "4")])
        yield b"body"
        yield b"excess, dropped"
        finished.set()

    live = serve(app)
    assert answer_then_next(live, build_request(method, "/"), method).status == 200
    assert finished.wait(DEADLINE)


def test_debugger_traceback_reaches_wsgi_errors(serve):
    """werkzeug's debugger writes the traceback to wsgi.errors after its last yield."""
    pytest.importorskip("werkzeug")
    from wsgipool.integrations.debugger import wrap_debugger

    errors = io.StringIO()

    def failing(environ, start_response):
        raise ValueError("visible in the terminal")

    def app(environ, start_response):
        environ["wsgi.errors"] = errors
        return wrap_debugger(failing, evalex=False)(environ, start_response)

    live = serve(app)
    with live.connect() as sock:
        sock.settimeout(DEADLINE)
        sock.sendall(build_request("GET", "/"))
        response = ResponseReader(sock).read()
        assert response.status == 500
    wait_for(lambda: "visible in the terminal" in errors.getvalue())
    assert "Traceback" in errors.getvalue()


def test_endless_stream_answering_head_is_stopped(serve):
    closed = threading.Event()

    class Endless:
        def __iter__(self):
            return (b"x" * 65536 for _ in itertools.count())

        def close(self):
            closed.set()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        return Endless()

    live = serve(with_next(app))
    assert answer_then_next(live, build_request("HEAD", "/"), "HEAD").status == 200
    assert closed.wait(DEADLINE)
