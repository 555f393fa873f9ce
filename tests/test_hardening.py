"""Hardening: slow and hostile clients, overload, limits, shutdown, faults and smuggling.

Every test talks to a real server over real sockets. Nothing here measures speed: "served"
means served before a generous deadline, a timeout means the connection is closed before a
deadline well past it, and waits are on conditions (an app counter, an event, a socket
closing), never fixed sleeps. The only deliberate waits are a slow client pacing its bytes
and letting a queued request age past ``queue_timeout``, both of which are the scenario.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import re
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.helpers.apps import hello_app
from tests.helpers.http import ResponseReader, build_request, pending
from tests.helpers.live import Live, exchange
from tests.helpers.process import assert_clean_exit
from tests.helpers.waiting import wait_for

DEADLINE = 10.0  # generous: a loaded 2-core machine; only reached when the server is wrong
CLOSE_DEADLINE = 15.0  # for a 1 s timeout to fire, be swept (every 0.5 s) and be seen


# --- helpers -------------------------------------------------------------------------------


def get(live: Live, path: str = "/", **headers: str) -> Any:
    """One GET on a fresh connection; the parsed response."""
    return exchange(live, build_request("GET", path, headers))


def read_to_close(sock: socket.socket, timeout: float = DEADLINE) -> tuple[bytes, bool]:
    """Everything the server sends until it closes: (bytes, whether it ended with a reset).

    Fails when the connection is still open after ``timeout``."""
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"still open after {timeout}s; received {b''.join(chunks)!r}")
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return b"".join(chunks), True
        except TimeoutError:
            continue  # the loop reports it
        if not data:
            return b"".join(chunks), False
        chunks.append(data)


def set_reset_on_close(sock: socket.socket) -> None:
    """close() sends a TCP RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def status_of(data: bytes) -> int:
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", data)
    assert match, f"not an HTTP/1.1 response: {data[:200]!r}"
    return int(match.group(1))


def head_fields(data: bytes) -> dict[str, str]:
    head = data.partition(b"\r\n\r\n")[0].decode("latin-1")
    fields = {}
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return fields


def text_app(path_log: list[str] | None = None) -> Callable[..., list[bytes]]:
    """An app that answers its PATH_INFO (and records it)."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        path = environ["PATH_INFO"]
        if path_log is not None:
            path_log.append(path)
        body = path.encode()
        start_response(
            "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        )
        return [body]

    return app


def wsgipool_records(caplog: pytest.LogCaptureFixture, above: int = logging.DEBUG) -> list[str]:
    return [
        f"{r.levelname} {r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.name.startswith("wsgipool") and r.levelno > above
    ]


class Trickler(threading.Thread):
    """A slowloris driver: one byte of ``data`` to every connection per round.

    Rounds are bounded by ``len(data)``; ``pause`` is the client's pace between rounds. A
    connection the server closed (send fails) is left alone from then on."""

    def __init__(self, socks: list[socket.socket], data: bytes, pause: float) -> None:
        super().__init__(name="trickler", daemon=True)
        self.socks = socks
        self.data = data
        self.pause = pause
        self.rounds = 0
        self.exhausted = False
        self.dead: set[int] = set()
        self.error: BaseException | None = None
        self.halt = threading.Event()

    def run(self) -> None:
        try:
            for index in range(len(self.data)):
                if self.halt.is_set():
                    return
                byte = self.data[index : index + 1]
                for number, sock in enumerate(self.socks):
                    if number in self.dead:
                        continue
                    try:
                        sock.send(byte)
                    except OSError:
                        self.dead.add(number)
                self.rounds = index + 1
                if self.pause:
                    self.halt.wait(self.pause)
            self.exhausted = True
        except BaseException as exc:  # reported by the test
            self.error = exc

    def stop(self) -> None:
        self.halt.set()
        self.join(DEADLINE)
        assert not self.is_alive()
        assert self.error is None, self.error


def ensure_descriptors(count: int) -> None:
    """Room for ``count`` more descriptors (client and server ends share this process):
    raise the soft limit towards the hard one, or skip."""
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 256
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"needs {wanted} open files; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


@contextlib.contextmanager
def connections(live: Live, count: int) -> Iterator[list[socket.socket]]:
    ensure_descriptors(2 * count)
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            socks.append(live.connect())
        yield socks
    finally:
        for sock in socks:
            sock.close()


# A request head that never ends: far more bytes than any test trickles.
ENDLESS_HEAD = b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 4000


# === 1. slowloris ============================================================================


def test_slowloris_holds_no_worker(serve):
    """500 connections trickle a head byte by byte; 4 workers still serve everyone else."""
    seen: list[str] = []
    live = serve(text_app(seen), threads=4, header_timeout=120, keepalive_timeout=120)
    with connections(live, 500) as slow:
        trickler = Trickler(slow, ENDLESS_HEAD, pause=0.005)
        trickler.start()
        served = 0
        try:
            wait_for(lambda: trickler.rounds >= 2, timeout=DEADLINE)
            # Normal clients keep coming for 20 more rounds of 500 one-byte sends.
            until_round = trickler.rounds + 20
            while trickler.rounds < until_round:
                assert not trickler.exhausted and trickler.is_alive()
                assert served < 10_000, "the trickler is stuck"
                response = get(live, f"/normal{served}")
                assert (response.status, response.body) == (200, f"/normal{served}".encode())
                served += 1
        finally:
            trickler.stop()
        assert not trickler.dead, f"{len(trickler.dead)} slow connections were closed"
        unanswered = [pending(sock) for sock in slow]
        assert all(data is None for data in unanswered), "a slow connection got bytes or a close"
        assert seen == [f"/normal{number}" for number in range(served)]
        assert live.server.connection_count >= 500
        assert live.server.alive_workers == 4


def test_slowloris_is_cut_off_by_header_timeout(serve):
    """header_timeout counts from a head's first byte: trickling does not extend it."""
    seen: list[str] = []
    live = serve(text_app(seen), threads=4, header_timeout=1.0, keepalive_timeout=60)
    with connections(live, 500) as trickled, connections(live, 20) as stalled:
        trickler = Trickler(trickled, ENDLESS_HEAD, pause=0.05)
        trickler.start()
        try:
            for sock in stalled:
                sock.sendall(b"GET /sta")  # a request line started, then nothing more
            stalled_results = [read_to_close(sock, CLOSE_DEADLINE) for sock in stalled]
            trickled_results = [read_to_close(sock, CLOSE_DEADLINE) for sock in trickled]
            # Every trickled connection was closed while its client was still trickling.
            assert not trickler.exhausted
        finally:
            trickler.stop()
    for data, _reset in stalled_results:
        assert status_of(data) == 408, data
        assert head_fields(data).get("connection") == "close", data
    for data, _reset in trickled_results:
        # 408 as a rule; a close alone when the reset for an unread byte beat the response.
        assert data == b"" or status_of(data) == 408, data
    assert seen == []
    assert get(live, "/after").status == 200


def test_a_head_request_that_times_out_gets_a_408_without_content(serve):
    """RFC 9110 9.3.2: the listener's 408 to a HEAD head that never ends has no content."""
    live = serve(text_app(), header_timeout=1.0, keepalive_timeout=60)
    with live.connect() as sock:
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: a\r\n")  # and never the empty line
        data, _reset = read_to_close(sock, CLOSE_DEADLINE)
    assert status_of(data) == 408, data
    assert int(head_fields(data)["content-length"]) > 0
    assert data.endswith(b"\r\n\r\n"), f"content sent in a response to HEAD: {data!r}"


# === 2. idle connections =====================================================================


def test_idle_keep_alive_connection_is_closed_silently(serve):
    # A long header_timeout: only keepalive_timeout can close it before the deadline.
    live = serve(hello_app, keepalive_timeout=1.0, header_timeout=60)
    with live.connect() as sock:
        reader = ResponseReader(sock)
        for _ in range(2):
            sock.sendall(build_request("GET", "/"))
            response = reader.read()
            assert response.status == 200
            assert "close" not in response.connection_tokens
        data, _reset = read_to_close(sock, CLOSE_DEADLINE)
        assert data == b"", f"an idle keep-alive connection got {data!r} before the close"
    wait_for(lambda: live.server.connection_count == 0)


def test_connection_that_never_speaks_is_closed_silently(serve):
    # A long keepalive_timeout: only header_timeout can close it before the deadline.
    live = serve(hello_app, header_timeout=1.0, keepalive_timeout=60)
    with live.connect() as sock:
        data, _reset = read_to_close(sock, CLOSE_DEADLINE)
    assert data == b"", f"a silent connection got {data!r}"
    wait_for(lambda: live.server.connection_count == 0)


# === 3. body_timeout =========================================================================


def test_stalled_body_raises_in_the_app_and_frees_the_worker(serve):
    outcome: list[Any] = []
    entered = threading.Event()

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/upload":
            entered.set()
            try:
                environ["wsgi.input"].read(10)
            except Exception as exc:
                outcome.append(exc)
                raise
            outcome.append("read returned")
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    live = serve(app, threads=1, body_timeout=1.0)
    with live.connect() as stalled, live.connect() as other:
        stalled.sendall(build_request("POST", "/upload", {"Content-Length": "10"}) + b"abc")
        assert entered.wait(DEADLINE)
        # Queued behind the stalled request on the only worker.
        other.sendall(build_request("GET", "/next"))
        data, _reset = read_to_close(stalled, CLOSE_DEADLINE)
        assert data == b"" or status_of(data) == 408, data
        if data:
            assert head_fields(data).get("connection") == "close"
        other.settimeout(DEADLINE)
        response = ResponseReader(other).read()
        assert (response.status, response.body) == (200, b"ok")
    assert len(outcome) == 1
    assert isinstance(outcome[0], OSError), outcome  # wsgi.input raised, no invented EOF
    assert live.server.alive_workers == 1


# === 4. send_timeout =========================================================================

MIB = 1024 * 1024


def test_client_that_never_reads_frees_the_worker_and_closes_the_iterable(serve):
    chunk = b"x" * MIB
    state = {"yielded": 0, "closed": 0}
    closed = threading.Event()

    class Big:
        def __iter__(self):
            for _ in range(64):
                state["yielded"] += 1
                yield chunk

        def close(self):
            state["closed"] += 1
            closed.set()

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/big":
            start_response("200 OK", [("Content-Length", str(64 * MIB))])
            return Big()
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    live = serve(app, threads=1, send_timeout=1.0)
    with live.connect() as sink:
        sink.sendall(build_request("GET", "/big"))  # and never reads
        assert closed.wait(CLOSE_DEADLINE), "the iterable's close() was not called"
        response = get(live, "/next")  # the only worker is free again
        assert (response.status, response.body) == (200, b"ok")
        assert state["closed"] == 1
        # Only what the socket buffers hold was produced, not the whole 64 MiB.
        assert state["yielded"] < 64, state
    assert live.server.alive_workers == 1


# === 5. overload ============================================================================


def blocking_app(seen: list[str], entered: threading.Event, release: threading.Event):
    def app(environ, start_response):
        path = environ["PATH_INFO"]
        seen.append(path)
        if path == "/block":
            entered.set()
            release.wait(30)
        body = path.encode()
        start_response(
            "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        )
        return [body]

    return app


def assert_shed(response: Any) -> None:
    assert response.status == 503, response
    assert response.get("retry-after") is not None, response
    assert "close" in response.connection_tokens, response


@contextlib.contextmanager
def busy_and_queued(
    live: Live, entered: threading.Event, release: threading.Event
) -> Iterator[tuple[socket.socket, socket.socket]]:
    """On a server of one thread and a queue of one (``blocking_app``): one request held in
    the app (/block) and one queued (/queued); the app is released on the way out."""
    try:
        with live.connect() as busy, live.connect() as queued:
            busy.sendall(build_request("GET", "/block"))
            assert entered.wait(DEADLINE)
            queued.sendall(build_request("GET", "/queued"))
            yield busy, queued
    finally:
        release.set()


def test_full_queue_is_answered_503_by_the_listener(serve):
    seen: list[str] = []
    entered, release = threading.Event(), threading.Event()
    live = serve(blocking_app(seen, entered, release), threads=1, queue_limit=1)
    with busy_and_queued(live, entered, release) as (busy, queued):
        for number in range(5):
            with live.connect() as sock:
                sock.sendall(build_request("GET", f"/shed{number}"))
                reader = ResponseReader(sock)
                assert_shed(reader.read())
                reader.expect_close()
        # All answered while the only worker is still blocked: by the listener.
        assert not release.is_set()
        release.set()
        for sock, path in ((busy, b"/block"), (queued, b"/queued")):
            response = ResponseReader(sock).read()
            assert (response.status, response.body) == (200, path)
    for number in range(3):
        # With a queue of one, even the end-of-file of a closed connection takes the slot
        # until a worker reads it: start each request from a server with nothing queued.
        wait_for(lambda: live.server.connection_count == 0)
        assert get(live, f"/after{number}").status == 200
    assert seen == ["/block", "/queued", "/after0", "/after1", "/after2"]


def test_a_shed_head_request_gets_a_503_without_content(serve):
    """RFC 9110 9.3.2: the listener's 503 to a HEAD has no content, whether the request
    was read or is still on the socket."""
    seen: list[str] = []
    entered, release = threading.Event(), threading.Event()
    live = serve(blocking_app(seen, entered, release), threads=1, queue_limit=1)
    with busy_and_queued(live, entered, release):
        for leading in (b"", b"\r\n"):
            with live.connect() as sock:
                sock.sendall(leading + build_request("HEAD", "/shed"))
                reader = ResponseReader(sock)
                response = reader.read("HEAD")
                assert_shed(response)
                assert int(response.get("content-length") or 0) > 0
                reader.expect_close()  # and no content before it


def test_connection_that_has_sent_nothing_is_not_shed(serve):
    """A connection with no request (a browser's preconnect) accepted while the queue is
    full gets no 503: it waits, and is served once it sends a request."""
    seen: list[str] = []
    entered, release = threading.Event(), threading.Event()
    live = serve(blocking_app(seen, entered, release), threads=1, queue_limit=1)
    with busy_and_queued(live, entered, release) as (busy, queued):
        assert_shed(get(live, "/probe"))  # the queue is full
        with live.connect() as idle:
            # Accepted (with a deferred accept: once the kernel stops waiting for its
            # first bytes) and kept: busy, queued and idle.
            wait_for(lambda: live.server.connection_count == 3 or bool(pending(idle)))
            # The listener handles events in order: this one's 503 comes after it
            # has dealt with the idle connection.
            assert_shed(get(live, "/probe"))
            assert pending(idle) is None, f"a connection that sent nothing got {pending(idle)!r}"
            release.set()
            for sock, path in ((busy, b"/block"), (queued, b"/queued")):
                response = ResponseReader(sock).read()
                assert (response.status, response.body) == (200, path)
            idle.sendall(build_request("GET", "/idle"))
            response = ResponseReader(idle).read()
            assert (response.status, response.body) == (200, b"/idle")
    assert seen == ["/block", "/queued", "/idle"]


def test_request_that_waited_past_queue_timeout_is_not_run(serve):
    seen: list[str] = []
    entered, release = threading.Event(), threading.Event()
    live = serve(blocking_app(seen, entered, release), threads=1, queue_limit=1, queue_timeout=0.5)
    with busy_and_queued(live, entered, release) as (busy, queued):
        # A 503 for a probe proves /queued is in the queue (queue_limit=1) by now.
        assert_shed(get(live, "/probe"))
        in_queue_since = time.monotonic()
        # Let /queued wait well past queue_timeout (this wait is the scenario).
        time.sleep(max(0.0, in_queue_since + 1.0 - time.monotonic()))
        release.set()
        response = ResponseReader(busy).read()
        assert (response.status, response.body) == (200, b"/block")
        queued.settimeout(DEADLINE)
        reader = ResponseReader(queued)
        assert_shed(reader.read())
        reader.expect_close()
    assert seen == ["/block"], "the app ran a request that had waited past queue_timeout"
    wait_for(lambda: live.server.connection_count == 0)  # see the test above
    assert get(live, "/after").status == 200


# === 6. max_connections =====================================================================


def test_connection_over_max_connections_waits_until_one_closes(serve):
    live = serve(hello_app, max_connections=5, keepalive_timeout=120, header_timeout=120)
    with connections(live, 5) as five:
        for sock in five:
            sock.sendall(build_request("GET", "/"))
            assert ResponseReader(sock).read().status == 200
        assert live.server.connection_count == 5
        with live.connect() as sixth:  # the kernel completes the handshake (backlog)
            sixth.sendall(build_request("GET", "/"))
            sixth.settimeout(0.3)
            for _ in range(3):  # not answered while five are open
                with pytest.raises(TimeoutError):
                    sixth.recv(1, socket.MSG_PEEK)
            assert live.server.connection_count == 5
            five[0].close()
            sixth.settimeout(DEADLINE)
            response = ResponseReader(sixth).read()
            assert response.status == 200
            assert response.body == b"Hello, World!"


def open_descriptors() -> set[tuple[str, str]]:
    """This process's open descriptors, each with what it is (``socket:[inode]``): one
    opened since is new even when its number was freed and reused."""
    described = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own, closed since
            described.add((fd, os.readlink(f"/proc/self/fd/{fd}")))
    return described


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
def test_a_flood_past_both_limits_leaves_nothing_behind(serve):
    """Three times --max-connections, with the queue overflowing: every client gets a
    200 or a 503 with Retry-After, the server serves again afterwards, and it holds the
    descriptors and threads it held before."""
    release = threading.Event()

    def app(environ, start_response):
        release.wait(DEADLINE)
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    live = serve(app, threads=2, max_connections=20, queue_limit=4)
    descriptors, threads = open_descriptors(), set(threading.enumerate())
    flood: list[socket.socket] = []
    try:
        for _ in range(60):  # the kernel completes those beyond the limit (backlog)
            sock = live.connect(DEADLINE)
            flood.append(sock)
            sock.sendall(build_request("GET", "/"))
        # Both workers wait in the app: what arrives meanwhile is the queue's overflow.
        wait_for(lambda: any(pending(sock) for sock in flood), "a 503 for the overflow")
        release.set()
        responses = [ResponseReader(sock).read() for sock in flood]
    finally:
        release.set()
        for sock in flood:
            sock.close()
    statuses = [response.status for response in responses]
    assert set(statuses) == {200, 503}, statuses
    assert all(r.get("retry-after") == "1" for r in responses if r.status == 503)
    wait_for(lambda: live.server.connection_count == 0)
    assert get(live, "/").status == 200
    # Only new ones count: descriptors of earlier tests (pipes of a subprocess, say) may be
    # closed meanwhile, as the garbage collector gets to them.
    wait_for(lambda: open_descriptors() <= descriptors, "the descriptors to be closed")
    assert set(threading.enumerate()) <= threads


# === 7. graceful shutdown ====================================================================

IN_FLIGHT = 24


class InFlight:
    """An app that holds /slow requests until released, counting those inside."""

    def __init__(self, expected: int) -> None:
        self.lock = threading.Lock()
        self.inside = 0
        self.expected = expected
        self.all_inside = threading.Event()
        self.release = threading.Event()

    def __call__(self, environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            with self.lock:
                self.inside += 1
                if self.inside == self.expected:
                    self.all_inside.set()
            self.release.wait(30)
        body = b"done"
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
        return [body]


def start_in_flight(live: Live, count: int) -> tuple[list[threading.Thread], list[Any]]:
    results: list[Any] = [None] * count

    def client(number: int) -> None:
        try:
            with live.connect(timeout=30) as sock:
                sock.sendall(build_request("GET", "/slow"))
                reader = ResponseReader(sock)
                response = reader.read()
                data, _reset = read_to_close(sock, 30)
                results[number] = (response, reader.buf + data)
        except Exception as exc:  # reported by the test
            results[number] = exc

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(count)]
    for thread in threads:
        thread.start()
    return threads, results


class Stopper(threading.Thread):
    def __init__(self, live: Live) -> None:
        super().__init__(name="stopper", daemon=True)
        self.live = live
        self.result: bool | None = None

    def run(self) -> None:
        self.result = self.live.server.stop()


def test_graceful_stop_finishes_in_flight_requests(serve):
    app = InFlight(IN_FLIGHT)
    live = serve(app, threads=32, keepalive_timeout=120)
    idle = live.connect()
    try:
        idle.sendall(build_request("GET", "/idle"))
        assert ResponseReader(idle).read().status == 200  # now an idle keep-alive connection
        threads, results = start_in_flight(live, IN_FLIGHT)
        assert app.all_inside.wait(DEADLINE), f"only {app.inside} requests reached the app"
        stopper = Stopper(live)
        stopper.start()
        # The idle connection is closed (silently) once the stop begins.
        data, _reset = read_to_close(idle, DEADLINE)
        assert data == b"", data
        assert stopper.is_alive(), "stop() returned with requests in flight"
        app.release.set()
    finally:
        app.release.set()
        idle.close()
    for thread in threads:
        thread.join(30)
    stopper.join(30)
    assert not stopper.is_alive()
    failures = [r for r in results if not isinstance(r, tuple)]
    assert not failures, failures
    assert all(response.status == 200 and response.body == b"done" for response, _ in results)
    assert all(rest == b"" for _, rest in results), "bytes after a final response"
    assert stopper.result is True
    assert live.server.alive_workers == 0
    # Last, as the most specific: the in-flight responses tell the client the end is near.
    missing = sum("close" not in response.connection_tokens for response, _ in results)
    assert missing == 0, f"{missing} of {IN_FLIGHT} in-flight responses lack Connection: close"


def test_a_response_closed_by_the_drain_survives_the_next_request_in_flight(serve):
    """A keep-alive client's next request is on its way (unread) when the server, now
    draining, ends the response in progress with Connection: close. Closing over unread
    bytes makes the kernel reset the connection and drop what of the response it still
    held; the server half-closes and drains them first, so the response arrives whole."""
    size = 4 * 1024 * 1024
    entered, release = threading.Event(), threading.Event()

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            entered.set()
            release.wait(DEADLINE)
        start_response("200 OK", [("Content-Length", str(size))])
        return [b"x" * size]

    live = serve(app, keepalive_timeout=120)
    idle = live.connect()
    sock = socket.socket()
    # A small window: most of the response is still the server's when it closes.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.settimeout(DEADLINE)
    sock.connect((live.host, live.port))
    stopper = Stopper(live)
    try:
        idle.sendall(build_request("GET", "/"))
        assert ResponseReader(idle).read().status == 200  # an idle keep-alive connection
        sock.sendall(build_request("GET", "/slow"))
        assert entered.wait(DEADLINE)
        sock.sendall(build_request("GET", "/next"))  # the worker is in the app: unread
        stopper.start()
        assert read_to_close(idle, DEADLINE)[0] == b""  # the drain has begun
        release.set()
        response = ResponseReader(sock).read()
        assert response.status == 200
        assert "close" in response.connection_tokens
        assert len(response.body) == size, "the response was cut off"
    finally:
        release.set()
        idle.close()
        sock.close()
        stopper.join(DEADLINE)


def test_stop_returns_after_the_graceful_timeout_with_the_app_stuck(serve, caplog):
    """An application stuck far past the graceful timeout does not hold stop() up: its
    connection is shut down and stop() returns, reporting that not all finished. (The
    worker thread stuck in the app is a daemon thread, left behind.)"""
    entered, release = threading.Event(), threading.Event()

    def stuck(environ, start_response):
        entered.set()
        release.wait(60)
        start_response("200 OK", [("Content-Length", "0")])
        return []

    live = serve(stuck, threads=2, graceful_timeout=0.2)
    try:
        with live.connect() as sock:
            sock.sendall(build_request("GET", "/stuck"))
            assert entered.wait(DEADLINE)
            stopper = Stopper(live)
            with caplog.at_level(logging.WARNING, logger="wsgipool.error"):
                stopper.start()
                stopper.join(DEADLINE)  # only reached when stop() hangs
            assert not stopper.is_alive(), "stop() still waits for the stuck application"
            assert stopper.result is False
            assert not release.is_set()
            assert read_to_close(sock, DEADLINE)[0] == b""  # cut off, no response
    finally:
        release.set()
    assert "graceful timeout: closing 1 connection(s) still open" in caplog.text


def test_new_connections_are_refused_once_stop_begins(serve):
    app = InFlight(2)
    live = serve(app, threads=4, keepalive_timeout=120)
    idle = live.connect()
    idle.sendall(build_request("GET", "/idle"))
    assert ResponseReader(idle).read().status == 200
    threads, results = start_in_flight(live, 2)
    stopper = Stopper(live)
    try:
        assert app.all_inside.wait(DEADLINE)
        stopper.start()
        # The stop has begun once it closes the idle keep-alive connection.
        assert read_to_close(idle, DEADLINE)[0] == b""
        assert stopper.is_alive()
        outcome = "refused"
        try:
            sock = socket.create_connection((live.host, live.port), timeout=DEADLINE)
        except ConnectionRefusedError:
            pass
        else:
            with sock:
                try:
                    sock.sendall(build_request("GET", "/new"))
                    sock.settimeout(3.0)
                    data = sock.recv(65536)
                    outcome = "closed" if not data else f"answered {data[:60]!r}"
                except (ConnectionResetError, BrokenPipeError):
                    outcome = "reset"
                except TimeoutError:
                    outcome = "accepted into the backlog and left hanging"
        assert outcome in ("refused", "closed", "reset"), (
            f"a connection made after stop() began was {outcome}"
        )
    finally:
        app.release.set()
        idle.close()
        for thread in threads:
            thread.join(30)
        stopper.join(30)
    assert stopper.result is True
    assert all(isinstance(r, tuple) and r[0].status == 200 for r in results), results


def test_a_connection_handed_back_after_the_listener_stopped_is_closed():
    """A worker that finishes its keep-alive response as the server stops hands the
    connection back to a listener that closes nothing any more: it must be closed then,
    not left open for the life of the process."""
    from wsgipool.config import Config
    from wsgipool.connection import Connection
    from wsgipool.listener import Listener
    from wsgipool.taskqueue import TaskQueue

    config = Config.from_options(bind=["127.0.0.1:0"])
    listener = Listener([], config, TaskQueue(config.queue_limit), threading.Event())
    listener.start()
    ours, client = socket.socketpair()
    conn = Connection(ours, ("127.0.0.1", 1), ("127.0.0.1", 2), config.limits, config.transfer)
    with client:
        listener.stop()
        assert listener.watch(conn, time.monotonic() + 5) is True
        client.settimeout(DEADLINE)
        assert client.recv(1) == b""  # closed, not left open
        assert conn.closed


def test_socket_file_goes_as_the_stop_begins_and_a_successor_keeps_its_own(serve, tmp_path):
    """The Unix socket file is removed when listening stops, not when the drain ends: a
    new server may bind the path meanwhile, and the old one's exit leaves its file be."""
    path = tmp_path / "app.sock"
    app = InFlight(1)
    live = serve(app, bind=(f"unix:{path}",))
    threads, results = start_in_flight(live, 1)
    stopper = Stopper(live)
    try:
        assert app.all_inside.wait(DEADLINE)
        stopper.start()
        wait_for(lambda: not path.exists())
        assert stopper.is_alive()
        successor = serve(hello_app, bind=(f"unix:{path}",))
    finally:
        app.release.set()
        for thread in threads:
            thread.join(30)
        stopper.join(30)
    assert stopper.result is True
    assert isinstance(results[0], tuple) and results[0][0].status == 200, results
    assert path.exists(), "the first server removed its successor's socket file"
    assert get(successor).status == 200


# --- the command line -----------------------------------------------------------------------

SLOW_APP = """\
import sys, time

def app(environ, start_response):
    sys.stderr.write("in-flight %s\\n" % environ["PATH_INFO"])
    sys.stderr.flush()
    time.sleep(float(environ.get("HTTP_X_SLEEP", "1")))
    body = ("done " + environ["PATH_INFO"]).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""
IN_FLIGHT_LINE = re.compile(r"in-flight /")


def cli_slow_app(spawn: Any, tmp_path: Any, *options: str) -> tuple[Any, str, int]:
    (tmp_path / "hardapp.py").write_text(SLOW_APP)
    proc = spawn(["hardapp:app", "--chdir", str(tmp_path), "-b", "127.0.0.1:0", *options])
    (url,) = proc.listening()
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return proc, host, int(port)


def cli_requests(host: str, port: int, count: int, sleep: str) -> tuple[list[Any], list[Any]]:
    results: list[Any] = [None] * count

    def client(number: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=60)
        try:
            conn.request("GET", f"/r{number}", headers={"X-Sleep": sleep})
            response = conn.getresponse()
            results[number] = (response.status, response.read())
        except Exception as exc:  # reported by the test
            results[number] = exc
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(count)]
    for thread in threads:
        thread.start()
    return threads, results


def test_cli_sigterm_finishes_in_flight_requests(spawn, tmp_path):
    proc, host, port = cli_slow_app(spawn, tmp_path, "-t", "8")
    threads, results = cli_requests(host, port, 8, sleep="1")
    for _ in range(8):
        proc.wait_for(IN_FLIGHT_LINE, DEADLINE)
    proc.send(signal.SIGTERM)
    for thread in threads:
        thread.join(30)
    assert results == [(200, f"done /r{n}".encode()) for n in range(8)]
    assert_clean_exit(proc, proc.wait())


def test_cli_second_sigint_stops_at_once(spawn, tmp_path):
    # Neither the app (10 minutes) nor the graceful timeout would end this on their own.
    proc, host, port = cli_slow_app(spawn, tmp_path, "-t", "2", "--graceful-timeout", "600")
    threads, results = cli_requests(host, port, 1, sleep="600")
    proc.wait_for(IN_FLIGHT_LINE, DEADLINE)
    proc.send(signal.SIGINT)
    proc.wait_for(re.compile("shutting down"), DEADLINE)
    proc.send(signal.SIGINT)
    rc = proc.wait(timeout=30)
    assert rc == 0, f"exit code {rc}; stderr: {proc.log!r}"
    assert "Traceback" not in proc.log, proc.log
    assert "second interrupt" in proc.log
    for thread in threads:
        thread.join(DEADLINE)
    assert isinstance(results[0], Exception), results  # the in-flight request was cut off


# === 8. faults ==============================================================================


class Tracked:
    """A response iterable that counts its items and close() calls."""

    def __init__(self, items: Iterator[bytes]) -> None:
        self.items = items
        self.yielded = 0
        self.closes = 0

    def __iter__(self):
        for item in self.items:
            self.yielded += 1
            yield item

    def close(self):
        self.closes += 1


def leave_mid_upload(live: Live, how: str, entered: threading.Event) -> None:
    """Start a 100,000-byte upload with 10 bytes of it, wait for the app to be ``entered``,
    then go away: closing (``fin``) or resetting (``rst``) the connection."""
    sock = live.connect()
    if how == "rst":
        set_reset_on_close(sock)
    sock.sendall(build_request("POST", "/upload", {"Content-Length": "100000"}) + b"0123456789")
    assert entered.wait(DEADLINE)
    sock.close()


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_client_gone_mid_request_body(serve, caplog, how):
    caplog.set_level(logging.DEBUG, logger="wsgipool")
    iterables: list[Tracked] = []
    entered = threading.Event()

    def app(environ, start_response):
        if environ["PATH_INFO"] != "/upload":
            start_response("200 OK", [("Content-Length", "2")])
            return [b"ok"]
        stream = environ["wsgi.input"]

        def body():
            yield stream.read(10)
            entered.set()
            yield stream.read()  # the client goes away here

        start_response("200 OK", [("Content-Type", "text/plain")])
        tracked = Tracked(body())
        iterables.append(tracked)
        return tracked

    live = serve(app, threads=1)
    caplog.clear()
    leave_mid_upload(live, how, entered)
    wait_for(lambda: iterables and iterables[0].closes >= 1)
    wait_for(lambda: live.server.connection_count == 0)
    response = get(live, "/next")
    assert (response.status, response.body) == (200, b"ok")
    assert iterables[0].closes == 1
    assert live.server.alive_workers == 1
    assert wsgipool_records(caplog) == [], "an ordinary disconnect was logged above DEBUG"


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_client_gone_mid_response(serve, caplog, how):
    caplog.set_level(logging.DEBUG, logger="wsgipool")
    iterables: list[Tracked] = []
    piece = b"y" * 65536

    def app(environ, start_response):
        if environ["PATH_INFO"] != "/stream":
            start_response("200 OK", [("Content-Length", "2")])
            return [b"ok"]
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        tracked = Tracked(piece for _ in range(100_000))  # 6 GiB if never stopped
        iterables.append(tracked)
        return tracked

    live = serve(app, threads=1)
    caplog.clear()
    sock = live.connect()
    if how == "rst":
        set_reset_on_close(sock)
    sock.sendall(build_request("GET", "/stream"))
    reader = ResponseReader(sock)
    status_line, _ = reader.read_head()
    assert status_line.startswith(b"HTTP/1.1 200 ")
    reader.read_exactly(100_000)
    sock.close()
    wait_for(lambda: iterables and iterables[0].closes >= 1, timeout=DEADLINE)
    wait_for(lambda: live.server.connection_count == 0)
    response = get(live, "/next")
    assert (response.status, response.body) == (200, b"ok")
    assert iterables[0].closes == 1
    assert iterables[0].yielded < 100_000
    assert live.server.alive_workers == 1
    assert wsgipool_records(caplog) == [], "an ordinary disconnect was logged above DEBUG"


class Unreadable(Exception):
    """What a framework makes of a broken request stream (Django's UnreadablePostError)."""


@pytest.mark.parametrize("how", ["fin", "rst"])
@pytest.mark.parametrize("where", ["body", "write"])
def test_client_gone_behind_an_error_of_the_apps_own(serve, caplog, how, where):
    """An application that turns the disconnect into an exception of its own (reading the
    body, or sending with write()) still had an ordinary disconnect: nothing above DEBUG
    (a reset mid-body used to be logged as an application error, with a traceback)."""
    caplog.set_level(logging.DEBUG, logger="wsgipool")
    failed = threading.Event()
    entered = threading.Event()

    def app(environ, start_response):
        if environ["PATH_INFO"] != "/upload":
            start_response("200 OK", [("Content-Length", "2")])
            return [b"ok"]
        try:
            if where == "body":
                entered.set()
                environ["wsgi.input"].read()  # the client goes away here
            else:
                write = start_response("200 OK", [("Content-Type", "text/plain")])
                write(b"x")
                entered.set()
                for _ in range(100_000):  # 6 GiB if never stopped
                    write(b"y" * 65536)
        except OSError as exc:
            failed.set()
            raise Unreadable(str(exc)) from exc
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    live = serve(app, threads=1)
    caplog.clear()
    leave_mid_upload(live, how, entered)
    assert failed.wait(DEADLINE)
    wait_for(lambda: live.server.connection_count == 0)
    response = get(live, "/next")
    assert (response.status, response.body) == (200, b"ok")
    assert live.server.alive_workers == 1
    assert wsgipool_records(caplog) == [], "an ordinary disconnect was logged above DEBUG"


def test_a_bug_while_handling_a_disconnect_is_still_the_apps_error(serve, caplog):
    """Only an error raised *from* the disconnect is taken for it: one raised while
    handling it, without ``from``, may be a bug of the application's own."""
    caplog.set_level(logging.DEBUG, logger="wsgipool")
    entered = threading.Event()

    def app(environ, start_response):
        try:
            entered.set()
            environ["wsgi.input"].read()  # the client goes away here
        except OSError:
            {}["missing"]  # a bug in the handler
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    live = serve(app, threads=1)
    caplog.clear()
    with live.connect() as sock:
        sock.sendall(build_request("POST", "/", {"Content-Length": "100000"}) + b"0123456789")
        assert entered.wait(DEADLINE)
    wait_for(lambda: wsgipool_records(caplog) != [], "the application's error in the log")
    assert live.server.alive_workers == 1


class CloseRaises:
    def __init__(self, closes: list[int]) -> None:
        self.closes = closes

    def __iter__(self):
        yield b"fine"

    def close(self):
        self.closes.append(1)
        raise RuntimeError("close() failed")


def faulty_app(closes: list[int]) -> Callable[..., Any]:
    def app(environ, start_response):
        kind = environ["PATH_INFO"].strip("/")
        if kind == "raise":
            raise RuntimeError("app failed")
        if kind == "raise-after-start":
            start_response("200 OK", [])
            raise KeyError("after start_response")
        if kind == "close-raises":
            start_response("200 OK", [("Content-Length", "4")])
            return CloseRaises(closes)
        if kind == "mid-stream":

            def stream():
                yield b"first part"
                raise ValueError("generator failed mid-stream")

            start_response("200 OK", [("Content-Type", "text/plain")])
            return stream()
        if kind == "twice":
            start_response("200 OK", [])
            start_response("200 OK", [])
            return [b"x"]
        if kind == "bad-status":
            start_response("200", [])
            return [b"x"]
        if kind == "hop-by-hop":
            start_response("200 OK", [("Connection", "keep-alive")])
            return [b"x"]
        if kind == "no-start":
            return [b"x"]
        if kind == "not-bytes":
            start_response("200 OK", [])
            return ["text"]
        if kind == "none":
            start_response("200 OK", [])
            return None
        if kind == "system-exit":
            raise SystemExit(3)
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    return app


# kind -> what the client sees: a status, or "aborted" (a response cut short).
FAULTS = {
    "raise": 500,
    "raise-after-start": 500,
    "close-raises": 200,
    "mid-stream": "aborted",
    "twice": 500,
    "bad-status": 500,
    "hop-by-hop": 500,
    "no-start": 500,
    "not-bytes": 500,
    "none": 500,
    # BaseException: the worker survives; a 500 or a dropped connection are both fair.
    "system-exit": "500-or-close",
}


def test_app_faults_never_cost_the_pool(serve):
    closes: list[int] = []
    live = serve(faulty_app(closes), threads=4)
    kinds = list(FAULTS)
    wrong = []
    for number in range(1000):
        kind = kinds[number % len(kinds)]
        with live.connect() as sock:
            sock.sendall(build_request("GET", f"/{kind}", {"Connection": "close"}))
            data, _reset = read_to_close(sock)
        expected = FAULTS[kind]
        if expected == "500-or-close":
            ok = data == b"" or status_of(data) == 500
        elif expected == "aborted":
            # Headers went out; the chunked body ends without its last chunk.
            ok = status_of(data) == 200 and not data.endswith(b"0\r\n\r\n")
        else:
            ok = bool(data) and status_of(data) == expected
        if not ok:
            wrong.append((kind, data[:120]))
    assert not wrong, f"{len(wrong)} unexpected answers, e.g. {wrong[:5]}"
    assert len(closes) == sum(1 for n in range(1000) if kinds[n % len(kinds)] == "close-raises")
    assert live.server.alive_workers == 4
    response = get(live, "/fine")
    assert (response.status, response.body) == (200, b"ok")


# === 9. EMFILE on accept =====================================================================

EMFILE_SCRIPT = """\
import logging, os, resource, sys
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
from wsgipool import Server

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]

server = Server(app, bind="127.0.0.1:0", threads=2, keepalive_timeout=120, header_timeout=120)
server.start()

def open_fds():
    fds = []
    for fd in map(int, os.listdir("/proc/self/fd")):
        try:
            os.fstat(fd)
        except OSError:
            continue  # the listing's own descriptor, closed by now
        fds.append(fd)
    return fds

fds = open_fds()
soft = max(max(fds) + 1, len(fds) + {spare})
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
sys.stderr.write("limited: room for %d\\n" % (soft - len(fds)))
sys.stderr.flush()
server.serve_forever()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
def test_accept_emfile_is_logged_once_and_recovers(spawn):
    proc = spawn(command=[sys.executable, "-c", EMFILE_SCRIPT.format(spare=4)])
    (url,) = proc.listening()
    room = int(proc.wait_for(re.compile(r"limited: room for (\d+)"), DEADLINE).group(1))
    host, port = url.removeprefix("http://").rsplit(":", 1)
    address = (host, int(port))
    served: list[socket.socket] = []
    waiting: list[socket.socket] = []
    try:
        for _ in range(room):
            sock = socket.create_connection(address, timeout=DEADLINE)
            served.append(sock)
            sock.sendall(build_request("GET", "/"))
            assert ResponseReader(sock).read().status == 200
        for _ in range(3):  # no descriptor left for these
            sock = socket.create_connection(address, timeout=DEADLINE)
            waiting.append(sock)
            sock.sendall(build_request("GET", "/"))
        proc.wait_for(re.compile(r"accept\(\) failed"), DEADLINE)
        # Let the listener retry several times (it backs off 0.5 s) while still short.
        retry_until = time.monotonic() + 2.0
        while time.monotonic() < retry_until:
            assert proc.popen.poll() is None, proc.log
            assert all(pending(sock) is None for sock in waiting)
            time.sleep(0.1)
        for sock in served:
            sock.close()
        for sock in waiting:
            sock.settimeout(DEADLINE)
            response = ResponseReader(sock).read()
            assert (response.status, response.body) == (200, b"ok")
    finally:
        for sock in served + waiting:
            sock.close()
    proc.send(signal.SIGTERM)
    assert_clean_exit(proc, proc.wait())
    failures = proc.log.count("accept() failed")
    assert failures == 1, f"logged {failures} times: {proc.log!r}"


# === 10. request smuggling over the wire =====================================================

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
_CL_TE_BODY = b"0\r\n\r\n" + SMUGGLED
_TE_CL_BODY = b"%x\r\n%b\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED)

REFUSED_FRAMINGS = {
    "CL.TE": (
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" % len(_CL_TE_BODY)
    )
    + _CL_TE_BODY,
    "TE.CL": (
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"
        + _TE_CL_BODY
    ),
    "TE.TE-obfuscated": (
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: identity\r\n\r\n" + _TE_CL_BODY
    ),
    "TE-space-before-colon": (
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n"
        b"Content-Length: %d\r\n\r\n" % len(_CL_TE_BODY)
    )
    + _CL_TE_BODY,
    "CL.CL": (
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: %d\r\n\r\n"
        % len(SMUGGLED)
    )
    + SMUGGLED,
    "bad-header-then-pipelined": b"GET /a HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n" + SMUGGLED,
}


@pytest.mark.parametrize("data", list(REFUSED_FRAMINGS.values()), ids=list(REFUSED_FRAMINGS))
def test_ambiguous_framing_is_refused_and_nothing_after_it_is_read(serve, data):
    seen: list[str] = []
    live = serve(text_app(seen))
    with live.connect() as sock:
        sock.sendall(data)
        reader = ResponseReader(sock)
        response = reader.read()
        assert response.status == 400, response
        assert "close" in response.connection_tokens
        reader.expect_close()  # exactly one response: the smuggled request is never answered
    assert seen == []
    assert get(live, "/after").status == 200


def body_ignoring_app(seen: list[str]) -> Callable[..., Any]:
    def app(environ, start_response):
        seen.append(environ["PATH_INFO"])  # never reads wsgi.input
        body = environ["PATH_INFO"].encode()
        start_response(
            "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        )
        return [body]

    return app


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_cl0_unread_body_is_never_parsed_as_a_request(serve, framing):
    seen: list[str] = []
    live = serve(body_ignoring_app(seen))
    if framing == "chunked":
        head = build_request("POST", "/ignore", {"Transfer-Encoding": "chunked"})
        body = _TE_CL_BODY
    else:
        head = build_request("POST", "/ignore", {"Content-Length": str(len(SMUGGLED))})
        body = SMUGGLED
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(head + body + build_request("GET", "/after"))
        assert reader.read().body == b"/ignore"
        assert reader.read().body == b"/after"
        sock.sendall(build_request("GET", "/last", {"Connection": "close"}))
        assert reader.read().body == b"/last"
        reader.expect_close()
    assert seen == ["/ignore", "/after", "/last"]


def test_cl0_body_arriving_after_the_response_is_not_a_request(serve):
    """The app answered before the body came; when it comes, it is still body."""
    seen: list[str] = []
    live = serve(body_ignoring_app(seen))
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(build_request("POST", "/ignore", {"Content-Length": str(len(SMUGGLED))}))
        assert reader.read().body == b"/ignore"
        sock.sendall(SMUGGLED)
        sock.sendall(build_request("GET", "/after", {"Connection": "close"}))
        assert reader.read().body == b"/after"
        reader.expect_close()
    assert seen == ["/ignore", "/after"]


def test_nothing_pipelined_after_a_bad_chunked_body_is_answered(serve):
    seen: list[str] = []

    def app(environ, start_response):
        seen.append(environ["PATH_INFO"])
        environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    live = serve(app)
    with live.connect() as sock:
        sock.sendall(
            build_request("POST", "/upload", {"Transfer-Encoding": "chunked"})
            + b"zz\r\nhello\r\n0\r\n\r\n"
            + SMUGGLED
        )
        reader = ResponseReader(sock)
        assert reader.read().status == 400
        reader.expect_close()
    assert seen == ["/upload"]


def test_nothing_sent_after_a_400_is_answered(serve):
    seen: list[str] = []
    live = serve(text_app(seen))
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        assert reader.read().status == 400
        with contextlib.suppress(OSError):  # the server may have reset it by now
            sock.sendall(SMUGGLED)
        data, _reset = read_to_close(sock)
        assert data == b""
    assert seen == []


def test_drain_keeps_a_connection_whose_request_is_already_in_the_kernel() -> None:
    """A drain closes idle connections; one accepted just before it, whose request sits
    unread in the kernel's buffer, is not idle (closing it would drop that request)."""
    from wsgipool.connection import Connection
    from wsgipool.http.parser import Limits
    from wsgipool.listener import _idle

    server_side, client_side = socket.socketpair()
    with server_side, client_side:
        conn = Connection(server_side, None, "test", Limits())
        assert _idle(conn)
        client_side.sendall(b"GET / HTTP/1.1\r\n")
        wait_for(lambda: not _idle(conn))
        assert server_side.recv(100) == b"GET / HTTP/1.1\r\n"
        assert _idle(conn)
        conn.buffer += b"GET"  # A head begun and read: not idle either.
        assert not _idle(conn)
