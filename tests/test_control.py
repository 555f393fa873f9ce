"""The control socket (``--control-socket``) and ``wsgipool ctl`` (issue 15, item 5), seen
from outside: real servers, one process and ``--workers 2``, asked by the real command.

The application blocks inside a function with a name the stacks must show, holding
secrets in its request (query string, Authorization, a local) that no answer may show.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import signal
import socket
import stat
import struct
import subprocess
import termios
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.http import InBackground
from tests.helpers.net import HOST
from tests.helpers.process import Process, child_env, wsgipool_command
from tests.helpers.waiting import DEADLINE, wait_for

APP = """
import os
import sys
import time


def hold_the_line_forever(environ):
    secret_local = "local-value-" + "s3cr3t"
    print(f"entered {environ['PATH_INFO']}", file=sys.stderr, flush=True)
    while not os.path.exists("released"):  # in its working directory: the test's
        time.sleep(0.01)
    return secret_local


def app(environ, start_response):
    if environ["PATH_INFO"].startswith("/stuck"):
        hold_the_line_forever(environ)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]
"""

SECRETS = ("qs-s3cr3t", "auth-s3cr3t", "local-value-s3cr3t")

Start = Callable[..., tuple[Process, int, str]]
Ctl = Callable[..., tuple[int, str, str]]


@pytest.fixture
def start(spawn: Callable[..., Process], tmp_path: Path) -> Start:
    """``start(ARGS)``: the app served with a control socket; the process, its port, the
    socket's path."""
    (tmp_path / "held.py").write_text(APP)
    path = str(tmp_path / "control.sock")

    def run(*args: str) -> tuple[Process, int, str]:
        process = spawn(["held:app", "-b", f"{HOST}:0", "--control-socket", path, *args])
        return process, process.listening_port(), path

    return run


@pytest.fixture
def ctl(spawn: Callable[..., Process]) -> Ctl:
    """``ctl(ARGS)``: run ``wsgipool ctl ARGS`` to its end; its status, stdout and stderr."""

    def run(*args: str, env: dict[str, str | None] | None = None) -> tuple[int, str, str]:
        process = spawn(["ctl", *args], env=env)
        status = process.wait()
        return status, process.stdout, process.log

    return run


def ctl_json(ctl: Ctl, path: str, *args: str) -> dict[str, Any]:
    status, out, err = ctl("--socket", path, *args, "--json")
    assert status == 0, err
    answer = json.loads(out)
    assert answer["ok"] is True
    return answer  # type: ignore[no-any-return]


def test_one_process_answers_every_command(start: Start, ctl: Ctl) -> None:
    server, port, path = start("--threads", "4")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert InBackground(port, "/").answered() == 200

    status, out, err = ctl("--socket", path, "stats")
    assert status == 0, err
    assert out.startswith(f"pid {server.pid}: up ")
    assert "1 requests" in out and "4 threads" in out
    stats = ctl_json(ctl, path, "stats")["processes"]
    assert [(entry["pid"], entry["worker"], entry["requests"]) for entry in stats] == [
        (server.pid, None, 1)
    ]

    status, out, _ = ctl("--socket", path, "workers")
    assert status == 0
    assert out.splitlines()[0].split() == ["WORKER", "PID", "STATE", "AGE", "REQUESTS"]
    assert out.splitlines()[1].split()[:3] == ["-", str(server.pid), "serving"]

    status, out, _ = ctl("--socket", path, "threads")
    assert status == 0
    assert "Thread MainThread" in out and "Thread wsgipool-control" in out

    status, out, _ = ctl("--socket", path, "reopen-logs")
    assert (status, out) == (0, f"pid {server.pid}: reopened 0 log file(s)\n")

    status, out, _ = ctl("--socket", path, "drain")
    assert (status, out) == (0, f"pid {server.pid}: draining: no longer accepting connections\n")
    server.wait_log("control socket: draining")
    wait_for(lambda: refused(port), "the listening socket to close")
    assert ctl_json(ctl, path, "stats")["processes"][0]["draining"] is True
    assert server.stop() == 0
    assert not os.path.exists(path)  # removed as the server stopped


def refused(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=DEADLINE).close()
    except ConnectionRefusedError:
        return True
    return False


def test_a_saturated_pool_still_answers_with_redacted_stacks(
    start: Start, ctl: Ctl, tmp_path: Path
) -> None:
    server, port, path = start("--threads", "2", "--stuck-threshold", "0")
    secret = {"Authorization": "Bearer auth-s3cr3t"}
    held = [InBackground(port, f"/stuck/{n}?token=qs-s3cr3t", secret) for n in range(2)]
    server.wait_log("entered /stuck/0")
    server.wait_log("entered /stuck/1")
    queued = InBackground(port, "/queued")  # no worker thread is free for it

    status, out, err = ctl("--socket", path, "requests", "--stacks")
    assert status == 0, err
    assert "2 requests in flight" in out
    assert "GET /stuck/0 from 127.0.0.1:" in out and "GET /stuck/1 from 127.0.0.1:" in out
    assert out.count("in hold_the_line_forever") == 2
    # The source line, whichever of the loop's two lines the thread is on.
    assert "time.sleep(0.01)" in out or 'while not os.path.exists("released")' in out
    status, plain, _ = ctl("--socket", path, "requests")
    assert "GET /stuck/0 from" in plain and "hold_the_line_forever" not in plain
    answer = ctl_json(ctl, path, "requests", "--stacks")
    requests = answer["processes"][0]["requests"]
    assert sorted(item["request_line"] for item in requests) == ["GET /stuck/0", "GET /stuck/1"]
    assert all("hold_the_line_forever" in item["stack"] for item in requests)
    assert ctl_json(ctl, path, "stats")["processes"][0]["gauges"]["threads_app"] == 2
    for secret_text in SECRETS:
        assert secret_text not in out + plain + json.dumps(answer)

    (tmp_path / "released").touch()
    assert [request.answered() for request in (*held, queued)] == [200, 200, 200]


def test_every_worker_process_answers_and_a_stopped_one_is_named(start: Start, ctl: Ctl) -> None:
    server, port, path = start("--workers", "2", "--threads", "2")
    workers = server.wait_workers(2)
    wait_for(
        lambda: all(os.path.exists(f"{path}.worker-{index}") for index in (0, 1)),
        "the worker processes' control sockets",
    )
    for private in (path, f"{path}.worker-0", f"{path}.worker-1"):
        assert stat.S_IMODE(os.stat(private).st_mode) == 0o600

    stats = ctl_json(ctl, path, "stats")["processes"]
    assert {entry["pid"] for entry in stats} == workers
    assert [entry["worker"] for entry in stats] == [0, 1]
    status, out, _ = ctl("--socket", path, "workers")
    assert status == 0
    rows = [line.split() for line in out.splitlines()[1:]]
    assert {(row[0], int(row[1]), row[2]) for row in rows} == {
        (str(entry["worker"]), entry["pid"], "serving") for entry in stats
    }
    status, out, _ = ctl("--socket", path, "reopen-logs")
    assert status == 0
    assert out.startswith(f"supervisor (pid {server.pid}): reopened")
    assert out.count("reopened 0 log file(s)") >= 2

    stopped = stats[0]["pid"]
    os.kill(stopped, signal.SIGSTOP)
    try:
        status, out, err = ctl("--socket", path, "stats")
        assert status == 1, err
        assert f"worker 0 (pid {stopped}): no answer in time" in out
        assert f"worker 1 (pid {stats[1]['pid']}): up " in out
    finally:
        os.kill(stopped, signal.SIGCONT)
    wait_for(
        lambda: len(ctl_json(ctl, path, "stats")["processes"]) == 2,
        "both worker processes to answer again",
    )

    status, out, _ = ctl("--socket", path, "drain")
    assert status == 0
    assert out.count("draining: no longer accepting connections") == 3
    wait_for(lambda: refused(port), "every listening socket to close")
    workers_now = ctl_json(ctl, path, "workers")["processes"]
    assert {entry["state"] for entry in workers_now} == {"draining"}
    assert server.stop() == 0
    assert not any(name.startswith("control.sock") for name in os.listdir(Path(path).parent))


def test_errors_are_one_line_and_exit_2(ctl: Ctl, tmp_path: Path) -> None:
    missing = str(tmp_path / "nothing.sock")
    status, out, err = ctl("--socket", missing, "stats")
    assert (status, out) == (2, "")
    assert err == f"wsgipool ctl: error: no control socket at {missing}\n"

    dead = tmp_path / "dead.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(dead))
    listener.close()  # the file stays, nothing listens
    status, _, err = ctl("--socket", str(dead), "stats")
    assert status == 2
    assert err == f"wsgipool ctl: error: nothing listens on {dead} (connection refused)\n"

    status, _, err = ctl("--socket", missing, "restart")
    assert status == 2 and err.count("\n") == 1 and "invalid choice: 'restart'" in err
    status, _, err = ctl("stats", env={"WSGIPOOL_CONTROL_SOCKET": None})
    assert status == 2
    assert "no control socket: pass --socket PATH or set WSGIPOOL_CONTROL_SOCKET" in err
    status, _, err = ctl("--socket", missing, "stats", "--stacks")
    assert (status, err.count("\n")) == (2, 1)
    # Numbers in ASCII digits, as every option takes them (int() takes the others).
    for count in ("\u0661\u0662", "+5", "1_0"):
        status, _, err = ctl("--socket", missing, "threads", count)
        assert status == 2
        assert err == (
            f"wsgipool ctl: error: argument N: expected a whole number such as 16, not {count!r}\n"
        )


def test_ctl_at_a_socket_that_is_no_control_socket(
    spawn: Callable[..., Process], ctl: Ctl, tmp_path: Path
) -> None:
    """The server's own Unix socket (HTTP) given as --socket: said so, not "cut short"."""
    (tmp_path / "held.py").write_text(APP)
    path = tmp_path / "http.sock"
    server = spawn(["held:app", "-b", f"unix:{path}"])
    server.wait_log("listening on")
    status, out, err = ctl("--socket", str(path), "stats")
    assert (status, out) == (2, "")
    assert err == (
        f"wsgipool ctl: error: {path} answered, but not as a control socket: is it "
        "--control-socket's?\n"
    )


def test_a_control_socket_that_cannot_be_bound_is_one_line_and_exit_2(
    spawn: Callable[..., Process], tmp_path: Path
) -> None:
    (tmp_path / "held.py").write_text(APP)
    path = tmp_path / "missing-directory" / "control.sock"
    for extra in ((), ("--workers", "2")):
        server = spawn(["held:app", "-b", f"{HOST}:0", "--control-socket", str(path), *extra])
        assert server.wait() == 2
        assert server.log == (
            f"wsgipool: error: --control-socket: cannot listen on unix:{path}: "
            "No such file or directory\n"
        )


def test_a_file_in_the_way_of_a_worker_socket_is_left_alone(
    spawn: Callable[..., Process], tmp_path: Path
) -> None:
    """Files that are no sockets at PATH.worker-N: the worker processes cannot bind
    there, and the supervisor, reaping them, must not remove the user's files as their
    sockets. (Both are in the way: with one worker process ready, the supervisor would
    retry the other instead of stopping.)"""
    in_the_way = [tmp_path / f"control.sock.worker-{index}" for index in (0, 1)]
    for file in in_the_way:
        file.write_text("the user's")
    (tmp_path / "held.py").write_text(APP)
    path = tmp_path / "control.sock"
    server = spawn(["held:app", "-b", f"{HOST}:0", "--control-socket", str(path), "-w", "2"])
    assert server.wait() == 1
    assert [file.read_text() for file in in_the_way] == ["the user's", "the user's"]
    # Said in one line, as at the command line.
    assert "Traceback" not in server.log
    assert f"cannot start serving: control_socket: cannot listen on unix:{path}.worker-0: " in (
        server.log
    )


def test_a_killed_worker_process_leaves_no_socket_file(
    start: Start, ctl: Ctl, tmp_path: Path
) -> None:
    server, port, path = start("--workers", "2", "--threads", "2", "--graceful-timeout", "60")
    server.wait_workers(2)
    held = InBackground(port, "/stuck/held")
    server.wait_log("entered /stuck/held")
    holder = next(
        entry for entry in ctl_json(ctl, path, "requests")["processes"] if entry.get("requests")
    )
    server.send(signal.SIGTERM)  # the other worker process exits; this one waits
    server.wait_log(f"worker process {holder['pid']}: stopping: SIGTERM")
    os.kill(holder["pid"], signal.SIGKILL)  # it never removes its own socket file
    assert server.wait() == 0
    assert held.answered() == -1
    assert sorted(os.listdir(tmp_path)) == ["held.py"]


def pool_threads(ctl: Ctl, path: str) -> list[int]:
    """Each process's worker threads, as its scoreboard has them (threads by state)."""
    gauges = [entry["gauges"] for entry in ctl_json(ctl, path, "stats")["processes"]]
    states = ("threads_idle", "threads_reading", "threads_app", "threads_sending")
    return [sum(reading[state] for state in states) for reading in gauges]


def test_threads_n_resizes_the_pool_live(start: Start, ctl: Ctl, tmp_path: Path) -> None:
    server, port, path = start("--threads", "1", "--stuck-threshold", "0")
    held = InBackground(port, "/stuck/held")
    server.wait_log("entered /stuck/held")
    waiting = InBackground(port, "/")  # the one worker thread is held: it waits in the queue
    wait_for(
        lambda: ctl_json(ctl, path, "stats")["processes"][0]["gauges"]["queue_length"] == 1,
        "the second request to be queued",
    )

    status, out, err = ctl("--socket", path, "threads", "2")
    assert (status, out) == (0, f"pid {server.pid}: 2 worker threads (were 1)\n"), err
    assert waiting.answered() == 200  # served by the new thread, the first still held
    assert held.is_alive()
    assert ctl_json(ctl, path, "stats")["processes"][0]["threads"] == 2

    status, out, _ = ctl("--socket", path, "threads", "1")
    assert (status, out) == (0, f"pid {server.pid}: 1 worker threads (were 2)\n")
    wait_for(lambda: pool_threads(ctl, path) == [1], "the pool to shrink to one thread")
    # The thread that left (the idle one) took its count with it no more.
    assert ctl_json(ctl, path, "stats")["processes"][0]["requests"] == 2
    (tmp_path / "released").touch()
    assert held.answered() == 200
    assert InBackground(port, "/").answered() == 200
    assert pool_threads(ctl, path) == [1]
    assert ctl_json(ctl, path, "stats")["processes"][0]["requests"] == 3

    status, _, err = ctl("--socket", path, "threads", "0")
    assert (status, err) == (
        2,
        "wsgipool ctl: error: threads: a whole number from 1 to 4096, not 0\n",
    )


def test_threads_n_under_workers_holds_for_replacements(start: Start, ctl: Ctl) -> None:
    server, _port, path = start("--workers", "2", "--threads", "2")
    workers = server.wait_workers(2)
    status, out, err = ctl("--socket", path, "threads", "3")
    assert status == 0, err
    assert f"supervisor (pid {server.pid}): worker processes started from now on get 3" in out
    assert out.count("3 worker threads (were 2)") == 2
    wait_for(lambda: pool_threads(ctl, path) == [3, 3], "both pools to grow")

    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    replacement = server.wait_workers(2, besides={victim})
    assert len(replacement) == 2

    def threads_now() -> list[int | None]:
        # A worker process not answering yet is None (its line has an error instead).
        _status, out, _ = ctl("--socket", path, "stats", "--json")
        return [entry.get("threads") for entry in json.loads(out)["processes"]]

    wait_for(lambda: threads_now() == [3, 3], "the replacement to answer with 3 threads")


def test_top_once_shows_totals_processes_and_busy_threads(
    start: Start, ctl: Ctl, spawn: Callable[..., Process], tmp_path: Path
) -> None:
    server, port, path = start("--workers", "2", "--threads", "2", "--stuck-threshold", "0")
    server.wait_workers(2)
    assert InBackground(port, "/").answered() == 200
    # Counted once its worker thread goes back to wait for work.
    wait_for(lambda: ctl_json(ctl, path, "stats")["totals"]["requests"] == 1, "the request counted")
    held = InBackground(port, "/stuck/top?token=qs-s3cr3t")
    server.wait_log("entered /stuck/top")
    top = spawn(["top", "--socket", path, "--once"])
    assert top.wait() == 0, top.log
    lines = top.stdout.splitlines()
    assert lines[0].startswith("requests/s -   in flight 1   queue 0/")
    assert "queue wait p50 " in lines[0] and "ms p99 " in lines[0]  # one request finished
    processes = [line.split() for line in lines[3:5]]
    assert [(row[0], row[2], row[-1]) for row in processes] == [
        ("0", "2", "serving"),
        ("1", "2", "serving"),
    ]
    busy = [line for line in lines if "GET /stuck/top from 127.0.0.1:" in line]
    assert len(busy) == 1 and " app " in busy[0]
    assert "qs-s3cr3t" not in top.stdout
    (tmp_path / "released").touch()
    assert held.answered() == 200

    missing = spawn(["top", "--socket", str(tmp_path / "nothing.sock"), "--once"])
    assert missing.wait() == 2
    assert missing.log == f"wsgipool top: error: no control socket at {tmp_path}/nothing.sock\n"
    # Seconds as every duration is written (float() takes "1_0" and Arabic-Indic digits).
    for interval in ("1_0", "\u0661"):
        bad = spawn(["top", "--socket", path, "--once", "--interval", interval])
        assert bad.wait() == 2
        assert bad.log == (
            "wsgipool top: error: argument --interval: expected a number of seconds such as "
            f"2.5, not {interval!r}\n"
        )


def test_top_draws_live_in_a_terminal_and_q_quits(start: Start, tmp_path: Path) -> None:
    """The curses view, in a real pseudo-terminal: it draws the processes and the busy
    thread, redraws, and exits 0 on ``q``, giving the terminal back."""
    server, port, path = start("--workers", "2", "--threads", "2", "--stuck-threshold", "0")
    server.wait_workers(2)
    held = InBackground(port, "/stuck/live?token=qs-s3cr3t")
    server.wait_log("entered /stuck/live")
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    env = child_env({"TERM": "xterm"})
    top = subprocess.Popen(
        wsgipool_command("top", "--socket", path, "--interval", "0.2"),
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=env,
        start_new_session=True,
    )
    os.close(follower)
    screen = bytearray()

    def read_screen() -> int:
        """How much the view has written so far."""
        while select.select([leader], [], [], 0.05)[0]:
            try:
                screen.extend(os.read(leader, 65536))
            except OSError:  # the terminal closed: the process is gone
                break
        return len(screen)

    def drawn(*texts: bytes) -> bool:
        read_screen()
        return all(text in screen for text in texts)

    try:
        # Curses may move the cursor over runs of blanks, so look for words.
        wait_for(lambda: drawn(b"requests/s", b"serving", b"/stuck/live"), "the first view")
        # The held request's elapsed time changes, so a redraw sends more.
        first = len(screen)
        wait_for(lambda: read_screen() > first, "a redraw")
        os.write(leader, b"q")
        assert top.wait(DEADLINE) == 0
        read_screen()
    finally:
        if top.poll() is None:
            top.kill()
            top.wait()
        os.close(leader)
    assert b"\x1b[?1049l" in screen  # xterm's rmcup: curses gave the terminal back
    assert b"qs-s3cr3t" not in screen
    assert b"Traceback" not in screen
    (tmp_path / "released").touch()
    assert held.answered() == 200


def test_top_without_a_terminal_is_one_line(start: Start, spawn: Callable[..., Process]) -> None:
    """The live view needs a terminal: without one (stdin from /dev/null, stdout a pipe),
    one line says so and points at --once, instead of curses' traceback."""
    _server, _port, path = start()
    top = spawn(["top", "--socket", path])
    assert top.wait() == 2
    assert top.log == (
        "wsgipool top: error: the live view needs a terminal: --once prints one view as text\n"
    )


def test_top_on_a_terminal_curses_does_not_know_is_one_line(start: Start) -> None:
    _server, _port, path = start()
    leader, follower = pty.openpty()
    top = subprocess.Popen(
        wsgipool_command("top", "--socket", path),
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=child_env({"TERM": "wsgipool-no-such-terminal"}),
        start_new_session=True,
    )
    os.close(follower)
    output = bytearray()
    try:
        status = top.wait(DEADLINE)
        while select.select([leader], [], [], 0.05)[0]:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: the process is gone
                break
            if not chunk:
                break
            output.extend(chunk)
    finally:
        if top.poll() is None:
            top.kill()
            top.wait()
        os.close(leader)
    assert status == 2, bytes(output)
    text = output.decode()
    assert "Traceback" not in text
    assert text.strip().startswith("wsgipool top: error: cannot draw on this terminal")
    assert text.strip().endswith("--once prints one view as text")


def test_a_control_socket_too_long_for_the_worker_sockets_is_refused_at_once(
    spawn: Callable[..., Process], tmp_path: Path
) -> None:
    (tmp_path / "held.py").write_text(APP)
    # Short enough to bind itself, too long with .worker-N appended (Linux: 107 bytes).
    stem = str(tmp_path / "c")
    path = stem + "x" * (100 - len(os.fsencode(stem)))
    server = spawn(["held:app", "-b", f"{HOST}:0", "--control-socket", path, "--workers", "2"])
    assert server.wait() == 2
    lines = server.log.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"wsgipool: error: --control-socket: {path} is too long for ")
    assert sorted(os.listdir(tmp_path)) == ["held.py"]
