"""A lingering close: after an early error response (413 before the body is read), the
server half-closes and drops what the client still sends, on the listener thread, so a
client that sends its whole body before reading still gets its response."""

from __future__ import annotations

import http.client
import socket
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.helpers.http import ResponseReader
from tests.helpers.live import Live
from tests.helpers.waiting import wait_for
from wsgipool import listener as listener_module

LIMIT = 64 * 1024
UPLOAD = 32 * 1024 * 1024


def read_body_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"read %d" % len(body)]


def states(live: Live) -> tuple[int, int]:
    """(owned by a worker, watched by the listener): lingering ones are watched."""
    return live.server._listener.connection_states()  # type: ignore[union-attr]


def start_lingering(live: Live) -> socket.socket:
    """A client that announces a body far over the limit, sends some of it and reads the
    413, without closing: its connection lingers."""
    sock = live.connect()
    sock.sendall(
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % UPLOAD + b"x" * LIMIT
    )
    response = ResponseReader(sock).read("POST")
    assert response.status == 413
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed ``sock`` for good: a byte sent to it meets a reset."""
    try:
        sock.sendall(b"x")
    except OSError:
        return True
    return False


POLLERS = pytest.mark.parametrize("poller", ["epoll", "selectors"])


@POLLERS
def test_client_sending_its_whole_body_first_gets_the_413(serve, poller):
    # http.client sends all 32 MB before it reads: the server must drop them all rather
    # than close over them (the reset would destroy the 413 the client has not read).
    live = serve(read_body_app, max_body_size=LIMIT, threads=1, poller=poller)
    client = http.client.HTTPConnection(live.host, live.port, timeout=30)
    try:
        client.request("POST", "/upload", body=b"x" * UPLOAD)
        response = client.getresponse()
        assert response.status == 413
        assert response.read().startswith(b"413 ")
    finally:
        client.close()


@POLLERS
def test_lingering_holds_no_worker_and_counts_as_a_connection(serve, poller):
    live = serve(read_body_app, max_body_size=LIMIT, threads=1, poller=poller)
    lingering = start_lingering(live)
    try:
        sent = 0
        # It keeps sending; meanwhile the one worker serves someone else.
        for _ in range(20):
            lingering.sendall(b"x" * LIMIT)
            sent += LIMIT
        client = http.client.HTTPConnection(live.host, live.port, timeout=30)
        client.request("POST", "/", body=b"hello")
        assert client.getresponse().read() == b"read 5"
        client.close()
        wait_for(lambda: states(live) == (0, 1), "the lingering connection alone, watched")
    finally:
        lingering.close()
    wait_for(lambda: states(live) == (0, 0), "the lingering connection closed at the EOF")


def test_a_client_that_never_stops_trickling_is_closed(serve, monkeypatch):
    monkeypatch.setattr(listener_module, "LINGER_TIME", 1.0)
    live = serve(read_body_app, max_body_size=LIMIT, threads=1)
    with start_lingering(live) as lingering:
        wait_for(lambda: closed_by_server(lingering), "the server to close the trickler")
    wait_for(lambda: states(live) == (0, 0), "the lingering connection gone")


def test_a_quiet_lingering_client_is_closed(serve, monkeypatch):
    monkeypatch.setattr(listener_module, "LINGER_IDLE", 0.2)
    live = serve(read_body_app, max_body_size=LIMIT, threads=1)
    with start_lingering(live):
        wait_for(lambda: states(live) == (0, 0), "the quiet lingering connection closed")


def test_lingering_connections_count_toward_max_connections(serve):
    live = serve(read_body_app, max_body_size=LIMIT, max_connections=1)
    lingering = start_lingering(live)
    wait_for(lambda: states(live) == (0, 1), "the lingering connection registered")
    # The server is full: this client waits in the backlog until the lingering one goes.
    client = http.client.HTTPConnection(live.host, live.port, timeout=30)
    client.connect()
    # The lingering connection fills the server: this one is not accepted.
    assert live.server._listener.connection_count() == 1  # type: ignore[union-attr]
    lingering.close()
    client.request("GET", "/")
    assert client.getresponse().status == 200
    client.close()


@pytest.mark.parametrize("trickling", [False, True])
def test_shutdown_closes_lingering_connections(serve, monkeypatch, trickling):
    # Far limits: only the shutdown may close it. A quiet one is closed by the drain like
    # an idle connection (a clean drain); one still sending, when the graceful timeout
    # ends (or, should the test thread stall, by the drain).
    monkeypatch.setattr(listener_module, "LINGER_IDLE", 600.0)
    monkeypatch.setattr(listener_module, "LINGER_TIME", 600.0)
    live = serve(read_body_app, max_body_size=LIMIT, threads=1)
    with start_lingering(live) as lingering:
        wait_for(lambda: states(live) == (0, 1), "the lingering connection registered")
        if trickling:
            with ThreadPoolExecutor(1) as pool:
                stopped = pool.submit(live.server.stop, timeout=1.0)
                # Each check sends a byte: the connection never goes quiet.
                wait_for(lambda: closed_by_server(lingering) and stopped.done(), "the stop")
                stopped.result()
        else:
            assert live.server.stop(timeout=30.0) is True
            wait_for(lambda: closed_by_server(lingering), "the lingering connection closed")
