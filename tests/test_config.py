"""``Config`` validation, ``BindAddress.parse``, ``Server`` options and ``bind_socket`` errors."""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import struct
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.apps import hello_app
from tests.helpers.http import read_until_close
from wsgipool import Config, ConfigError, Server, run_simple
from wsgipool.config import BindAddress
from wsgipool.connection import timeval
from wsgipool.sockets import BindError, bind_socket

# --- defaults --------------------------------------------------------------------------------


def test_defaults() -> None:
    config = Config()
    assert config.bind == ("127.0.0.1:8000",)
    assert config.binds == (BindAddress("tcp", host="127.0.0.1", port=8000),)
    assert config.threads == 16
    assert config.root_path == ""
    assert config.expose_tracebacks is False
    assert config.url_scheme == "http"
    assert config.log_level == "info"
    assert config.max_body_size == 1024**3
    assert config.limits.max_request_line == config.max_request_line
    assert config.limits.max_header_size == config.max_header_size
    assert config.limits.max_header_count == config.max_header_count


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.threads = 4  # type: ignore[misc]


def test_single_bind_string_becomes_a_tuple() -> None:
    config = Config(bind="unix:/tmp/x.sock")
    assert config.bind == ("unix:/tmp/x.sock",)
    assert config.binds == (BindAddress("unix", path="/tmp/x.sock"),)


def test_several_binds() -> None:
    config = Config(bind=("127.0.0.1:0", "[::1]:9000", "unix:/tmp/a.sock", "fd://3"))
    assert [b.kind for b in config.binds] == ["tcp", "tcp", "unix", "fd"]


@pytest.mark.parametrize(
    "options",
    [
        {"threads": 1},
        {"queue_limit": 1, "backlog": 1},
        {"root_path": "/api"},
        {"root_path": "/api/v1"},
        {"max_body_size": 0},
        {"header_timeout": 0.5, "keepalive_timeout": 1, "graceful_timeout": 2.5},
        {"url_scheme": "https"},
        {"log_level": "debug"},
        {"log_level": "WARNING"},
        {"poller": "selectors"},
        {"expose_tracebacks": True},
    ],
)
def test_valid_values(options: dict[str, Any]) -> None:
    config = Config(**options)
    for name, value in options.items():
        assert getattr(config, name) == value


# --- invalid values: ConfigError naming the option --------------------------------------------

INVALID: list[tuple[str, Any]] = [
    ("threads", 0),
    ("threads", -1),
    ("threads", "4"),
    ("threads", 2.0),
    ("threads", True),
    ("threads", None),
    ("queue_limit", 0),
    ("backlog", 0),
    ("max_request_line", 0),
    ("max_header_size", 0),
    ("max_header_count", 0),
    ("max_body_size", -1),
    ("max_body_size", "10M"),
    ("header_timeout", 0),
    ("keepalive_timeout", -1),
    ("body_timeout", "5"),
    ("send_timeout", True),
    ("graceful_timeout", None),
    ("root_path", "api"),
    ("root_path", "/api/"),
    ("root_path", "/"),
    ("url_scheme", "ftp"),
    ("log_level", "loud"),
    ("poller", "kqueue"),
    ("cpu_affinity", "always"),
    ("sendfile", "maybe"),
    ("stuck_threshold", -1),
    ("stuck_threshold", "60"),
    ("stuck_recycle", -0.5),
    ("request_id", "always"),
    ("dump_headers", "user agent"),
    ("dump_headers", ["user-agent"]),
]


@pytest.mark.parametrize(("name", "value"), INVALID)
def test_invalid_value(name: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        Config(**{name: value})
    message = str(info.value)
    assert name in message, f"the message does not name the option: {message!r}"
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        # Not a number a timer can wait for: NaN compares false with everything, so
        # "value <= 0" does not catch it.
        ("header_timeout", math.nan),
        ("keepalive_timeout", math.nan),
        ("body_timeout", math.nan),
        # Wrong types must be a ConfigError, not an AttributeError/TypeError from inside.
        ("log_level", 5),
        ("root_path", 5),
        ("expose_tracebacks", "no"),
    ],
)
def test_invalid_value_edge_cases(name: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        Config(**{name: value})
    assert name in str(info.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("body_timeout", math.inf),
        ("send_timeout", 1e30),
        ("header_timeout", math.inf),
        ("keepalive_timeout", 1e30),
    ],
)
def test_huge_timeouts_are_refused_or_work(serve: Any, name: str, value: float) -> None:
    """An infinite or absurd timeout is either refused by Config, or the server works with it.

    (Accepting it and then crashing the listener thread on the first connection, because
    SO_RCVTIMEO/SO_SNDTIMEO cannot hold it, is neither.)
    """
    try:
        Config(**{name: value})
    except ConfigError as exc:
        assert name in str(exc)
        return
    live = serve(**{name: value})
    with live.connect(timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = read_until_close(sock)
    assert data.startswith(b"HTTP/1.1 200 OK"), data[:200]


DURATIONS = (
    "header_timeout",
    "keepalive_timeout",
    "body_timeout",
    "send_timeout",
    "graceful_timeout",
    "queue_timeout",
)


@pytest.mark.parametrize("name", DURATIONS)
@pytest.mark.parametrize("value", [1e-7, 4.9e-7, 0.0000009])
def test_durations_below_a_microsecond_are_refused(name: str, value: float) -> None:
    """The kernel's socket timeouts count microseconds, and a zero one is no timeout at all:
    --body-timeout 1e-7 must not quietly mean "wait for ever"."""
    with pytest.raises(ConfigError) as info:
        Config(**{name: value})
    message = str(info.value)
    assert message.startswith(f"{name}: ")
    assert "0.000001" in message, "the message does not say the smallest value allowed"


@pytest.mark.parametrize("name", DURATIONS)
def test_a_microsecond_is_the_shortest_duration(name: str) -> None:
    assert getattr(Config(**{name: 0.000001}), name) == 0.000001


@pytest.mark.parametrize("value", [1e-7, 4.9e-7, 0.0, -1.0, math.nan, math.inf, -math.inf])
def test_timeval_refuses_what_the_kernel_would_not_read_as_a_timeout(value: float) -> None:
    with pytest.raises(ValueError):
        timeval(value)


@pytest.mark.parametrize(
    ("seconds", "packed"),
    [
        (0.000001, (0, 1)),
        (0.0000015, (0, 2)),  # to the nearest microsecond
        (0.25, (0, 250_000)),
        (1.000001, (1, 1)),  # (seconds - whole) * 1e6 in floats would give 0.99999...: 0
        (2.5, (2, 500_000)),
        (30.0, (30, 0)),
        (365 * 24 * 3600, (365 * 24 * 3600, 0)),
    ],
)
def test_timeval_is_what_config_accepted(seconds: float, packed: tuple[int, int]) -> None:
    assert struct.unpack("ll", timeval(seconds)) == packed
    Config(body_timeout=seconds, send_timeout=seconds)


def test_a_one_microsecond_body_timeout_times_out(serve: Any) -> None:
    """The shortest body timeout Config takes is a real timeout on the wire: a request whose
    body never comes gets its 408 (a zero timeval would have waited for ever)."""

    def reads_the_body(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"read it all"]

    live = serve(reads_the_body, body_timeout=0.000001)
    with live.connect(timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        data = read_until_close(sock)
    assert data.startswith(b"HTTP/1.1 408 "), data[:200]


# Whole-number options and their documented bounds (docs/configuration.md, "Limits").
COUNT_BOUNDS = [
    ("threads", 1, 4096),
    ("workers", 1, 1024),
    ("queue_limit", 1, 2**20),
    ("max_connections", 1, 2**20),
    ("backlog", 1, 65535),
    ("max_request_line", 1, 1024**2),
    ("max_header_size", 1, 1024**2),
    ("max_header_count", 1, 32768),
    ("max_body_size", 0, 1024**4),
]


@pytest.mark.parametrize(("name", "smallest", "largest"), COUNT_BOUNDS)
def test_whole_number_bounds(name: str, smallest: int, largest: int) -> None:
    assert getattr(Config(**{name: smallest}), name) == smallest
    assert getattr(Config(**{name: largest}), name) == largest
    for value in (smallest - 1, largest + 1, 10**20):
        with pytest.raises(ConfigError) as info:
            Config(**{name: value})
        message = str(info.value)
        assert message.startswith(f"{name}: ") and str(largest) in message, message


@pytest.mark.parametrize(
    "bind",
    [
        (),
        [],
        None,
        ("nonsense:port",),
        ("127.0.0.1:70000",),
        ("unix:",),
        ("fd://x",),
        ("127.0.0.1:8000", "bad:port"),
        # Not strings at all: still a ConfigError with a message, not a TypeError.
        8000,
        (8000,),
    ],
    ids=repr,
)
def test_invalid_bind(bind: Any) -> None:
    with pytest.raises(ConfigError) as info:
        Config(bind=bind)
    assert "bind" in str(info.value)


def test_dump_headers_are_names_in_any_case() -> None:
    config = Config(dump_headers=" User-Agent, x-forwarded-for ,")
    assert config.dump_header_names == frozenset({"user-agent", "x-forwarded-for"})


def test_stuck_recycle_is_a_process_option() -> None:
    with pytest.raises(ConfigError, match="stuck_recycle: options of the whole process"):
        Server(lambda environ, start_response: [], stuck_recycle=30.0)


def test_from_options() -> None:
    config = Config.from_options(threads=3, bind=["127.0.0.1:0"])
    assert config.threads == 3
    assert config.binds[0].port == 0


def test_from_options_refuses_unknown_names() -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_options(unknown=1)
    assert "unknown" in str(info.value)


def test_from_options_names_every_unknown_option() -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_options(threads=2, thread=3, processes=4)
    assert "thread" in str(info.value) and "processes" in str(info.value)


def test_server_and_run_simple_guess_at_a_misspelt_option() -> None:
    """As serve() does: a typo gets the option it likely meant."""
    with pytest.raises(
        ConfigError, match=r"^unknown option\(s\): thraeds \(did you mean threads\?\)"
    ):
        Server(lambda environ, start_response: [], thraeds=3)
    with pytest.raises(ConfigError, match=r"\(did you mean graceful_timeout\?\)$"):
        run_simple("127.0.0.1", 0, hello_app, gracefull_timeout=3)


@pytest.mark.parametrize("name", ["binds", "limits"])
def test_from_options_refuses_derived_fields(name: str) -> None:
    with pytest.raises(ConfigError):
        Config.from_options(**{name: ()})


def test_from_options_validates() -> None:
    with pytest.raises(ConfigError):
        Config.from_options(threads=0)


@pytest.mark.parametrize(
    "bind",
    [
        ["127.0.0.1:8000", "127.0.0.1:8000"],
        ["unix:/run/app.sock", "127.0.0.1:8000", "unix:/run/app.sock"],
        ["fd://3", "fd://3"],
        ["[::1]:8000", "[::1]:8000"],
    ],
)
def test_an_address_given_twice_is_refused(bind: list[str]) -> None:
    """Not bound twice, with "address already in use" as if another program held it."""
    with pytest.raises(ConfigError, match=r"^bind: .* is given twice$"):
        Config(bind=bind)


def test_port_0_twice_is_two_ports() -> None:
    assert Config(bind=["127.0.0.1:0", "127.0.0.1:0"]).bind == ("127.0.0.1:0", "127.0.0.1:0")


# --- BindAddress.parse -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "canonical"),
    [
        ("127.0.0.1:8000", BindAddress("tcp", host="127.0.0.1", port=8000), "127.0.0.1:8000"),
        ("127.0.0.1:0", BindAddress("tcp", host="127.0.0.1", port=0), "127.0.0.1:0"),
        ("0.0.0.0:65535", BindAddress("tcp", host="0.0.0.0", port=65535), "0.0.0.0:65535"),
        ("localhost:8080", BindAddress("tcp", host="localhost", port=8080), "localhost:8080"),
        ("example.com", BindAddress("tcp", host="example.com", port=8000), "example.com:8000"),
        (":9000", BindAddress("tcp", host="0.0.0.0", port=9000), "0.0.0.0:9000"),
        ("[::1]:8000", BindAddress("tcp", host="::1", port=8000), "[::1]:8000"),
        ("[::]:80", BindAddress("tcp", host="::", port=80), "[::]:80"),
        ("[::1]", BindAddress("tcp", host="::1", port=8000), "[::1]:8000"),
        ("[fe80::1%eth0]:1", BindAddress("tcp", host="fe80::1%eth0", port=1), "[fe80::1%eth0]:1"),
        ("unix:/tmp/app.sock", BindAddress("unix", path="/tmp/app.sock"), "unix:/tmp/app.sock"),
        ("unix:relative.sock", BindAddress("unix", path="relative.sock"), "unix:relative.sock"),
        ("fd://3", BindAddress("fd", fd=3), "fd://3"),
        ("fd://0", BindAddress("fd", fd=0), "fd://0"),
    ],
)
def test_bind_address_parse(text: str, expected: BindAddress, canonical: str) -> None:
    address = BindAddress.parse(text)
    assert address == expected
    assert str(address) == canonical
    assert BindAddress.parse(str(address)) == address


@pytest.mark.parametrize(
    "text",
    [
        "",
        "nonsense:port",
        "127.0.0.1:",
        "127.0.0.1:-1",
        "127.0.0.1:65536",
        "127.0.0.1:8000:1",
        "::1:8000",
        "[::1]:",
        "[::1]:port",
        "[::1",
        "unix:",
        "fd://",
        "fd://x",
        "fd://-1",
        "http://127.0.0.1:8000",
        # Only ASCII digits (str.isdigit() and \d take "²" and Arabic-Indic digits), not too many.
        "fd://²",
        "fd://\u0661",
        "fd://99999999999999999999",
        "127.0.0.1:\u0668\u0660\u0660\u0660",
        "127.0.0.1:" + "9" * 5000,
    ],
)
def test_bind_address_parse_refuses(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        BindAddress.parse(text)
    message = str(info.value)
    assert repr(text) in message or text in message
    assert "\n" not in message


# --- Server options --------------------------------------------------------------------------


def test_server_refuses_config_and_options_together() -> None:
    with pytest.raises(TypeError):
        Server(hello_app, config=Config(), threads=2)


def test_server_refuses_unknown_options() -> None:
    with pytest.raises(ConfigError):
        Server(hello_app, unknown=1)


def test_server_validates_options() -> None:
    with pytest.raises(ConfigError):
        Server(hello_app, threads=0)


def test_server_takes_options_or_config() -> None:
    assert Server(hello_app, threads=3).config.threads == 3
    config = Config(threads=5)
    assert Server(hello_app, config=config).config is config


def test_server_start_stop_with_config(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    server = Server(hello_app, config=Config(bind=("127.0.0.1:0", f"unix:{path}"), threads=2))
    server.start()
    try:
        assert server.addresses[0][0] == "127.0.0.1" and server.addresses[0][1] > 0
        assert server.addresses[1] == path
        assert server.urls[0] == f"http://127.0.0.1:{server.addresses[0][1]}"
        assert server.urls[1] == f"unix:{path}"
    finally:
        assert server.stop(timeout=5)
    assert not os.path.exists(path), "the server's own socket file is removed on stop"


def test_a_server_starts_once() -> None:
    """Started again, a Server would run a second pool on new sockets and leave the first
    serving; after stop(), a second stop() would not stop it. Both are refused."""
    server = Server(hello_app, bind=["127.0.0.1:0"], threads=1)
    server.start()
    try:
        with pytest.raises(RuntimeError, match="has started already: a Server starts once"):
            server.start()
    finally:
        assert server.stop(timeout=5)
    with pytest.raises(RuntimeError, match="has stopped already"):
        server.start()
    never_started = Server(hello_app, bind=["127.0.0.1:0"], threads=1)
    never_started.stop()
    with pytest.raises(RuntimeError, match="has stopped already"):
        never_started.start()


def test_server_start_failure_closes_what_it_bound(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    path = str(tmp_path / "first.sock")
    try:
        port = taken.getsockname()[1]
        server = Server(hello_app, bind=(f"unix:{path}", f"127.0.0.1:{port}"), threads=1)
        with pytest.raises(BindError):
            server.start()
        assert all(sock.fileno() == -1 for sock in server.sockets)
        assert not os.path.exists(path)
    finally:
        taken.close()


# --- bind_socket -----------------------------------------------------------------------------


def test_bind_error_is_a_config_error() -> None:
    assert issubclass(BindError, ConfigError)


def test_bind_tcp_address_in_use() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        with pytest.raises(BindError) as info:
            bind_socket(BindAddress.parse(f"127.0.0.1:{port}"), 16)
        assert f"127.0.0.1:{port}" in str(info.value)
        assert "in use" in str(info.value).lower()
    finally:
        taken.close()


def test_bind_unknown_host() -> None:
    with pytest.raises(BindError) as info:
        bind_socket(BindAddress.parse("no.such.host.invalid:8000"), 16)
    assert "no.such.host.invalid" in str(info.value)


def test_bind_unix(tmp_path: Path) -> None:
    path = str(tmp_path / "a.sock")
    sock = bind_socket(BindAddress.parse(f"unix:{path}"), 16)
    try:
        assert sock.family == socket.AF_UNIX
        assert sock.getsockname() == path
    finally:
        sock.close()


def test_bind_unix_replaces_a_stale_socket_file(tmp_path: Path) -> None:
    path = str(tmp_path / "stale.sock")
    old = socket.socket(socket.AF_UNIX)
    old.bind(path)
    old.close()  # the file stays behind, nobody listens: a previous run that crashed
    sock = bind_socket(BindAddress.parse(f"unix:{path}"), 16)
    sock.close()


def test_bind_unix_refuses_a_live_socket(tmp_path: Path) -> None:
    """A socket file another process is listening on is an address in use, not stale."""
    path = str(tmp_path / "live.sock")
    live = socket.socket(socket.AF_UNIX)
    live.bind(path)
    live.listen()
    try:
        try:
            sock = bind_socket(BindAddress.parse(f"unix:{path}"), 16)
        except BindError as exc:
            assert path in str(exc)
        else:
            sock.close()
            pytest.fail("bind_socket removed the socket file of a live server and took it over")
    finally:
        live.close()


def test_bind_unix_does_not_remove_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "not-a-socket"
    path.write_text("keep me")
    with pytest.raises(BindError):
        bind_socket(BindAddress.parse(f"unix:{path}"), 16)
    assert path.read_text() == "keep me"


def test_bind_unix_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(BindError):
        bind_socket(BindAddress.parse(f"unix:{tmp_path}/no/such/dir.sock"), 16)


def test_bind_inherited_fd() -> None:
    original = socket.socket()
    original.bind(("127.0.0.1", 0))
    fd = os.dup(original.fileno())
    original.close()
    sock = bind_socket(BindAddress.parse(f"fd://{fd}"), 16)
    try:
        assert sock.fileno() == fd
        assert sock.getsockname()[0] == "127.0.0.1"
        client = socket.create_connection(sock.getsockname(), timeout=5)
        client.close()
    finally:
        sock.close()


def test_bind_fd_that_is_not_open() -> None:
    fd = os.open(os.devnull, os.O_RDONLY)
    os.close(fd)  # a descriptor number known to be free now
    with pytest.raises(BindError) as info:
        bind_socket(BindAddress.parse(f"fd://{fd}"), 16)
    assert f"fd://{fd}" in str(info.value)


def test_bind_fd_that_is_not_a_socket(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "file", os.O_CREAT | os.O_RDWR)
    try:
        with pytest.raises(BindError):
            bind_socket(BindAddress.parse(f"fd://{fd}"), 16)
    finally:
        os.close(fd)
