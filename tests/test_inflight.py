"""In-flight requests, seen from outside (issue 15): the stuck-request watchdog, the
SIGUSR2 dump (one process, and passed on to every worker process), --stuck-recycle, and
the per-request timings and request id in the environ and the access log.

Every test runs the real command on a free port and reads its log; the application
blocks inside a function with a name the stacks must show.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.http import InBackground
from tests.helpers.net import HOST
from tests.helpers.process import Process
from tests.helpers.waiting import wait_for

APP = """
import json
import os
import sys
import threading
import time

released = threading.Event()


def hold_the_line_forever(environ):
    secret_local = "local-value-" + "s3cr3t"
    print(f"entered {environ['PATH_INFO']}", file=sys.stderr, flush=True)
    while not released.wait(0.01):
        pass
    return secret_local


def stream_until_released():
    while not released.is_set():
        yield b"tick\\n"
        time.sleep(0.01)


def wait_for_file(path):
    print("entered sibling", file=sys.stderr, flush=True)
    while not os.path.exists(path):
        time.sleep(0.01)


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/release":
        released.set()
    elif path.startswith("/stuck"):
        hold_the_line_forever(environ)
    elif path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return stream_until_released()
    elif path == "/sibling":
        wait_for_file(environ["QUERY_STRING"])
    elif path == "/env":
        keys = [key for key in environ if key.startswith("wsgipool.")]
        body = json.dumps({key: environ[key] for key in keys if key != "wsgipool.queue_wait"})
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body.encode()]
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""

SECRETS = ("qs-s3cr3t", "auth-s3cr3t", "cookie-s3cr3t", "local-value-s3cr3t")


@pytest.fixture
def start(spawn: Callable[..., Process], tmp_path: Path) -> Callable[..., tuple[Process, int]]:
    (tmp_path / "inflight.py").write_text(APP)

    def run(*args: str) -> tuple[Process, int]:
        process = spawn(["inflight:app", "-b", f"{HOST}:0", "--threads", "4", *args])
        return process, process.listening_port()

    return run


def get(port: int, target: str, headers: dict[str, str] | None = None) -> InBackground:
    request = InBackground(port, target, headers)
    request.answered()
    return request


def test_a_stuck_request_is_reported_once_with_its_stack_then_when_it_finishes(
    start: Callable[..., tuple[Process, int]],
) -> None:
    server, port = start("--stuck-threshold", "1")
    stream = InBackground(port, "/stream")
    first = InBackground(port, "/stuck/first")
    server.wait_log("stuck request: GET /stuck/first")
    # Another stuck request, reported only after more scans: by then a second report of
    # the first (or any of the stream) would have come.
    second = InBackground(port, "/stuck/second")
    server.wait_log("stuck request: GET /stuck/second")
    assert get(port, "/release").status == 200
    assert first.answered() == second.answered() == stream.answered() == 200
    server.wait_log("stuck request finished after", count=2)
    log = server.log
    report = log[log.index("stuck request: GET /stuck/first") :]
    assert "Stack of wsgipool-worker-" in report
    assert "in hold_the_line_forever" in report
    assert "released.wait(0.01)" in report  # the source line
    assert log.count("stuck request: GET /stuck/first") == 1
    assert re.search(r"stuck request finished after [0-9.]+s: GET /stuck/first from ", log)
    assert "stuck request: GET /stream" not in log
    assert "[WARNING] stuck request: GET /stuck/first" in log


def test_sigusr2_dumps_the_real_frame_redacted(start: Callable[..., tuple[Process, int]]) -> None:
    server, port = start("--stuck-threshold", "0", "--dump-headers", "user-agent")
    stuck = InBackground(
        port,
        "/stuck/dumped?token=qs-s3cr3t",
        {
            "Authorization": "Bearer auth-s3cr3t",
            "Cookie": "session=cookie-s3cr3t",
            "User-Agent": "inflight-test/1",
        },
    )
    server.wait_log("entered /stuck/dumped")
    server.send(signal.SIGUSR2)
    server.wait_log("in-flight requests: wsgipool pid")
    wait_for(lambda: "in hold_the_line_forever" in dump_of(server.log), "the dump's stack")
    dump = dump_of(server.log)
    assert "1 request in flight" in dump
    assert "GET /stuck/dumped from 127.0.0.1:" in dump
    assert "header user-agent: inflight-test/1" in dump
    assert " worker " not in dump.splitlines()[0]  # one process: no worker index
    # faulthandler's raw stacks, registered in advance, came too.
    assert "most recent call first" in server.log
    for secret in SECRETS:
        assert secret not in server.log
    assert get(port, "/release").status == 200
    assert stuck.answered() == 200


def dump_of(log: str) -> str:
    return log[log.rindex("in-flight requests: ") :]


def test_the_supervisor_passes_sigusr2_to_every_worker_process(
    start: Callable[..., tuple[Process, int]],
) -> None:
    server, _port = start("--workers", "2")
    workers = server.wait_workers(2)
    server.send(signal.SIGUSR2)
    block = re.compile(r"in-flight requests: wsgipool pid \d+ worker (\d+) at ")
    server.wait_until(lambda: set(block.findall(server.log)) == {"0", "1"}, "a dump per worker")
    pids = {int(pid) for pid in re.findall(r"in-flight requests: wsgipool pid (\d+)", server.log)}
    assert pids == workers
    # A replacement takes the index of the worker process it replaces.
    victim = min(workers)
    index = re.search(rf"started worker process {victim} \(worker (\d)\)", server.log)
    assert index is not None
    server_pids = workers - {victim}
    os.kill(victim, signal.SIGKILL)
    replacement = server.wait_workers(2, besides={victim}) - server_pids
    assert f"started worker process {min(replacement)} (worker {index.group(1)})" in server.log


def test_stuck_recycle_replaces_the_worker_process_and_lets_siblings_finish(
    start: Callable[..., tuple[Process, int]], tmp_path: Path
) -> None:
    server, port = start(
        "--workers", "1", "--stuck-recycle", "1", "--stuck-threshold", "0",
        "--graceful-timeout", "20",
    )  # fmt: skip
    (first,) = server.wait_workers(1)
    stuck = InBackground(port, "/stuck/recycled")
    server.wait_log("entered /stuck/recycled")
    go_on = tmp_path / "go-on"
    sibling = InBackground(port, f"/sibling?{go_on}")
    server.wait_log("entered sibling")
    server.wait_log("retiring itself; starting its replacement")
    (replacement,) = server.wait_workers(2, besides=set()) - {first}
    go_on.touch()
    assert sibling.answered() == 200
    assert sibling.response_headers.get("Connection") == "close"
    log = server.log
    assert log.index("in-flight requests: wsgipool pid") < log.index("retiring itself")
    assert "in hold_the_line_forever" in dump_of(log)
    assert f"worker process {first}: stopping: a request made no progress" in log
    assert get(port, "/").body == str(replacement).encode()
    del stuck  # never answers: its process is left to its graceful timeout


def test_timings_and_request_id_in_the_environ_and_the_access_log(
    start: Callable[..., tuple[Process, int]],
) -> None:
    log_format = (
        "rid=%(request_id)s worker=%(worker)s thread=%(thread)s read=%(read_ms)s "
        "queue=%(queue_ms)s app=%(app_ms)s send=%(send_ms)s"
    )
    server, port = start("--access-log", "-", "--access-log-format", log_format)
    before = time.time()
    response = get(port, "/env", {"X-Request-ID": "from-proxy-42"})
    after = time.time()
    environ = json.loads(response.body)
    assert before - 1 <= environ["wsgipool.request_start"] <= after
    assert environ["wsgipool.worker_index"] == 0
    assert environ["wsgipool.thread_name"].startswith("wsgipool-worker-")
    assert environ["wsgipool.request_id"] == "from-proxy-42"
    assert "X-Request-ID" not in response.response_headers  # only with --request-id generate
    number = r"[0-9]+\.[0-9]{3}"
    line = re.compile(
        rf"rid=from-proxy-42 worker=0 thread=wsgipool-worker-\d+ read={number} "
        rf"queue={number} app={number} send={number}"
    )
    wait_for(lambda: line.search(server.stdout) is not None, "the access log line")


def test_request_id_generate_makes_one_and_ignores_untrusted_peers(
    start: Callable[..., tuple[Process, int]],
) -> None:
    server, port = start(
        "--request-id", "generate", "--forwarded-allow-ips", "",
        "--access-log", "-", "--access-log-format", "rid=%(request_id)s",
    )  # fmt: skip
    response = get(port, "/env", {"X-Request-ID": "forged-by-a-client"})
    made = json.loads(response.body)["wsgipool.request_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    assert response.response_headers["X-Request-ID"] == made
    wait_for(lambda: f"rid={made}" in server.stdout, "the access log line")
    assert "forged-by-a-client" not in server.stdout
