"""Every way in starts the same way (launch.py): the command line, ``serve()``,
``run_simple``, the Paste runner and ``flask serve`` honour every process option
(worker processes, recycling, preloading, the umask), or refuse it with a clear error.

Each front end runs as a real process on a free port; what it did is read from its answers
(the worker process that served, the process that loaded the app), its log and the files it
made.
"""

from __future__ import annotations

import http.client
import logging
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.net import free_port
from tests.helpers.process import Process, refused
from tests.helpers.waiting import DEADLINE, wait_for

APP = """
import os

LOADED_IN = os.getpid()


def app(environ, start_response):
    body = f"{os.getpid()} {LOADED_IN}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""

FLASK_APP = """
import os

from flask import Flask

LOADED_IN = os.getpid()
app = Flask(__name__)


@app.get("/")
def index():
    return f"{os.getpid()} {LOADED_IN}"
"""

# The process options, as each front end spells them; "pidapp" is APP, "flaskpid" FLASK_APP.
PROCESS_OPTIONS = "workers=2, max_requests=4, max_requests_jitter=1, preload=True, umask='077'"


def python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def front_end_command(front_end: str, port: int) -> list[str]:
    log = "access_log='access.log'"
    # The process options as the command line and flask serve spell them.
    flags = ["-b", f"127.0.0.1:{port}", "--workers", "2", "--max-requests", "4"]
    flags += ["--max-requests-jitter", "1", "--preload", "--umask", "077"]
    flags += ["--access-log", "access.log"]
    if front_end == "cli":
        return [sys.executable, "-m", "wsgipool", "pidapp:app", *flags]
    if front_end == "flask":
        return [sys.executable, "-m", "flask", "--app", "flaskpid", "serve", *flags]
    if front_end == "serve":
        return python(
            f"""
            import pidapp, wsgipool
            wsgipool.serve(pidapp.app, bind="127.0.0.1:{port}", {PROCESS_OPTIONS}, {log})
            """
        )
    if front_end == "run_simple":
        return python(
            f"""
            import pidapp, wsgipool
            wsgipool.run_simple(
                "127.0.0.1", {port}, pidapp.app, processes=2, max_requests=4,
                max_requests_jitter=1, preload=True, umask="077", {log}
            )
            """
        )
    assert front_end == "paste"
    return python(
        f"""
        import pidapp
        from wsgipool.integrations.paste import paste_server_runner
        paste_server_runner(
            pidapp.app, {{}}, host="127.0.0.1", port="{port}", workers="2",
            max_requests="4", max_requests_jitter="1", preload="true", umask="077",
            access_log="access.log",
        )
        """
    )


def get(port: int) -> tuple[int, int]:
    """One request on a new connection: (pid that served it, pid that loaded the app)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    try:
        connection.request("GET", "/", headers={"Connection": "close"})
        response = connection.getresponse()
        assert response.status == 200
        served, loaded = response.read().split()
        return int(served), int(loaded)
    finally:
        connection.close()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pidapp.py").write_text(APP)
    (tmp_path / "flaskpid.py").write_text(FLASK_APP)
    return tmp_path


@pytest.mark.parametrize("front_end", ["cli", "serve", "run_simple", "paste", "flask"])
def test_every_front_end_honours_the_process_options(
    front_end: str, project: Path, spawn: Callable[..., Process]
) -> None:
    if front_end == "flask":
        pytest.importorskip("flask")
    port = free_port()
    proc = spawn(
        command=front_end_command(front_end, port),
        cwd=project,
        env={"PYTHONPATH": os.pathsep.join([str(project), os.environ.get("PYTHONPATH", "")])},
    )
    # workers: two worker processes, each listening.
    first = proc.wait_workers(2)
    # preload: the app was loaded once, by the supervisor, before it forked.
    served, loaded = get(port)
    assert served in first
    assert loaded == proc.pid
    # max_requests (with jitter): each worker process retires after 4 or 5 requests, and
    # the supervisor starts another.
    for _ in range(12):
        served, loaded = get(port)
        assert loaded == proc.pid
    proc.wait_log("retired itself; starting a new one")
    # umask: the files the server made have it (the access log, made by the workers).
    mode = stat.S_IMODE((project / "access.log").stat().st_mode)
    assert mode & 0o077 == 0, oct(mode)
    assert proc.stop(signal.SIGTERM) == 0
    assert "Traceback" not in proc.log


@pytest.mark.parametrize("front_end", ["serve", "run_simple", "paste"])
def test_python_front_ends_load_in_each_worker_without_preload(
    front_end: str, project: Path, spawn: Callable[..., Process]
) -> None:
    """An application object given from Python is forked into each worker process: it was
    loaded by the process that called the front end, with or without preload."""
    port = free_port()
    command = front_end_command(front_end, port)
    command[-1] = (
        command[-1]
        .replace("preload=True", "preload=False")
        .replace('preload="true"', 'preload="false"')
    )
    proc = spawn(
        command=command,
        cwd=project,
        env={"PYTHONPATH": os.pathsep.join([str(project), os.environ.get("PYTHONPATH", "")])},
    )
    workers = proc.wait_workers(2)
    served, loaded = get(port)
    assert served in workers
    assert loaded == proc.pid
    assert proc.stop(signal.SIGTERM) == 0


def test_the_command_line_without_preload_imports_in_each_worker(
    project: Path, spawn: Callable[..., Process]
) -> None:
    port = free_port()
    proc = spawn(["pidapp:app", "-b", f"127.0.0.1:{port}", "--workers", "2"], cwd=project)
    workers = proc.wait_workers(2)
    served, loaded = get(port)
    assert served in workers
    assert loaded == served
    assert proc.stop(signal.SIGTERM) == 0


def test_server_refuses_process_options() -> None:
    """``Server`` runs inside the caller's process: worker processes and the umask are
    process options, refused with what to use instead."""
    from wsgipool import ConfigError, Server

    for options in ({"workers": 2}, {"max_requests": 10}, {"preload": True}, {"umask": "077"}):
        with pytest.raises(ConfigError, match="serve\\(\\) or the wsgipool command"):
            Server(lambda environ, start_response: [], **options)


def test_server_refuses_a_log_level_it_cannot_apply() -> None:
    """The ``wsgipool`` loggers belong to the whole process (two Servers share them): a
    Server has no level of its own to set, so a log level is refused, not dropped."""
    from wsgipool import ConfigError, Server

    level = logging.getLogger("wsgipool").level
    with pytest.raises(ConfigError, match=r"^log_level: options of the whole process"):
        Server(lambda environ, start_response: [], log_level="debug")
    assert logging.getLogger("wsgipool").level == level


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_second_start_leaves_the_running_servers_pid_file(
    workers: str, project: Path, spawn: Callable[..., Process]
) -> None:
    """Started twice by mistake (the same address, the same --pidfile): the second start
    is refused with one line, and the running server's pid file stays, with its pid."""
    pidfile = project / "app.pid"
    args = ["pidapp:app", "--pidfile", str(pidfile), "--workers", workers]
    running = spawn([*args, "-b", "127.0.0.1:0"], cwd=project)
    port = running.listening_port()
    line = refused(spawn, [*args, "-b", f"127.0.0.1:{port}"], cwd=project)
    assert line == (
        f"wsgipool: error: --pidfile: {pidfile} holds pid {running.pid}, a running process: "
        "is the server running already? (If that process is something else, remove the file.)"
    )
    assert pidfile.read_text() == f"{running.pid}\n"
    assert running.stop(signal.SIGTERM) == 0
    assert not pidfile.exists()


def test_a_stale_pid_file_is_taken_over(project: Path, spawn: Callable[..., Process]) -> None:
    """A pid file left by a process that is gone (killed, the machine rebooted)."""
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    pidfile = project / "app.pid"
    pidfile.write_text(gone.stdout)
    server = spawn(["pidapp:app", "--pidfile", str(pidfile), "-b", "127.0.0.1:0"], cwd=project)
    server.listening_port()
    assert pidfile.read_text() == f"{server.pid}\n"
    assert server.stop(signal.SIGTERM) == 0


def test_serve_off_the_main_thread_is_refused() -> None:
    """serve() serves the process until a signal, which only the main thread gets: from
    another thread it is refused with what to use instead, before it sets anything up."""
    from wsgipool import ConfigError, serve

    raised: list[BaseException] = []

    def call() -> None:
        try:
            serve(lambda environ, start_response: [], bind=["127.0.0.1:0"])
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    thread.join(DEADLINE)
    assert not thread.is_alive()
    (error,) = raised
    assert isinstance(error, ConfigError), repr(error)
    assert "on its main thread: to serve from another thread, use Server(app, ...)" in str(error)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_error_log_when_the_program_configured_logging(
    workers: str, project: Path, spawn: Callable[..., Process]
) -> None:
    """serve(error_log=FILE) in a program that set up logging itself (as pserve does for
    the Paste runner): wsgipool's log goes to FILE too, not only to the program's
    handlers (logging.basicConfig, which applies error_log, does nothing then)."""
    command = python(
        f"""
        import logging, sys
        import pidapp, wsgipool
        logging.basicConfig(stream=sys.stderr, format="program: %(message)s")
        wsgipool.serve(
            pidapp.app, bind="127.0.0.1:0", error_log="error.log", workers={workers}
        )
        """
    )
    env = {"PYTHONPATH": os.pathsep.join([str(project), os.environ.get("PYTHONPATH", "")])}
    proc = spawn(command=command, cwd=project, env=env)
    proc.listening_port()
    assert proc.stop(signal.SIGTERM) == 0
    error_log = (project / "error.log").read_text()
    assert "] [INFO] listening on http://127.0.0.1:" in error_log
    assert "program: listening on http://127.0.0.1:" in proc.log  # still the program's too


def test_error_log_with_captured_output_has_each_line_once(
    project: Path, spawn: Callable[..., Process]
) -> None:
    """With capture_output, the program's stderr handler writes into the error log file
    already: wsgipool adds no handler of its own there, or each line would be in it twice."""
    command = python(
        """
        import logging, sys
        import pidapp, wsgipool
        logging.basicConfig(stream=sys.stderr, format="program: %(message)s")
        wsgipool.serve(
            pidapp.app, bind="127.0.0.1:0", error_log="error.log", capture_output=True
        )
        """
    )
    env = {"PYTHONPATH": os.pathsep.join([str(project), os.environ.get("PYTHONPATH", "")])}
    proc = spawn(command=command, cwd=project, env=env)
    error_log = project / "error.log"
    wait_for(lambda: error_log.exists() and "listening on" in error_log.read_text(), "listening")
    assert proc.stop(signal.SIGTERM) == 0
    lines = [line for line in error_log.read_text().splitlines() if "listening on" in line]
    assert len(lines) == 1 and lines[0].startswith("program: listening on"), lines


def test_worker_processes_that_cannot_start_serving_say_why_in_one_line(
    project: Path, spawn: Callable[..., Process]
) -> None:
    """An access log the worker processes cannot open: each says so in one line (no
    traceback), and the supervisor stops with status 1, as when they cannot load the app."""
    log = project / "no-such-directory" / "access.log"
    proc = spawn(["pidapp:app", "-b", "127.0.0.1:0", "--workers", "2", "--access-log", str(log)])
    assert proc.wait() == 1
    assert "Traceback" not in proc.log
    assert f"cannot start serving: access_log: cannot open {log}: No such file" in proc.log
    assert "failed to start (it could not start serving)" in proc.log


def test_recycling_with_one_worker_process(project: Path, spawn: Callable[..., Process]) -> None:
    """--max-requests alone runs the supervisor with one worker process, which recycles."""
    port = free_port()
    proc = spawn(["pidapp:app", "-b", f"127.0.0.1:{port}", "--max-requests", "3"], cwd=project)
    (first,) = proc.wait_workers(1)
    for _ in range(3):
        assert get(port)[0] == first
    proc.wait_log("retired itself; starting a new one")
    (second,) = proc.wait_workers(1, besides={first})
    assert get(port)[0] == second
    assert proc.stop(signal.SIGTERM) == 0
