"""Bounds that hold per transfer, not per call: a body or response that crawls along, a
line of any length read through ``wsgi.input``, the framing of a chunked body, and what
the access log records when a transfer ends early.

Nothing here measures speed. A bound that fails shows as a deadline reached (the server
still waiting on a client it should have dropped), never as a duration compared.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

import pytest

from tests.helpers.http import ResponseReader, build_request, pending
from tests.helpers.live import Live
from tests.helpers.waiting import wait_for
from wsgipool.connection import Budget
from wsgipool.http.errors import ProtocolError
from wsgipool.http.parser import ChunkedBody, FixedLengthBody, Limits
from wsgipool.wsgi import RequestBody

DEADLINE = 20.0


# --- the budget of one transfer -------------------------------------------------------------


def test_budget_bounds_each_wait_by_the_timeout():
    budget = Budget(timeout=2.0)
    assert budget.allowance() == 2.0
    budget.waited, budget.moved = 100.0, 10
    assert budget.allowance() == 2.0  # no rate floor: only each wait is bounded


def test_budget_bounds_the_waits_of_a_whole_transfer_by_the_rate():
    budget = Budget(timeout=2.0, min_rate=500)
    assert budget.allowance() == 2.0
    # A byte moved just before each timeout: the waits add up past the grace period.
    budget.waited, budget.moved = 1.9, 1
    assert budget.allowance() == pytest.approx(2.0 + 1 / 500 - 1.9)
    budget.waited, budget.moved = 2.1, 2
    assert budget.allowance() <= 0
    assert "minimum rate" in budget.describe()
    # A client moving its bytes well above the floor never runs out.
    budget.waited, budget.moved = 60.0, 1_000_000
    assert budget.allowance() == 2.0
    budget.start()
    assert (budget.waited, budget.moved) == (0.0, 0)


def test_budget_says_which_bound_ended_the_transfer():
    budget = Budget(timeout=1.0, min_rate=500)
    # Megabytes moved, then one wait of the whole timeout: no rate problem at all.
    budget.waited, budget.moved = 1.5, 4_000_000
    assert budget.describe() == "nothing moved within 1s"
    # The waits reached what the bytes moved allow: the floor cut it.
    budget.waited, budget.moved = 1.2, 100
    assert "minimum rate" in budget.describe()


# --- request bodies -------------------------------------------------------------------------


def body_echo(environ, start_response):
    if environ["PATH_INFO"] == "/next":
        start_response("200 OK", [("Content-Length", "4")])
        return [b"next"]
    data = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Length", str(len(data)))])
    return [data]


def test_body_trickled_under_each_timeout_is_cut_by_the_rate_floor(serve):
    """One byte well within each --body-timeout, for ever: the minimum rate ends it with
    a 408, and the only worker serves again."""
    live = serve(body_echo, threads=1, body_timeout=1.0)
    with live.connect() as sock:
        sock.settimeout(DEADLINE)
        sock.sendall(build_request("POST", "/", {"Content-Length": "100000"}))
        deadline = time.monotonic() + DEADLINE
        while pending(sock) is None:
            assert time.monotonic() < deadline, "the server still waits on a 1 byte/0.3 s body"
            with contextlib.suppress(OSError):
                sock.sendall(b"x")
            threading.Event().wait(0.3)  # the client's pace: the scenario, not a wait
        response = ResponseReader(sock).read(allow_truncated=True)
        assert response.status == 408, response
    with live.connect() as sock:
        sock.settimeout(DEADLINE)
        sock.sendall(build_request("GET", "/next"))
        assert ResponseReader(sock).read().body == b"next"


def test_body_at_a_real_clients_pace_is_not_cut(serve):
    """The floor is far below any real client: 64 KiB in 16 pieces with pauses between is
    read whole even with a short timeout."""
    live = serve(body_echo, body_timeout=1.0)
    data = bytes(range(256)) * 256
    with live.connect() as sock:
        sock.settimeout(DEADLINE)
        sock.sendall(build_request("POST", "/", {"Content-Length": str(len(data))}))
        for start in range(0, len(data), 4096):
            sock.sendall(data[start : start + 4096])
            threading.Event().wait(0.05)
        assert ResponseReader(sock).read().body == data


def test_min_body_rate_zero_turns_the_floor_off(serve):
    live = serve(body_echo, body_timeout=1.0, min_body_rate=0)
    with live.connect() as sock:
        sock.settimeout(DEADLINE)
        sock.sendall(build_request("POST", "/", {"Content-Length": "8"}))
        for byte in b"trickled":  # 8 waits of 0.3 s: 2.4 s of waiting, each under 1 s
            threading.Event().wait(0.3)
            sock.sendall(bytes([byte]))
        assert ResponseReader(sock).read().body == b"trickled"


def assert_another_client_served(live: Live) -> None:
    """The only worker is free: a GET /next on a connection of its own is answered."""
    with live.connect() as other:
        other.settimeout(DEADLINE)
        other.sendall(build_request("GET", "/next"))
        assert ResponseReader(other).read().body == b"next"


def test_pipelined_bodies_do_not_restart_the_rate_floor(serve):
    """Requests pipelined back to back, each body trickled within --body-timeout and
    within the floor of its own few bytes: the floor holds for the worker's whole turn on
    the connection. Restarted per request, it let a client sending a tiny request every
    0.2 s (far below 500 bytes/s) keep the only worker for ever."""
    live = serve(body_echo, threads=1, body_timeout=1.0)
    head = build_request("POST", "/", {"Content-Length": "2"})
    stop = threading.Event()
    with live.connect() as sock:
        sock.settimeout(DEADLINE)

        def trickle() -> None:
            # Each body's last byte comes with the next request's head and first byte.
            with contextlib.suppress(OSError):
                while not stop.wait(0.2):  # the client's pace: the scenario, not a wait
                    sock.sendall(b"b" + head + b"a")

        sock.sendall(head + b"a")
        trickler = threading.Thread(target=trickle, daemon=True)
        trickler.start()
        try:
            # The worker is on the trickler's connection now.
            assert ResponseReader(sock).read().body == b"ab"
            assert_another_client_served(live)
        finally:
            stop.set()
            trickler.join(DEADLINE)


# --- responses ------------------------------------------------------------------------------

MIB = 1024 * 1024


def test_slow_reader_is_cut_by_the_send_rate_floor(serve):
    """A client that takes a little well within each --send-timeout, for ever, is
    disconnected once it falls below --min-send-rate; the iterable is closed."""
    closed = threading.Event()
    stop_reading = threading.Event()

    class Big:
        def __iter__(self):
            for _ in range(256):
                yield b"x" * MIB

        def close(self):
            closed.set()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", str(256 * MIB))])
        return Big()

    live = serve(app, send_timeout=1.0, min_send_rate=8 * MIB)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.settimeout(DEADLINE)
    sock.connect((live.host, live.port))

    def read_slowly():
        with contextlib.suppress(OSError):
            while not stop_reading.is_set() and sock.recv(1024):
                stop_reading.wait(0.02)  # the client's pace: about 50 KB/s

    reader = threading.Thread(target=read_slowly, daemon=True)
    with sock:
        sock.sendall(build_request("GET", "/"))
        reader.start()
        try:
            assert closed.wait(DEADLINE), "the server still feeds a reader below the floor"
        finally:
            stop_reading.set()
            reader.join(DEADLINE)


def test_pipelined_responses_do_not_restart_the_rate_floor(serve):
    """A client pipelining requests and reading their responses well below
    --min-send-rate, but fast enough that no wait runs out and no one response falls
    below the floor: the floor holds for the worker's whole turn, so the only worker is
    freed. Restarted per response, it kept the worker for ever."""
    piece = b"x" * MIB

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/next":
            start_response("200 OK", [("Content-Length", "4")])
            return [b"next"]
        start_response("200 OK", [("Content-Length", str(len(piece)))])
        return [piece]

    # A floor no loopback reader reaches; each response alone earns 3 s of waiting.
    live = serve(app, threads=1, send_timeout=3.0, min_send_rate=1 << 30)
    stop = threading.Event()
    sock = socket.socket()
    # A fixed receive window keeps the server's waits short and even.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
    sock.settimeout(DEADLINE)
    sock.connect((live.host, live.port))
    with sock:

        def pipeline() -> None:
            requests = build_request("GET", "/") * 100
            with contextlib.suppress(OSError):
                while not stop.is_set():
                    sock.sendall(requests)

        served = threading.Event()

        def read_steadily() -> None:
            with contextlib.suppress(OSError):
                while not stop.is_set() and sock.recv(65536):
                    served.set()
                    stop.wait(0.01)  # the client's pace: about 6 MB/s

        clients = [threading.Thread(target=pipeline, daemon=True)]
        clients.append(threading.Thread(target=read_steadily, daemon=True))
        for client in clients:
            client.start()
        try:
            assert served.wait(DEADLINE)  # the worker is on the pipelining connection
            assert_another_client_served(live)
        finally:
            stop.set()
            with contextlib.suppress(OSError):  # unblock the pipelining client
                sock.shutdown(socket.SHUT_RDWR)
            for client in clients:
                client.join(DEADLINE)


def test_client_reading_nothing_is_dropped_after_the_send_timeout(serve):
    """No byte taken at all: dropped after one --send-timeout, however the kernel's buffers
    fill (short sends used to restart the kernel's timer)."""
    closed = threading.Event()

    class Big:
        def __iter__(self):
            for _ in range(64):
                yield b"x" * MIB

        def close(self):
            closed.set()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", str(64 * MIB))])
        return Big()

    live = serve(app, threads=1, send_timeout=1.0, min_send_rate=0)
    with live.connect() as sink:
        sink.sendall(build_request("GET", "/"))  # and never reads
        assert closed.wait(DEADLINE)


# --- wsgi.input lines -----------------------------------------------------------------------


class PiecewiseConnection:
    """Just enough of a Connection for ``RequestBody``: ``data`` arrives ``piece`` bytes at
    a time, as a client sending small segments makes it."""

    def __init__(self, data: bytes, piece: int) -> None:
        self._data = memoryview(data)
        self._piece = piece
        self._position = 0
        self.buffer = bytearray()

    def recv_wait(self) -> int:
        chunk = self._data[self._position : self._position + self._piece]
        self._position += len(chunk)
        self.buffer += chunk
        return len(chunk)

    def sendall(self, data: bytes) -> None:
        pass


@pytest.mark.timeout(60)
def test_readline_of_a_long_line_is_linear():
    """A 64 MiB line arriving 1 KiB at a time: each piece used to copy the whole line read
    so far (64 Ki copies averaging 32 MiB, minutes of CPU with the GIL held). Linear, it
    takes about a second; the timeout only catches the quadratic case."""
    size = 64 * MIB
    data = b"y" * size + b"\nnext line\n"
    conn = PiecewiseConnection(data, 1024)
    body = RequestBody(conn, FixedLengthBody(len(data)), False, size * 2)  # type: ignore[arg-type]
    line = body.readline()
    assert len(line) == size + 1 and line.endswith(b"y\n")
    assert list(body) == [b"next line\n"]


@pytest.mark.parametrize("size", [None, -1, 0, 1, 7, 100])
def test_readline_pieces_and_limits(size):
    data = b"first line\nsecond, longer line\nno newline at the end"
    for piece in (1, 3, 1024):
        conn = PiecewiseConnection(data, piece)
        body = RequestBody(conn, FixedLengthBody(len(data)), False, 1000)  # type: ignore[arg-type]
        expected = data.splitlines(keepends=True)
        if size is not None and size >= 0:
            # readline(size) cuts lines at size; the rest comes with the next call.
            cut: list[bytes] = []
            for line in expected:
                while size and len(line) > size:
                    cut.append(line[:size])
                    line = line[size:]
                cut.append(line)
            expected = cut if size else []
        lines = []
        while line := body.readline(size):
            lines.append(line)
        assert lines == expected, (size, piece)


def test_read_of_small_pieces_does_not_copy_the_rest_each_time():
    """read(1) over a large decoded piece moves an index; the bytes come out in order."""
    data = bytes(range(256)) * 1024
    conn = PiecewiseConnection(data, len(data))
    body = RequestBody(conn, FixedLengthBody(len(data)), False, len(data))  # type: ignore[arg-type]
    out = bytearray()
    while piece := body.read(7):
        out += piece
    assert out == data


# --- chunked framing ------------------------------------------------------------------------


def drain_response(sock: socket.socket) -> int:
    """The status of the response the server sent (0 when it only closed)."""
    with contextlib.suppress(OSError):
        response = ResponseReader(sock).read(allow_truncated=True)
        return response.status
    return 0


def test_chunk_extensions_count_towards_the_body_limit(serve):
    """25 KB of data in one-byte chunks with 1,000-byte extensions is 25 MB on the wire:
    refused long before, under a 1 MiB limit (it was read whole, the app saw 25 KB)."""
    seen: list[int] = []

    def app(environ, start_response):
        seen.append(len(environ["wsgi.input"].read()))
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    live = serve(app, max_body_size=MIB)
    chunk = b"1;ext=" + b"e" * 1000 + b"\r\nx\r\n"
    with live.connect() as sock:
        sock.settimeout(DEADLINE)
        sock.sendall(build_request("POST", "/", {"Transfer-Encoding": "chunked"}))
        sent = 0
        with contextlib.suppress(OSError):
            for _ in range(25_000):
                sock.sendall(chunk)
                sent += len(chunk)
                if pending(sock) is not None:
                    break
            sock.sendall(b"0\r\n\r\n")
        assert drain_response(sock) in (400, 413)
    assert seen == []


def test_chunk_framing_counts_towards_the_body_limit(serve):
    """max_body_size bounds a chunked body's bytes on the wire, framing included."""
    live = serve(body_echo, max_body_size=1000)
    body = b"".join(b"64\r\n" + b"z" * 100 + b"\r\n" for _ in range(10)) + b"0\r\n\r\n"
    with live.connect() as sock:
        sock.settimeout(DEADLINE)
        sock.sendall(build_request("POST", "/", {"Transfer-Encoding": "chunked"}) + body)
        assert drain_response(sock) == 413


def test_a_chunk_announced_past_the_body_limit_is_refused_before_its_data(serve):
    """A chunk-size over max_body_size is refused as a Content-Length over it is: at once,
    with no data read (the server used to wait for the data and, as none came, answer
    408 after the body timeout; or give the app the body up to the limit)."""
    seen: list[bytes] = []

    def app(environ, start_response):
        stream = environ["wsgi.input"]
        while data := stream.read(10):
            seen.append(data)
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    live = serve(app, max_body_size=1000, body_timeout=DEADLINE * 2)
    with live.connect() as sock:
        sock.settimeout(DEADLINE)
        sock.sendall(
            build_request("POST", "/", {"Transfer-Encoding": "chunked"}) + b"a\r\n0123456789\r\n"
        )
        wait_for(lambda: len(seen) == 1, "the first chunk read")
        sock.sendall(b"100000\r\n" + b"x" * 100)
        response = ResponseReader(sock).read()
        assert response.status == 413
        assert "close" in response.connection_tokens
    assert seen == [b"0123456789"]


def test_many_tiny_chunks_decode_in_one_pass():
    """A read takes every chunk the buffer holds, not one chunk per call."""
    body = b"1\r\na\r\n" * 10_000 + b"0\r\n\r\n"
    decoder = ChunkedBody(Limits())
    buf = bytearray(body)
    data = decoder.read(buf, 1 << 20)
    assert data == b"a" * 10_000
    assert decoder.read(buf, 1 << 20) == b""
    # The last chunk and its (empty) trailer section are the head limit's, not the body's.
    assert decoder.done and decoder.wire_bytes == len(body) - len(b"0\r\n\r\n") and not buf


@pytest.mark.parametrize(
    ("body", "first"),
    [
        (b"5\r\n0\r\n\r\nXXGET /evil HTTP/1.1\r\n\r\n", None),
        (b"1\r\nab\r\n0\r\n\r\n", None),
        (b"3\r\nabc\r\n2\r\nxyZZ", b"abc"),
        (b"3\r\nabc\r\n0\r\nbad trailer\r\n\r\n", b"abc"),
    ],
)
def test_a_framing_error_is_final(body, first):
    """After a framing error every read raises it again: a retry must never read what
    follows the fault as body (data decoded before the fault comes first)."""
    decoder = ChunkedBody(Limits())
    buf = bytearray(body)
    if first is not None:
        assert decoder.read(buf, 1 << 20) == first
    for _ in range(3):
        with pytest.raises(ProtocolError):
            decoder.read(buf, 1 << 20)
    assert not decoder.done


def test_an_empty_chunked_body_counts_nothing():
    decoder = ChunkedBody(Limits())
    buf = bytearray(b"0\r\n\r\n")
    assert decoder.read(buf, 1 << 20) == b""
    assert decoder.done and decoder.wire_bytes == 0


def test_extensions_within_the_allowance_are_fine():
    body = b"".join(b"10;name=value\r\n" + b"d" * 16 + b"\r\n" for _ in range(1000)) + b"0\r\n\r\n"
    decoder = ChunkedBody(Limits())
    buf = bytearray(body)
    assert decoder.read(buf, 1 << 20) == b"d" * 16_000


# --- the access log of transfers that end early ---------------------------------------------


def access_lines(path: Any) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_access_log_keeps_the_status_when_the_client_leaves_mid_body(serve, tmp_path):
    log_path = tmp_path / "access.log"
    client_gone = threading.Event()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"first"
        client_gone.wait(DEADLINE)
        for _ in range(64):  # until the send fails on the closed connection
            yield b"x" * 65536

    live = serve(app, access_log=str(log_path), access_log_format="%(s)s %(B)s")
    with live.connect() as sock:
        sock.settimeout(DEADLINE)
        sock.sendall(build_request("GET", "/"))
        ResponseReader(sock).read_head()
    client_gone.set()
    wait_for(lambda: len(access_lines(log_path)) == 1)
    status, _sent = access_lines(log_path)[0].split()
    assert status == "200"


def test_access_log_counts_the_body_of_a_server_error(serve, tmp_path):
    log_path = tmp_path / "access.log"

    def app(environ, start_response):
        raise RuntimeError("boom")

    live = serve(app, access_log=str(log_path), access_log_format="%(s)s %(b)s")
    with live.connect() as sock:
        sock.settimeout(DEADLINE)
        sock.sendall(build_request("GET", "/"))
        response = ResponseReader(sock).read()
    wait_for(lambda: len(access_lines(log_path)) == 1)
    assert access_lines(log_path) == [f"500 {len(response.body)}"]
    assert len(response.body) == len(b"500 Internal Server Error\n")


# --- found in review --------------------------------------------------------------------------


def test_a_close_delimited_body_cut_off_for_a_slow_reader_ends_in_a_reset(serve):
    """HTTP/1.0, no length: the body ends where the connection does. When the server gives
    up on a reader below --min-send-rate, the client must see a reset, not an orderly close
    it would take for the end of the body."""

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (b"x" * MIB for _ in range(256))

    live = serve(app, send_timeout=0.5, min_send_rate=64 * MIB)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.settimeout(DEADLINE)
    sock.connect((live.host, live.port))
    with sock:
        sock.sendall(build_request("GET", "/", version="HTTP/1.0"))
        received = 0
        with pytest.raises(ConnectionResetError):
            while data := sock.recv(4096):
                received += len(data)
                threading.Event().wait(0.01)  # the client's pace: a slow reader
        assert received < 256 * MIB


def test_timeouts_longer_than_one_poll_can_wait(serve):
    """poll() takes at most INT_MAX ms (24.8 days); a longer --body-timeout must still
    work, not fail the first wait."""
    live = serve(body_echo, body_timeout=30 * 24 * 3600.0, send_timeout=30 * 24 * 3600.0)
    with live.connect() as sock:
        sock.settimeout(DEADLINE)
        sock.sendall(build_request("POST", "/", {"Content-Length": "4"}) + b"ab")
        threading.Event().wait(0.3)  # the client's pace: the server waits for the rest
        sock.sendall(b"cd")
        response = ResponseReader(sock).read()
        assert (response.status, response.body) == (200, b"abcd")


def test_a_slow_endless_stream_answering_head_frees_the_worker(serve):
    """Past the end of a HEAD response the iterable is run on, but for a bounded time: a
    stream yielding a few bytes now and then would otherwise take the worker for ever to
    reach the byte limit."""
    closed = threading.Event()

    class Ticker:
        def __iter__(self):
            while True:
                yield b"tick\n"
                closed.wait(0.05)

        def close(self):
            closed.set()

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/next":
            return body_echo(environ, start_response)
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        return Ticker()

    live = serve(app, threads=1)
    with live.connect() as sock:
        sock.settimeout(DEADLINE)
        sock.sendall(build_request("HEAD", "/") + build_request("GET", "/next"))
        reader = ResponseReader(sock)
        assert reader.read("HEAD").status == 200
        assert reader.read().body == b"next"
    assert closed.is_set()
