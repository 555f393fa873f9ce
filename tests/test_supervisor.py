"""``--workers``: a supervisor process forks worker processes that share the listening sockets.

Every test runs ``python -m wsgipool`` as a real process group on a free 127.0.0.1 port,
waits on conditions against deadlines (no fixed sleeps) and kills the group after the test.
Worker pids are read from ``/proc/<supervisor>/task/<supervisor>/children`` (Linux).

What "no request fails" means under load (see docs/processes.md): a request fails when its
client gets no complete ``200`` response. Graceful paths (HUP, TTOU, --max-requests, TERM)
answer every request a worker has read, and a fresh connection is always taken by a worker
that still accepts. The one loss they allow is the keep-alive race every HTTP/1.1 server
has: a draining worker closes an *idle* keep-alive connection, and a client that sends its
next request on it at that instant gets the connection closed with no response byte (the
server never read the request, so RFC 9112 section 9.3.1 lets the client retry it). The
load counts those apart (``stale``); everything else must be zero. A worker killed with
SIGKILL loses every connection it holds, so that test kills only between the client's
request batches, when no connection is open, and then requires zero of both.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.load import LoadThreads
from tests.helpers.net import refuses
from tests.helpers.process import Process, Supervisor
from tests.helpers.waiting import DEADLINE, wait_for

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="worker processes: fork and /proc (Linux)"
)

APP = """\
import os
import time

with open(os.environ["TEST_IMPORT_LOG"], "a") as log:
    log.write(f"{os.getpid()}\\n")

VERSION = "v1"


def app(environ, start_response):
    query = environ["QUERY_STRING"]
    if query.startswith("sleep="):
        marker = os.path.join(os.environ["TEST_MARKERS"], f"{os.getpid()}-{time.monotonic_ns()}")
        open(marker, "w").close()
        time.sleep(float(query[len("sleep="):]))
    elif query == "cpu":
        end = time.perf_counter() + 0.003
        while time.perf_counter() < end:
            pass
    body = f"{os.getpid()} {environ['wsgi.multiprocess']} {VERSION}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


class Stale(Exception):
    """A reused keep-alive connection was closed before any response byte."""


def read_response(sock: socket.socket, buffer: bytearray) -> tuple[bytes, bool]:
    """One response with Content-Length off ``sock``: (body, whether the server closes)."""
    while b"\r\n\r\n" not in buffer:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed after {bytes(buffer)!r}")
        buffer += data
    end = buffer.index(b"\r\n\r\n") + 4
    head = bytes(buffer[:end]).decode("latin-1")
    if not head.startswith("HTTP/1.1 200 "):
        raise ConnectionError(f"not a 200 response: {head!r}")
    fields = dict(line.split(":", 1) for line in head.split("\r\n")[1:] if ":" in line)
    lowered = {name.strip().lower(): value.strip() for name, value in fields.items()}
    length = int(lowered["content-length"])
    while len(buffer) < end + length:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed inside the body")
        buffer += data
    body = bytes(buffer[end : end + length])
    del buffer[: end + length]
    return body, lowered.get("connection", "").lower() == "close"


def fetch(port: int, query: str = "") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        sock.sendall(f"GET /?{query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        return read_response(sock, bytearray())[0]


class Load(LoadThreads):
    """Client threads making requests until stopped: batches of three keep-alive requests on
    one connection, then one on a new connection. ``gate`` is held around each batch."""

    def __init__(self, port: int, clients: int = 2, query: str = "") -> None:
        super().__init__(clients)
        self.port = port
        self.query = query
        self.gate = threading.Lock()
        self.stale = 0
        self.pids: set[int] = set()

    def _record(self, body: bytes) -> None:
        with self.lock:
            self.ok += 1
            self.pids.add(int(body.split()[0]))

    def _run(self) -> None:
        request = f"GET /?{self.query} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        while not self.stop_event.is_set():
            with self.gate:
                try:
                    self._batch(request)
                except Stale:
                    with self.lock:
                        self.stale += 1
                except (OSError, ValueError, KeyError) as exc:
                    with self.lock:
                        self.failures.append(repr(exc))

    def _batch(self, request: bytes) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=DEADLINE) as sock:
            buffer = bytearray()
            for index in range(3):
                try:
                    sock.sendall(request)
                    body, closing = read_response(sock, buffer)
                except (ConnectionError, OSError):
                    if index and not buffer:
                        raise Stale() from None
                    raise
                self._record(body)
                if closing:
                    break
        self._record(fetch(self.port, self.query))


@pytest.fixture
def start(tmp_path: Path, processes: list[Process]) -> Callable[..., Supervisor]:
    def run(workers: int, *extra: str, app: str = APP) -> Supervisor:
        directory = tmp_path / f"project{len(processes)}"
        directory.mkdir()
        (directory / "app.py").write_text(app)
        supervisor = Supervisor(directory, workers, extra)
        processes.append(supervisor)
        return supervisor

    return run


def test_workers_serve_from_different_processes(start: Callable[..., Supervisor]) -> None:
    # EPOLLEXCLUSIVE wakes one waiting listener, so a light load may stay on one process;
    # two connections per worker at most make the others take the rest (and exercise the
    # listener's remove and re-add of an exclusive registration at capacity).
    server = start(3, "--max-connections", "2")
    pids = server.wait_workers(3)
    assert server.popen.pid not in pids
    with Load(server.port, clients=6, query="sleep=0.02") as load:
        wait_for(lambda: load.pids >= pids or bool(load.failures), "all three workers")
    assert load.failures == [] and load.stale == 0
    assert load.pids == pids
    pid, multiprocess, _version = fetch(server.port).split()
    assert int(pid) in pids and multiprocess == b"True"
    server.send(signal.SIGTERM)
    assert server.popen.wait(DEADLINE) == 0


def test_killed_worker_is_replaced_without_failed_requests(
    start: Callable[..., Supervisor],
) -> None:
    server = start(3)
    pids = server.wait_workers(3)
    with Load(server.port, clients=2) as load:
        load.wait_ok(100)
        # Between batches (no connection open): SIGKILL loses only what the worker holds.
        with load.gate:
            victim = min(pids)
            os.kill(victim, signal.SIGKILL)
        load.wait_ok(100)  # served by the survivors while the replacement starts
        new = server.wait_workers(3, besides={victim})
        assert len(new - pids) == 1
        load.wait_ok(100)
    assert load.failures == [] and load.stale == 0, load.failures
    assert "was killed by SIGKILL; starting a new one" in server.log


def test_hup_replaces_every_worker_under_load(start: Callable[..., Supervisor]) -> None:
    server = start(3)
    pids = server.wait_workers(3)
    (server.directory / "app.py").write_text(APP.replace('"v1"', '"v2"'))
    with Load(server.port, clients=2) as load:
        load.wait_ok(100)
        server.send(signal.SIGHUP)
        new = server.wait_workers(3, besides=pids)
        load.wait_ok(100)
    assert load.failures == [], load.failures
    assert load.pids & new
    # New workers imported the new code: the supervisor never imported the app.
    assert fetch(server.port).split()[2] == b"v2"
    imported = server.imports.read_text().split()
    assert len(imported) == 6 and set(imported) == {str(pid) for pid in pids | new}
    print(f"stale keep-alive closes during HUP: {load.stale}")


def test_ttin_and_ttou_change_the_worker_count(start: Callable[..., Supervisor]) -> None:
    server = start(2)
    first = server.wait_workers(2)
    server.send(signal.SIGTTIN)
    more = server.wait_workers(3)
    assert first < more
    server.send(signal.SIGTTOU)
    server.wait_workers(2)
    server.send(signal.SIGTTOU)
    server.send(signal.SIGTTOU)  # never below one
    last = server.wait_workers(1)
    assert fetch(server.port).split()[0] == str(min(last)).encode()
    server.send(signal.SIGTERM)
    assert server.popen.wait(DEADLINE) == 0


def test_max_requests_recycles_workers_without_failed_requests(
    start: Callable[..., Supervisor],
) -> None:
    server = start(2, "--max-requests", "50", "--max-requests-jitter", "10")
    seen = set(server.wait_workers(2))

    def recycled() -> bool:
        seen.update(server.children())
        return len(seen) >= 6 or bool(load.failures)

    with Load(server.port, clients=2) as load:
        wait_for(recycled, "four recycled workers")
        load.wait_ok(50)
    assert load.failures == [], load.failures
    assert server.log.count("(--max-requests)") >= 4
    assert "retired itself; starting a new one" in server.log
    print(f"stale keep-alive closes during recycling: {load.stale}")


def test_term_lets_in_flight_requests_finish(start: Callable[..., Supervisor]) -> None:
    server = start(2)
    server.wait_workers(2)
    results: list[bytes | Exception] = []

    def slow() -> None:
        try:
            results.append(fetch(server.port, "sleep=1.0"))
        except Exception as exc:
            results.append(exc)

    clients = [threading.Thread(target=slow) for _ in range(6)]
    for client in clients:
        client.start()
    wait_for(lambda: len(list(server.markers.iterdir())) == 6, "six requests in the app")
    server.send(signal.SIGTERM)
    for client in clients:
        client.join(DEADLINE)
    assert server.popen.wait(DEADLINE) == 0
    assert len(results) == 6 and all(isinstance(result, bytes) for result in results), results
    with pytest.raises(OSError):
        fetch(server.port)


def test_term_past_the_graceful_timeout_exits_before_the_kill(
    start: Callable[..., Supervisor],
) -> None:
    """A request still in the app at --graceful-timeout is cut off, and its worker exits
    by itself soon after (STOP_MARGIN), before the supervisor's SIGKILL (KILL_MARGIN)."""
    server = start(2, "--graceful-timeout", "0.2")
    server.wait_workers(2)
    results: list[bytes | Exception] = []

    def stuck() -> None:
        try:
            results.append(fetch(server.port, "sleep=600"))
        except Exception as exc:
            results.append(exc)

    client = threading.Thread(target=stuck)
    client.start()
    wait_for(lambda: len(list(server.markers.iterdir())) == 1, "a request in the app")
    server.send(signal.SIGTERM)
    assert server.popen.wait(DEADLINE) == 0
    client.join(DEADLINE)
    log = server.log
    assert "graceful timeout: closing 1 connection(s) still open" in log, log
    assert "did not exit in time" not in log, log
    assert len(results) == 1 and isinstance(results[0], Exception), results


BLOCKING_APP = """\
import os
import time


def app(environ, start_response):
    markers = os.environ["TEST_MARKERS"]
    open(os.path.join(markers, str(os.getpid())), "w").close()
    release = os.path.join(os.path.dirname(markers), "release")
    while not os.path.exists(release):  # until the test lets it finish
        time.sleep(0.01)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
    return [b"done"]
"""


def test_term_refuses_new_connections_while_the_workers_drain(
    start: Callable[..., Supervisor],
) -> None:
    server = start(2, app=BLOCKING_APP)
    server.wait_workers(2)
    results: list[bytes | Exception] = []

    def in_flight() -> None:
        try:
            results.append(fetch(server.port))
        except Exception as exc:
            results.append(exc)

    client = threading.Thread(target=in_flight)
    client.start()
    try:
        wait_for(lambda: any(server.markers.iterdir()), "a request in the app")
        server.send(signal.SIGTERM)
        wait_for(lambda: refuses(server.port), "new connections refused")
        assert client.is_alive(), "refused only once the in-flight request had ended"
    finally:
        (server.directory / "release").touch()
    client.join(DEADLINE)
    assert results == [b"done"]
    assert server.popen.wait(DEADLINE) == 0


def test_quit_stops_at_once(start: Callable[..., Supervisor]) -> None:
    server = start(2)
    server.wait_workers(2)
    results: list[bytes | Exception] = []

    def slow() -> None:
        try:
            results.append(fetch(server.port, "sleep=20"))
        except Exception as exc:
            results.append(exc)

    client = threading.Thread(target=slow)
    client.start()
    wait_for(lambda: len(list(server.markers.iterdir())) == 1, "a request in the app")
    begun = time.monotonic()
    server.send(signal.SIGQUIT)
    assert server.popen.wait(DEADLINE) == 0
    # Not the 10 s graceful timeout, nor the 20 s request: in-flight requests are dropped.
    assert time.monotonic() - begun < 8.0
    client.join(DEADLINE)
    assert len(results) == 1 and isinstance(results[0], Exception)


def test_preload_imports_once(start: Callable[..., Supervisor]) -> None:
    server = start(3, "--preload")
    server.wait_workers(3)
    assert server.imports.read_text().split() == [str(server.popen.pid)]
    plain = start(3)
    pids = plain.wait_workers(3)
    assert sorted(plain.imports.read_text().split()) == sorted(str(pid) for pid in pids)


def test_usr1_reopens_the_access_log(start: Callable[..., Supervisor], tmp_path: Path) -> None:
    access = tmp_path / "access.log"
    server = start(2, "--access-log", str(access))
    server.wait_workers(2)
    fetch(server.port)
    wait_for(lambda: access.exists() and "GET /" in access.read_text(), "an access line")
    rotated = tmp_path / "access.log.1"
    access.rename(rotated)
    server.send(signal.SIGUSR1)
    wait_for(lambda: server.log.count("reopened") >= 1, "the supervisor's reopen")

    def written_anew() -> bool:
        fetch(server.port)
        return access.exists() and "GET /" in access.read_text()

    wait_for(written_anew, "a line in the new access log")


def test_app_that_cannot_load_stops_the_supervisor(start: Callable[..., Supervisor]) -> None:
    server = start(2, app="raise RuntimeError('broken')\n")
    assert server.popen.wait(DEADLINE) == 1
    assert "could not load the application" in server.log
    assert "the worker processes cannot start; stopping" in server.log


def test_tls_workers_pick_up_a_renewed_certificate_on_hup(
    start: Callable[..., Supervisor], tmp_path: Path
) -> None:
    """With --workers and --certfile, each worker reads the certificate when it starts, so
    a HUP after renewing the file serves the new one without closing the port."""
    import ssl

    import trustme

    ca = trustme.CA()
    cert = tmp_path / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(cert))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    server = start(2, "--certfile", str(cert))
    old = server.wait_workers(2)
    assert f"https://127.0.0.1:{server.port}" in server.log

    def serial() -> str:
        with context.wrap_socket(
            socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE),
            server_hostname="127.0.0.1",
        ) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert sock.recv(12) == b"HTTP/1.1 200"
            return str(sock.getpeercert()["serialNumber"])

    first = serial()
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(cert))
    server.send(signal.SIGHUP)
    server.wait_workers(2, besides=old)
    assert serial() != first
    server.send(signal.SIGTERM)
    assert server.popen.wait(DEADLINE) == 0


def test_tls_sessions_resume_on_any_worker(
    start: Callable[..., Supervisor], tmp_path: Path
) -> None:
    """The supervisor makes the TLS context before forking, so every worker holds the same
    session ticket keys: a session from one worker resumes on another."""
    import ssl

    import trustme

    ca = trustme.CA()
    cert = tmp_path / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(cert))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    # One connection per worker: while the first is open, the next goes to the other.
    server = start(2, "--certfile", str(cert), "--max-connections", "1")
    server.wait_workers(2)
    session = None
    held = []
    pids = []
    try:
        for _ in range(2):
            sock = context.wrap_socket(
                socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE),
                server_hostname="127.0.0.1",
                session=session,
            )
            held.append(sock)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head or not head.rstrip().endswith((b"v1", b"v2")):
                chunk = sock.recv(65536)
                assert chunk, head
                head += chunk
            pids.append(int(head.split(b"\r\n\r\n")[1].split()[0]))
            if session is not None:
                assert sock.session_reused
            session = sock.session
    finally:
        for sock in held:
            sock.close()
    assert pids[0] != pids[1]
    server.send(signal.SIGTERM)
    assert server.popen.wait(DEADLINE) == 0


def test_worker_processes_get_their_sockets_without_the_environment(
    start: Callable[..., Supervisor],
) -> None:
    # The supervisor hands a forked worker process its sockets directly: the application
    # (and any process it starts) never sees WSGIPOOL_INHERITED_FDS, not even at import.
    app = APP + ('\nSEEN = os.environ.get("WSGIPOOL_INHERITED_FDS", "unset")\nVERSION = SEEN\n')
    server = start(2, app=app)
    server.wait_workers(2)
    _pid, _multiprocess, seen = fetch(server.port).split()
    assert seen == b"unset"
