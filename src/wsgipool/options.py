"""Every option that text can set: the table, and the converters from text to values.

Options come from the command line, the environment (``WSGIPOOL_*``), ``pyproject.toml``
(``[tool.wsgipool]``), a Paste Deploy ini file (``[server:main]``) and ``flask serve``.
Each of those gives text (or, from ``pyproject.toml``, TOML values), and the same
converter of the same table turns it into the ``Config`` value, so every source accepts
the same words and says the same thing about a bad one. Which source wins, and reading
the environment and ``pyproject.toml``: ``settings.py``.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .config import LOG_LEVELS, REQUEST_ID_MODES, WORKER_CLASSES, ConfigError

ENV_PREFIX = "WSGIPOOL_"


class InvalidValue(argparse.ArgumentTypeError, ValueError):
    """Text that is not a value of its option's kind. argparse shows the message as it is
    (an ArgumentTypeError); everyone else catches the ValueError it also is."""


# --- text to values -------------------------------------------------------------------------

# More digits than any option's largest value has, and few enough that int() takes them.
_MAX_DIGITS = 24
_WHOLE_NUMBER = re.compile(r"[0-9]+")
# Decimal, with the exponent Python prints small floats with (1e-06), so that what
# --print-config shows reads back. Not nan, inf or 1_0, which float() takes.
_DECIMAL = re.compile(r"([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")
# re.ASCII: otherwise IGNORECASE matches the Kelvin sign for K.
_SIZE = re.compile(r"([0-9]+)\s*([KMG]i?B?)?", re.IGNORECASE | re.ASCII)
UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
# The words of click (flask serve's environment) and of Paste Deploy's asbool, either case.
TRUE_WORDS = frozenset({"1", "true", "yes", "on", "t", "y"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", "f", "n"})
# Addresses in one text: waitress's listen and ini files separate them with spaces,
# environment variables with commas. A unix: path with either needs a list (-b, TOML).
_ADDRESS_SEPARATORS = re.compile(r"[\s,]+")


def parse_count(text: str) -> int:
    """A whole number in ASCII digits: ``16``. Not ``1_000``, ``+5``, ``-1`` or digits of
    other scripts (Arabic-Indic...), which ``int()`` takes."""
    digits = text.strip()
    if not _WHOLE_NUMBER.fullmatch(digits):
        raise InvalidValue(f"expected a whole number such as 16, not {shown(text)}")
    return _whole(digits, text)


def parse_size(text: str) -> int:
    """``1048576``, ``512K``, ``10M``, ``1G`` (binary multiples) to bytes."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise InvalidValue(f"invalid size {shown(text)} (examples: 1048576, 512K, 10M, 1G)")
    unit = (match.group(2) or "")[:1].upper()
    return _whole(match.group(1), text) * UNITS[unit]


def parse_seconds(text: str) -> float:
    """Seconds as a plain decimal number: ``30``, ``2.5``, ``.5``, or ``1e-3`` as Python
    prints small numbers. Not ``nan``, ``inf``, ``1_0`` or digits of other scripts, which
    ``float()`` takes."""
    number = text.strip()
    if not _DECIMAL.fullmatch(number):
        raise InvalidValue(f"expected a number of seconds such as 2.5, not {shown(text)}")
    value = float(number)
    if not math.isfinite(value):  # 1e999
        raise InvalidValue(f"{shown(text)} is too large")
    return value


def parse_boolean(text: str) -> bool:
    """``true``/``false``, ``yes``/``no``, ``on``/``off``, ``1``/``0`` (or ``t``/``f``,
    ``y``/``n``), in any case."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise InvalidValue(f"expected true or false (or yes/no, on/off, 1/0), not {shown(text)}")


def parse_addresses(text: str) -> tuple[str, ...]:
    """``127.0.0.1:8000, unix:/run/app.sock`` (commas or spaces) to one address each."""
    return tuple(address for address in _ADDRESS_SEPARATORS.split(text) if address)


def parse_lowercase(text: str) -> str:
    """A word in any case (log levels: ``DEBUG`` is ``debug``)."""
    return text.lower()


def parse_worker_class(text: str) -> str:
    """gunicorn's ``-k``: ``gthread`` or ``sync`` (what wsgipool does: threads); an
    event-loop worker (gevent, eventlet, tornado, uvicorn's) is refused by name."""
    name = text.strip()
    if name not in WORKER_CLASSES:
        raise InvalidValue(
            f"{shown(text)} is not served here: wsgipool runs WSGI apps on threads "
            "(gthread or sync; for an event loop, keep gunicorn or use an ASGI server)"
        )
    return name


def _whole(digits: str, text: str) -> int:
    if len(digits.lstrip("0")) > _MAX_DIGITS:
        raise InvalidValue(f"{shown(text)} is too large")
    return int(digits)


def shown(text: str) -> str:
    """``text`` quoted for an error message, cut short if it is long."""
    return repr(text) if len(text) <= 40 else repr(text[:40]) + "..."


# --- the table ------------------------------------------------------------------------------


def flag_name(field: str) -> str:
    """``queue_limit`` -> ``--queue-limit``."""
    return "--" + field.replace("_", "-")


def env_name(field: str) -> str:
    """``queue_limit`` -> ``WSGIPOOL_QUEUE_LIMIT``."""
    return ENV_PREFIX + field.upper()


@dataclass(frozen=True)
class Option:
    """One ``Config`` field as text sets it: its command-line flags and help, and the
    converter (``parse``, then a check against ``choices``) every source's text goes
    through. A ``parse_boolean`` option is a flag on a command line. ``aliases`` are more
    command-line spellings of it (gunicorn's, for those who switch)."""

    field: str
    metavar: str | None
    help: str
    parse: Callable[[str], Any] = str
    short: str | None = None
    choices: tuple[str, ...] | None = None
    aliases: tuple[str, ...] = ()

    @property
    def flags(self) -> list[str]:
        long = flag_name(self.field)
        return [self.short, long, *self.aliases] if self.short else [long, *self.aliases]

    @property
    def is_flag(self) -> bool:
        return self.parse is parse_boolean

    def convert(self, text: str) -> Any:
        """The value ``text`` means; ``InvalidValue`` (a ``ValueError``) if none."""
        value = self.parse(text)
        if self.choices is not None and value not in self.choices:
            raise InvalidValue(f"expected one of {', '.join(self.choices)}, not {shown(text)}")
        return value


SECONDS = "SECONDS"
# A list of addresses: on a command line the flag is repeated, one address each.
BIND = Option(
    "bind",
    "ADDRESS",
    "where to listen, repeatable: HOST:PORT, [IPv6]:PORT, unix:PATH, fd://N or systemd (the "
    "sockets of systemd socket activation)",
    parse_addresses,
    short="-b",
)
# Every other Config option text sets, in --help order. Defaults come from Config.
OPTIONS = (
    Option("threads", "N", "worker threads running the application", parse_count, short="-t"),
    Option(
        "queue_limit",
        "N",
        "ready connections that may wait for a worker before new requests get 503",
        parse_count,
    ),
    Option(
        "queue_timeout",
        SECONDS,
        "a request that waited longer than this for a worker gets 503 instead of running "
        "(0: no limit)",
        parse_seconds,
    ),
    Option(
        "max_connections",
        "N",
        "open connections at most; beyond it new ones wait in the listen backlog",
        parse_count,
    ),
    Option("backlog", "N", "listen() backlog of each socket", parse_count),
    Option(
        "root_path",
        "PATH",
        "SCRIPT_NAME the app is mounted at, e.g. /api (default: none, the app is at /)",
    ),
    Option("url_scheme", "SCHEME", "wsgi.url_scheme", choices=("http", "https")),
    Option(
        "max_body_size",
        "SIZE",
        "largest request body in bytes (K, M, G allowed), a chunked body counted as it "
        "crossed the wire (its chunk framing included); larger gets 413",
        parse_size,
    ),
    Option(
        "max_request_line",
        "SIZE",
        "longest request line; longer gets 414",
        parse_size,
        aliases=("--limit-request-line",),
    ),
    Option(
        "max_header_size",
        "SIZE",
        "largest request head, every field together (gunicorn's --limit-request-field-size "
        "limits each field); larger gets 431",
        parse_size,
        aliases=("--limit-request-field-size",),
    ),
    Option(
        "max_header_count",
        "N",
        "most header fields in a request; more gets 431",
        parse_count,
        aliases=("--limit-request-fields",),
    ),
    Option(
        "header_timeout", SECONDS, "a whole request head must arrive within this", parse_seconds
    ),
    Option(
        "keepalive_timeout",
        SECONDS,
        "close keep-alive connections idle this long",
        parse_seconds,
        aliases=("--keep-alive",),
    ),
    Option(
        "body_timeout", SECONDS, "longest wait for the next piece of a request body", parse_seconds
    ),
    Option(
        "send_timeout", SECONDS, "longest wait for a client to take response bytes", parse_seconds
    ),
    Option(
        "min_body_rate",
        "BYTES",
        "bytes per second a request body must average while a worker waits for it, after "
        "the first --body-timeout of waiting; slower gets 408 (0: no floor)",
        parse_size,
    ),
    Option(
        "min_send_rate",
        "BYTES",
        "bytes per second a client must take a response at, on average while a worker "
        "waits for it, after the first --send-timeout of waiting; slower is disconnected "
        "(0: no floor)",
        parse_size,
    ),
    Option(
        "graceful_timeout",
        SECONDS,
        "on SIGTERM/SIGINT, how long in-flight requests may take to finish",
        parse_seconds,
    ),
    Option(
        "expose_tracebacks",
        None,
        "put the traceback of an application error in the 500 response (development only)",
        parse_boolean,
    ),
    Option("log_level", "LEVEL", "error log level", parse_lowercase, choices=LOG_LEVELS),
    Option(
        "access_log",
        "FILE",
        "write an access log line per request to FILE, or to stdout with '-' (default: off)",
        aliases=("--access-logfile",),
    ),
    Option(
        "access_log_format",
        "FORMAT",
        "access log line, in gunicorn's atoms: %%(h)s remote address, %%(r)s request line, "
        "%%(s)s status, %%(b)s body bytes, %%(D)s microseconds, %%(w)s ms waited for a worker, "
        "%%({name}i)s request header, %%({name}o)s response header, %%({key}e)s environ",
        aliases=("--access-logformat",),
    ),
    Option(
        "poller",
        "KIND",
        "readiness API for idle connections",
        choices=("auto", "epoll", "selectors"),
    ),
    Option(
        "cpu_affinity",
        "WHEN",
        "keep the worker threads on one CPU while requests mostly wait (fewer GIL "
        "hand-offs between CPUs): auto, or off (see docs/tuning.md)",
        choices=("auto", "off"),
    ),
    Option(
        "sendfile",
        "WHEN",
        "send wsgi.file_wrapper files with sendfile(): on, off, or auto (on, except to a "
        "TCP peer on this host, where copying measured faster; see docs/tuning.md)",
        choices=("auto", "on", "off"),
    ),
    Option(
        "workers",
        "N",
        "worker processes, each with its own listener thread and --threads pool, sharing "
        "the listening sockets; above 1 a supervisor process starts and watches them "
        "(see docs/processes.md)",
        parse_count,
        short="-w",
    ),
    Option(
        "max_requests",
        "N",
        "a worker process that has run N requests stops accepting, finishes them and is "
        "replaced (0: never; starts the supervisor even with --workers 1)",
        parse_count,
    ),
    Option(
        "max_requests_jitter",
        "N",
        "add a random 0..N to --max-requests per worker, so they do not all restart at once",
        parse_count,
    ),
    Option(
        "preload",
        None,
        "import the app once in the supervisor before forking the workers (less memory, "
        "faster start; SIGHUP then cannot load new code)",
        parse_boolean,
    ),
    Option(
        "forwarded_allow_ips",
        "IPS",
        "peers whose Forwarded and X-Forwarded-* headers are applied: comma-separated "
        "addresses and CIDR networks, '*' for all, '' for none; Unix socket peers count as "
        "trusted unless empty (see docs/proxies.md)",
    ),
    Option(
        "proxy_protocol",
        None,
        "require a PROXY protocol header (v1 or v2) at the start of every connection from "
        "--proxy-allow-ips",
        parse_boolean,
    ),
    Option(
        "proxy_allow_ips",
        "IPS",
        "peers that must send a PROXY protocol header with --proxy-protocol (same syntax "
        "as --forwarded-allow-ips)",
    ),
    Option(
        "unix_socket_mode",
        "MODE",
        "file mode of unix: sockets, in octal, e.g. 660 (default: as the umask leaves it)",
    ),
    Option(
        "umask",
        "MASK",
        "set the process umask, in octal (e.g. 007), before creating Unix sockets, log "
        "files and worker processes (default: inherited)",
    ),
    Option(
        "certfile",
        "FILE",
        "serve HTTPS on every address with this certificate chain (PEM; it may hold the "
        "private key too) (default: plain HTTP; see docs/tls.md)",
    ),
    Option("keyfile", "FILE", "the private key, when not in --certfile (PEM) (default: none)"),
    Option(
        "keyfile_password",
        "PASSWORD",
        "password of an encrypted --keyfile (better set as WSGIPOOL_KEYFILE_PASSWORD: "
        "a command line is visible to other users) (default: none)",
    ),
    Option(
        "ca_certs",
        "FILE",
        "CA certificates (PEM) that client certificates must be signed by; see --cert-reqs "
        "(default: none)",
    ),
    Option(
        "cert_reqs",
        "WHEN",
        "client certificates: none (never asked for), optional (verified when sent) or "
        "required (needs --ca-certs)",
        choices=("none", "optional", "required"),
    ),
    Option(
        "ciphers",
        "LIST",
        "OpenSSL cipher list for TLS 1.2 (default: OpenSSL's secure defaults; TLS 1.3 "
        "suites are not affected)",
    ),
    # Metrics and health (docs/observability.md).
    Option(
        "metrics_bind",
        "ADDRESS",
        "serve GET /metrics (Prometheus, OpenMetrics), /stats (JSON), /livez and /readyz on "
        "this address, as --bind writes it: keep it on loopback or a pod-internal address "
        "(default: off)",
    ),
    Option(
        "ready_max_queue_wait",
        SECONDS,
        "/readyz answers 503 while requests wait longer than this for a worker thread "
        "(0: queue wait never makes it so)",
        parse_seconds,
    ),
    # The stuck-request watchdog (see docs/observability.md).
    Option(
        "stuck_threshold",
        SECONDS,
        "log a request that made no progress (no body bytes read or sent) for this long, "
        "once, as a WARNING with its thread's stack (0: off; see docs/observability.md)",
        parse_seconds,
    ),
    Option(
        "stuck_recycle",
        SECONDS,
        "a worker process holding a request that made no progress for this long logs a "
        "dump, is replaced, and drains: its other requests finish (0: off; starts the "
        "supervisor even with --workers 1)",
        parse_seconds,
        aliases=("--timeout",),
    ),
    Option(
        "dump_headers",
        "NAMES",
        "request headers the SIGUSR2 dump and stuck-request reports may show, "
        "comma-separated, e.g. user-agent,x-forwarded-for (default: none)",
    ),
    Option(
        "request_id",
        "MODE",
        "wsgipool.request_id: trusted (X-Request-ID from --forwarded-allow-ips peers), "
        "generate (that, else a new one; sent back as X-Request-ID) or off",
        choices=REQUEST_ID_MODES,
    ),
    # Production process options, under gunicorn's names too (see docs/migrating.md).
    Option(
        "worker_class",
        "CLASS",
        "gthread or sync, accepted for gunicorn command lines: wsgipool always serves with "
        "--threads threads per process; event-loop workers are refused",
        parse_worker_class,
        short="-k",
    ),
    Option(
        "error_log",
        "FILE",
        "write the error log to FILE, or to stderr with '-' (default: stderr)",
        aliases=("--error-logfile", "--log-file"),
    ),
    Option(
        "capture_output",
        None,
        "send the process's stdout and stderr (print(), C extensions) to the --error-log file "
        "(default: left as they are)",
        parse_boolean,
    ),
    Option(
        "pidfile",
        "FILE",
        "write the server's process id (the supervisor's, with worker processes) to FILE "
        "at start and remove it at exit; a FILE holding a running process's id is refused "
        "(default: none)",
        aliases=("--pid",),
    ),
    Option(
        "user",
        "USER",
        "after binding, before loading the app, run as USER (a name or uid; needs root) "
        "(default: stay)",
        short="-u",
    ),
    Option(
        "group",
        "GROUP",
        "after binding, before loading the app, run as GROUP (a name or gid; needs root) "
        "(default: USER's group with --user, else stay)",
        short="-g",
    ),
    # Control (docs/observability.md).
    Option(
        "control_socket",
        "PATH",
        "listen on this Unix socket (mode 0600) for `wsgipool ctl`: stats, in-flight "
        "requests, stacks, worker processes, drain, reopen-logs (default: off)",
    ),
)
# Every Config field that text can set (all but config.PYTHON_ONLY_FIELDS), by name.
BY_FIELD: Mapping[str, Option] = {option.field: option for option in (BIND, *OPTIONS)}


def convert(field: str, value: Any, label: str) -> Any:
    """``field``'s value as a source gave it: text through the field's converter; a value
    that is not text (a TOML number, boolean or list) as it is, for ``Config`` to check; a
    setting that is no option (the app) as it is. Bad text is a ``ConfigError`` naming it
    as ``label`` says (``WSGIPOOL_THREADS='x'``, the file and key, the ini key)."""
    option = BY_FIELD.get(field)
    if option is None or not isinstance(value, str):
        return value
    try:
        return option.convert(value)
    except ValueError as exc:
        raise ConfigError(f"{label}: {exc}") from None


def env_label(name: str, text: str) -> str:
    """How an error names an environment variable's value: ``WSGIPOOL_THREADS='x'``."""
    return f"{name}={shown(text)}"


def env_flag(name: str, environ: Mapping[str, str] = os.environ) -> bool:
    """A yes/no environment variable that is no option (``WSGIPOOL_RELOAD_POLL``): unset or
    empty is no; otherwise the words of every boolean option, or a ``ConfigError``."""
    text = environ.get(name, "")
    if not text.strip():
        return False
    try:
        return parse_boolean(text)
    except ValueError as exc:
        raise ConfigError(f"{env_label(name, text)}: {exc}") from None
