"""Forwarded headers, the PROXY protocol, Unix socket modes and systemd sockets, end to end."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import struct
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

from tests.helpers.http import ResponseReader, build_request, read_until_close
from tests.helpers.live import exchange
from tests.helpers.net import free_port
from tests.helpers.process import Process, child_env, wsgipool_command
from tests.helpers.waiting import DEADLINE
from wsgipool.http.proxy_protocol import V2_SIGNATURE

KEYS = ("REMOTE_ADDR", "REMOTE_PORT", "wsgi.url_scheme", "HTTP_HOST", "SERVER_PORT", "SCRIPT_NAME")


def environ_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    shown = {key: environ.get(key) for key in KEYS}
    shown["forwarded_from"] = environ.get("wsgipool.forwarded_from")
    shown["xff"] = environ.get("HTTP_X_FORWARDED_FOR")
    body = json.dumps(shown).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


FORWARDED_HEADERS = [
    ("X-Forwarded-For", "203.0.113.7, 127.0.0.1"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Host", "shop.example"),
    ("X-Forwarded-Port", "443"),
    ("X-Forwarded-Prefix", "/shop"),
]


def ask(live: Any, headers: Any = ()) -> dict[str, Any]:
    response = exchange(live, build_request("GET", "/", headers))
    assert response.status == 200, response
    result: dict[str, Any] = json.loads(response.body)
    return result


def test_trusted_peer_applies_x_forwarded(serve):
    live = serve(environ_app, forwarded_allow_ips="127.0.0.0/8")
    got = ask(live, FORWARDED_HEADERS)
    assert got["REMOTE_ADDR"] == "203.0.113.7"
    assert got["wsgi.url_scheme"] == "https"
    assert got["HTTP_HOST"] == "shop.example"
    assert got["SERVER_PORT"] == "443"
    assert got["SCRIPT_NAME"] == "/shop"
    assert got["forwarded_from"]["REMOTE_ADDR"] == "127.0.0.1"
    assert got["forwarded_from"]["wsgi.url_scheme"] == "http"
    assert got["xff"] == "203.0.113.7, 127.0.0.1"


def test_trusted_peer_forwarded_header_wins(serve):
    live = serve(environ_app, forwarded_allow_ips="127.0.0.0/8")
    got = ask(
        live,
        [
            ("Forwarded", 'for="[2001:db8::9]:4711";proto=https;host=a.example'),
            ("X-Forwarded-For", "198.51.100.1"),
            ("X-Forwarded-Host", "b.example"),
        ],
    )
    assert got["REMOTE_ADDR"] == "2001:db8::9"
    assert got["REMOTE_PORT"] == "4711"
    assert got["HTTP_HOST"] == "a.example"
    assert got["wsgi.url_scheme"] == "https"


def test_untrusted_peer_headers_are_plain(serve):
    live = serve(environ_app, forwarded_allow_ips="")
    got = ask(live, FORWARDED_HEADERS)
    assert got["REMOTE_ADDR"] == "127.0.0.1"
    assert got["wsgi.url_scheme"] == "http"
    assert got["HTTP_HOST"] == "x"
    assert got["SCRIPT_NAME"] == ""
    assert got["forwarded_from"] is None
    assert got["xff"] == "203.0.113.7, 127.0.0.1"


def test_untrusted_network_headers_are_plain(serve):
    live = serve(environ_app, forwarded_allow_ips="10.0.0.0/8")
    assert ask(live, FORWARDED_HEADERS)["REMOTE_ADDR"] == "127.0.0.1"


def test_trust_is_per_connection_on_keep_alive(serve):
    live = serve(environ_app, forwarded_allow_ips="127.0.0.1")
    with live.connect() as sock:
        reader = ResponseReader(sock)
        for address in ("198.51.100.1", "198.51.100.2"):
            sock.sendall(build_request("GET", "/", [("X-Forwarded-For", address)]))
            assert json.loads(reader.read().body)["REMOTE_ADDR"] == address
        sock.sendall(build_request("GET", "/"))
        assert json.loads(reader.read().body)["REMOTE_ADDR"] == "127.0.0.1"


def test_unix_socket_peer_is_trusted_unless_empty(serve, tmp_path):
    path = tmp_path / "app.sock"
    live = serve(environ_app, bind=[f"unix:{path}"])
    assert ask(live, FORWARDED_HEADERS)["REMOTE_ADDR"] == "203.0.113.7"
    path2 = tmp_path / "app2.sock"
    live = serve(environ_app, bind=[f"unix:{path2}"], forwarded_allow_ips="")
    assert ask(live, FORWARDED_HEADERS)["REMOTE_ADDR"] == ""


def flask_redirecting_app() -> Any:
    """A Flask app whose ``/`` redirects with ``url_for``: the prefix goes into Location."""
    flask = pytest.importorskip("flask")
    app = flask.Flask("redirecting")

    @app.route("/")
    def index() -> Any:
        return flask.redirect(flask.url_for("landing"))

    @app.route("/landing")
    def landing() -> str:
        return "landed"

    return app


def redirect_location(live: Any, prefix: str) -> str:
    response = exchange(live, build_request("GET", "/", [("X-Forwarded-Prefix", prefix)]))
    assert response.status == 302, response
    location = response.get("location")
    assert location is not None
    return location


@pytest.mark.parametrize(
    "prefix",
    [
        "/%2Fevil.example",  # was SCRIPT_NAME //evil.example: Location //evil.example/landing
        "/%5Cevil.example",  # "/\\evil.example/landing": browsers read "\\" as "/"
        "/%09/evil.example",  # browsers drop the tab: "//evil.example/landing"
        "/shop%2F%2Fevil.example",
    ],
)
def test_forwarded_prefix_cannot_redirect_off_site(serve, prefix):
    live = serve(flask_redirecting_app(), forwarded_allow_ips="127.0.0.0/8")
    location = redirect_location(live, prefix)
    # The prefix is ignored as a whole: the redirect stays on this site, unprefixed.
    assert location == "/landing"


def test_forwarded_prefix_goes_into_urls(serve):
    live = serve(flask_redirecting_app(), forwarded_allow_ips="127.0.0.0/8")
    assert redirect_location(live, "/shop") == "/shop/landing"
    assert redirect_location(live, "/caf%C3%A9") == "/caf%C3%A9/landing"


# --- PROXY protocol -------------------------------------------------------------------------


def v2_inet(src: str, dst: str, sport: int, dport: int, command: int = 1) -> bytes:
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return V2_SIGNATURE + bytes([0x20 | command, 0x11]) + struct.pack("!H", len(body)) + body


def proxied(live: Any, header: bytes, *pieces: bytes) -> dict[str, Any]:
    with live.connect() as sock:
        for piece in (header, *pieces):
            sock.sendall(piece)
        response = ResponseReader(sock).read()
    assert response.status == 200, response
    result: dict[str, Any] = json.loads(response.body)
    return result


def test_proxy_v1_sets_the_peer(serve):
    live = serve(environ_app, proxy_protocol=True)
    got = proxied(live, b"PROXY TCP4 192.0.2.10 192.0.2.1 40000 443\r\n" + build_request())
    assert got["REMOTE_ADDR"] == "192.0.2.10"
    assert got["REMOTE_PORT"] == "40000"


def test_proxy_v1_tcp6_sent_in_pieces(serve):
    live = serve(environ_app, proxy_protocol=True)
    header = b"PROXY TCP6 2001:db8::10 2001:db8::1 40001 443\r\n"
    # A partial header goes back to the listener; the rest completes it.
    with live.connect() as sock:
        sock.sendall(header[:9])
        sock.sendall(header[9:])
        sock.sendall(build_request())
        got = json.loads(ResponseReader(sock).read().body)
    assert got["REMOTE_ADDR"] == "2001:db8::10"


def test_proxy_v2_sets_the_peer_and_keeps_it(serve):
    live = serve(environ_app, proxy_protocol=True)
    with live.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(v2_inet("198.51.100.20", "198.51.100.1", 50000, 80) + build_request())
        assert json.loads(reader.read().body)["REMOTE_ADDR"] == "198.51.100.20"
        sock.sendall(build_request())  # keep-alive: still the same client
        got = json.loads(reader.read().body)
    assert got["REMOTE_ADDR"] == "198.51.100.20"
    assert got["REMOTE_PORT"] == "50000"


def test_proxy_v2_local_keeps_the_real_peer(serve):
    live = serve(environ_app, proxy_protocol=True)
    got = proxied(live, v2_inet("198.51.100.20", "198.51.100.1", 1, 2, command=0), build_request())
    assert got["REMOTE_ADDR"] == "127.0.0.1"


def test_proxy_address_is_not_a_trusted_forwarder(serve):
    # After PROXY, the client is 192.0.2.10: its own X-Forwarded-For means nothing.
    live = serve(environ_app, proxy_protocol=True)
    got = proxied(
        live,
        b"PROXY TCP4 192.0.2.10 192.0.2.1 40000 443\r\n",
        build_request("GET", "/", [("X-Forwarded-For", "6.6.6.6")]),
    )
    assert got["REMOTE_ADDR"] == "192.0.2.10"


@pytest.mark.parametrize(
    "data",
    [
        b"PROXY TCP4 192.0.2.10 192.0.2.1 99999 443\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # no PROXY header at all
        V2_SIGNATURE + b"\x21\x11\x00\x04\x00\x00\x00\x00",
    ],
)
def test_malformed_proxy_header_closes_without_a_response(serve, data):
    live = serve(environ_app, proxy_protocol=True)
    assert live.raw(data) == b""


def test_proxy_header_from_a_peer_not_allowed_is_http(serve):
    live = serve(environ_app, proxy_protocol=True, proxy_allow_ips="10.0.0.0/8")
    for header in (
        b"PROXY TCP4 192.0.2.10 192.0.2.1 40000 443\r\n",
        v2_inet("1.2.3.4", "5.6.7.8", 1, 2),
    ):
        answer = live.raw(header + build_request())
        assert answer.startswith(b"HTTP/1.1 400 "), answer
    # ... and a plain request from it is served as usual.
    assert ask(live)["REMOTE_ADDR"] == "127.0.0.1"


def test_proxy_protocol_off_means_plain_http(serve):
    live = serve(environ_app)
    answer = live.raw(b"PROXY TCP4 192.0.2.10 192.0.2.1 40000 443\r\n" + build_request())
    assert answer.startswith(b"HTTP/1.1 400 ")


# --- Unix socket mode ------------------------------------------------------------------------


def test_unix_socket_mode(serve, tmp_path):
    path = tmp_path / "mode.sock"
    live = serve(environ_app, bind=[f"unix:{path}"], unix_socket_mode="0o600")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert ask(live)["REMOTE_ADDR"] == ""
    path2 = tmp_path / "mode2.sock"
    serve(environ_app, bind=[f"unix:{path2}"], unix_socket_mode="666")
    assert stat.S_IMODE(os.stat(path2).st_mode) == 0o666


# --- systemd socket activation ---------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import os, sys
    inherited = int(sys.argv[1])
    if inherited != 3:  # systemd passes its sockets from descriptor 3 on
        os.dup2(inherited, 3)
        os.close(inherited)
    os.environ["LISTEN_PID"] = str(os.getpid())  # systemd sets the service's pid
    from wsgipool import Server
    def app(environ, start_response):
        start_response("200 OK", [])
        return [b"ok"]
    server = Server(app, bind=["systemd"], threads=2)
    server.start()
    print(repr(server.addresses), os.environ.get("LISTEN_FDS"), flush=True)
    sys.stdin.readline()
    server.stop(timeout=5)
    """
)


def test_systemd_socket_activation():
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(8)
    port = listening.getsockname()[1]
    fd = listening.fileno()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(fd)],
        env=dict(os.environ, LISTEN_FDS="1"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        pass_fds=(fd,),
    )
    listening.close()
    try:
        assert child.stdout is not None and child.stdin is not None
        line = child.stdout.readline()
        assert f"('127.0.0.1', {port})" in line, line
        assert line.rstrip().endswith("None"), line  # LISTEN_FDS was unset
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert read_until_close(sock).startswith(b"HTTP/1.1 200 OK")
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.wait(timeout=20) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


# systemd, then a supervisor (--workers, --reload) that hands the sockets to its children.

# What systemd does for a socket-activated service: the listening sockets become
# descriptors 3, 4, ...; LISTEN_FDS, LISTEN_PID (exec keeps the pid) and LISTEN_FDNAMES
# are set; then the service's command runs. argv: COUNT FD... COMMAND...
LAUNCHER = textwrap.dedent(
    """
    import fcntl, os, sys
    count = int(sys.argv[1])
    passed = [int(fd) for fd in sys.argv[2 : 2 + count]]
    # Out of the way first: a passed descriptor may be 3 or 4 already.
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in passed]
    for fd in passed:
        os.close(fd)
    for index, fd in enumerate(high):
        os.dup2(fd, 3 + index)  # inheritable
        os.close(fd)
    os.environ["LISTEN_FDS"] = str(count)
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.environ["LISTEN_FDNAMES"] = ":".join(["web"] * count)
    command = sys.argv[2 + count :]
    os.execv(command[0], command)
    """
)

ACTIVATED_APP = """\
import os

VERSION = "{version}"


def app(environ, start_response):
    # What the serving process sees: the LISTEN_* variables must be gone.
    seen = [os.environ.get(name, "-") for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")]
    body = " ".join([VERSION, str(os.getpid()), str(environ["wsgi.multiprocess"]), *seen])
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body.encode()]
"""


class Activated(Process):
    """``python -m wsgipool app:app --bind systemd ...`` started as systemd would, with a TCP
    socket (descriptor 3) and a Unix socket (descriptor 4), in a process group of its own."""

    def __init__(self, directory: Any, extra: tuple[str, ...]) -> None:
        self.directory = directory
        self.write_app("v1")
        tcp = socket.socket()
        tcp.bind(("127.0.0.1", 0))
        tcp.listen(16)
        self.port = tcp.getsockname()[1]
        self.path = str(directory / "app.sock")
        unix = socket.socket(socket.AF_UNIX)
        unix.bind(self.path)
        unix.listen(16)
        fds = (tcp.fileno(), unix.fileno())
        command = [sys.executable, "-c", LAUNCHER, "2", *map(str, fds)]
        command += wsgipool_command("app:app", "--bind", "systemd")
        command += ["--chdir", str(directory), "--threads", "4", *extra]
        try:
            env = child_env({"WSGIPOOL_RELOAD_POLL": "1"})
            super().__init__(command, env=env, pass_fds=fds)
        finally:
            # Only the launched process holds them now.
            tcp.close()
            unix.close()

    def write_app(self, version: str) -> None:
        (self.directory / "app.py").write_text(ACTIVATED_APP.format(version=version))

    def get(self, family: str = "tcp", port: int | None = None) -> list[str]:
        """One GET over a new connection: the app's words (version, pid, ...)."""
        if family == "unix":
            sock = socket.socket(socket.AF_UNIX)
            address: Any = self.path
        else:
            sock = socket.socket()
            address = ("127.0.0.1", port or self.port)
        with sock:
            sock.settimeout(DEADLINE)
            sock.connect(address)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = read_until_close(sock)
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200 "):
            raise ConnectionError(f"no 200 response: {data!r}; log:\n{self.log}")
        return body.decode().split()


@pytest.fixture
def activate(tmp_path: Any, processes: list[Process]) -> Any:
    def run(*extra: str) -> Activated:
        directory = tmp_path / f"project{len(processes)}"
        directory.mkdir()
        activated = Activated(directory, extra)
        processes.append(activated)
        return activated

    return run


@pytest.mark.skipif(not hasattr(os, "fork"), reason="worker processes need os.fork")
def test_systemd_sockets_with_worker_processes(activate):
    server = activate("--workers", "2")
    # The supervisor took both of systemd's sockets; each worker listens on both.
    server.wait_log(f"on http://127.0.0.1:{server.port}, unix:{server.path} with 2 worker")
    server.wait_log("listening on unix:", count=2)
    for family in ("tcp", "unix"):
        version, pid, multiprocess, *listen = server.get(family)
        assert (version, multiprocess) == ("v1", "True")
        assert int(pid) != server.popen.pid  # a worker, not the supervisor
        assert listen == ["-", "-", "-"]  # LISTEN_FDS and co. are not passed on
    assert "LISTEN" not in server.log  # no worker re-read LISTEN_FDS (and failed)
    assert server.stop() == 0


def test_systemd_sockets_with_reload(activate):
    port = free_port()
    server = activate("--reload", "--reload-dir", ".", "--bind", f"127.0.0.1:{port}")
    # Three descriptors for two --bind addresses: systemd's two, then the one bound here.
    server.wait_log(f"holding http://127.0.0.1:{server.port}, unix:{server.path}, ")
    version, pid, multiprocess, *listen = server.get("tcp")
    assert (version, multiprocess) == ("v1", "False")
    assert int(pid) != server.popen.pid  # the server child, not the supervisor
    assert listen == ["-", "-", "-"]
    server.write_app("v2")
    deadline = time.monotonic() + DEADLINE
    # Requests wait in the backlog of systemd's socket while the child restarts. But one
    # the old child accepted just before it drained may be closed unanswered: systemd's
    # socket has no TCP_DEFER_ACCEPT, so it was accepted before its request arrived.
    while True:
        with contextlib.suppress(ConnectionError):
            if server.get("tcp")[0] == "v2":
                break
        assert time.monotonic() < deadline, server.log
    new_pid = server.get("unix")[1]
    assert new_pid != pid
    assert server.get("tcp", port)[:2] == ["v2", new_pid]
    assert server.stop() == 0
