"""The ``wsgipool`` command, run as a real subprocess (``python -m wsgipool``).

Start-up is awaited by reading stderr until "listening on" appears (with a deadline), never
by sleeping. The ``spawn`` fixture (tests/conftest.py) keeps stdout apart from stderr and ends
every process a test leaves running.
"""

from __future__ import annotations

import http.client
import re
import shutil
import signal
import socket
import stat
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
import requests

import wsgipool
from tests.helpers.process import (
    LISTENING,
    assert_clean_exit,
    assert_one_line_error,
    refused,
)
from wsgipool import Config
from wsgipool.cli import build_parser, config_from_args

APPS = Path(__file__).parent / "apps"


def in_apps(app: str, *options: str) -> list[str]:
    """wsgipool APP --chdir tests/apps OPTIONS."""
    return [app, "--chdir", str(APPS), *options]


def serve_args(app: str, *options: str) -> list[str]:
    """wsgipool APP --chdir tests/apps -b 127.0.0.1:0 -t 2 OPTIONS."""
    return in_apps(app, "-b", "127.0.0.1:0", "-t", "2", *options)


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


def get_unix(path: str, target: str = "/") -> tuple[int, bytes]:
    conn = UnixHTTPConnection(path)
    try:
        conn.request("GET", target)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# === in-process: the parser ====================================================================


def test_parser_defaults_are_the_config_defaults() -> None:
    args = build_parser().parse_args(["goodapp"])
    assert config_from_args(args) == Config()
    assert config_from_args(args).bind == ("127.0.0.1:8000",)


def test_options_map_onto_config() -> None:
    args = build_parser().parse_args(
        [
            "goodapp:create_app()",
            "-b",
            "127.0.0.1:0",
            "--bind",
            "unix:/tmp/x.sock",
            "-b",
            "fd://3",
            "-t",
            "3",
            "--queue-limit",
            "7",
            "--root-path",
            "/api",
            "--max-body-size",
            "10M",
            "--expose-tracebacks",
            "--log-level",
            "debug",
            "--chdir",
            "/tmp",
        ]
    )
    assert args.app == "goodapp:create_app()"
    assert args.chdir == "/tmp"
    config = config_from_args(args)
    assert config.bind == ("127.0.0.1:0", "unix:/tmp/x.sock", "fd://3")
    assert [b.kind for b in config.binds] == ["tcp", "unix", "fd"]
    assert config.threads == 3
    assert config.queue_limit == 7
    assert config.root_path == "/api"
    assert config.max_body_size == 10 * 1024**2
    assert config.expose_tracebacks is True
    assert config.log_level == "debug"


# === help and version ==========================================================================


def help_blocks(text: str) -> dict[str, str]:
    """Option help text by long option name, whitespace normalised."""
    blocks: dict[str, str] = {}
    current: str | None = None
    for line in text.splitlines():
        match = re.match(r"\s{2}(-\w(?: \S+)?, )?(--[\w-]+)", line)
        if match:
            current = match.group(2)
            blocks[current] = ""
        elif not line.startswith("  "):
            current = None
        if current:
            blocks[current] += " " + line.strip()
    return {name: " ".join(block.split()) for name, block in blocks.items()}


def test_help_shows_every_default(spawn: Any) -> None:
    proc = spawn(["--help"])
    assert proc.wait() == 0
    text = proc.stdout
    assert "APP" in text
    blocks = help_blocks(text)
    defaults = Config()
    expected = {
        "--bind": defaults.bind[0],
        "--threads": str(defaults.threads),
        "--queue-limit": str(defaults.queue_limit),
        "--backlog": str(defaults.backlog),
        "--max-body-size": str(defaults.max_body_size),
        "--max-request-line": str(defaults.max_request_line),
        "--max-header-size": str(defaults.max_header_size),
        "--max-header-count": str(defaults.max_header_count),
        "--header-timeout": str(defaults.header_timeout),
        "--keepalive-timeout": str(defaults.keepalive_timeout),
        "--body-timeout": str(defaults.body_timeout),
        "--send-timeout": str(defaults.send_timeout),
        "--graceful-timeout": str(defaults.graceful_timeout),
        "--url-scheme": defaults.url_scheme,
        "--log-level": defaults.log_level,
        "--poller": defaults.poller,
        "--cpu-affinity": defaults.cpu_affinity,
        "--sendfile": defaults.sendfile,
        "--expose-tracebacks": "False",
    }
    for option, value in expected.items():
        assert option in blocks, f"{option} missing from --help"
        assert f"default: {value}" in blocks[option], f"{option}: {blocks[option]!r}"
    for option in ("--root-path", "--chdir", "--bind"):
        assert option in blocks
    for option, block in blocks.items():
        if option in ("--help", "--version"):
            continue
        assert "default" in block, f"{option} shows no default: {block!r}"


def test_help_bind_default_is_not_contradicted() -> None:
    # ArgumentDefaultsHelpFormatter appends "(default: None)" to an option whose help
    # already states its real default.
    blocks = help_blocks(build_parser().format_help())
    assert "127.0.0.1:8000" in blocks["--bind"]
    assert "None" not in blocks["--bind"], blocks["--bind"]


def test_version_python_m(spawn: Any) -> None:
    proc = spawn(["--version"])
    assert proc.wait() == 0
    assert proc.stdout.strip() == f"wsgipool {wsgipool.__version__}"
    assert proc.log == ""


def console_script() -> str:
    path = Path(sys.executable).parent / "wsgipool"
    found = str(path) if path.exists() else shutil.which("wsgipool")
    if not found:
        pytest.skip("the wsgipool console script is not installed next to this Python")
    return found


def test_version_console_script(spawn: Any) -> None:
    proc = spawn(command=[console_script(), "--version"])
    assert proc.wait() == 0
    assert proc.stdout.strip() == f"wsgipool {wsgipool.__version__}"


# === bad input: one line on stderr, exit code 2 =================================================

BAD_INPUT: list[tuple[list[str], list[str]]] = [
    # the application
    (["wsgipool_tests_no_such_module"], ["wsgipool_tests_no_such_module"]),
    (["wsgipool_tests_no_such_module:app"], ["wsgipool_tests_no_such_module"]),
    (["goodapp:nope"], ["nope"]),
    (["goodapp:ns.nope"], ["nope"]),
    (["goodapp:not_callable"], ["not_callable"]),
    (["noapp"], ["noapp"]),
    (
        ["raises_on_import"],
        ["RuntimeError", "raised-at-import-marker", "raises_on_import.py:5"],
    ),
    (
        ["missing_dep:app"],
        ["ModuleNotFoundError", "wsgipool_tests_no_such_package", "missing_dep.py:3"],
    ),
    (["goodapp:failing_factory()"], ["LookupError", "the factory failed"]),
    (["goodapp:create_app(__import__('os'))"], ["literal"]),
    (["goodapp:create_app(greeting=__import__('os').system('false'))"], ["literal"]),
    (["goodapp:create_app(greeting={[]: 1})"], ["create_app"]),
    (["goodapp:app[0]"], ["app[0]"]),
    (["goodapp:"], ["goodapp:"]),
    # a file instead of a module: what to give instead, not importlib's words
    (["goodapp.py:app"], ["no module named 'goodapp.py'", "as Python imports it", "--chdir"]),
    (["./goodapp:app"], ["'./goodapp' is not a module name", "--chdir DIR"]),
    (["../apps/goodapp.py"], ["is not a module name", "--chdir DIR"]),
    ([""], ["invalid application"]),
    # option values
    (["goodapp", "--threads", "0"], ["--threads", "0"]),
    (["goodapp", "--threads", "x"], ["--threads", "x"]),
    (["goodapp", "-t", "-3"], ["-3"]),
    (["goodapp", "--queue-limit", "0"], ["--queue-limit"]),
    (["goodapp", "--bind", "nonsense:port"], ["nonsense:port"]),
    (["goodapp", "-b", "127.0.0.1:99999"], ["127.0.0.1:99999"]),
    (["goodapp", "-b", "unix:"], ["unix:"]),
    (["goodapp", "-b", "unix:/nonexistent/x.sock", "-b", "unix:/nonexistent/x.sock"], ["twice"]),
    (["goodapp", "-b", "fd://x"], ["fd://x"]),
    (["goodapp", "--root-path", "api"], ["api"]),
    (["goodapp", "--root-path", "/api/"], ["/api/"]),
    (["goodapp", "--max-body-size", "10X"], ["10X"]),
    (["goodapp", "--log-level", "loud"], ["loud"]),
    (["goodapp", "--header-timeout", "0"], ["--header-timeout"]),
    (["goodapp", "--body-timeout", "nan"], ["nan"]),
    (["goodapp", "--url-scheme", "ftp"], ["ftp"]),
    (["goodapp", "--poller", "kqueue"], ["kqueue"]),
    (["goodapp", "--cpu-affinity", "0-3"], ["0-3"]),
    # whole numbers: ASCII digits only, and within the documented bounds
    (["goodapp", "--threads", "1_000"], ["--threads", "'1_000'"]),
    (["goodapp", "--threads", "\u0661\u0662"], ["--threads", "'\u0661\u0662'"]),
    (["goodapp", "--queue-limit", "+5"], ["--queue-limit", "'+5'"]),
    (["goodapp", "--threads", "5000"], ["--threads", "4096"]),
    (["goodapp", "--workers", "100000"], ["--workers", "1024"]),
    (["goodapp", "--backlog", "99999999999"], ["--backlog", "65535"]),
    (["goodapp", "--max-connections", "10" + "0" * 20], ["--max-connections", "1048576"]),
    (["goodapp", "--max-header-size", "99999999999999999999G"], ["--max-header-size"]),
    (["goodapp", "--max-body-size", "99999999999999999999G"], ["--max-body-size"]),
    (["goodapp", "--max-body-size", "\u0668K"], ["--max-body-size"]),
    (["goodapp", "--max-header-count", "9" * 30], ["--max-header-count", "too large"]),
    # seconds: plain numbers, that the kernel reads as the timeout they say
    (["goodapp", "--body-timeout", "1e-7"], ["--body-timeout", "0.000001"]),
    (["goodapp", "--send-timeout", "0.0000004"], ["--send-timeout", "0.000001"]),
    (["goodapp", "--queue-timeout", "inf"], ["--queue-timeout", "inf"]),
    (["goodapp", "--graceful-timeout", "1_0"], ["--graceful-timeout", "1_0"]),
    # addresses in other scripts' digits, or too large a descriptor
    (["goodapp", "-b", "fd://²"], ["fd://²"]),
    (["goodapp", "-b", "fd://99999999999999999999"], ["fd://99999999999999999999"]),
    (
        ["goodapp", "-b", "127.0.0.1:\u0668\u0660\u0660\u0660"],
        ["127.0.0.1:\u0668\u0660\u0660\u0660"],
    ),
    # the command line itself
    (["goodapp", "--bogus"], ["--bogus"]),
    (["goodapp", "extra-argument"], ["extra-argument"]),
    ([], ["APP"]),
    (["--chdir", "/nonexistent/wsgipool-tests", "goodapp"], ["/nonexistent/wsgipool-tests"]),
    # addresses that cannot be bound
    (["goodapp", "-b", "no.such.host.invalid:8000"], ["no.such.host.invalid"]),
    (["goodapp", "-b", "unix:/nonexistent/wsgipool-tests/x.sock"], ["x.sock"]),
]


@pytest.mark.parametrize(
    ("args", "expected"), BAD_INPUT, ids=[" ".join(args) or "no-arguments" for args, _ in BAD_INPUT]
)
def test_bad_input_is_one_line_and_exit_code_2(
    spawn: Any, args: list[str], expected: list[str]
) -> None:
    # Every command runs from tests/apps so that the app modules are importable.
    line = refused(spawn, args, cwd=APPS)
    for text in expected:
        assert text in line, f"{text!r} not in {line!r}"


def test_syntax_error_in_the_app(spawn: Any, tmp_path: Path) -> None:
    # Written at test time so that linters of the repository never see a broken file.
    (tmp_path / "syntax_error_app.py").write_text(
        textwrap.dedent(
            """\
            def app(environ, start_response):
                start_response("200 OK", [])
                return [b"x"

            other = 1
            """
        )
    )
    line = refused(spawn, ["syntax_error_app:app", "--chdir", str(tmp_path)])
    assert "SyntaxError" in line
    assert "syntax_error_app.py:3" in line


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('raise SystemExit("exit-at-import-marker")\n', "SystemExit: exit-at-import-marker"),
        ("raise SystemExit(0)\n", "SystemExit: 0"),
        ("raise SystemExit\n", "SystemExit (/"),
        (
            "class Stop(BaseException):\n    pass\n\nraise Stop('custom-marker')\n",
            "Stop: custom-marker",
        ),
        (
            "def create_app():\n    raise SystemExit('factory-marker')\n\napp = create_app()\n",
            "SystemExit: factory-marker",
        ),
    ],
    ids=["system-exit-message", "system-exit-0", "bare-system-exit", "custom", "in-a-function"],
)
@pytest.mark.parametrize("options", [[], ["--workers", "2", "--preload"]], ids=["", "preload"])
def test_app_raising_a_base_exception_on_import(
    spawn: Any, tmp_path: Path, source: str, expected: str, options: list[str]
) -> None:
    """Not only Exception: whatever the module raises (but Ctrl-C) is one line and exit 2."""
    (tmp_path / "base_exception_app.py").write_text(source)
    line = refused(spawn, ["base_exception_app:app", "-b", "127.0.0.1:0", *options])
    assert "error importing 'base_exception_app'" in line
    assert expected in line
    assert "base_exception_app.py:" in line


def test_factory_raising_system_exit(spawn: Any, tmp_path: Path) -> None:
    (tmp_path / "exiting_factory.py").write_text(
        "def create_app():\n    raise SystemExit('factory-marker')\n"
    )
    line = refused(spawn, ["exiting_factory:create_app()", "-b", "127.0.0.1:0"])
    assert "error calling the factory 'exiting_factory:create_app()'" in line
    assert "SystemExit: factory-marker" in line


def test_address_in_use(spawn: Any) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        line = refused(spawn, in_apps("goodapp", "-b", f"127.0.0.1:{port}"))
        assert f"127.0.0.1:{port}" in line
        assert "in use" in line.lower()
    finally:
        taken.close()


def test_second_address_in_use_cleans_up_the_first(spawn: Any, tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    path = tmp_path / "first.sock"
    try:
        port = taken.getsockname()[1]
        args = in_apps("goodapp", "-b", f"unix:{path}", "-b", f"127.0.0.1:{port}")
        line = refused(spawn, args)
        assert f"127.0.0.1:{port}" in line
        assert not path.exists(), "the socket file of the first address was left behind"
    finally:
        taken.close()


def test_unix_address_in_use_by_a_live_server(spawn: Any, tmp_path: Path) -> None:
    """Another process listens on the path: refuse, do not delete its socket and take over."""
    path = tmp_path / "live.sock"
    live = socket.socket(socket.AF_UNIX)
    live.bind(str(path))
    live.listen()
    try:
        line = refused(spawn, in_apps("goodapp", "-b", f"unix:{path}"))
        assert str(path) in line
    finally:
        live.close()


def test_inherited_fd_that_is_not_open(spawn: Any) -> None:
    line = refused(spawn, in_apps("goodapp", "-b", "fd://987"))
    assert "fd://987" in line


@pytest.mark.parametrize("value", ["inf", "1e30"])
def test_huge_body_timeout_is_refused_or_works(spawn: Any, value: str) -> None:
    """Accepting --body-timeout inf and then failing every connection is neither."""
    proc = spawn(serve_args("goodapp", "--body-timeout", value))
    stderr = proc.wait_for_exit_or_listening()
    if stderr is not None:
        assert_one_line_error(proc, stderr)
        return
    match = LISTENING.search(proc.log)
    assert match is not None
    url = match.group(1)
    try:
        response = requests.get(url + "/", timeout=5)
    except requests.RequestException as exc:
        pytest.fail(f"--body-timeout {value} was accepted but the request failed: {exc!r}")
    assert response.status_code == 200
    proc.send(signal.SIGTERM)
    assert_clean_exit(proc, proc.wait())


# === serving, and stopping on signals ===========================================================


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serves_then_stops_cleanly_on_signal(spawn: Any, signum: int) -> None:
    proc = spawn(serve_args("goodapp"))
    (url,) = proc.listening()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url), url
    assert int(url.rsplit(":", 1)[1]) > 0
    assert "with 2 threads" in proc.log
    response = requests.get(url + "/", timeout=10)
    assert response.status_code == 200
    assert response.text == "hello from goodapp"
    proc.send(signum)
    assert_clean_exit(proc, proc.wait())


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_right_after_listening_is_a_clean_stop(spawn: Any, signum: int) -> None:
    """Once "listening on" is logged, a signal must already mean "stop cleanly".

    A supervisor may stop the server as soon as it is up; the signal handlers must be in
    place before the server says it is listening (else: exit code 130 or a
    KeyboardInterrupt traceback, or death by SIGTERM with exit code -15). Black-box, so
    racy by nature: tried a few times. The next test reproduces it deterministically.
    """
    for _ in range(3):
        proc = spawn(serve_args("goodapp"))
        proc.listening()
        proc.send(signum)
        assert_clean_exit(proc, proc.wait())


SIGNAL_AT_LISTENING = """\
import logging, os, signal, sys

class SignalWhenListening(logging.Handler):
    sent = False

    def emit(self, record):
        message = record.getMessage()
        sys.stderr.write(message + "\\n")
        sys.stderr.flush()
        if "listening on" in message and not self.sent:
            self.sent = True
            os.kill(os.getpid(), {signum})  # the moment the server says it is listening

root = logging.getLogger()
root.addHandler(SignalWhenListening())  # logging.basicConfig() in main() then does nothing
root.setLevel(logging.INFO)
from wsgipool.cli import main
sys.argv[0] = "wsgipool"
raise SystemExit(main())
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_at_the_moment_of_listening_is_a_clean_stop(spawn: Any, signum: int) -> None:
    """The deterministic version: the process signals itself as "listening on" is logged."""
    script = SIGNAL_AT_LISTENING.format(signum=int(signum))
    proc = spawn(command=[sys.executable, "-c", script, *serve_args("goodapp")])
    proc.listening()
    assert_clean_exit(proc, proc.wait())
    assert "shutting down" in proc.log


# The process signals itself at the 1st, 2nd, 3rd... bytecode the main thread runs once
# "listening on" is logged (a trace function counts them), one fresh Server each time,
# until the count outruns the wait: the main thread then sleeps, and a watchdog thread
# sends the signal itself. A handler that takes a lock the main thread may hold at that
# point (Event.set() inside Event.wait) hangs the process for good: the watchdog reports it.
SIGNAL_AT_EVERY_POINT = """\
import itertools, logging, os, signal, sys, threading, time
from wsgipool import Server

def app(environ, start_response):
    start_response("204 No Content", [])
    return []

state = {{}}

def tracer(frame, event, arg):
    frame.f_trace_opcodes = True
    if event == "opcode" and state["armed"] and not (state["fired"] or state["fallback"]):
        state["count"] += 1
        if state["count"] == state["at"]:
            state["fired"] = True
            os.kill(os.getpid(), state["signum"])
    return tracer

class Arm(logging.Handler):
    def emit(self, record):
        if "listening on" in record.getMessage():
            state["armed"] = True

logging.getLogger().addHandler(Arm())
logging.getLogger().setLevel(logging.INFO)

def watchdog(done):
    last, since = -1, time.monotonic()
    while not done.wait(0.05):
        now = time.monotonic()
        if state["count"] != last:
            last, since = state["count"], now
        elif state["fired"] and now - since > {hang}:
            sys.stderr.write("HUNG: signal %d at point %d\\n" % (state["signum"], state["at"]))
            sys.stderr.flush()
            os._exit(1)
        elif state["armed"] and not (state["fired"] or state["fallback"]) and now - since > 1:
            state["fallback"] = True  # asleep in the wait: every point before it is done
            os.kill(os.getpid(), state["signum"])

for signum in ({signals}):
    for at in itertools.count(1):
        state.update(armed=False, count=0, at=at, fired=False, fallback=False, signum=signum)
        server = Server(app, bind="127.0.0.1:0", threads=1)
        done = threading.Event()
        threading.Thread(target=watchdog, args=(done,), daemon=True).start()
        sys.settrace(tracer)
        try:
            server.serve_forever()
        finally:
            sys.settrace(None)
            done.set()
        if state["fallback"]:
            break
    print("signal %d: %d points" % (signum, at), flush=True)
"""


def test_signal_at_every_point_of_the_wait_is_a_clean_stop(spawn: Any) -> None:
    """A stop signal is never lost, wherever the main thread is when it lands: the
    handler only stores plain values and wakes the main thread through a pipe."""
    signals = f"{int(signal.SIGINT)}, {int(signal.SIGTERM)}"
    script = SIGNAL_AT_EVERY_POINT.format(signals=signals, hang=15)
    proc = spawn(command=[sys.executable, "-c", script])
    assert_clean_exit(proc, proc.wait(timeout=240))
    assert "HUNG" not in proc.log
    assert proc.stdout.count(" points") == 2, proc.stdout


def test_idle_keep_alive_connection_does_not_hold_up_shutdown(spawn: Any) -> None:
    proc = spawn(serve_args("goodapp", "--graceful-timeout", "10"))
    (url,) = proc.listening()
    with requests.Session() as session:
        assert session.get(url + "/", timeout=10).status_code == 200
        # The session keeps the connection open and idle while the server stops.
        proc.send(signal.SIGINT)
        assert_clean_exit(proc, proc.wait())
    assert "graceful timeout" not in proc.log, proc.log


def test_in_flight_request_finishes_on_sigterm(spawn: Any) -> None:
    proc = spawn(serve_args("goodapp:slow"))
    (url,) = proc.listening()
    result: dict[str, Any] = {}

    def request() -> None:
        try:
            response = requests.get(url + "/", timeout=20)
            result["status"], result["body"] = response.status_code, response.text
        except Exception as exc:  # reported below
            result["error"] = exc

    client = threading.Thread(target=request)
    client.start()
    try:
        proc.wait_for(re.compile("slow-request-started"))
        proc.send(signal.SIGTERM)
    finally:
        client.join(timeout=30)
    assert result.get("status") == 200, result
    assert result["body"] == "slow done"
    assert_clean_exit(proc, proc.wait())


def test_tcp_and_unix_binds_both_serve(spawn: Any, tmp_path: Path) -> None:
    path = tmp_path / "both.sock"
    proc = spawn(in_apps("goodapp", "-b", "127.0.0.1:0", "-b", f"unix:{path}"))
    urls = proc.listening(2)
    tcp = next(url for url in urls if url.startswith("http://"))
    assert f"unix:{path}" in urls
    assert requests.get(tcp + "/", timeout=10).text == "hello from goodapp"
    assert get_unix(str(path)) == (200, b"hello from goodapp")
    proc.send(signal.SIGTERM)
    assert_clean_exit(proc, proc.wait())
    assert not path.exists(), "the server's socket file was left behind"


def test_ipv6_loopback(spawn: Any) -> None:
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    proc = spawn(in_apps("goodapp", "-b", "[::1]:0"))
    (url,) = proc.listening()
    assert re.fullmatch(r"http://\[::1\]:\d+", url), url
    assert requests.get(url + "/", timeout=10).text == "hello from goodapp"
    proc.send(signal.SIGINT)
    assert_clean_exit(proc, proc.wait())


def test_inherited_socket_fd(spawn: Any) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    try:
        port = sock.getsockname()[1]
        fd = sock.fileno()
        proc = spawn(in_apps("goodapp", "-b", f"fd://{fd}"), pass_fds=[fd])
        (url,) = proc.listening()
        assert url == f"http://127.0.0.1:{port}"
        assert requests.get(url + "/", timeout=10).text == "hello from goodapp"
        proc.send(signal.SIGTERM)
        assert_clean_exit(proc, proc.wait())
    finally:
        sock.close()


def test_current_directory_is_importable_console_script(spawn: Any) -> None:
    """No --chdir: the app module is found in the directory the command runs in."""
    proc = spawn(command=[console_script(), "app_make", "-b", "127.0.0.1:0"], cwd=APPS)
    (url,) = proc.listening()
    assert requests.get(url + "/", timeout=10).text == "make_app"
    proc.send(signal.SIGINT)
    assert_clean_exit(proc, proc.wait())


def test_factory_with_arguments(spawn: Any) -> None:
    proc = spawn(serve_args("goodapp:create_app(greeting='yo', punctuation='!')"))
    (url,) = proc.listening()
    assert requests.get(url + "/", timeout=10).text == "yo!"
    proc.send(signal.SIGTERM)
    assert_clean_exit(proc, proc.wait())


def test_module_alone_finds_application(spawn: Any) -> None:
    proc = spawn(serve_args("app_application"))
    (url,) = proc.listening()
    assert requests.get(url + "/", timeout=10).text == "application"
    proc.send(signal.SIGTERM)
    assert_clean_exit(proc, proc.wait())


def test_root_path_and_max_body_size(spawn: Any) -> None:
    proc = spawn(serve_args("goodapp:echo", "--root-path", "/api", "--max-body-size", "1K"))
    (url,) = proc.listening()
    assert requests.get(url + "/api/items", timeout=10).text == "/api|/items|0"
    ok = requests.post(url + "/api/x", data=b"a" * 1024, timeout=10)
    assert (ok.status_code, ok.text) == (200, "/api|/x|1024")
    too_big = requests.post(url + "/api/x", data=b"a" * 1025, timeout=10)
    assert too_big.status_code == 413
    proc.send(signal.SIGTERM)
    assert_clean_exit(proc, proc.wait())


@pytest.mark.parametrize("expose", [False, True], ids=["default", "expose-tracebacks"])
def test_expose_tracebacks(spawn: Any, expose: bool) -> None:
    options = ["--expose-tracebacks"] if expose else []
    proc = spawn(serve_args("goodapp:crash", *options))
    (url,) = proc.listening()
    response = requests.get(url + "/", timeout=10)
    assert response.status_code == 500
    assert ("crash-marker-1234" in response.text) is expose
    assert ("ZeroDivisionError" in response.text) is expose
    # The error log has it either way.
    proc.wait_for(re.compile("error in the application"))
    proc.send(signal.SIGTERM)
    assert proc.wait() == 0


def test_log_level_debug(spawn: Any) -> None:
    proc = spawn(serve_args("goodapp", "--log-level", "debug"))
    (url,) = proc.listening()
    assert requests.get(url + "/", timeout=10).status_code == 200
    proc.send(signal.SIGINT)
    assert_clean_exit(proc, proc.wait())


# === wsgipool.serve() from Python ===============================================================

SERVE_SCRIPT = """\
import logging, sys
sys.path.insert(0, {apps!r})
logging.basicConfig(level=logging.INFO, format="%(message)s")
import goodapp
import wsgipool
wsgipool.serve(goodapp.app, bind={bind!r}, threads=2)
print("serve returned", flush=True)
"""


@pytest.mark.parametrize("bind", ["127.0.0.1:0", ["127.0.0.1:0"]], ids=["str", "list"])
def test_serve_blocks_until_sigterm(spawn: Any, bind: Any) -> None:
    script = SERVE_SCRIPT.format(apps=str(APPS), bind=bind)
    proc = spawn(command=[sys.executable, "-c", script])
    (url,) = proc.listening()
    assert requests.get(url + "/", timeout=10).text == "hello from goodapp"
    assert proc.popen.poll() is None, "serve() returned while it should be serving"
    proc.send(signal.SIGTERM)
    assert_clean_exit(proc, proc.wait())
    assert proc.stdout.strip() == "serve returned"


def test_umask_applies_to_unix_sockets_and_log_files(spawn: Any, tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    log = tmp_path / "access.log"
    proc = spawn(
        in_apps("goodapp", "-b", f"unix:{path}", "--umask", "027", "--access-log", str(log))
    )
    assert proc.wait_for_exit_or_listening() is None, proc.log
    assert get_unix(str(path))[0] == 200
    assert stat.S_IMODE(path.stat().st_mode) == 0o750
    assert stat.S_IMODE(log.stat().st_mode) == 0o640
    proc.send(signal.SIGTERM)
    assert_clean_exit(proc, proc.wait())


def test_bad_umask_is_one_line(spawn: Any) -> None:
    line = refused(spawn, in_apps("goodapp", "--umask", "999"))
    assert line == "wsgipool: error: --umask: an octal mode such as 007 or 0o027, not '999'"


def test_threads_the_machine_cannot_start_are_one_line(spawn: Any) -> None:
    """--threads within its bound, but more than the process may start here (memory
    limits): one clear line, exit 2, not a RuntimeError traceback."""
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "from wsgipool.cli import main\n"
        "sys.argv[0] = 'wsgipool'\n"
        f"raise SystemExit(main({serve_args('goodapp', '--threads', '4096')!r}))\n"
    )
    proc = spawn(command=[sys.executable, "-c", script])
    stderr = proc.wait_for_exit_or_listening()
    assert stderr is not None, "4096 threads started within 1 GiB of address space"
    assert_one_line_error(proc, stderr)
    assert "--threads" in stderr


def test_transfer_rate_floors_from_the_command_line_and_the_environment(
    spawn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--min-body-rate and --min-send-rate take sizes, on the command line and as
    WSGIPOOL_ variables, and say where they came from."""
    monkeypatch.setenv("WSGIPOOL_MIN_SEND_RATE", "1K")
    proc = spawn([*serve_args("goodapp"), "--min-body-rate", "2K", "--print-config"])
    assert proc.wait() == 0, proc.log
    assert "min_body_rate = 2048  # command line" in proc.stdout
    assert "min_send_rate = 1024  # environment WSGIPOOL_MIN_SEND_RATE" in proc.stdout


def test_log_level_debug_shows_an_import_errors_whole_traceback(spawn: Any) -> None:
    """One line names the error and the application's line; --log-level debug adds the
    whole traceback (logged) before that line."""
    brief = refused(spawn, in_apps("raises_on_import:app"))
    assert "raised-at-import-marker" in brief
    proc = spawn(in_apps("raises_on_import:app", "--log-level", "debug"))
    assert proc.wait() == 2
    assert "Traceback (most recent call last):" in proc.log
    assert 'raises_on_import.py", line 5, in <module>' in proc.log
    assert proc.log.rstrip().splitlines()[-1] == brief
