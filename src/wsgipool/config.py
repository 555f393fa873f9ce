"""The one validated configuration object. The CLI and ``serve()`` both map onto ``Config``."""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from dataclasses import dataclass, field
from typing import Any

from .accesslog import COMBINED, check_format
from .connection import TransferLimits
from .http.parser import Limits
from .proxy import TrustedPeers

DEFAULT_PORT = 8000
MAX_FD = 2**31 - 1  # A C int.
# Durations, in seconds. The longest (a year): beyond it the kernel's timeval overflows,
# and no real deadline is that long. The shortest (a microsecond): the kernel's socket
# timeouts (SO_RCVTIMEO, SO_SNDTIMEO: connection.timeval) count whole microseconds, and a
# zero one means no timeout at all. Every duration has the same bounds, so they read alike.
MAX_SECONDS = 365 * 24 * 3600
MIN_SECONDS = 0.000001
_DURATIONS = (
    "header_timeout",
    "keepalive_timeout",
    "body_timeout",
    "send_timeout",
    "graceful_timeout",
)
# gunicorn's worker classes that mean what wsgipool does (threads); others are refused.
WORKER_CLASSES = ("gthread", "sync")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
# --request-id: where wsgipool.request_id comes from (docs/observability.md).
REQUEST_ID_MODES = ("trusted", "generate", "off")
# A header name (RFC 9110's token), for --dump-headers.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# The largest request line and head: the head is held whole in memory while it is read, on
# every connection. Sixteen times the default; gunicorn caps a request line at 8190 bytes.
MAX_HEAD_SIZE = 1024**2
# A file descriptor limit: connections (and so queued ones) each hold one, and Linux allows
# a process at most fs.nr_open of them, 2**20 unless raised.
MAX_OPEN_FILES = 2**20
# Whole-number options: (smallest, largest; None: no largest). The largest are far beyond
# any working setting; they turn a typo into a clear error instead of a crash later.
COUNT_BOUNDS: dict[str, tuple[int, int | None]] = {
    # An OS thread each, with its own stack: a pool of thousands spends more on switching
    # and the GIL than it serves, and a million cannot even be started.
    "threads": (1, 4096),
    "queue_limit": (1, MAX_OPEN_FILES),
    "max_connections": (1, MAX_OPEN_FILES),
    # listen() takes a C int and the kernel caps it at net.core.somaxconn, itself at most
    # 65535 on most kernels.
    "backlog": (1, 65535),
    "max_request_line": (1, MAX_HEAD_SIZE),
    "max_header_size": (1, MAX_HEAD_SIZE),
    # gunicorn's own cap on header fields.
    "max_header_count": (1, 32768),
    # A terabyte (1024G): no single upload to a WSGI application is near it.
    "max_body_size": (0, 1024**4),
    # A process each, every one with its own pool of --threads.
    "workers": (1, 1024),
    # Counts of requests served, only compared: any size is harmless.
    "max_requests": (0, None),
    "max_requests_jitter": (0, None),
    # Bytes per second: 0 turns the floor off; a gigabyte a second is past any client.
    "min_body_rate": (0, 1024**3),
    "min_send_rate": (0, 1024**3),
}
# The TLS options that name files or take text; certfile first.
TLS_FILE_OPTIONS = ("certfile", "keyfile", "keyfile_password", "ca_certs", "ciphers")
# Options of the whole process, not of one server, with their defaults: the start-up
# sequence (launch.py) applies them; a Server built directly refuses them.
PROCESS_DEFAULTS: dict[str, Any] = {
    "workers": 1,
    "max_requests": 0,
    "max_requests_jitter": 0,
    "preload": False,
    "umask": "",
    "pidfile": "",
    "user": "",
    "group": "",
    "error_log": "",
    "capture_output": False,
    "stuck_recycle": 0.0,
    # The wsgipool loggers are the process's: two Servers in it share them.
    "log_level": "info",
}
# Options only Python code can set (objects, not text).
PYTHON_ONLY_FIELDS = ("ssl_context",)
# Options whose value --print-config must not show.
SECRET_FIELDS = ("keyfile_password",)


class ConfigError(ValueError):
    """An option has a value the server cannot run with; the message says which and why."""


def parse_mode(value: str | int, name: str = "unix_socket_mode") -> int | None:
    """A file mode (or umask) ``name`` is set to: ``0o660``, ``"0o660"``, ``"0660"`` or
    ``"660"`` (octal); ``""`` for none. Raises ``ConfigError``."""
    if value == "":
        return None
    mode: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value
    elif isinstance(value, str):
        digits = value.strip().lower()
        digits = digits[2:] if digits.startswith("0o") else digits
        if digits and len(digits) <= 4 and all(char in "01234567" for char in digits):
            mode = int(digits, 8)
    if mode is None or not 0 <= mode <= 0o777:
        example = "007 or 0o027" if name == "umask" else "660 or 0o660"
        raise ConfigError(f"{name}: an octal mode such as {example}, not {value!r}")
    return mode


@dataclass(frozen=True)
class BindAddress:
    """Where to listen: a TCP host and port, a Unix socket path, or an inherited descriptor."""

    kind: str  # "tcp", "unix", "fd" or "systemd"
    host: str = ""
    port: int = 0
    path: str = ""
    fd: int = -1

    @classmethod
    def parse(cls, text: str) -> BindAddress:
        """Parse ``HOST:PORT``, ``[IPv6]:PORT``, ``HOST``, ``:PORT``, ``unix:PATH``, ``fd://N``
        or ``systemd`` (every socket systemd passed, see ``sockets.systemd_fds``)."""
        if text == "systemd":
            return cls("systemd")
        if text.startswith("unix:"):
            path = text[len("unix:") :]
            if not path:
                raise ConfigError(f"bind {text!r}: unix: needs a socket path")
            return cls("unix", path=path)
        if text.startswith("fd://"):
            number = text[len("fd://") :]
            # ASCII digits only (str.isdigit() takes "²", which int() then refuses), and
            # no more than a C int holds.
            if not re.fullmatch(r"[0-9]{1,10}", number) or int(number) > MAX_FD:
                raise ConfigError(f"bind {text!r}: fd:// needs a descriptor number")
            return cls("fd", fd=int(number))
        # [0-9], not \d, which takes any Unicode digit.
        match = re.fullmatch(
            r"\[([0-9A-Fa-f:.%a-zA-Z]+)\](?::([0-9]+))?|([^:\[\]]*)(?::([0-9]+))?", text
        )
        if match is None or not text:
            raise ConfigError(
                f"bind {text!r}: expected HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N"
            )
        host = match.group(1) or match.group(3) or "0.0.0.0"
        port_text = match.group(2) or match.group(4)
        if port_text is None:
            port_text = str(DEFAULT_PORT)
        # The length first: int() refuses thousands of digits with an error of its own.
        if len(port_text.lstrip("0")) > 5 or int(port_text) > 65535:
            raise ConfigError(f"bind {text!r}: port must be 0-65535")
        port = int(port_text)
        return cls("tcp", host=host, port=port)

    def __str__(self) -> str:
        if self.kind == "systemd":
            return "systemd"
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "fd":
            return f"fd://{self.fd}"
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Config:
    """Every server option, with its default. Construct with keywords; values are checked.

    Checked without reading files: TLS files must exist here, and what they hold is
    checked when the server starts (``tls.build_context``)."""

    bind: tuple[str, ...] = ("127.0.0.1:8000",)
    threads: int = 16
    queue_limit: int = 1024
    queue_timeout: float = 0.0
    max_connections: int = 65536
    backlog: int = 2048
    root_path: str = ""
    max_request_line: int = 8192
    max_header_size: int = 65536
    max_header_count: int = 100
    max_body_size: int = 1024**3
    expose_tracebacks: bool = False
    header_timeout: float = 10.0
    keepalive_timeout: float = 5.0
    body_timeout: float = 30.0
    send_timeout: float = 30.0
    # Bytes per second a body upload and a response must average while the worker waits
    # on the client, after the first body/send timeout's worth of waiting (0: no floor).
    min_body_rate: int = 500
    min_send_rate: int = 500
    graceful_timeout: float = 30.0
    url_scheme: str = "http"
    log_level: str = "info"
    access_log: str = ""
    access_log_format: str = COMBINED
    poller: str = "auto"
    # Keep the pool's threads on one CPU while requests mostly wait (see affinity.py).
    cpu_affinity: str = "auto"
    # wsgi.file_wrapper: "auto" is sendfile() except to a TCP peer on this host
    # (see Connection.sendfile).
    sendfile: str = "auto"
    # Worker processes (the command line's supervisor; see docs/processes.md).
    workers: int = 1
    max_requests: int = 0  # 0: never recycle a worker process
    max_requests_jitter: int = 0
    preload: bool = False
    # Proxies (docs/proxies.md).
    forwarded_allow_ips: str = "127.0.0.1,::1"
    proxy_protocol: bool = False
    proxy_allow_ips: str = "127.0.0.1,::1"
    unix_socket_mode: str | int = ""
    # The command line sets the process umask to this at start (files and Unix sockets).
    umask: str | int = ""
    # TLS (docs/tls.md): a certificate turns it on for every bind address.
    certfile: str = ""
    keyfile: str = ""
    keyfile_password: str = ""
    ca_certs: str = ""
    cert_reqs: str = "none"
    ciphers: str = ""
    # Metrics and health (docs/observability.md): where /metrics, /stats, /livez and
    # /readyz are served ("": nowhere), and the queue wait over which /readyz says 503
    # (0: queue wait never makes it so).
    metrics_bind: str = ""
    ready_max_queue_wait: float = 0.0
    # Operability (docs/observability.md): the stuck-request watchdog (0: off), the
    # recycling of a worker process holding a stuck request (0: off), the request headers
    # a dump may show (comma-separated names), and where request ids come from.
    stuck_threshold: float = 60.0
    stuck_recycle: float = 0.0
    dump_headers: str = ""
    request_id: str = "trusted"
    # Python only: a ready ssl.SSLContext, instead of certfile and the rest.
    ssl_context: Any = None
    # Production process options, with gunicorn's names as aliases (launch.py applies them).
    worker_class: str = "gthread"  # accepted for gunicorn's sake: threads, always
    error_log: str = ""  # "" or "-": stderr
    capture_output: bool = False
    pidfile: str = ""
    user: str = ""
    group: str = ""
    # Control (docs/observability.md): the Unix socket `wsgipool ctl` talks to ("": none).
    control_socket: str = ""
    binds: tuple[BindAddress, ...] = field(init=False, repr=False, compare=False)
    limits: Limits = field(init=False, repr=False, compare=False)
    transfer: TransferLimits = field(init=False, repr=False, compare=False)
    # Parsed forwarded_allow_ips, proxy_allow_ips and unix_socket_mode (None: the umask's).
    forwarded_trust: TrustedPeers = field(init=False, repr=False, compare=False)
    proxy_trust: TrustedPeers = field(init=False, repr=False, compare=False)
    socket_mode: int | None = field(init=False, repr=False, compare=False)
    umask_value: int | None = field(init=False, repr=False, compare=False)
    # Parsed metrics_bind (None: off).
    metrics_address: BindAddress | None = field(init=False, repr=False, compare=False)
    # Parsed dump_headers: lower-case header names.
    dump_header_names: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        bind = self.bind
        if isinstance(bind, str):
            bind = (bind,)
        if not isinstance(bind, (list, tuple)) or not all(isinstance(b, str) for b in bind):
            raise ConfigError(f"bind: expected an address or a list of addresses, not {bind!r}")
        if not bind:
            raise ConfigError("bind: at least one address is needed")
        object.__setattr__(self, "bind", tuple(bind))
        object.__setattr__(self, "binds", tuple(BindAddress.parse(text) for text in bind))
        _refuse_an_address_twice(self.binds)
        for name, (minimum, maximum) in COUNT_BOUNDS.items():
            _require_int(name, getattr(self, name), minimum, maximum)
        for name in _DURATIONS:
            require_seconds(name, getattr(self, name))
        require_seconds("queue_timeout", self.queue_timeout, zero_means="no limit")
        if not isinstance(self.expose_tracebacks, bool):
            raise ConfigError(
                f"expose_tracebacks: must be True or False, not {self.expose_tracebacks!r}"
            )
        root_path = self.root_path
        if not isinstance(root_path, str) or (
            root_path and (not root_path.startswith("/") or root_path.endswith("/"))
        ):
            raise ConfigError(
                f"root_path: must start with '/' and not end with one, not {root_path!r}"
            )
        _require_choice("url_scheme", self.url_scheme, ("http", "https"))
        level = self.log_level
        _require_choice("log_level", level.lower() if isinstance(level, str) else level, LOG_LEVELS)
        if not isinstance(self.access_log, str):
            raise ConfigError(f"access_log: a file path or '-', not {self.access_log!r}")
        try:
            check_format(self.access_log_format)
        except ValueError as exc:
            raise ConfigError(f"access_log_format: {exc}") from None
        _require_choice("poller", self.poller, ("auto", "epoll", "selectors"))
        _require_choice("cpu_affinity", self.cpu_affinity, ("auto", "off"))
        _require_choice("sendfile", self.sendfile, ("auto", "on", "off"))
        if not isinstance(self.preload, bool):
            raise ConfigError(f"preload: must be True or False, not {self.preload!r}")
        for name, derived in (
            ("forwarded_allow_ips", "forwarded_trust"),
            ("proxy_allow_ips", "proxy_trust"),
        ):
            try:
                object.__setattr__(self, derived, TrustedPeers(getattr(self, name)))
            except ValueError as exc:
                raise ConfigError(f"{name}: {exc}") from None
        if not isinstance(self.proxy_protocol, bool):
            raise ConfigError(f"proxy_protocol: must be True or False, not {self.proxy_protocol!r}")
        self._check_process_options()
        object.__setattr__(self, "socket_mode", parse_mode(self.unix_socket_mode))
        object.__setattr__(self, "umask_value", parse_mode(self.umask, "umask"))
        self._check_tls()
        object.__setattr__(self, "metrics_address", _parse_metrics_bind(self.metrics_bind))
        require_seconds("ready_max_queue_wait", self.ready_max_queue_wait, zero_means="off")
        self._check_operability()
        object.__setattr__(
            self,
            "limits",
            Limits(
                max_request_line=self.max_request_line,
                max_header_size=self.max_header_size,
                max_header_count=self.max_header_count,
            ),
        )
        object.__setattr__(
            self,
            "transfer",
            TransferLimits(
                body_timeout=self.body_timeout,
                min_body_rate=self.min_body_rate,
                send_timeout=self.send_timeout,
                min_send_rate=self.min_send_rate,
            ),
        )

    def _check_process_options(self) -> None:
        _require_choice("worker_class", self.worker_class, WORKER_CLASSES)
        for name in ("error_log", "pidfile", "user", "group"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name}: a string, not {getattr(self, name)!r}")
        if not isinstance(self.capture_output, bool):
            raise ConfigError(f"capture_output: must be True or False, not {self.capture_output!r}")
        if self.capture_output and self.error_log in ("", "-"):
            raise ConfigError("capture_output: needs error_log (a file to capture output into)")
        # Known now, not after binding: a typo must not leave the server running as root.
        user_id(self.user)
        group_id(self.group)

    def process_options(self) -> list[str]:
        """The process options (``PROCESS_DEFAULTS``) set to something else than their
        default."""
        return [
            name for name, default in PROCESS_DEFAULTS.items() if getattr(self, name) != default
        ]

    @property
    def tls(self) -> bool:
        """Whether the server speaks TLS."""
        return bool(self.certfile) or self.ssl_context is not None

    @property
    def scheme(self) -> str:
        """The scheme of the URLs the server listens on (logs, banners)."""
        return "https" if self.tls else "http"

    def _check_operability(self) -> None:
        require_seconds("stuck_threshold", self.stuck_threshold, zero_means="off")
        require_seconds("stuck_recycle", self.stuck_recycle, zero_means="off")
        _require_choice("request_id", self.request_id, REQUEST_ID_MODES)
        if not isinstance(self.dump_headers, str):
            raise ConfigError(
                f"dump_headers: comma-separated header names, not {self.dump_headers!r}"
            )
        if not isinstance(self.control_socket, str):
            raise ConfigError(f"control_socket: a file path, not {self.control_socket!r}")
        names = [name.strip() for name in self.dump_headers.split(",") if name.strip()]
        for name in names:
            if not _HEADER_NAME.fullmatch(name):
                raise ConfigError(f"dump_headers: {name!r} is not a header name")
        object.__setattr__(self, "dump_header_names", frozenset(name.lower() for name in names))

    def _check_tls(self) -> None:
        for name in TLS_FILE_OPTIONS:
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name}: a string, not {getattr(self, name)!r}")
        _require_choice("cert_reqs", self.cert_reqs, ("none", "optional", "required"))
        if self.ssl_context is not None:
            import ssl

            if not isinstance(self.ssl_context, ssl.SSLContext):
                raise ConfigError(f"ssl_context: an ssl.SSLContext, not {self.ssl_context!r}")
            try:
                # A client context (ssl.create_default_context()) cannot serve.
                self.ssl_context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=True)
            except (ssl.SSLError, ValueError) as exc:
                raise ConfigError(
                    f"ssl_context: cannot serve with this context ({exc}); make it with "
                    "ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)"
                ) from None
            given = [name for name in TLS_FILE_OPTIONS if getattr(self, name)]
            if given or self.cert_reqs != "none":
                raise ConfigError(
                    f"ssl_context: give a context or {', '.join(given) or 'cert_reqs'}, not both"
                )
            return
        if not self.certfile:
            given = [name for name in TLS_FILE_OPTIONS[1:] if getattr(self, name)]
            if self.cert_reqs != "none":
                given.append("cert_reqs")
            if given:
                raise ConfigError(f"{given[0]}: needs certfile (the server's certificate)")
            return
        if self.ca_certs and self.cert_reqs == "none":
            raise ConfigError(
                "ca_certs: client certificates are never asked for with cert_reqs none: "
                "set cert_reqs to optional or required"
            )
        if self.cert_reqs != "none" and not self.ca_certs:
            raise ConfigError(
                f"cert_reqs: {self.cert_reqs} needs ca_certs (the CAs that sign client "
                "certificates)"
            )
        for name in ("certfile", "keyfile", "ca_certs"):
            require_file(name, getattr(self, name))
        if self.ciphers:
            _check_ciphers(self.ciphers)
        # What the files hold (a key that fits, its password) shows only once they are
        # read: by tls.build_context, once per start, before anything listens.

    @classmethod
    def from_options(cls, **options: Any) -> Config:
        """Build from keyword options, refusing unknown names with a clear message."""
        known = [f.name for f in dataclasses.fields(cls) if f.init]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ConfigError(f"unknown option(s): {guessing(unknown, known)}")
        return cls(**options)


def guessing(unknown: list[str], known: list[str]) -> str:
    """The ``unknown`` names, each with a guess among the ``known`` at what was meant:
    ``thread (did you mean threads?)``."""
    described = []
    for name in unknown:
        guess = difflib.get_close_matches(name, known, n=1)
        described.append(f"{name} (did you mean {guess[0]}?)" if guess else name)
    return ", ".join(described)


def _refuse_an_address_twice(binds: tuple[BindAddress, ...]) -> None:
    """The second bind of one address would fail as "in use", as if another program held
    it. Port 0 twice is two ports; ``systemd`` twice is checked once expanded."""
    seen: set[str] = set()
    for address in binds:
        if address.kind == "systemd" or (address.kind == "tcp" and address.port == 0):
            continue
        if str(address) in seen:
            raise ConfigError(f"bind: {address} is given twice")
        seen.add(str(address))


def _parse_metrics_bind(text: object) -> BindAddress | None:
    """The one address ``metrics_bind`` names: TCP or unix:, as --bind writes them."""
    if not isinstance(text, str):
        raise ConfigError(f"metrics_bind: an address such as 127.0.0.1:9100, not {text!r}")
    if not text:
        return None
    expected = f"metrics_bind {text!r}: expected HOST:PORT, [IPv6]:PORT or unix:PATH"
    try:
        address = BindAddress.parse(text)
    except ConfigError as exc:
        raise ConfigError(expected if "expected" in str(exc) else f"metrics_{exc}") from None
    if address.kind not in ("tcp", "unix"):
        raise ConfigError(expected)
    return address


def user_id(user: str) -> int | None:
    """The uid ``user`` (a name or a number) stands for; None for ""; ``ConfigError`` when
    there is no such user."""
    if not user:
        return None
    if user.isascii() and user.isdigit():
        return int(user)
    import pwd

    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise ConfigError(f"user: no such user: {user!r}") from None


def group_id(group: str) -> int | None:
    """The gid ``group`` (a name or a number) stands for; None for ""."""
    if not group:
        return None
    if group.isascii() and group.isdigit():
        return int(group)
    import grp

    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError(f"group: no such group: {group!r}") from None


def require_file(name: str, path: str) -> None:
    """Refuse a file option whose file is not there (``tls.build_context`` asks again as it
    reads them: a file can go in between)."""
    if path and not os.path.exists(path):
        raise ConfigError(f"{name}: cannot load {path}: No such file or directory")


def _check_ciphers(ciphers: str) -> None:
    import ssl  # Only with TLS: ssl costs an import.

    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(ciphers)
    except ssl.SSLError:
        raise ConfigError(f"ciphers: OpenSSL accepts none of {ciphers!r}") from None


def require_seconds(name: str, value: object, zero_means: str = "") -> None:
    """A duration between MIN_SECONDS and MAX_SECONDS; or 0, when ``zero_means`` says what
    that means."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        valid = False
    else:
        # Also refuses NaN and infinities.
        valid = MIN_SECONDS <= value <= MAX_SECONDS or (bool(zero_means) and value == 0)
    if not valid:
        zero = f"0 ({zero_means}) or " if zero_means else ""
        raise ConfigError(
            f"{name}: must be {zero}a number of seconds from {MIN_SECONDS:f} to "
            f"{MAX_SECONDS}, not {value!r}"
        )


def _require_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}: must be one of {', '.join(choices)}; not {value!r}")


def _require_int(name: str, value: object, minimum: int, maximum: int | None) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bounds = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise ConfigError(f"{name}: must be a whole number {bounds}, not {value!r}")
