"""Drop-in use with frameworks: ``flask serve``, ``run_simple``, the debugger, Django through
the command line, and Pyramid through Paste Deploy.

Servers run as real subprocesses in a session of their own (so a reloader's child dies with
it), on port 0; the port is read from the "listening on" log line, with a deadline. The
``spawn`` fixture ends every process group at the end of its test.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import socket
import ssl
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import wsgipool
from tests.helpers.apps import hello_app
from tests.helpers.http import ResponseReader, build_request
from tests.helpers.process import TCP_LISTENING
from tests.helpers.waiting import DEADLINE
from wsgipool import Config, ConfigError, compat
from wsgipool.integrations.debugger import check_debug_bind, is_local

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
FLASK = Path(sys.executable).parent / "flask"


def get(port: int, target: str = "/", host: str = "127.0.0.1") -> Any:
    """One GET on a new connection; the parsed response."""
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(build_request("GET", target, host=f"{host}:{port}"))
        return ResponseReader(sock).read()


def flask_command(*args: str) -> list[str]:
    if not FLASK.exists():
        pytest.skip("no flask command next to this interpreter")
    return [str(FLASK), *args]


# --- flask serve -------------------------------------------------------------------------


def test_flask_serve_serves_the_example(spawn: Any) -> None:
    proc = spawn(
        command=flask_command("--app", "flask_app", "serve", "--port", "0", "--threads", "2"),
        cwd=EXAMPLES,
    )
    port = proc.listening_port()
    response = get(port)
    assert response.status == 200
    assert response.body == b"Hello from Flask on wsgipool!\n"
    assert "Debug mode: off" in proc.output
    # Not in debug mode: no debugger, Flask's own 500 page.
    error = get(port, "/error")
    assert error.status == 500
    assert b"__debugger__" not in error.body
    assert proc.stop() == 0


# flask run's request line: werkzeug's format, '-' for the size.
WERKZEUG_LINE = re.compile(
    r'127\.0\.0\.1 - - \[\d\d/[A-Z][a-z]{2}/\d{4} \d\d:\d\d:\d\d\] "GET /\?x=1 HTTP/1\.1" 200 -'
)


def test_flask_serve_logs_each_request_as_flask_run_does(spawn: Any) -> None:
    proc = spawn(command=flask_command("--app", "flask_app", "serve", "--port", "0"), cwd=EXAMPLES)
    assert get(proc.listening_port(), "/?x=1").status == 200
    proc.wait_until(lambda: WERKZEUG_LINE.search(proc.stdout) is not None, "a request line")
    assert proc.stop() == 0


@pytest.mark.parametrize(
    ("options", "line"),
    [
        (["--no-request-log"], None),
        # --access-log replaces it, in its own format (Apache's combined by default).
        (["--access-log", "-"], re.compile(r'\[\d\d/\w+/\d{4}:[\d:]+ [-+]\d{4}\] "GET /\?x=1')),
        (["--access-log-format", "%(s)s %(U)s"], re.compile(r"^200 /$", re.MULTILINE)),
    ],
)
def test_flask_serve_request_log_options(
    spawn: Any, options: list[str], line: re.Pattern[str] | None
) -> None:
    proc = spawn(
        command=flask_command("--app", "flask_app", "serve", "--port", "0", *options),
        cwd=EXAMPLES,
    )
    port = proc.listening_port()
    assert get(port, "/?x=1").status == 200
    if line is None:
        # Stopped, the server has written every line it was going to.
        assert proc.stop() == 0
        assert "GET /" not in proc.stdout
        return
    proc.wait_until(lambda: line.search(proc.stdout) is not None, "the access log line")
    assert WERKZEUG_LINE.search(proc.stdout) is None
    assert proc.stop() == 0


def test_flask_serve_reads_flask_run_variables(spawn: Any) -> None:
    # A .flaskenv written for flask run (FLASK_RUN_PORT) works unchanged.
    proc = spawn(
        command=flask_command("serve", "-t", "2"),
        cwd=EXAMPLES,
        env={"FLASK_APP": "flask_app", "FLASK_RUN_PORT": "0"},
    )
    assert get(proc.listening_port()).status == 200
    assert proc.stop() == 0


def test_flask_debug_turns_the_debugger_and_reloader_on(spawn: Any) -> None:
    proc = spawn(
        command=flask_command("--app", "flask_app", "serve", "--port", "0", "-t", "2"),
        cwd=EXAMPLES,
        env={"FLASK_DEBUG": "1"},
    )
    port = proc.listening_port()
    assert "reloader: holding" in proc.output
    assert "console PIN" in proc.output
    response = get(port, "/error")
    assert response.status == 500
    assert b"__debugger__" in response.body  # werkzeug's debugger page
    assert b"this route fails on purpose" in response.body
    assert get(port).status == 200
    assert proc.stop() == 0


def test_flask_no_debugger_in_debug_mode(spawn: Any) -> None:
    proc = spawn(
        command=flask_command(
            "--app", "flask_app", "--debug", "serve", "--port", "0", "--no-reload", "--no-debugger"
        ),
        cwd=EXAMPLES,
    )
    port = proc.listening_port()
    assert "reloader" not in proc.output
    response = get(port, "/error")
    assert response.status == 500
    assert b"__debugger__" not in response.body
    assert proc.stop() == 0


def test_flask_debug_refuses_a_non_loopback_host(spawn: Any) -> None:
    proc = spawn(
        command=flask_command("--app", "flask_app", "serve", "--host", "0.0.0.0", "--port", "0"),
        cwd=EXAMPLES,
        env={"FLASK_DEBUG": "1"},
    )
    assert proc.wait() == 2
    assert "arbitrary Python code" in proc.output
    assert "--debug-allow-remote" in proc.output
    assert "Traceback" not in proc.output


def test_flask_debug_allow_remote_warns_and_serves(spawn: Any) -> None:
    proc = spawn(
        command=flask_command(
            "--app",
            "flask_app",
            "serve",
            "-h",
            "0.0.0.0",
            "-p",
            "0",
            "--no-reload",
            "--debug-allow-remote",
        ),
        cwd=EXAMPLES,
        env={"FLASK_DEBUG": "1"},
    )
    port = proc.listening_port()
    assert "reachable from other machines" in proc.output
    assert get(port).status == 200
    assert proc.stop() == 0


def https_get(port: int) -> int:
    """The status of a GET over TLS, not checking the (self-signed) certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        connection.request("GET", "/")
        return connection.getresponse().status
    finally:
        connection.close()


def test_flask_serve_cert_adhoc_serves_https(spawn: Any) -> None:
    pytest.importorskip("cryptography")
    proc = spawn(
        command=flask_command("--app", "flask_app", "serve", "--port", "0", "--cert", "adhoc"),
        cwd=EXAMPLES,
    )
    port = proc.listening_port()
    assert "https://127.0.0.1" in proc.output
    assert https_get(port) == 200
    assert proc.stop() == 0


def test_flask_serve_cert_and_key_files(spawn: Any, tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    issued = trustme.CA().issue_cert("127.0.0.1")
    issued.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    issued.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    proc = spawn(
        command=flask_command(
            "--app",
            "flask_app",
            "serve",
            "--port",
            "0",
            "--cert",
            str(tmp_path / "cert.pem"),
            "--key",
            str(tmp_path / "key.pem"),
        ),
        cwd=EXAMPLES,
    )
    assert https_get(proc.listening_port()) == 200
    assert proc.stop() == 0


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--key", "key.pem"], '--key needs "--cert"'),
        (["--cert", "adhoc", "--key", "key.pem"], "--key cannot be used"),
        (["--cert", "missing.pem"], "cannot load missing.pem"),
    ],
)
def test_flask_serve_tls_option_errors(spawn: Any, option: list[str], message: str) -> None:
    proc = spawn(command=flask_command("--app", "flask_app", "serve", *option), cwd=EXAMPLES)
    assert proc.wait() == 2
    assert message in proc.output
    assert "Traceback" not in proc.output


def test_flask_serve_bad_wsgipool_option(spawn: Any) -> None:
    proc = spawn(
        command=flask_command("--app", "flask_app", "serve", "--max-body-size", "lots"),
        cwd=EXAMPLES,
    )
    assert proc.wait() == 2
    assert "invalid size 'lots'" in proc.output


def test_flask_serve_options_follow_the_command_line() -> None:
    """Every wsgipool option is a flask serve option, with the same default."""
    pytest.importorskip("flask")
    from wsgipool.integrations.flask_cli import serve_command
    from wsgipool.options import OPTIONS

    by_name = {param.name: param for param in serve_command.params}
    for option in OPTIONS:
        param = by_name[option.field]
        assert param.default == getattr(Config(), option.field), option.field
        assert f"--{option.field.replace('_', '-')}" in param.opts


@pytest.fixture
def flask_serve(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., tuple[Any, list[Any]]]]:
    """Run ``flask --app examples/flask_app.py ARGS`` in this process, with ``serve_forever``
    replaced: (the click result, the servers that would have served)."""
    pytest.importorskip("flask")
    from click.testing import CliRunner
    from flask.cli import cli

    built: list[wsgipool.Server] = []
    monkeypatch.setattr(wsgipool.Server, "serve_forever", lambda self: built.append(self))
    for name in ("FLASK_RUN_FROM_CLI", "FLASK_DEBUG", "FLASK_APP"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FLASK_SKIP_DOTENV", "1")
    # Flask's app discovery puts examples/ on sys.path and imports flask_app: undone after.
    monkeypatch.setattr(sys, "path", list(sys.path))

    def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[Any, list[Any]]:
        app = str(EXAMPLES / "flask_app.py")
        result = CliRunner().invoke(cli, ["--app", app, "serve", *args], env=env)
        return result, built

    yield invoke
    sys.modules.pop("flask_app", None)


def test_flask_serve_in_process_options(flask_serve: Any, tmp_path: Path) -> None:
    result, built = flask_serve("--without-threads", "-b", f"unix:{tmp_path}/s", "-b", ":0")
    assert result.exit_code == 0, result.output
    (server,) = built
    assert server.config.threads == 1
    assert server.config.bind == (f"unix:{tmp_path}/s", ":0")
    assert server.app_name.endswith("flask_app.py")


def test_flask_serve_takes_the_transfer_rate_floors(flask_serve: Any) -> None:
    result, built = flask_serve("--min-body-rate", "1K", "--min-send-rate", "0", "--port", "0")
    assert result.exit_code == 0, result.output
    assert built[0].config.transfer.min_body_rate == 1024
    assert built[0].config.transfer.min_send_rate == 0


def test_flask_serve_reads_text_as_every_source(flask_serve: Any) -> None:
    """The words and cases the wsgipool command and its environment take (options.py)."""
    env = {"FLASK_SERVE_EXPOSE_TRACEBACKS": "y", "FLASK_SERVE_PROXY_PROTOCOL": "off"}
    result, built = flask_serve("--log-level", "WARNING", "--port", "0", env=env)
    assert result.exit_code == 0, result.output
    # Applied to the process's wsgipool loggers (the Server gets the process options reset).
    assert logging.getLogger("wsgipool").level == logging.WARNING
    assert built[0].config.expose_tracebacks is True
    assert built[0].config.proxy_protocol is False


def test_flask_serve_in_process_environment(flask_serve: Any) -> None:
    env = {"FLASK_SERVE_THREADS": "3", "FLASK_RUN_HOST": "::1", "FLASK_RUN_PORT": "5055"}
    result, built = flask_serve(env=env)
    assert result.exit_code == 0, result.output
    assert built[0].config.threads == 3
    assert built[0].config.bind == ("[::1]:5055",)


def test_flask_serve_in_process_debugger(flask_serve: Any) -> None:
    result, built = flask_serve("--debugger", "--port", "0")
    assert result.exit_code == 0, result.output
    assert type(built[0].app).__name__ == "DebuggedApplication"
    assert built[0].config.expose_tracebacks


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bind", "127.0.0.1:0", "--port", "5001"], "--bind replaces --port"),
        (["--without-threads", "--threads", "4"], "--without-threads means one thread"),
        (["--debugger", "--host", "192.0.2.1"], "arbitrary Python code"),
        (["--threads", "0"], "threads: must be a whole number from 1 to 4096"),
        (["--poller", "kqueue"], "expected one of auto, epoll, selectors, not 'kqueue'"),
        (["--max-body-size", "huge"], "invalid size 'huge'"),
        (["--debug-allow-remote"], "--debug-allow-remote needs the debugger"),
    ],
)
def test_flask_serve_in_process_refusals(flask_serve: Any, args: list[str], message: str) -> None:
    result, built = flask_serve(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert built == []


def test_flask_serve_refuses_a_boolean_word_as_every_source(flask_serve: Any) -> None:
    result, built = flask_serve(env={"FLASK_SERVE_PRELOAD": "maybe"})
    assert result.exit_code == 2, result.output
    assert "expected true or false (or yes/no, on/off, 1/0), not 'maybe'" in result.output
    assert built == []


def test_flask_serve_reloads_on_change(spawn: Any, tmp_path: Path) -> None:
    app_file = tmp_path / "reloading.py"
    source = textwrap.dedent(
        """
        from flask import Flask
        app = Flask(__name__)

        @app.get("/")
        def index():
            return "version %d"
        """
    )
    app_file.write_text(source % 1)
    proc = spawn(
        command=flask_command("--app", "reloading", "serve", "--reload", "--port", "0", "-t", "2"),
        cwd=tmp_path,
        env={"WSGIPOOL_RELOAD_POLL": "1"},
    )
    port = proc.listening_port()
    assert get(port).body == b"version 1"
    app_file.write_text(source % 2)
    # The supervisor holds the socket: the same port answers, with the new code.
    proc.wait_for(re.compile(r"reloader: .*changed"))
    proc.wait_for(TCP_LISTENING)
    assert get(port).body == b"version 2"
    assert proc.stop() == 0


# --- run_simple ---------------------------------------------------------------------------

RUN_SIMPLE_SCRIPT = """
import ast
import sys
from wsgipool import run_simple

def app(environ, start_response):
    body = environ["PATH_INFO"].encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]

run_simple("127.0.0.1", 0, app, static_files={"/static": sys.argv[1]}, **ast.literal_eval(sys.argv[2]))
"""


def test_run_simple_keeps_connections_alive_and_serves_static_files(
    spawn: Any, tmp_path: Path
) -> None:
    static = tmp_path / "static"
    static.mkdir()
    (static / "style.css").write_text("body { color: teal }\n")
    script = tmp_path / "serve.py"
    script.write_text(RUN_SIMPLE_SCRIPT)
    proc = spawn(command=[sys.executable, str(script), str(static), "{}"], cwd=tmp_path)
    port = proc.listening_port()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        reader = ResponseReader(sock)
        # Two requests, one connection: werkzeug's server would close after the first.
        sock.sendall(build_request("GET", "/first"))
        first = reader.read()
        sock.sendall(build_request("GET", "/static/style.css"))
        second = reader.read()
    assert (first.status, first.body) == (200, b"/first")
    assert "close" not in first.connection_tokens
    assert second.status == 200
    assert second.body == b"body { color: teal }\n"
    assert (second.get("content-type") or "").startswith("text/css")
    assert proc.stop() == 0


def test_run_simple_reloader_reruns_the_script(spawn: Any, tmp_path: Path) -> None:
    static = tmp_path / "static"
    static.mkdir()
    script = tmp_path / "serve.py"
    script.write_text(RUN_SIMPLE_SCRIPT)
    proc = spawn(
        command=[sys.executable, str(script), str(static), "{'use_reloader': True}"],
        cwd=tmp_path,
        env={"WSGIPOOL_RELOAD_POLL": "1"},
    )
    port = proc.listening_port()
    assert "reloader: holding" in proc.output
    assert get(port, "/a").body == b"/a"
    script.write_text(
        RUN_SIMPLE_SCRIPT.replace('environ["PATH_INFO"]', '("new " + environ["PATH_INFO"])')
    )
    proc.wait_for(re.compile(r"reloader: .*changed"))
    proc.wait_for(TCP_LISTENING)
    assert get(port, "/a").body == b"new /a"
    assert proc.stop() == 0


@pytest.fixture
def no_serving(monkeypatch: pytest.MonkeyPatch) -> list[wsgipool.Server]:
    """run_simple builds its server but returns instead of serving; the servers it built."""
    built: list[wsgipool.Server] = []
    monkeypatch.setattr(wsgipool.Server, "serve_forever", lambda self: built.append(self))
    return built


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"processes": 2, "workers": 2}, "processes and workers are the same"),
        ({"threaded": False, "threads": 4}, "threaded=False means one thread"),
        ({"bind": "127.0.0.1:0"}, "run_simple listens on hostname and port"),
        ({"thread": 4}, "unknown option"),
        ({"request_handler": object}, "request_handler"),
        ({"ssl_context": "bogus"}, "ssl_context: an ssl.SSLContext"),
        ({"ssl_context": ("missing.pem", None)}, "cannot load missing.pem"),
        ({"reloader_type": "inotify"}, "reloader_type"),
        # The polling reloader would rescan without a pause; text is no number. (Checked
        # with the reloader off too: a test must not start one, re-running pytest.)
        ({"reloader_interval": 0}, "reloader_interval: must be a number of seconds"),
        ({"reloader_interval": -1}, "reloader_interval: must be"),
        ({"reloader_interval": "x"}, "reloader_interval: must be"),
        ({"reloader_interval": float("nan")}, "reloader_interval: must be"),
        # One string would be one path per character.
        (
            {"extra_files": "app.cfg"},
            r"extra_files: a list of paths, not one string: \['app.cfg'\]",
        ),
        ({"exclude_patterns": "*.tmp"}, "exclude_patterns: a list of paths, not one string"),
    ],
)
def test_run_simple_refuses_what_it_cannot_honour(
    no_serving: list[Any], arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        wsgipool.run_simple("127.0.0.1", 0, hello_app, **arguments)
    assert no_serving == []


def test_run_simple_ssl_context_forms(no_serving: list[Any], tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    issued = trustme.CA().issue_cert("127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    wsgipool.run_simple("127.0.0.1", 0, hello_app, ssl_context=(str(cert), str(key)))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    wsgipool.run_simple("127.0.0.1", 0, hello_app, ssl_context=context)
    wsgipool.run_simple("127.0.0.1", 0, hello_app, ssl_context="adhoc")
    first, second, third = (server.config for server in no_serving)
    assert (first.certfile, first.keyfile) == (str(cert), str(key))
    assert second.ssl_context is context
    assert isinstance(third.ssl_context, ssl.SSLContext)
    assert all(config.tls for config in (first, second, third))


def test_run_simple_unthreaded_warns_and_runs_one_thread(no_serving: list[Any]) -> None:
    with pytest.warns(RuntimeWarning, match="always threaded"):
        wsgipool.run_simple("127.0.0.1", 0, hello_app, threaded=False)
    assert [server.config.threads for server in no_serving] == [1]


def test_run_simple_passthrough_errors_warns(no_serving: list[Any]) -> None:
    with pytest.warns(RuntimeWarning, match="passthrough_errors"):
        wsgipool.run_simple("127.0.0.1", 0, hello_app, passthrough_errors=True)
    assert len(no_serving) == 1


def test_run_simple_defaults(no_serving: list[Any]) -> None:
    wsgipool.run_simple("localhost", 5001, hello_app)
    (server,) = no_serving
    assert server.config.bind == ("localhost:5001",)
    assert server.config.threads == Config().threads
    assert server.app is hello_app


def test_run_simple_debugger(no_serving: list[Any]) -> None:
    pytest.importorskip("werkzeug")
    wsgipool.run_simple("::1", 0, hello_app, use_debugger=True, use_evalex=False)
    (server,) = no_serving
    assert type(server.app).__name__ == "DebuggedApplication"
    assert server.config.bind == ("[::1]:0",)
    assert server.config.expose_tracebacks
    with pytest.raises(ConfigError, match="arbitrary Python code"):
        wsgipool.run_simple("0.0.0.0", 0, hello_app, use_debugger=True)


def test_run_simple_debugger_remote_when_allowed(
    no_serving: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("werkzeug")
    with caplog.at_level(logging.WARNING, logger="wsgipool"):
        wsgipool.run_simple("0.0.0.0", 0, hello_app, use_debugger=True, debug_allow_remote=True)
    assert len(no_serving) == 1
    assert "reachable from other machines" in caplog.text


def test_run_simple_unix_socket(no_serving: list[Any], tmp_path: Path) -> None:
    wsgipool.run_simple(f"unix://{tmp_path}/app.sock", 0, hello_app)
    assert no_serving[0].config.bind == (f"unix:{tmp_path}/app.sock",)


# --- the debugger's bind check --------------------------------------------------------------


@pytest.mark.parametrize(
    ("bind", "local"),
    [
        ("127.0.0.1:0", True),
        ("127.1.2.3:80", True),
        ("localhost:8000", True),
        ("[::1]:0", True),
        ("[::ffff:127.0.0.1]:0", True),
        ("unix:/tmp/x.sock", True),
        ("0.0.0.0:0", False),
        (":8000", False),
        ("[::]:0", False),
        ("192.168.1.10:80", False),
        ("example.com:80", False),
    ],
)
def test_debugger_bind_is_local(bind: str, local: bool) -> None:
    config = Config(bind=bind)
    assert is_local(config.binds[0]) is local
    if local:
        check_debug_bind(config, allow_remote=False)
    else:
        with pytest.raises(ConfigError, match="runs arbitrary Python code for anyone"):
            check_debug_bind(config, allow_remote=False)
        check_debug_bind(config, allow_remote=True)  # a warning, no error


def test_debugger_bind_inherited_socket() -> None:
    with socket.socket() as loopback, socket.socket() as anywhere:
        loopback.bind(("127.0.0.1", 0))
        anywhere.bind(("0.0.0.0", 0))
        assert is_local(Config(bind=f"fd://{loopback.fileno()}").binds[0])
        assert not is_local(Config(bind=f"fd://{anywhere.fileno()}").binds[0])
        assert loopback.getsockname()[0] == "127.0.0.1"  # still open and usable


# --- wsgipool --debug ---------------------------------------------------------------------


def test_wsgipool_debug_shows_the_debugger(spawn: Any, tmp_path: Path) -> None:
    pytest.importorskip("werkzeug")
    (tmp_path / "failing.py").write_text(
        "def app(environ, start_response):\n    raise ValueError('it broke')\n"
    )
    proc = spawn(
        ["failing:app", "--debug", "-b", "127.0.0.1:0"],
        cwd=tmp_path,
    )
    response = get(proc.listening_port())
    assert response.status == 500
    assert b"__debugger__" in response.body
    assert b"it broke" in response.body
    assert proc.stop() == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--debug", "-b", "0.0.0.0:0"], "arbitrary Python code"),
        (["--debug-allow-remote"], "--debug-allow-remote needs --debug"),
    ],
)
def test_wsgipool_debug_refusals(spawn: Any, options: list[str], message: str) -> None:
    proc = spawn(["hello:app", *options], cwd=EXAMPLES)
    assert proc.wait() == 2
    assert message in proc.output
    assert "Traceback" not in proc.output


# --- Django ---------------------------------------------------------------------------------


def test_django_example_through_the_command_line(spawn: Any) -> None:
    pytest.importorskip("django")
    proc = spawn(
        ["mysite.wsgi", "-b", "127.0.0.1:0", "-t", "2"],
        cwd=EXAMPLES / "django_site",
    )
    port = proc.listening_port()
    response = get(port)
    assert response.status == 200
    assert response.body == b"Hello from Django on wsgipool!\n"
    assert get(port, "/missing").status == 404
    assert proc.stop() == 0


# --- Pyramid / Paste Deploy -----------------------------------------------------------------

PASTE_SCRIPT = """
import sys
from paste.deploy import loadapp, loadserver

uri = "config:" + sys.argv[1]
server = loadserver(uri)
server(loadapp(uri))
"""


def paste_ini(tmp_path: Path, server_options: str) -> Path:
    """An ini that uses the example's sections, overriding server options."""
    example = EXAMPLES / "pyramid" / "development.ini"
    ini = tmp_path / "test.ini"
    ini.write_text(
        f"[app:main]\nuse = config:{example}#main\n\n"
        f"[server:main]\nuse = config:{example}#main\n{server_options}\n"
    )
    return ini


def test_pyramid_example_through_paste_deploy(spawn: Any, tmp_path: Path) -> None:
    pytest.importorskip("pyramid")
    pytest.importorskip("paste.deploy")
    script = tmp_path / "serve.py"
    script.write_text(PASTE_SCRIPT)
    ini = paste_ini(tmp_path, "port = 0\nthreads = 2\nmax_body_size = 1M")
    proc = spawn(
        command=[sys.executable, str(script), str(ini)],
        cwd=tmp_path,
        env={"PYTHONPATH": str(EXAMPLES / "pyramid")},
    )
    port = proc.listening_port()
    assert "with 2 threads" in proc.output
    response = get(port)
    assert response.status == 200
    assert response.body == b"Hello from Pyramid on wsgipool!\n"
    assert proc.stop() == 0


def test_paste_unknown_option_is_refused(spawn: Any, tmp_path: Path) -> None:
    pytest.importorskip("pyramid")
    pytest.importorskip("paste.deploy")
    script = tmp_path / "serve.py"
    script.write_text(PASTE_SCRIPT)
    ini = paste_ini(tmp_path, "port = 0\nwrokers = 4")
    proc = spawn(
        command=[sys.executable, str(script), str(ini)],
        cwd=tmp_path,
        env={"PYTHONPATH": str(EXAMPLES / "pyramid")},
    )
    assert proc.wait() != 0
    assert "unknown server option(s): wrokers" in proc.output


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, {}),
        ({"host": "0.0.0.0", "port": "6543"}, {"bind": ("0.0.0.0:6543",)}),
        ({"port": "6543"}, {"bind": ("127.0.0.1:6543",)}),
        ({"host": "::1"}, {"bind": ("[::1]:8000",)}),
        ({"listen": "*:8080 unix:/tmp/a.sock"}, {"bind": ("0.0.0.0:8080", "unix:/tmp/a.sock")}),
        ({"bind": "127.0.0.1:1 127.0.0.1:2"}, {"bind": ("127.0.0.1:1", "127.0.0.1:2")}),
        (
            {"threads": "8", "max-body-size": "10M", "keepalive_timeout": "2.5"},
            {"threads": 8, "max_body_size": 10 * 1024**2, "keepalive_timeout": 2.5},
        ),
        (
            {"min_body_rate": "1K", "min_send_rate": "0"},
            {"min_body_rate": 1024, "min_send_rate": 0},
        ),
        ({"expose_tracebacks": "TRUE"}, {"expose_tracebacks": True}),
        ({"expose_tracebacks": "off"}, {"expose_tracebacks": False}),
        # The words, cases and separators of every other source.
        (
            {"expose_tracebacks": "y", "proxy_protocol": "f"},
            {"expose_tracebacks": True, "proxy_protocol": False},
        ),
        ({"log_level": "WARNING"}, {"log_level": "warning"}),
        ({"bind": "127.0.0.1:1,127.0.0.1:2"}, {"bind": ("127.0.0.1:1", "127.0.0.1:2")}),
        ({"listen": "127.0.0.1:1, *:2"}, {"bind": ("127.0.0.1:1", "0.0.0.0:2")}),
        ({"access_log": "-", "log_level": "debug"}, {"access_log": "-", "log_level": "debug"}),
        # str | int: the text goes to Config, which reads it as octal (not a tuple of words).
        ({"unix_socket_mode": "660"}, {"unix_socket_mode": "660"}),
        ({"unix_socket_mode": "0o600"}, {"unix_socket_mode": "0o600"}),
    ],
)
def test_paste_options_are_converted_by_type(values: dict[str, str], expected: Any) -> None:
    options = compat.options_from_strings(values)
    assert options == expected
    Config(**options)  # valid


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"threads": "many"}, "threads: expected a whole number such as 16, not 'many'"),
        ({"keepalive_timeout": "soon"}, "keepalive_timeout: expected a number"),
        ({"expose_tracebacks": "maybe"}, "expose_tracebacks: expected true or false"),
        ({"max_body_size": "huge"}, "max_body_size: invalid size"),
        ({"max-body-size": "huge"}, "max-body-size: invalid size"),  # the key as written
        ({"poller": "kqueue"}, "poller: expected one of auto, epoll, selectors, not 'kqueue'"),
        ({"port": "http"}, "port: expected a port number"),
        # int() and float() take these; an option does not.
        ({"threads": "1_000"}, "threads: "),
        ({"threads": "\u0661\u0662"}, "threads: "),
        ({"keepalive_timeout": "nan"}, "keepalive_timeout: "),
        ({"port": "\u0668\u0660\u0660\u0660"}, "port: expected a port number"),
        ({"listen": "a:1", "port": "2"}, "not both"),
        ({"bind": "a:1", "port": "2"}, "not both"),
        ({"workers": "4", "use_x": "1"}, r"unknown server option\(s\): use_x \(known"),
        # One option under both spellings: neither value may be dropped unsaid.
        ({"queue-limit": "4", "queue_limit": "5"}, "queue_limit: set twice, as queue-limit and "),
        ({"host": "a", "port": "1", "max_body_size": "1", "max-body-size": "2"}, "set twice"),
    ],
)
def test_paste_bad_options(values: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        compat.options_from_strings(values)


def test_paste_runner_builds_the_config(no_serving: list[Any]) -> None:
    logger = logging.getLogger("wsgipool")
    level = logger.level
    try:
        compat.paste_server_runner(hello_app, {"here": "/"}, port="0", log_level="debug")
        assert logger.level == logging.DEBUG  # asked for in the ini: applies to wsgipool's logs
    finally:
        logger.setLevel(level)
    (server,) = no_serving
    assert server.config.bind == ("127.0.0.1:0",)
    assert server.app is hello_app


def test_paste_runner_called_from_python_takes_addresses_as_serve_does(
    no_serving: list[Any],
) -> None:
    """A program calling the runner itself, with a number for port or a list for listen
    (as serve() takes them): not an AttributeError from deep inside."""
    compat.paste_server_runner(hello_app, {}, host="127.0.0.1", port=0)
    compat.paste_server_runner(hello_app, {}, listen=["127.0.0.1:0", "unix:/tmp/x.sock"])
    assert [server.config.bind for server in no_serving] == [
        ("127.0.0.1:0",),
        ("127.0.0.1:0", "unix:/tmp/x.sock"),
    ]


def test_paste_unix_socket_mode_from_an_ini(no_serving: list[Any], tmp_path: Path) -> None:
    """``[server:main] use = egg:wsgipool`` with ``unix_socket_mode = 660``, through Paste
    Deploy's own loader: the socket file gets mode 660 and serves."""
    loadserver = pytest.importorskip("paste.deploy").loadserver
    path = tmp_path / "app.sock"
    ini = tmp_path / "server.ini"
    ini.write_text(
        "[server:main]\nuse = egg:wsgipool\n"
        f"bind = unix:{path} 127.0.0.1:0\nunix_socket_mode = 660\nthreads = 2\n"
    )
    runner = loadserver(f"config:{ini}")
    logger = logging.getLogger("wsgipool")
    level = logger.level
    try:
        runner(hello_app)
    finally:
        logger.setLevel(level)
    (server,) = no_serving
    assert server.config.bind == (f"unix:{path}", "127.0.0.1:0")
    assert server.config.socket_mode == 0o660
    server.start()
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(DEADLINE)
            sock.connect(str(path))
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200 OK"), data
    finally:
        server.stop(timeout=5)
    assert not path.exists()


def test_paste_entry_point_is_registered() -> None:
    from importlib import metadata

    # What egg:wsgipool and flask's plugin lookup find (other servers have a "main" too).
    ours = metadata.distribution("wsgipool").entry_points
    runners = {ep.name: ep.value for ep in ours if ep.group == "paste.server_runner"}
    assert runners == {"main": "wsgipool.integrations.paste:paste_server_runner"}
    commands = {ep.name: ep.value for ep in ours if ep.group == "flask.commands"}
    assert commands == {"serve": "wsgipool.integrations.flask_cli:serve_command"}


def test_flask_is_not_a_core_dependency() -> None:
    # wsgipool and its compat layer import without Flask; only flask serve needs it.
    code = (
        "import sys; sys.modules['flask'] = None; sys.modules['werkzeug'] = None\n"
        "import wsgipool, wsgipool.compat, wsgipool.launch, wsgipool.cli\n"
        "from wsgipool import Config, ConfigError\n"
        "from wsgipool.integrations.debugger import wrap_debugger\n"
        "try:\n    wrap_debugger(lambda e, s: [])\n"
        "except ConfigError as exc:\n    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=DEADLINE
    )
    assert result.returncode == 0, result.stderr
    assert "werkzeug is not installed" in result.stdout
