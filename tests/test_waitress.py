"""waitress users: ``serve()`` takes waitress's keywords, each mapped onto ``Config`` or
refused by name with what to use instead (integrations/waitress.py).

The calls of a waitress user run as real processes (``python -c``): what they serve, where
they say they listen, and the one-line error of a keyword wsgipool refuses.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.http import get_text as get
from tests.helpers.net import free_port
from tests.helpers.process import Process
from wsgipool import ConfigError
from wsgipool.integrations.waitress import config_from_keywords

# The app prints SCRIPT_NAME and wsgi.url_scheme, to see url_prefix and url_scheme.
SERVE = """
import sys
from wsgipool import serve

def app(environ, start_response):
    body = f"{environ['SCRIPT_NAME']} {environ['wsgi.url_scheme']}".encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]

serve(app, KEYWORDS)
"""


def serving(spawn: Callable[..., Process], keywords: str) -> Process:
    code = textwrap.dedent(SERVE).replace("KEYWORDS", keywords)
    return spawn(command=[sys.executable, "-c", code])


@pytest.mark.parametrize(
    "keywords",
    [
        "host='127.0.0.1', port=PORT",
        "port=PORT",
        "listen='*:PORT'",
        "listen=['127.0.0.1:PORT']",
        "bind=('127.0.0.1', PORT)",
    ],
)
def test_waitress_addresses_serve(spawn: Callable[..., Process], keywords: str) -> None:
    port = free_port()
    proc = serving(spawn, keywords.replace("PORT", str(port)))
    # serve() says where it listens, though the caller configured no logging.
    assert proc.listening_port() == port
    assert get(port) == (200, " http")
    assert proc.stop() == 0


def test_waitress_listen_on_two_addresses(spawn: Callable[..., Process]) -> None:
    port = free_port()
    proc = serving(spawn, f"listen='127.0.0.1:{port} [::1]:{port}'")
    assert sorted(proc.listening(2)) == [f"http://127.0.0.1:{port}", f"http://[::1]:{port}"]
    assert get(port) == (200, " http")
    assert proc.stop() == 0


def test_waitress_tuning_keywords_serve(spawn: Callable[..., Process]) -> None:
    port = free_port()
    proc = serving(
        spawn,
        f"host='127.0.0.1', port={port}, threads=8, url_scheme='https', url_prefix='/shop/', "
        "trusted_proxy='127.0.0.1', trusted_proxy_headers={'x-forwarded-for'}, "
        "channel_timeout=60, connection_limit=100, backlog=64, max_request_body_size=1024, "
        "max_request_header_size=8192, expose_tracebacks=False",
    )
    proc.listening_port()
    assert get(port, "/shop/x") == (200, "/shop https")
    assert proc.stop() == 0


def test_a_refused_waitress_keyword_is_one_clear_error(spawn: Callable[..., Process]) -> None:
    proc = serving(spawn, "port=0, ident='myapp'")
    assert proc.wait() == 1
    # A ConfigError from serve(): the caller's traceback, ending in the line that says why.
    assert proc.log.rstrip().splitlines()[-1] == (
        "wsgipool.config.ConfigError: ident: wsgipool sends 'Server: wsgipool'; a Server "
        "header the app sets replaces it"
    )


@pytest.mark.parametrize(
    ("keywords", "expected"),
    [
        ({"thread": 4}, "unknown option(s): thread (did you mean threads?)"),
        ({"url_schema": "https"}, "unknown option(s): url_schema (did you mean url_scheme?)"),
        ({"listne": "*:80"}, "unknown option(s): listne (did you mean listen?)"),
        ({"asyncore_use_poll": True}, "asyncore_use_poll: choose the poller with poller"),
        ({"host": "127.0.0.1", "listen": "*:80"}, "listen: give host/port or listen"),
        ({"unix_socket": "/tmp/s", "port": 80}, "unix_socket: give host/port or unix_socket"),
        ({"port": 80, "bind": "127.0.0.1:80"}, "bind: give bind, or port, not both"),
        ({"threads": 0}, "threads: must be a whole number from 1"),
        ({"connection_limit": 0}, "connection_limit: must be a whole number from 1"),
        ({"url_prefix": "/a", "root_path": "/b"}, "url_prefix: give url_prefix or root_path"),
        ({"unix_socket_perms": "999"}, "unix_socket_perms: an octal mode"),
    ],
)
def test_waitress_keywords_refused_by_name(keywords: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_keywords(keywords)
    assert str(caught.value).startswith(expected), caught.value


@pytest.mark.parametrize(
    ("keywords", "field", "value"),
    [
        ({"url_prefix": "app/"}, "root_path", "/app"),
        ({"url_prefix": "/"}, "root_path", ""),
        ({"trusted_proxy": "*"}, "forwarded_allow_ips", "*"),
        ({"trusted_proxy": None}, "forwarded_allow_ips", ""),
        ({"channel_timeout": 120}, "keepalive_timeout", 120),
        ({"connection_limit": 50}, "max_connections", 50),
        ({"max_request_header_size": 262144}, "max_header_size", 262144),
        ({"max_request_body_size": 1024}, "max_body_size", 1024),
        ({"unix_socket_perms": "660"}, "unix_socket_mode", "0o660"),
        ({"unix_socket": "/run/app.sock"}, "bind", ("unix:/run/app.sock",)),
        ({"bind": ("::1", 8080)}, "bind", ("[::1]:8080",)),
        ({"threads": "8"}, "threads", 8),  # text, as from an ini file
        ({"max_body_size": "10M"}, "max_body_size", 10 * 1024**2),
    ],
)
def test_waitress_keywords_mapped(keywords: dict[str, Any], field: str, value: Any) -> None:
    assert getattr(config_from_keywords(keywords), field) == value


def test_what_wsgipool_does_its_own_way_is_warned_about() -> None:
    with pytest.warns(RuntimeWarning, match="list each proxy in trusted_proxy"):
        config_from_keywords({"trusted_proxy_count": 2})
    with pytest.warns(RuntimeWarning, match="read those"):
        config_from_keywords({"clear_untrusted_proxy_headers": True})


# --- waitress-serve's flags on the wsgipool command line ------------------------------------

APPS = Path(__file__).parent / "apps"


def one_line_error(spawn: Callable[..., Process], *args: str) -> str:
    """The command's one line on stderr, checked to come with exit status 2."""
    proc = spawn([*args, "--chdir", str(APPS)])
    assert proc.wait() == 2, proc.log
    assert proc.log.count("\n") == 1 and "Traceback" not in proc.log, proc.log
    return proc.log.strip()


@pytest.mark.parametrize(
    "flags",
    [
        ["--listen", "*:PORT"],
        ["--listen=127.0.0.1:PORT"],
        ["--host", "127.0.0.1", "--port", "PORT"],
        ["--port=PORT"],
    ],
)
def test_waitress_serve_address_flags(spawn: Callable[..., Process], flags: list[str]) -> None:
    port = free_port()
    args = [flag.replace("PORT", str(port)) for flag in flags]
    proc = spawn(["--call", "app_factories:make_app", "--chdir", str(APPS), *args])
    assert proc.listening_port() == port
    # --call: the factory was called.
    assert get(port) == (200, "make_app")
    assert proc.stop() == 0


def test_waitress_serve_call_applies_to_an_app_from_the_environment(
    spawn: Callable[..., Process],
) -> None:
    proc = spawn(
        ["--call", "--chdir", str(APPS), "-b", "127.0.0.1:0"],
        env={"WSGIPOOL_APP": "app_factories:make_app"},
    )
    assert get(proc.listening_port()) == (200, "make_app")
    assert proc.stop() == 0


def test_waitress_serve_unix_socket_flag(spawn: Callable[..., Process], tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    proc = spawn(["app_factories:make_app()", "--chdir", str(APPS), "--unix-socket", str(path)])
    assert proc.listening() == [f"unix:{path}"]
    assert proc.stop() == 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        # An unknown option's value is not taken for APP: the option is what is reported.
        (["--acces-log", "-", "goodapp:app"], "unknown option --acces-log (did you mean --access-log?)"),
        (["--thread", "4", "goodapp:app"], "unknown option --thread (did you mean --threads?)"),
        (["goodapp:app", "--max-body=1M"], "unknown option --max-body (did you mean --max-body-size?)"),
        (["--url-prefix", "/shop", "goodapp:app"], "--url-prefix is waitress-serve's: wsgipool's option is --root-path"),
        (["--channel-timeout=60", "goodapp:app"], "--channel-timeout is waitress-serve's: wsgipool's option is --keepalive-timeout"),
        (["--no-ipv6", "goodapp:app"], "--no-ipv6 is waitress-serve's: list each address"),
        (["--ident", "me", "goodapp:app"], "--ident is waitress-serve's: wsgipool sends 'Server: wsgipool'"),
        (["--app=goodapp:app"], "--app is waitress-serve's: give the application as APP"),
        (["--call", "goodapp"], "--call: name the factory to call as module:factory"),
        (["goodapp:app", "-b", "127.0.0.1:0", "--port", "0"], "-b/--bind: give -b, or --listen"),
        (["goodapp:app", "--listen", "127.0.0.1:0", "--host", "::1"], "listen: give host/port or listen"),
    ],
)  # fmt: skip
def test_waitress_serve_flags_get_one_line(
    spawn: Callable[..., Process], args: list[str], expected: str
) -> None:
    line = one_line_error(spawn, *args)
    assert line.startswith(f"wsgipool: error: {expected}"), line


def test_every_waitress_keyword_is_in_the_migration_guide() -> None:
    from wsgipool.integrations.waitress import ADDRESS_KEYWORDS, FIXED, MAPPED, REFUSED

    page = (Path(__file__).parent.parent / "docs" / "migrating.md").read_text()
    missing = [
        name for name in (*MAPPED, *ADDRESS_KEYWORDS, *FIXED, *REFUSED) if f"`{name}`" not in page
    ]
    assert missing == []


# --- a Paste Deploy section written for waitress (use = egg:waitress#main) ------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            {"listen": "*:6543", "url_prefix": "app", "trusted_proxy": "10.0.0.1"},
            {"bind": ("0.0.0.0:6543",), "root_path": "/app", "forwarded_allow_ips": "10.0.0.1"},
        ),
        (
            {"channel_timeout": "60", "connection_limit": "200", "max_request_body_size": "1M"},
            {"keepalive_timeout": 60.0, "max_connections": 200, "max_body_size": 1024**2},
        ),
        (
            {"unix_socket": "/run/app.sock", "unix_socket_perms": "660"},
            {"bind": ("unix:/run/app.sock",), "unix_socket_mode": "0o660"},
        ),
        ({"trusted_proxy_headers": "x-forwarded-for", "trusted_proxy_count": "1"}, {}),
    ],
)
def test_a_waitress_ini_section_maps(values: dict[str, str], expected: dict[str, Any]) -> None:
    from wsgipool.integrations.paste import options_from_strings

    assert options_from_strings(values) == expected


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"ident": "shop"}, "ident: wsgipool sends 'Server: wsgipool'"),
        ({"url_prefix": "/a", "root_path": "/b"}, "url_prefix: give url_prefix or root_path"),
        ({"unix_socket": "/a.sock", "bind": "unix:/b.sock"}, "unix_socket: give unix_socket"),
    ],
)
def test_a_waitress_ini_section_refused(values: dict[str, str], message: str) -> None:
    from wsgipool.integrations.paste import options_from_strings

    with pytest.raises(ConfigError) as caught:
        options_from_strings(values)
    assert str(caught.value).startswith(message), caught.value
