"""``--reload``: a supervisor holds the sockets and restarts the server process on changes.

End-to-end tests run ``python -m wsgipool app:app --reload`` as a real process group, once
with watchfiles and once with the polling fallback (``WSGIPOOL_RELOAD_POLL=1``). Every wait
polls a condition against a deadline; the process group is killed after each test.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.apps import hello_app
from tests.helpers.net import free_port, refuses
from tests.helpers.process import Process, child_env, wsgipool_command
from tests.helpers.waiting import DEADLINE, wait_for
from wsgipool import Server
from wsgipool.cli import main
from wsgipool.config import BindAddress, Config, ConfigError
from wsgipool.supervisors.process import INHERITED_FDS_ENV, is_reloader_child, take_inherited_fds
from wsgipool.supervisors.reloader import POLL_ENV, _FileFilter, _make_watcher, default_command

APP = """\
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"{version}"]
"""


def write_app(directory: Path, version: str) -> None:
    (directory / "app.py").write_text(APP.format(version=version))


def fetch(port: int, timeout: float = DEADLINE) -> bytes:
    """GET / on a new connection; the body of a 200 response, else an error."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return read_body(sock)


def read_body(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200 "):
        raise ConnectionError(f"no 200 response: {data[:200]!r}")
    return body


class Reloader(Process):
    """``python -m wsgipool app:app --reload`` (or ``command``) serving ``directory`` on
    ``port``, watching with watchfiles or (``poll``) by polling."""

    def __init__(
        self,
        directory: Path,
        port: int,
        *,
        poll: bool,
        extra: tuple[str, ...] = (),
        command: list[str] | None = None,
    ):
        self.port = port
        self.poll = poll
        command = command or wsgipool_command(
            "app:app",
            *("--reload", "--reload-dir", str(directory), "-b", f"127.0.0.1:{port}"),
            *("--chdir", str(directory), "--threads", "4", *extra),
        )
        # The stale-bytecode test needs a .pyc written.
        env = child_env({"PYTHONDONTWRITEBYTECODE": None, POLL_ENV: "1" if poll else "0"})
        super().__init__(command, env=env)

    def wait_body(self, expected: bytes) -> None:
        def served() -> bool:
            try:
                return fetch(self.port, timeout=5.0) == expected
            except OSError:
                return False

        self.wait_until(served, f"{expected!r} to be served")


def _has_watchfiles() -> bool:
    return importlib.util.find_spec("watchfiles") is not None


@pytest.fixture(params=["watchfiles", "polling"])
def start(request: pytest.FixtureRequest, processes: list[Process]) -> Callable[..., Reloader]:
    """``start(directory)`` runs a reloader on a free port, in the watcher mode of the run."""
    poll = request.param == "polling"
    if not poll and not _has_watchfiles():
        pytest.skip("watchfiles is not installed")

    def run(
        directory: Path,
        extra: tuple[str, ...] = (),
        command: Callable[[int], list[str]] | None = None,
    ) -> Reloader:
        port = free_port()
        reloader = Reloader(
            directory, port, poll=poll, extra=extra, command=command and command(port)
        )
        processes.append(reloader)
        return reloader

    return run


def app_dir(tmp_path: Path, version: str = "v1") -> Path:
    directory = tmp_path / "project"
    directory.mkdir()
    write_app(directory, version)
    return directory


# --- end to end ------------------------------------------------------------------------------


def test_change_is_served_and_sigint_exits_cleanly(start, tmp_path):
    directory = app_dir(tmp_path)
    supervisor = start(directory)
    supervisor.wait_body(b"v1")
    assert "reloader: holding http://127.0.0.1:" in supervisor.log
    assert ("(polling every 1s)" if supervisor.poll else "(watchfiles)") in supervisor.log
    # The child's banner: its front end handed the server the sockets and its mode. (It
    # is logged once the listener runs, so it may come just after the first answer.)
    supervisor.wait_log("serving app:app with 4 threads (queue limit 1024); reloading on changes")
    write_app(directory, "v2")
    supervisor.wait_body(b"v2")
    supervisor.wait_log("app.py changed; restarting")
    assert supervisor.stop(signal.SIGINT) == 0
    log = supervisor.log
    assert "Traceback" not in log
    assert "reloader: stopping" in log


def test_no_connection_is_refused_while_reloading(start, tmp_path):
    directory = app_dir(tmp_path)
    supervisor = start(directory)
    supervisor.wait_body(b"v1")
    refused = 0
    failures: list[str] = []
    answered: list[bytes] = []
    stop = threading.Event()

    def hammer() -> None:
        nonlocal refused
        while not stop.is_set():
            try:
                answered.append(fetch(supervisor.port))
            except ConnectionRefusedError:
                refused += 1
            except OSError as exc:
                failures.append(repr(exc))

    clients = [threading.Thread(target=hammer) for _ in range(3)]
    for client in clients:
        client.start()
    try:
        for version in ("v2", "v3", "v4"):
            write_app(directory, version)
            supervisor.wait_body(version.encode())
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=DEADLINE)
    assert refused == 0
    assert failures == []
    assert answered
    assert set(answered) <= {b"v1", b"v2", b"v3", b"v4"}
    # Four server processes ran; the last one's banner may follow its first answer.
    supervisor.wait_log("listening on", count=4)


BLOCKING_APP = """\
import os
import time


def app(environ, start_response):
    if environ["PATH_INFO"] == "/block":
        open({entered!r}, "w").close()
        while not os.path.exists({release!r}):  # until the test lets it finish
            time.sleep(0.01)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"v1"]
"""


def test_stop_refuses_new_connections_while_the_server_drains(start, tmp_path):
    entered, release = tmp_path / "entered", tmp_path / "release"
    directory = tmp_path / "project"
    directory.mkdir()
    (directory / "app.py").write_text(
        BLOCKING_APP.format(entered=str(entered), release=str(release))
    )
    supervisor = start(directory)
    supervisor.wait_body(b"v1")
    results: list[bytes | Exception] = []

    def in_flight() -> None:
        try:
            with socket.create_connection(("127.0.0.1", supervisor.port), timeout=DEADLINE) as sock:
                sock.sendall(b"GET /block HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                results.append(read_body(sock))
        except Exception as exc:
            results.append(exc)

    client = threading.Thread(target=in_flight)
    client.start()
    try:
        wait_for(entered.exists, "a request in the app")
        supervisor.popen.send_signal(signal.SIGTERM)
        wait_for(lambda: refuses(supervisor.port), "new connections refused")
        assert client.is_alive(), "refused only once the in-flight request had ended"
    finally:
        release.touch()
    client.join(DEADLINE)
    assert results == [b"v1"]
    assert supervisor.popen.wait(DEADLINE) == 0


def test_an_app_that_fails_to_load_is_answered_500_until_fixed(start, tmp_path):
    """The reloader's server process serves even when the app does not import: a request
    gets a 500 that says so (not a wait in the backlog), until a change fixes the app."""
    directory = app_dir(tmp_path)
    supervisor = start(directory)
    supervisor.wait_body(b"v1")
    (directory / "app.py").write_text("def app(environ, start_response:\n")
    supervisor.wait_log("failed to load")
    assert supervisor.popen.poll() is None
    with socket.create_connection(("127.0.0.1", supervisor.port), timeout=DEADLINE) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 500 ")
    assert b"the app failed to load" in answer
    write_app(directory, "fixed")
    supervisor.wait_body(b"fixed")
    assert supervisor.stop(signal.SIGTERM) == 0
    # Logged once, as one line (an import error in the app is a ConfigError: no traceback).
    assert supervisor.log.count("failed to load") == 1
    assert "Traceback" not in supervisor.log


def test_ctrl_c_to_the_process_group(start, tmp_path):
    directory = app_dir(tmp_path)
    supervisor = start(directory)
    supervisor.wait_body(b"v1")
    assert supervisor.stop(signal.SIGINT, group=True) == 0
    log = supervisor.log
    assert "Traceback" not in log
    # The port is free again: nothing was left holding it.
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", supervisor.port))


def test_same_size_same_mtime_edit_is_not_served_stale(start, tmp_path):
    # Python reuses a .pyc whose recorded mtime and size match the source: the supervisor
    # removes the changed module's bytecode, and polling compares ctime too.
    directory = app_dir(tmp_path)
    supervisor = start(directory)
    supervisor.wait_body(b"v1")
    path = directory / "app.py"
    before = path.stat()
    cached = Path(importlib.util.cache_from_source(str(path)))
    wait_for(cached.exists, "the bytecode cache to be written")
    write_app(directory, "v2")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    supervisor.wait_body(b"v2")


def test_excluded_and_other_files_do_not_restart(start, tmp_path):
    directory = app_dir(tmp_path)
    (directory / "skipped").mkdir()
    supervisor = start(directory, ("--reload-exclude", "skipped", "--reload-include", "*.cfg"))
    supervisor.wait_body(b"v1")
    (directory / "skipped" / "module.py").write_text("x = 1\n")
    (directory / "notes.txt").write_text("hello\n")
    (directory / "settings.cfg").write_text("a = 1\n")
    supervisor.wait_log("changed; restarting")
    supervisor.wait_body(b"v1")
    log = supervisor.log
    assert "settings.cfg changed" in log
    assert "module.py" not in log
    assert "notes.txt" not in log
    assert log.count("changed; restarting") == 1
    # --reload-include replaces the default *.py: app.py is not watched, so its bytecode is
    # not refreshed either; another size keeps Python from reusing the old .pyc.
    write_app(directory, "second")
    (directory / "settings.cfg").write_text("a = 2\n")
    supervisor.wait_log("changed; restarting", count=2)
    supervisor.wait_body(b"second")


def test_unix_socket_survives_restarts_and_is_removed_at_exit(start, tmp_path):
    directory = app_dir(tmp_path)
    path = tmp_path / "app.sock"
    supervisor = start(directory, ("-b", f"unix:{path}"))
    supervisor.wait_body(b"v1")

    def unix_fetch() -> bytes:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(DEADLINE)
            sock.connect(str(path))
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return read_body(sock)

    assert unix_fetch() == b"v1"
    write_app(directory, "v2")
    supervisor.wait_body(b"v2")
    # The old server process stopped without unlinking the supervisor's socket file.
    assert path.exists()
    assert unix_fetch() == b"v2"
    assert supervisor.stop(signal.SIGTERM) == 0
    assert not path.exists()


def test_run_with_reloader_from_python_with_extra_files(start, tmp_path):
    # What run_simple(use_reloader=True) and flask serve do: a program calls
    # run_with_reloader, which runs argv (here a server command line) as the child.
    directory = app_dir(tmp_path)
    settings = tmp_path / "outside" / "settings.toml"
    settings.parent.mkdir()
    settings.write_text("a = 1\n")
    script = tmp_path / "supervise.py"
    script.write_text(
        "import logging, sys\n"
        "from wsgipool import Config\n"
        "from wsgipool.supervisors.reloader import run_with_reloader\n"
        "logging.basicConfig(level='INFO')\n"
        "port, directory, settings = sys.argv[1:]\n"
        "child = [sys.executable, '-m', 'wsgipool', 'app:app', '--chdir', directory,\n"
        "         '-b', f'127.0.0.1:{port}']\n"
        "sys.exit(run_with_reloader(Config(bind=[f'127.0.0.1:{port}']),\n"
        "    reload_dirs=[directory], extra_files=[settings], interval=0.2, argv=child))\n"
    )

    def command(port: int) -> list[str]:
        return [sys.executable, str(script), str(port), str(directory), str(settings)]

    supervisor = start(directory, command=command)
    supervisor.wait_body(b"v1")
    assert ("(polling every 0.2s)" if supervisor.poll else "(watchfiles)") in supervisor.log
    settings.write_text("a = 2\n")
    supervisor.wait_log("settings.toml changed; restarting")
    write_app(directory, "second")
    supervisor.wait_body(b"second")
    assert supervisor.stop(signal.SIGTERM) == 0
    assert "Traceback" not in supervisor.log


def test_polling_when_watchfiles_is_missing(monkeypatch, tmp_path):
    monkeypatch.delenv(POLL_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "watchfiles", None)  # import fails
    files = _FileFilter([str(tmp_path)], ("*.py",), (), ())
    assert _make_watcher(files, 0.5, lambda paths: None).kind == "polling every 0.5s"


# --- pieces ----------------------------------------------------------------------------------


def test_file_filter(tmp_path):
    root = str(tmp_path)
    extra = str(tmp_path.parent / "settings.toml")
    excluded = ("tests", "*_local.py", "docs/build", "*/migrations/*")
    files = _FileFilter([root], ("*.py", "templates/*"), excluded, [extra])
    assert files(f"{root}/app.py")
    assert files(f"{root}/pkg/sub/module.py")
    assert files(f"{root}/templates/index.html")
    assert files(f"{root}/docs/conf.py")
    assert files(extra)
    assert not files(f"{root}/notes.txt")
    assert not files(f"{root}/tests/test_app.py")
    assert not files(f"{root}/pkg/tests/test_app.py")
    assert not files(f"{root}/config_local.py")
    assert not files(f"{root}/docs/build/gen.py")
    assert not files(f"{root}/pkg/migrations/0001_initial.py")
    assert not files(f"{root}/.venv/lib/site.py")
    assert not files(f"{root}/pkg/__pycache__/module.py")
    assert not files(f"{root}/.#app.py")
    assert not files(f"{tmp_path.parent}/elsewhere.py")
    assert files.skip_dir(f"{root}/tests")
    assert files.skip_dir(f"{root}/docs/build")
    assert files.skip_dir(f"{root}/.git")
    assert not files.skip_dir(f"{root}/pkg")
    assert not files.skip_dir(f"{root}/docs")
    assert files.extra_dirs() == [str(tmp_path.parent)]
    # A glob without a / is matched against names and relative paths only: this test's own
    # directory has "test" in its path, and is not excluded by *test*.
    assert "test" in root
    files = _FileFilter([root], ("*.py",), ("*test*",), ())
    assert files(f"{root}/app.py")
    assert not files(f"{root}/test_app.py")
    assert not files(f"{root}/testing/app.py")


def binds(*texts: str) -> tuple[BindAddress, ...]:
    return Config(bind=texts).binds


def test_take_inherited_fds(monkeypatch):
    monkeypatch.delenv(INHERITED_FDS_ENV, raising=False)
    assert not is_reloader_child()
    assert take_inherited_fds(binds("127.0.0.1:1")) is None
    monkeypatch.setenv(INHERITED_FDS_ENV, "3,x")
    assert is_reloader_child()
    with pytest.raises(ConfigError, match="expected descriptor numbers"):
        take_inherited_fds(binds("127.0.0.1:1", "127.0.0.1:2"))
    with socket.socket() as sock:
        monkeypatch.setenv(INHERITED_FDS_ENV, str(sock.fileno()))
        with pytest.raises(ConfigError, match="1 descriptor"):
            take_inherited_fds(binds("127.0.0.1:1", "127.0.0.1:2"))
        sock.set_inheritable(True)
        assert take_inherited_fds(binds("127.0.0.1:1")) == [sock.fileno()]
        assert not sock.get_inheritable()
    # Consumed: a second server in the same process binds for itself.
    assert INHERITED_FDS_ENV not in os.environ


def test_server_serves_handed_sockets(tmp_path):
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    path = tmp_path / "s.sock"
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(path))
    unix.listen()
    handed = [os.dup(listening.fileno()), os.dup(unix.fileno())]
    try:
        # The bind list says where the supervisor listens; the server binds nothing itself.
        config = Config(bind=["127.0.0.1:1", f"unix:{path}"], threads=2)
        server = Server(hello_app, config, listen_fds=handed)
        server.start()
        try:
            assert server.addresses == [listening.getsockname(), str(path)]
            assert fetch(listening.getsockname()[1]) == b"Hello, World!"
        finally:
            server.stop(timeout=5)
        assert path.exists()  # the supervisor's file, not the server's to remove
    finally:
        listening.close()
        unix.close()


def test_take_inherited_fds_for_systemd(monkeypatch):
    # A supervisor expanded "systemd" to every socket systemd passed: one or more each.
    with socket.socket() as first, socket.socket() as second:
        handed = f"{first.fileno()},{second.fileno()}"
        monkeypatch.setenv(INHERITED_FDS_ENV, handed)
        with pytest.raises(ConfigError, match="2 descriptor"):
            take_inherited_fds(binds("127.0.0.1:1"))  # without systemd, the counts must match
        with pytest.raises(ConfigError, match="2 descriptor"):
            # At least one per address.
            take_inherited_fds(binds("systemd", "127.0.0.1:1", "127.0.0.1:2"))
        assert take_inherited_fds(binds("systemd")) == [first.fileno(), second.fileno()]


def test_inherited_count_mismatch_is_an_error(monkeypatch):
    monkeypatch.setenv(INHERITED_FDS_ENV, "3")
    with pytest.raises(ConfigError, match="same --bind list"):
        take_inherited_fds(binds("127.0.0.1:0", "127.0.0.1:0"))


def test_server_leaves_the_reloaders_variable_to_the_front_end(monkeypatch):
    # Only a front end running in the reloader's child reads it (take_inherited_fds) and
    # hands the sockets over: a Server binds its own addresses whatever the environment.
    monkeypatch.setenv(INHERITED_FDS_ENV, "not descriptors")
    server = Server(hello_app, bind=["127.0.0.1:0"], threads=1)
    server.start()
    try:
        assert fetch(server.addresses[0][1]) == b"Hello, World!"
    finally:
        server.stop(timeout=5)
    assert os.environ[INHERITED_FDS_ENV] == "not descriptors"


def test_default_command_reruns_this_process():
    command = default_command()
    assert command[0] == sys.executable
    assert command[1:] == sys.orig_argv[1:]


def test_reload_options_need_reload(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["app:app", "--reload-dir", "."])
    assert exc.value.code == 2
    assert "need --reload" in capsys.readouterr().err


def test_missing_reload_dir_is_a_usage_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(INHERITED_FDS_ENV, raising=False)
    code = main(
        ["app:app", "--reload", "--reload-dir", str(tmp_path / "nope"), "-b", "127.0.0.1:0"]
    )
    assert code == 2
    assert "no such directory" in capsys.readouterr().err


def test_moved_modules_keep_their_public_names():
    # wsgipool.reload and wsgipool.supervisor moved into wsgipool.supervisors; code that
    # imports the documented names from the old places keeps working.
    from wsgipool import accesslog, reload, supervisor
    from wsgipool.supervisors import process, reloader, workers

    assert reload.run_with_reloader is reloader.run_with_reloader
    assert reload.is_reloader_child is process.is_reloader_child
    assert reload.INHERITED_FDS_ENV == process.INHERITED_FDS_ENV
    assert supervisor.reopen_log_files is accesslog.reopen_log_files
    assert supervisor.run_supervisor is workers.run_worker_processes
