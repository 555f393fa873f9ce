"""--metrics-bind: /metrics, /stats, /livez and /readyz served by real servers, in one
process and under --workers; systemd's notify socket."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.exposition import Family, parse
from tests.helpers.http import probe
from tests.helpers.live import Live
from tests.helpers.process import Process
from tests.helpers.waiting import DEADLINE, wait_for
from wsgipool.exposition import OPENMETRICS_TEXT, PROMETHEUS_TEXT

METRICS_LINE = re.compile(r"metrics and health on (http://\S+)")
DURATION = "http_server_request_duration_seconds"

APP = """
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]
"""


class Answer:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


def get(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> Answer:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=DEADLINE) as response:
            return Answer(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        return Answer(error.code, error.headers, error.read())


def scrape(base: str, openmetrics: bool = False) -> dict[str, Family]:
    accept = {"Accept": "application/openmetrics-text; version=1.0.0"} if openmetrics else {}
    answer = get(base + "/metrics", headers=accept)
    assert answer.status == 200
    assert answer.headers["Content-Type"] == (OPENMETRICS_TEXT if openmetrics else PROMETHEUS_TEXT)
    return parse(answer.body.decode(), openmetrics)


def requests_counted(base: str, status: str = "200") -> float:
    families = scrape(base)
    try:
        return families[DURATION].value(
            DURATION + "_count",
            http_request_method="GET",
            http_response_status_code=status,
            url_scheme="http",
        )
    except KeyError:
        return 0


class Blocking:
    """An app whose requests wait until ``release``; ``entered`` counts those inside."""

    def __init__(self) -> None:
        self.entered = 0
        self._lock = threading.Lock()
        self._release = threading.Event()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with self._lock:
            self.entered += 1
        self._release.wait(DEADLINE)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done"]

    def release(self) -> None:
        self._release.set()


def in_background(url: str) -> threading.Thread:
    thread = threading.Thread(target=get, args=(url,), daemon=True)
    thread.start()
    return thread


@pytest.fixture
def blocking() -> Iterator[Blocking]:
    app = Blocking()
    yield app
    app.release()


# --- one process ---------------------------------------------------------------------------


def test_metrics_count_the_requests_served(serve):
    live = serve(metrics_bind="127.0.0.1:0")
    base = live.server.metrics_url
    for _ in range(5):
        assert get(live.url + "/").status == 200
    assert get(live.url + "/", method="POST").status == 200
    # A worker thread adds its requests to the totals before it waits for more work,
    # which is just after its last response went out.
    wait_for(
        lambda: json.loads(get(base + "/stats").body)["requests"]["count"] == 6,
        "6 requests counted",
    )
    families = scrape(base)
    labels = {"http_response_status_code": "200", "url_scheme": "http"}
    duration = families[DURATION]
    assert duration.value(DURATION + "_count", http_request_method="GET", **labels) == 5
    assert duration.value(DURATION + "_count", http_request_method="POST", **labels) == 1
    assert (
        families["wsgipool_request_queue_wait_seconds"].value(
            "wsgipool_request_queue_wait_seconds_count"
        )
        == 6
    )
    assert families["wsgipool_queue_limit"].value(worker="0") == 1024
    assert families["wsgipool_threads"].value(worker="0", state="idle") == 4
    # The same numbers, as OpenMetrics and as JSON.
    assert (
        scrape(base, openmetrics=True)[DURATION].value(
            DURATION + "_count", http_request_method="GET", **labels
        )
        == 5
    )
    stats = json.loads(get(base + "/stats").body)
    assert stats["version"] == 1
    assert stats["requests"]["count"] == 6
    assert [worker["worker"] for worker in stats["workers"]] == [0]


def test_health_paths_and_http_errors(serve):
    live = serve(metrics_bind="127.0.0.1:0")
    base = live.server.metrics_url
    livez = get(base + "/livez")
    assert (livez.status, livez.body) == (200, b"ok\n")
    readyz = get(base + "/readyz")
    assert readyz.status == 200
    assert json.loads(readyz.body) == {"status": "ready"}
    assert get(base + "/nowhere").status == 404
    refused = get(base + "/metrics", method="POST")
    assert refused.status == 405
    assert refused.headers["Allow"] == "GET, HEAD"
    head = get(base + "/metrics", method="HEAD")
    assert head.status == 200 and head.body == b""
    # A request that is not HTTP gets 400, and the endpoint goes on.
    with socket.create_connection(_host_port(base)) as sock:
        sock.sendall(b"NOT HTTP\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 400 ")
    assert get(base + "/livez").status == 200


def _host_port(base: str) -> tuple[str, int]:
    host, port = base.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def test_a_slow_client_does_not_hold_the_endpoint(serve):
    live = serve(metrics_bind="127.0.0.1:0")
    base = live.server.metrics_url
    with socket.create_connection(_host_port(base)) as slow:
        slow.sendall(b"GET /metrics HTTP/1.1\r\n")  # and never the rest
        assert get(base + "/livez").status == 200


def test_a_saturated_pool_still_answers_metrics_and_readyz(serve, blocking):
    live = serve(blocking, threads=2, metrics_bind="127.0.0.1:0")
    base = live.server.metrics_url
    clients = [in_background(live.url + "/") for _ in range(3)]
    wait_for(lambda: blocking.entered == 2, "every worker thread held by the app")
    families = scrape(base)
    assert families["http_server_active_requests"].value(worker="0") == 2
    assert families["wsgipool_threads"].value(worker="0", state="app") == 2
    wait_for(lambda: scrape(base)["wsgipool_queue_length"].value(worker="0") == 1, "one queued")
    assert get(base + "/readyz").status == 200  # no --ready-max-queue-wait: still ready
    blocking.release()
    for client in clients:
        client.join(DEADLINE)
    wait_for(lambda: requests_counted(base) == 3, "3 requests counted")


def test_a_request_is_counted_while_its_thread_serves_a_long_next_one(serve):
    """The thread that answered /fast goes straight on to the pipelined /hang, never
    waiting for work in between: a scrape still counts /fast."""
    entered, release = threading.Event(), threading.Event()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ["PATH_INFO"] == "/hang":
            entered.set()
            release.wait(DEADLINE)
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    live = serve(app, threads=1, metrics_bind="127.0.0.1:0")
    try:
        with socket.create_connection(live.server.addresses[0], timeout=DEADLINE) as client:
            client.sendall(
                b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\nGET /hang HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            assert entered.wait(DEADLINE)
            assert client.recv(65536).startswith(b"HTTP/1.1 200 OK")
            assert requests_counted(live.server.metrics_url) == 1
    finally:
        release.set()


def test_readyz_says_503_while_queue_wait_stays_over_the_limit(serve, blocking):
    live = serve(blocking, threads=1, metrics_bind="127.0.0.1:0", ready_max_queue_wait=0.05)
    base = live.server.metrics_url
    in_background(live.url + "/")
    wait_for(lambda: blocking.entered == 1, "the one worker thread held")
    in_background(live.url + "/")  # waits in the queue
    wait_for(lambda: get(base + "/readyz").status == 503, "readyz 503")
    reason = json.loads(get(base + "/readyz").body)
    assert reason["status"] == "not ready"
    assert "waited" in reason["reason"]
    blocking.release()
    wait_for(lambda: requests_counted(base) == 2, "both requests served")


def test_readyz_says_503_while_draining_and_livez_stays_200(serve, blocking):
    live = serve(blocking, threads=2, metrics_bind="127.0.0.1:0")
    base = live.server.metrics_url
    in_background(live.url + "/")
    wait_for(lambda: blocking.entered == 1, "a request in the app")
    stopping = threading.Thread(target=live.server.stop, daemon=True)
    stopping.start()
    wait_for(lambda: get(base + "/readyz").status == 503, "readyz 503 while draining")
    assert json.loads(get(base + "/readyz").body) == {
        "status": "not ready",
        "reason": "draining",
    }
    assert get(base + "/livez").status == 200
    blocking.release()
    stopping.join(DEADLINE)


def test_requests_refused_for_a_full_queue_are_counted(serve, blocking):
    live = serve(blocking, threads=1, queue_limit=1, metrics_bind="127.0.0.1:0")
    base = live.server.metrics_url
    in_background(live.url + "/")
    wait_for(lambda: blocking.entered == 1, "the one worker thread held")
    in_background(live.url + "/")
    wait_for(lambda: scrape(base)["wsgipool_queue_length"].value(worker="0") == 1, "one queued")
    assert probe(live.port) == 503
    families = scrape(base)
    assert families["wsgipool_queue_rejected_total"].value() == 1


def test_metrics_stay_off_by_default(serve):
    live: Live = serve()
    assert live.server.metrics_url is None


# --- the command line, worker processes --------------------------------------------------


def start(spawn: Callable[..., Process], tmp_path: Path, *args: str, **env: str) -> Process:
    (tmp_path / "app.py").write_text(APP)
    process = spawn(
        ["app:app", "-b", "127.0.0.1:0", "--metrics-bind", "127.0.0.1:0", *args], env=env or None
    )
    return process


def metrics_base(process: Process) -> str:
    return process.wait_for(METRICS_LINE).group(1)


def serve_requests(port: int, count: int) -> None:
    for _ in range(count):
        assert get(f"http://127.0.0.1:{port}/").status == 200


def test_worker_processes_are_counted_together(spawn, tmp_path):
    process = start(spawn, tmp_path, "--workers", "2", "--threads", "2")
    base = metrics_base(process)
    process.wait_workers(2)
    serve_requests(process.listening_port(), 20)
    wait_for(lambda: requests_counted(base) == 20, "20 requests counted")
    families = scrape(base)
    assert {s.labels["worker"] for s in families["wsgipool_queue_limit"].samples} == {"0", "1"}
    busy = families["wsgipool_thread_busy_seconds_total"]
    assert {s.labels["worker"] for s in busy.samples} == {"0", "1"}
    assert families["wsgipool_process_threads"].value(worker="0") >= 3
    assert get(base + "/readyz").status == 200


def test_a_sigkilled_workers_counts_survive(spawn, tmp_path):
    process = start(spawn, tmp_path, "--workers", "2", "--threads", "2")
    base = metrics_base(process)
    first = process.wait_workers(2)
    serve_requests(process.listening_port(), 30)
    wait_for(lambda: requests_counted(base) == 30, "30 requests counted")
    for pid in first:
        os.kill(pid, signal.SIGKILL)
    process.wait_workers(2, besides=first)
    families = scrape(base)
    assert families["wsgipool_worker_restarts_total"].value(reason="signal") == 2
    assert requests_counted(base) == 30
    # The replacements take their predecessors' worker indexes.
    labels = {s.labels["worker"] for s in families["wsgipool_queue_limit"].samples}
    assert labels <= {"0", "1"}
    serve_requests(process.listening_port(), 5)
    wait_for(lambda: requests_counted(base) == 35, "35 requests counted")


def test_a_bad_metrics_bind_is_one_line_and_status_2(spawn, tmp_path):
    process = spawn(["app:app", "--metrics-bind", "fd://3"])
    assert process.wait() == 2
    assert "metrics_bind" in process.log and "Traceback" not in process.log


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_metrics_address_in_use_is_named_as_the_option(spawn, tmp_path, workers):
    """The error names --metrics-bind: "cannot listen on 127.0.0.1:N" alone could be any
    --bind address."""
    (tmp_path / "app.py").write_text(APP)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        metrics = f"127.0.0.1:{port}"
        args = ["-b", "127.0.0.1:0", "--metrics-bind", metrics, "--workers", workers]
        process = spawn(["app:app", *args])
        assert process.wait() == 2
    finally:
        taken.close()
    assert process.log == (
        f"wsgipool: error: --metrics-bind: cannot listen on 127.0.0.1:{port}: "
        "Address already in use\n"
    )


def test_a_server_names_its_metrics_address_in_use():
    from wsgipool import ConfigError, Server

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = Server(
            lambda environ, start_response: [],
            bind=["127.0.0.1:0"],
            metrics_bind=f"127.0.0.1:{port}",
        )
        with pytest.raises(
            ConfigError, match="^" + re.escape(f"metrics_bind: cannot listen on 127.0.0.1:{port}:")
        ):
            server.start()


# --- systemd's notify socket ---------------------------------------------------------------


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(DEADLINE)
    yield sock
    sock.close()


def messages_until(sock: socket.socket, wanted: str, received: list[str]) -> list[str]:
    """``received`` and what comes on ``sock`` until a message holds ``wanted``."""
    while not any(wanted in message for message in received):
        received.append(sock.recv(4096).decode())
    return received


@pytest.mark.parametrize("workers", ["1", "2"])
def test_systemd_hears_ready_and_a_status_line(spawn, tmp_path, notify_socket, workers):
    (tmp_path / "app.py").write_text(APP)
    process = spawn(
        ["app:app", "-b", "127.0.0.1:0", "--workers", workers],
        env={"NOTIFY_SOCKET": str(tmp_path / "notify")},
    )
    messages = messages_until(notify_socket, "READY=1", [])
    process.listening_port()
    messages_until(notify_socket, "threads busy", messages)
    status = next(m for m in messages if "STATUS=" in m)
    assert re.search(r"STATUS=.*\d+/\d+ threads busy, \d+ queued", status)
    process.send(signal.SIGTERM)
    messages_until(notify_socket, "STOPPING=1", messages)
    assert process.wait() == 0
