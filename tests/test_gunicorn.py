"""gunicorn users' habits: a gunicorn configuration file with its server hooks, and
gunicorn's flag names, on the real command (real processes, real requests)."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import tempfile
import textwrap
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.process import Process, refused
from tests.helpers.waiting import wait_for

APP = """
import os, sys

def app(environ, start_response):
    print("printed by the app", flush=True)
    body = f"{os.getuid()} {os.environ.get('GREETING', '-')}".encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]
"""

# Each hook appends "name pid detail" to ./events.
HOOKS = """
import os

def _event(name, detail=""):
    with open("events", "a") as file:
        file.write(f"{name} {os.getpid()} {detail}\\n")

def on_starting(server):
    _event("on_starting", server.cfg.workers)

def when_ready(server):
    _event("when_ready", server.pid)

def pre_fork(server, worker):
    _event("pre_fork", worker.age)

def post_fork(server, worker):
    _event("post_fork", worker.pid)

def post_worker_init(worker):
    _event("post_worker_init", worker.cfg.threads)

def pre_request(worker, req):
    _event("pre_request", f"{req.method} {req.path} {dict(req.headers)['X-HOOK']}")

def post_request(worker, req, environ, resp):
    _event("post_request", f"{environ['PATH_INFO']} {resp.status}")

def worker_exit(server, worker):
    _event("worker_exit", worker.pid)

def child_exit(server, worker):
    _event("child_exit", worker.pid)

def on_exit(server):
    _event("on_exit")
"""


def project(directory: Path, settings: str, *, hooks: bool = True) -> Path:
    """An app and ./gunicorn.conf.py (with the hooks) in ``directory``."""
    (directory / "app.py").write_text(APP)
    text = textwrap.dedent(settings) + (HOOKS if hooks else "")
    (directory / "gunicorn.conf.py").write_text(text)
    return directory


def events(directory: Path) -> list[list[str]]:
    path = directory / "events"
    lines = path.read_text().splitlines() if path.exists() else []
    return [line.split(" ", 2) for line in lines]


def names(directory: Path) -> list[str]:
    return [event[0] for event in events(directory)]


def get(port: int, path: str = "/") -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"X-Hook": "1"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(response.read().decode())


def test_gunicorn_conf_py_with_workers_and_hooks_is_honoured(spawn: Any, tmp_path: Path) -> None:
    """No arguments: ./gunicorn.conf.py names the app, the address, the processes and the
    threads, and each hook runs at gunicorn's moment with gunicorn's arguments."""
    project(
        tmp_path,
        """
        wsgi_app = "app:app"
        bind = "127.0.0.1:0"
        workers = 2
        threads = 3
        """,
    )
    proc: Process = spawn([])
    port = proc.listening_port()
    proc.wait_workers(2)
    assert "with 2 worker processes of 3 threads" in proc.log
    assert get(port, "/first").endswith(" -")
    wait_for(lambda: "post_request" in names(tmp_path), "post_request")
    assert proc.stop() == 0
    wait_for(lambda: "on_exit" in names(tmp_path), "on_exit")
    seen = events(tmp_path)
    supervisor = str(proc.pid)
    by_name: dict[str, list[list[str]]] = {}
    for event in seen:
        by_name.setdefault(event[0], []).append(event)
    assert by_name["on_starting"] == [["on_starting", supervisor, "2"]]
    assert by_name["when_ready"] == [["when_ready", supervisor, supervisor]]
    assert sorted(event[2] for event in by_name["pre_fork"]) == ["1", "2"]
    assert all(event[1] == supervisor for event in by_name["pre_fork"])
    workers = {event[1] for event in by_name["post_fork"]}
    assert len(workers) == 2 and all(event[1] == event[2] for event in by_name["post_fork"])
    assert {event[1] for event in by_name["post_worker_init"]} == workers
    assert by_name["post_worker_init"][0][2] == "3"
    assert by_name["pre_request"][0][1] in workers
    assert by_name["pre_request"][0][2] == "GET /first 1"
    assert by_name["post_request"][0][2] == "/first 200 OK"
    assert {event[1] for event in by_name["worker_exit"]} == workers
    assert {event[2] for event in by_name["child_exit"]} == workers
    assert all(event[1] == supervisor for event in by_name["child_exit"])
    order = names(tmp_path)
    assert order.index("on_starting") < order.index("when_ready") < order.index("pre_fork")
    assert order[-1] == "on_exit"


def test_one_process_calls_the_hooks_in_gunicorns_order(spawn: Any, tmp_path: Path) -> None:
    """-c FILE, one process: when_ready once listening, before the app loads."""
    project(tmp_path, 'bind = "127.0.0.1:0"\n')
    (tmp_path / "gunicorn.conf.py").rename(tmp_path / "prod.py")
    proc: Process = spawn(["-c", "prod.py", "app:app"])
    port = proc.listening_port()
    get(port, "/x")
    wait_for(lambda: "post_request" in names(tmp_path), "post_request")
    assert proc.stop() == 0
    assert names(tmp_path) == [
        "on_starting",
        "when_ready",
        "post_worker_init",
        "pre_request",
        "post_request",
        "worker_exit",
        "on_exit",
    ]
    assert {event[1] for event in events(tmp_path)} == {str(proc.pid)}


def test_a_post_request_of_two_arguments_is_called(spawn: Any, tmp_path: Path) -> None:
    """gunicorn takes post_request(worker, req) as well as its four arguments."""
    project(
        tmp_path,
        """
        bind = "127.0.0.1:0"
        def post_request(worker, req):
            open("events", "a").write(f"post_request {worker.pid} {req.path}\\n")
        """,
        hooks=False,
    )
    proc: Process = spawn(["app:app"])
    get(proc.listening_port(), "/short")
    wait_for(lambda: "post_request" in names(tmp_path), "post_request")
    assert events(tmp_path) == [["post_request", str(proc.pid), "/short"]]
    assert "gunicorn hook" not in proc.log


def test_settings_without_meaning_are_named_in_one_warning(spawn: Any, tmp_path: Path) -> None:
    project(
        tmp_path,
        """
        import multiprocessing
        bind = ["127.0.0.1:9001", "unix:/tmp/x, y.sock"]
        threads = 5
        workers = multiprocessing.cpu_count() * 0 + 3
        timeout = 45
        keepalive = 7
        umask = 0o027
        spew = True
        worker_connections = 1000
        daemon = False
        workrs = 4
        def helper():
            return 1
        """,
        hooks=False,
    )
    proc: Process = spawn(
        ["--print-config", "app:app", "--threads", "6"], env={"WSGIPOOL_KEEPALIVE_TIMEOUT": "8"}
    )
    assert proc.wait() == 0
    warnings = proc.log.strip().splitlines()
    assert len(warnings) == 1, proc.log
    assert (
        "spew, worker_connections, workrs (not a gunicorn setting; did you mean workers?)"
        in (warnings[0])
    )
    assert "daemon" not in warnings[0] and "helper" not in warnings[0]
    report = dict(line.split(" = ", 1) for line in proc.stdout.splitlines())
    source = f"  # gunicorn config {tmp_path / 'gunicorn.conf.py'}"
    assert report["bind"] == "('127.0.0.1:9001', 'unix:/tmp/x, y.sock')" + source
    assert report["workers"] == "3" + source
    assert report["stuck_recycle"] == "45.0" + source
    assert report["umask"] == "'027'" + source
    # The command line and the environment win over the file.
    assert report["threads"] == "6  # command line"
    assert report["keepalive_timeout"] == "8.0  # environment WSGIPOOL_KEEPALIVE_TIMEOUT"


ALIASES = {
    ("--access-logfile", "-"): ("access_log", "'-'"),
    ("--error-logfile", "e.log"): ("error_log", "'e.log'"),
    ("--log-file", "e.log"): ("error_log", "'e.log'"),
    ("--timeout", "30"): ("stuck_recycle", "30.0"),
    ("-k", "sync"): ("worker_class", "'sync'"),
    ("--worker-class", "gthread"): ("worker_class", "'gthread'"),
    ("--pid", "app.pid"): ("pidfile", "'app.pid'"),
    ("--user", "0"): ("user", "'0'"),
    ("--group", "0"): ("group", "'0'"),
    ("--limit-request-line", "4096"): ("max_request_line", "4096"),
    ("--limit-request-fields", "50"): ("max_header_count", "50"),
    ("--limit-request-field-size", "16K"): ("max_header_size", "16384"),
    ("--keep-alive", "3"): ("keepalive_timeout", "3.0"),
    ("--access-logformat", "%(h)s"): ("access_log_format", "'%(h)s'"),
}


@pytest.mark.parametrize("flag", list(ALIASES), ids=lambda flag: flag[0])
def test_each_gunicorn_flag_sets_its_option(
    spawn: Any, tmp_path: Path, flag: tuple[str, str]
) -> None:
    field, value = ALIASES[flag]
    proc: Process = spawn(["--print-config", *flag, "app:app"])
    assert proc.wait() == 0, proc.log
    assert f"\n{field} = {value}  # command line" in proc.stdout


def test_capture_output_needs_an_error_log_file(spawn: Any) -> None:
    line = refused(spawn, ["--capture-output", "app:app"])
    assert line.endswith("--capture-output: needs error_log (a file to capture output into)")


def test_gunicorn_flags_serve(spawn: Any, tmp_path: Path) -> None:
    """--access-logfile -, --error-logfile, --capture-output and --pid do what they say."""
    (tmp_path / "app.py").write_text(APP)
    args = ["-b", "127.0.0.1:0", "--access-logfile", "-", "--pid", "run/app.pid"]
    args += ["--error-logfile", "error.log", "--capture-output", "app:app"]
    (tmp_path / "run").mkdir()
    proc: Process = spawn(args)
    error_log = tmp_path / "error.log"
    wait_for(lambda: error_log.exists() and "listening on" in error_log.read_text(), "listening")
    pidfile = tmp_path / "run" / "app.pid"
    assert pidfile.read_text() == f"{proc.pid}\n"
    port = int(error_log.read_text().split("listening on http://127.0.0.1:")[1].split()[0])
    get(port, "/logged")
    # The access log goes to stdout, which --capture-output sends to the error log too.
    wait_for(lambda: '"GET /logged HTTP/1.1" 200' in error_log.read_text(), "access line")
    assert "printed by the app" in error_log.read_text()
    assert proc.stop() == 0
    assert not pidfile.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
@pytest.mark.parametrize("workers", ["1", "2"])
def test_user_takes_effect_before_the_app_loads(spawn: Any, workers: str) -> None:
    """gunicorn's user and raw_env: the app runs as nobody with the environment set, on a
    socket bound before."""
    # Where nobody can read the app (pytest's directories are root's alone).
    directory = Path(tempfile.mkdtemp(prefix="wsgipool-user-"))
    directory.chmod(0o755)
    project(
        directory,
        f"""
        bind = "127.0.0.1:0"
        user = "nobody"
        raw_env = ["GREETING=hello"]
        workers = {workers}
        """,
        hooks=False,
    )
    nobody = pwd.getpwnam("nobody").pw_uid
    try:
        proc: Process = spawn(["app:app"], cwd=directory)
        assert get(proc.listening_port()) == f"{nobody} hello"
        assert proc.stop() == 0
    finally:
        shutil.rmtree(directory)


@pytest.mark.parametrize(
    ("args", "setting", "expected"),
    [
        (["-k", "gevent"], "", "'gevent' is not served here"),
        ([], 'worker_class = "eventlet"', "'eventlet' is not served here"),
        ([], "workers = -1", "workers = -1: expected a whole number"),
        ([], "bind = 8000 +", "SyntaxError"),
        ([], "import no_such_module", "line 1: ModuleNotFoundError"),
        (["-c", "missing.py"], "", "--config missing.py: no such file"),
        ([], "--user", ""),
    ],
)
def test_bad_gunicorn_settings_are_one_line(
    spawn: Any, tmp_path: Path, args: list[str], setting: str, expected: str
) -> None:
    (tmp_path / "app.py").write_text(APP)
    if setting == "--user":
        args, expected = ["--user", "no-such-user-here"], "user: no such user"
    elif setting:
        (tmp_path / "gunicorn.conf.py").write_text(setting + "\n")
    line = refused(spawn, [*args, "app:app"])
    assert expected in line, line


def test_a_stopped_supervisor_leaves_no_pid_file(spawn: Any, tmp_path: Path) -> None:
    project(tmp_path, 'bind = "127.0.0.1:0"\nworkers = 2\npidfile = "app.pid"\n', hooks=False)
    proc: Process = spawn(["app:app"])
    proc.wait_workers(2)
    assert (tmp_path / "app.pid").read_text().strip() == str(proc.pid)
    assert proc.stop(signal.SIGINT) == 0
    assert not (tmp_path / "app.pid").exists()


STUCK_APP = """
import time

def app(environ, start_response):
    if environ["PATH_INFO"] == "/stuck":
        time.sleep(60)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""


def test_timeout_dumps_recycles_and_calls_worker_abort(spawn: Any, tmp_path: Path) -> None:
    """gunicorn's ``timeout`` is --stuck-recycle: the stuck request is logged with its stack,
    ``worker_abort`` runs in the worker process (gunicorn calls it on its timeout's
    SIGABRT), and a replacement serves; nothing is killed mid-request by the server."""
    (tmp_path / "app.py").write_text(STUCK_APP)
    (tmp_path / "gunicorn.conf.py").write_text(
        textwrap.dedent(
            """
            wsgi_app = "app:app"
            bind = "127.0.0.1:0"
            workers = 1
            timeout = 1
            graceful_timeout = 2

            def worker_abort(worker):
                with open("aborted", "a") as file:
                    file.write(f"{worker.pid}\\n")
            """
        )
    )
    proc: Process = spawn([])
    port = proc.listening_port()
    (first,) = proc.wait_workers(1)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as stuck:
        stuck.sendall(b"GET /stuck HTTP/1.1\r\nHost: x\r\n\r\n")
        aborted = tmp_path / "aborted"
        wait_for(lambda: aborted.exists() and aborted.read_text().strip() != "", "worker_abort")
        assert aborted.read_text().split() == [str(first)]
        log = proc.log
        assert "in-flight requests: wsgipool pid" in log
        proc.wait_workers(1, besides={first})
        assert get(port, "/") == "ok"
    assert proc.stop() == 0


def test_gunicorn_cmd_args_sit_between_the_environment_and_the_file(
    spawn: Any, tmp_path: Path
) -> None:
    """$GUNICORN_CMD_ARGS is read as gunicorn reads it: over the configuration file, under
    the command line (and, in wsgipool, under the WSGIPOOL_ variables)."""
    project(tmp_path, "threads = 3\nworkers = 2\nbacklog = 64\n", hooks=False)
    proc: Process = spawn(
        ["--print-config", "app:app", "--threads", "6"],
        env={
            "GUNICORN_CMD_ARGS": "--threads=4 --workers 3 --keep-alive=9 --timeout 20 -b '127.0.0.1:9002'",
            "WSGIPOOL_KEEPALIVE_TIMEOUT": "8",
        },
    )
    assert proc.wait() == 0, proc.log
    report = dict(line.split(" = ", 1) for line in proc.stdout.splitlines())
    from_variable = "  # environment GUNICORN_CMD_ARGS"
    assert report["threads"] == "6  # command line"
    assert report["keepalive_timeout"] == "8.0  # environment WSGIPOOL_KEEPALIVE_TIMEOUT"
    assert report["workers"] == "3" + from_variable
    assert report["stuck_recycle"] == "20.0" + from_variable
    assert report["bind"] == "('127.0.0.1:9002',)" + from_variable
    assert report["backlog"] == f"64  # gunicorn config {tmp_path / 'gunicorn.conf.py'}"


def test_gunicorn_cmd_args_and_env_flags_serve(spawn: Any, tmp_path: Path) -> None:
    """-c, --chdir and -e from $GUNICORN_CMD_ARGS; -e on the command line wins over it,
    which wins over the file's raw_env."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "app.py").write_text(APP)
    (tmp_path / "conf.py").write_text('raw_env = ["GREETING=from-file"]\nthreads = 2\n')
    variable = f"-c {tmp_path / 'conf.py'} --chdir {site} -e GREETING=from-variable"
    proc: Process = spawn(["-b", "127.0.0.1:0", "app:app"], env={"GUNICORN_CMD_ARGS": variable})
    port = proc.listening_port()
    assert get(port).endswith(" from-variable")
    assert "with 2 threads" in proc.log
    assert proc.stop() == 0
    proc = spawn(
        ["-b", "127.0.0.1:0", "-e", "GREETING=from-command-line", "app:app"],
        env={"GUNICORN_CMD_ARGS": variable},
    )
    assert get(proc.listening_port()).endswith(" from-command-line")


@pytest.mark.parametrize(
    ("variable", "expected"),
    [
        ("--threads=0", "GUNICORN_CMD_ARGS: --threads: must be a whole number from 1 to 4096"),
        ("--workrs 2", "GUNICORN_CMD_ARGS: unknown option --workrs (did you mean --workers?)"),
        ("--print-config", "GUNICORN_CMD_ARGS: --print-config is for the command line"),
        ("--help", "GUNICORN_CMD_ARGS: --help is for the command line"),
        ("other:app", "GUNICORN_CMD_ARGS: name the application on the command line"),
        ("--bind 'unclosed", "GUNICORN_CMD_ARGS: No closing quotation"),
        ("-e NOEQUALS", "GUNICORN_CMD_ARGS: argument -e/--env: expected KEY=VALUE"),
    ],
)
def test_bad_gunicorn_cmd_args_are_one_line(
    spawn: Any, tmp_path: Path, variable: str, expected: str
) -> None:
    (tmp_path / "app.py").write_text(APP)
    line = refused(spawn, ["app:app"], env={"GUNICORN_CMD_ARGS": variable})
    assert line.startswith("wsgipool: error: ") and expected in line, line


def test_a_configuration_module_is_read_with_python_prefix(spawn: Any, tmp_path: Path) -> None:
    """gunicorn's ``-c python:MODULE``: the module is found on the import path, the
    current directory first, and read as a file is."""
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "settings").mkdir()
    (tmp_path / "settings" / "__init__.py").write_text("")
    (tmp_path / "settings" / "gunicorn_prod.py").write_text("threads = 3\nbacklog = 32\n")
    proc: Process = spawn(["--print-config", "-c", "python:settings.gunicorn_prod", "app:app"])
    assert proc.wait() == 0, proc.log
    source = f"  # gunicorn config {tmp_path / 'settings' / 'gunicorn_prod.py'}"
    assert f"\nthreads = 3{source}\n" in proc.stdout
    assert f"\nbacklog = 32{source}\n" in proc.stdout
    for name, expected in (
        ("nosuch", "--config python:nosuch: no such module"),
        ("settings.nosuch", "--config python:settings.nosuch: no such module"),
        ("nosuch.inner", "--config python:nosuch.inner: No module named 'nosuch'"),
        ("sys", "--config python:sys: not a Python source file (built-in)"),
    ):
        line = refused(spawn, ["-c", f"python:{name}", "app:app"])
        assert line == f"wsgipool: error: {expected}", line


@pytest.mark.parametrize("key", ["WSGIPOOL_THREADS", "GUNICORN_CMD_ARGS"])
def test_the_apps_environment_cannot_configure_wsgipool(
    spawn: Any, tmp_path: Path, key: str
) -> None:
    """-e and raw_env are the application's environment; wsgipool's own variables there
    would change the server only when it runs again (--reload, SIGHUP)."""
    (tmp_path / "app.py").write_text(APP)
    line = refused(spawn, ["-e", f"{key}=2", "app:app"])
    assert line.startswith("wsgipool: error: argument -e/--env: "), line
    assert f"{key} configures wsgipool itself: give it as an option" in line
    (tmp_path / "gunicorn.conf.py").write_text(f'raw_env = ["{key}=2"]\n')
    line = refused(spawn, ["app:app"])
    assert f"gunicorn.conf.py: raw_env = ['{key}=2']: {key} configures wsgipool itself" in line
