"""waitress's ``serve()`` keywords, as ``wsgipool.serve`` takes them.

``serve(app, host='0.0.0.0', port=8080, threads=8)`` runs unchanged after changing the
import. Each waitress keyword is in one of two tables here: ``MAPPED``, with the ``Config``
option it sets and what that means, or ``REFUSED``, with what to use instead. A name in
neither gets a "did you mean" among every name ``serve()`` takes.

The addresses (``host``, ``port``, ``listen``, ``unix_socket``, ``sockets``) turn into one
``bind``, as in the Paste runner (``addresses``, which it shares).
Unlike waitress, ``host`` defaults to 127.0.0.1 (not every interface) and ``port`` to
8000 (not 8080): say ``host='0.0.0.0'`` to be reachable from other machines.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..config import Config, ConfigError, guessing, parse_mode
from ..options import convert, flag_name, parse_addresses, parse_boolean, parse_count


@dataclass(frozen=True)
class Mapped:
    """A waitress keyword with a wsgipool meaning: the ``Config`` field it sets, how its
    value becomes the field's (default: as it is), and what differs, for the docs."""

    field: str
    meaning: str
    translate: Callable[[Any], Any] | None = None


def _prefix(value: Any) -> str:
    """waitress's url_prefix (``app/``, ``/app/``, ``/``) as a root_path (``/app``, ``''``)."""
    text = str(value).strip("/")
    return f"/{text}" if text else ""


def _trusted(value: Any) -> str:
    """waitress's trusted_proxy: one address, or ``*``; None or ``''``: nobody."""
    return str(value) if value else ""


def _truthy(value: Any) -> bool:
    """A yes/no keyword, given as a value or (in an ini file) as text; bad text is yes."""
    if not isinstance(value, str):
        return bool(value)
    try:
        return parse_boolean(value)
    except ValueError:
        return True


def _octal(value: Any) -> str:
    """waitress's unix_socket_perms: ``'600'`` or ``0o600``, as unix_socket_mode."""
    mode = parse_mode(value if isinstance(value, int) else str(value), "unix_socket_perms")
    return "" if mode is None else oct(mode)


# waitress's serve() keywords that set a Config option. host, port, listen, unix_socket and
# sockets set bind (ADDRESS_KEYWORDS).
MAPPED: Mapping[str, Mapped] = {
    "threads": Mapped("threads", "worker threads (waitress: 4; wsgipool: 16)"),
    "url_scheme": Mapped("url_scheme", "wsgi.url_scheme"),
    "url_prefix": Mapped("root_path", "SCRIPT_NAME the app is mounted at", _prefix),
    "trusted_proxy": Mapped(
        "forwarded_allow_ips",
        "the peer whose forwarded headers are applied (wsgipool also takes a list and "
        "CIDR networks); None trusts nobody, where wsgipool's default trusts 127.0.0.1 and ::1",
        _trusted,
    ),
    "backlog": Mapped("backlog", "listen() backlog"),
    "connection_limit": Mapped(
        "max_connections",
        "open connections at most (waitress: 100; wsgipool: 65536, idle ones cost no thread)",
    ),
    "channel_timeout": Mapped(
        "keepalive_timeout",
        "how long an idle connection stays open; a slow client is bounded separately by "
        "header_timeout, body_timeout and send_timeout",
    ),
    "max_request_header_size": Mapped("max_header_size", "largest request head, in bytes"),
    "max_request_body_size": Mapped("max_body_size", "largest request body, in bytes"),
    "expose_tracebacks": Mapped("expose_tracebacks", "the traceback in a 500 response"),
    "unix_socket_perms": Mapped(
        "unix_socket_mode",
        "the Unix socket's file mode (waitress: 600; wsgipool: as the umask leaves it)",
        _octal,
    ),
}
# The keywords that say where to listen; together they make bind.
ADDRESS_KEYWORDS = ("host", "port", "listen", "unix_socket", "sockets")


@dataclass(frozen=True)
class Fixed:
    """A waitress keyword for something wsgipool always does one way: accepted, with a
    ``RuntimeWarning`` when the value asks for another (``holds`` is False)."""

    meaning: str
    holds: Callable[[Any], bool]


FIXED: Mapping[str, Fixed] = {
    "trusted_proxy_count": Fixed(
        "wsgipool walks X-Forwarded-For from the right skipping every trusted proxy, "
        "instead of counting them: list each proxy in trusted_proxy (--forwarded-allow-ips)",
        lambda value: value is None or str(value).strip() == "1",
    ),
    "trusted_proxy_headers": Fixed(
        "from a trusted proxy wsgipool applies Forwarded and X-Forwarded-For, -Proto, "
        "-Host, -Port and -Prefix, whichever it sends (docs/proxies.md)",
        lambda value: True,
    ),
    "clear_untrusted_proxy_headers": Fixed(
        "wsgipool leaves the headers in the environ as the client sent them; what it "
        "applies from a trusted proxy is in REMOTE_ADDR, wsgi.url_scheme, HTTP_HOST, "
        "SERVER_PORT and SCRIPT_NAME: read those",
        lambda value: not _truthy(value),
    ),
}
# waitress keywords with no wsgipool meaning, and what to do instead.
REFUSED: Mapping[str, str] = {
    "ipv4": "list each address to listen on instead: 0.0.0.0:8080 and [::]:8080 (listen= "
    "from Python, -b on the command line)",
    "ipv6": "list each address to listen on instead: 0.0.0.0:8080 and [::]:8080 (listen= "
    "from Python, -b on the command line)",
    "ident": "wsgipool sends 'Server: wsgipool'; a Server header the app sets replaces it",
    "server_name": "SERVER_NAME without a Host header is the listening address; "
    "set the Host header at the proxy",
    "log_untrusted_proxy_headers": "wsgipool does not log them; drop it",
    "recv_bytes": "wsgipool sizes its reads itself; drop it",
    "send_bytes": "wsgipool sends as the app yields; drop it",
    "outbuf_overflow": "wsgipool streams the response as the app yields it (no buffer "
    "to a file); drop it",
    "outbuf_high_watermark": "wsgipool streams the response as the app yields it; drop it",
    "inbuf_overflow": "the app reads the request body as it arrives; bound it with "
    "max_request_body_size (max_body_size)",
    "cleanup_interval": "idle connections close at keepalive_timeout (channel_timeout); drop it",
    "asyncore_loop_timeout": "wsgipool has no asyncore loop; drop it",
    "asyncore_use_poll": "choose the poller with poller (--poller): epoll or selectors",
    "channel_request_lookahead": "wsgipool reads the next request once a response is sent; drop it",
    "log_socket_errors": "a client that disconnects is logged at debug level only; drop it",
    "socket_options": "wsgipool sets TCP_NODELAY itself; drop it",
    "_server": "a waitress test shim; use wsgipool.Server to run a server in your program",
    "_quiet": "a waitress test shim; set log_level='warning' for fewer lines",
    "_profile": "a waitress test shim; run the server under a profiler of your own",
}
ACCEPTED_NAMES = (*MAPPED, *ADDRESS_KEYWORDS, *FIXED)


def config_from_keywords(options: Mapping[str, Any]) -> Config:
    """The ``Config`` for ``serve(app, **options)``: ``Config``'s own options, waitress's
    (as ``MAPPED`` and ``ADDRESS_KEYWORDS`` say) and ``bind=(host, port)``. Raises
    ``ConfigError`` naming a refused or unknown keyword."""
    check_names(options)
    values: dict[str, Any] = {}
    for name, value in options.items():
        if name in MAPPED:
            mapped = MAPPED[name]
            if mapped.field != name and mapped.field in options:
                raise ConfigError(f"{name}: give {name} or {mapped.field}, not both")
            values[mapped.field] = value if mapped.translate is None else mapped.translate(value)
        elif name in FIXED:
            fixed = FIXED[name]
            if not fixed.holds(value):
                # stacklevel 3: serve()'s caller.
                warnings.warn(f"{name}={value!r}: {fixed.meaning}", RuntimeWarning, stacklevel=3)
        elif name not in ADDRESS_KEYWORDS:
            values[name] = value
    bind = values.get("bind")
    if isinstance(bind, tuple) and len(bind) == 2 and isinstance(bind[1], int):
        # A (host, port) pair, as socket.bind takes it.
        values["bind"] = addresses({"host": str(bind[0]), "port": str(bind[1])})
    where = _address_texts(options)
    if where:
        if "bind" in values:
            raise ConfigError(f"bind: give bind, or {'/'.join(sorted(where))}, not both")
        values["bind"] = _bind(where, options.get("sockets"))
    # Text, as Paste and the environment give it, goes through the option's converter.
    values = {
        name: convert(name, value, name) if name != "bind" else value
        for name, value in values.items()
    }
    try:
        return Config(**values)
    except ConfigError as exc:
        raise ConfigError(_as_given(str(exc), options)) from None


def _as_given(message: str, options: Mapping[str, Any]) -> str:
    """An error about a mapped field, naming the waitress keyword the caller gave."""
    for name, mapped in MAPPED.items():
        if name in options and message.startswith(f"{mapped.field}:"):
            return name + message[len(mapped.field) :]
    return message


def from_ini(names: Mapping[str, str]) -> dict[str, str]:
    """A Paste Deploy ``[server:main]`` section written for waitress, with waitress's keys
    (underscores) as wsgipool's: ``url_prefix`` as ``root_path``, ``unix_socket`` as
    ``bind``... (``MAPPED``); ``FIXED`` keys dropped (warned about as in ``serve()``);
    ``REFUSED`` keys refused with what to use instead. Other keys are left as they are."""
    refused = sorted(name for name in names if name in REFUSED)
    if refused:
        raise ConfigError("; ".join(f"{name}: {REFUSED[name]}" for name in refused))
    translated: dict[str, str] = {}
    for name, text in names.items():
        if name in FIXED:
            if not FIXED[name].holds(text):
                warnings.warn(f"{name} = {text}: {FIXED[name].meaning}", RuntimeWarning, 2)
            continue
        mapped = MAPPED.get(name)
        field = mapped.field if mapped is not None else name
        if mapped is not None and mapped.translate is not None:
            text = mapped.translate(text)
        if name == "unix_socket":
            field, text = "bind", f"unix:{text}"
        if field in translated or (field != name and field in names):
            raise ConfigError(f"{name}: give {name} or {field}, not both")
        translated[field] = text
    return translated


def check_names(options: Mapping[str, Any]) -> None:
    """Refuse a waitress keyword wsgipool has no meaning for, saying what to use, and a
    name nobody takes, with a guess at what was meant."""
    known = [f.name for f in dataclasses.fields(Config) if f.init]
    refused = sorted(name for name in options if name in REFUSED)
    if refused:
        raise ConfigError("; ".join(f"{name}: {REFUSED[name]}" for name in refused))
    unknown = sorted(set(options) - set(known) - set(ACCEPTED_NAMES))
    if unknown:
        raise ConfigError(f"unknown option(s): {guessing(unknown, [*known, *ACCEPTED_NAMES])}")


def _address_texts(options: Mapping[str, Any]) -> dict[str, str]:
    """The address keywords given, as the text the Paste runner's ``addresses`` takes."""
    texts: dict[str, str] = {}
    for name in ("host", "port", "listen", "unix_socket"):
        value = options.get(name)
        if value is None:
            continue
        # waitress takes listen as a list too.
        texts[name] = " ".join(value) if isinstance(value, (list, tuple)) else str(value)
    if options.get("sockets"):
        texts["sockets"] = ""
    return texts


def _bind(where: Mapping[str, str], sockets: Any) -> tuple[str, ...]:
    """bind from host/port, listen, unix_socket or sockets (one of them, as waitress)."""
    groups = [
        group
        for group, names in (
            ("host/port", ("host", "port")),
            ("listen", ("listen",)),
            ("unix_socket", ("unix_socket",)),
            ("sockets", ("sockets",)),
        )
        if any(name in where for name in names)
    ]
    if len(groups) > 1:
        raise ConfigError(f"{groups[1]}: give {groups[0]} or {groups[1]}, not both")
    if "unix_socket" in where:
        return (f"unix:{where['unix_socket']}",)
    if "sockets" in where:
        # Listening sockets made by the caller (socket activation): served as they are.
        return tuple(f"fd://{sock.fileno()}" for sock in sockets)
    return addresses(where)


def bind_for(host: str, port: int) -> str:
    """A ``--bind`` address from a werkzeug/Flask style host and port.

    ``unix://PATH`` is a Unix socket (as in werkzeug), an IPv6 address gets its brackets.
    """
    if host.startswith("unix://"):
        return "unix:" + host[len("unix://") :]
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def addresses(names: Mapping[str, str]) -> tuple[str, ...]:
    """bind from waitress's ``listen`` (``*:8080`` is every interface) or from ``host``
    and ``port`` (default 127.0.0.1 and 8000), as text; () when none is given."""
    if "listen" in names:
        if "host" in names or "port" in names:
            raise ConfigError("listen: give listen, or host and port, not both")
        # waitress: "*:8080" is every interface.
        return tuple(
            "0.0.0.0" + item[1:] if item.startswith("*") else item
            for item in parse_addresses(names["listen"])
        )
    if "host" not in names and "port" not in names:
        return ()
    host = names.get("host", "127.0.0.1").strip()
    port_text = names.get("port", str(Config().binds[0].port)).strip()
    try:
        port = parse_count(port_text)
    except ValueError:
        raise ConfigError(f"port: expected a port number, not {port_text!r}") from None
    return (bind_for(host, port),)


# --- waitress-serve's flags on the wsgipool command line -----------------------------------

# waitress-serve flags the command line takes as they are (hidden from --help): --listen,
# --host, --port and --unix-socket make -b addresses (bind_from_flags), --call calls APP.
CLI_ADDRESS_FLAGS = ("listen", "host", "port", "unix_socket")
# Its other flags that have no counterpart on wsgipool's command line.
CLI_ONLY_REFUSED: Mapping[str, str] = {
    "app": "give the application as APP (module:name)",
    "sockets": "use -b fd://N for a listening socket this process inherits",
}


def bind_from_flags(given: Mapping[str, Any]) -> tuple[str, ...]:
    """The ``-b`` addresses of waitress-serve's ``--listen`` (repeatable), ``--host``,
    ``--port`` and ``--unix-socket`` (those in ``given``); () when none is."""
    where = _address_texts(given)
    return _bind(where, None) if where else ()


def pointer_for_flag(flag: str) -> str | None:
    """What to use instead of waitress-serve's ``flag`` (``--url-prefix``,
    ``--no-ipv6``), where wsgipool spells it otherwise or has no such option; None for a
    flag that is not waitress-serve's."""
    name = flag.lstrip("-").replace("-", "_")
    if name.startswith("no_") and name[3:] in {*REFUSED, *FIXED, "expose_tracebacks"}:
        name = name[3:]
    if name in MAPPED and MAPPED[name].field != name:
        return f"wsgipool's option is {flag_name(MAPPED[name].field)}"
    if name in FIXED:
        return FIXED[name].meaning
    if name in REFUSED and not name.startswith("_"):
        return REFUSED[name]
    if name in CLI_ONLY_REFUSED:
        return CLI_ONLY_REFUSED[name]
    if name == "expose_tracebacks":
        return "tracebacks are off unless --expose-tracebacks is given"
    return None
