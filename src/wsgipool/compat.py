"""Drop-in entry points for code written for other servers.

- ``run_simple``: the signature of ``werkzeug.serving.run_simple``; change the import and
  keep the call.
- ``paste_server_runner``: the ``paste.server_runner`` entry point behind
  ``[server:main] use = egg:wsgipool`` in a Paste Deploy (Pyramid) ini file.

Arguments wsgipool cannot honour are refused with ``ConfigError`` or warned about with a
``RuntimeWarning``; none is silently ignored.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from .config import Config, ConfigError
from .debug import check_debug_bind, wrap_debugger
from .options import BY_FIELD, convert, parse_addresses, parse_count
from .server import Server
from .supervisors.process import take_inherited_fds
from .wsgi import WSGIApp

log = logging.getLogger("wsgipool.error")

RELOADER_TYPES = ("auto", "stat", "watchdog")


def tls_options(ssl_context: Any) -> dict[str, Any]:
    """``Config`` options for werkzeug's ``ssl_context``: an ``ssl.SSLContext``, a
    ``(certfile, keyfile)`` pair, ``"adhoc"``, or None for plain HTTP."""
    if ssl_context is None:
        return {}
    if ssl_context == "adhoc":
        return {"ssl_context": adhoc_ssl_context()}
    if isinstance(ssl_context, (tuple, list)) and len(ssl_context) == 2:
        certfile, keyfile = ssl_context
        return {"certfile": str(certfile), "keyfile": str(keyfile or "")}
    return {"ssl_context": ssl_context}  # Config checks that it is an SSLContext.


def adhoc_ssl_context() -> Any:
    """werkzeug's throwaway self-signed certificate (development only)."""
    try:
        from werkzeug.serving import generate_adhoc_ssl_context

        return generate_adhoc_ssl_context()
    except (ImportError, TypeError) as exc:
        # werkzeug raises TypeError when the cryptography package is missing.
        raise ConfigError(
            f"ssl_context 'adhoc' needs werkzeug and the cryptography package ({exc})"
        ) from None


def bind_for(host: str, port: int) -> str:
    """A ``--bind`` address from a werkzeug/Flask style host and port.

    ``unix://PATH`` is a Unix socket (as in werkzeug), an IPv6 address gets its brackets.
    """
    if host.startswith("unix://"):
        return "unix:" + host[len("unix://") :]
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def configure_logging(level: str = "info") -> None:
    """Log to stderr as the ``wsgipool`` command does, unless logging is configured already."""
    # Imported here: the command line module imports much that run_simple does not need.
    from .cli import configure_logging as configure

    configure(level, None)


def run_simple(
    hostname: str,
    port: int,
    application: WSGIApp,
    use_reloader: bool = False,
    use_debugger: bool = False,
    use_evalex: bool = True,
    extra_files: Iterable[str] | None = None,
    exclude_patterns: Iterable[str] | None = None,
    reloader_interval: float = 1,
    reloader_type: str = "auto",
    threaded: bool = True,
    processes: int = 1,
    request_handler: Any = None,
    static_files: Mapping[str, str | tuple[str, str]] | None = None,
    passthrough_errors: bool = False,
    ssl_context: Any = None,
    *,
    debug_allow_remote: bool = False,
) -> None:
    """Serve ``application`` like ``werkzeug.serving.run_simple``, with wsgipool.

    Blocks until SIGINT/SIGTERM. Differences from werkzeug:

    - connections are kept alive (HTTP/1.1 persistent connections), and requests run on a
      pool of worker threads (``Config.threads``);
    - ``threaded=False`` runs one worker thread, so requests still run one at a time, but
      not on the main thread (a ``RuntimeWarning`` says so);
    - ``processes`` other than 1 and ``request_handler`` raise ``ConfigError``:
      ``run_simple`` has no worker processes (``wsgipool --workers`` has), and wsgipool
      has its own HTTP implementation;
    - ``ssl_context`` takes what werkzeug's does: an ``ssl.SSLContext``, a
      ``(certfile, keyfile)`` pair or ``"adhoc"`` (a throwaway self-signed certificate,
      made by werkzeug; needs the ``cryptography`` package);
    - ``passthrough_errors=True`` warns: an application error is logged with its
      traceback and answered with a 500 (or the debugger's page); it never stops the
      server;
    - ``use_debugger`` refuses addresses other computers can reach (the debugger runs
      code for anyone who can reach it) unless ``debug_allow_remote=True``;
    - ``use_reloader``: wsgipool's reloader watches ``*.py`` files under the current
      directory (and ``extra_files``), with watchfiles when installed, else by polling;
      ``reloader_type="watchdog"`` warns that it does so;
    - ``static_files`` needs werkzeug (``SharedDataMiddleware``).
    """
    if processes != 1:
        raise ConfigError(
            f"processes={processes}: run_simple has no worker processes; it serves in this "
            "process, on threads (threaded=True); for worker processes use the wsgipool "
            "command (--workers N)"
        )
    if request_handler is not None:
        raise ConfigError(
            "request_handler: wsgipool has its own HTTP/1.1 implementation and cannot use a "
            "BaseHTTPRequestHandler subclass; use WSGI middleware instead"
        )
    if reloader_type not in RELOADER_TYPES:
        raise ConfigError(
            f"reloader_type={reloader_type!r}: expected one of {', '.join(RELOADER_TYPES)}"
        )
    if use_reloader and reloader_type == "watchdog":
        _warn(
            "reloader_type='watchdog': wsgipool's reloader uses watchfiles when installed, "
            "else polls file times"
        )
    threads = Config.threads
    if not threaded:
        _warn(
            "threaded=False: wsgipool is always threaded; it runs one worker thread, so "
            "requests run one at a time (but not on the main thread)"
        )
        threads = 1
    if passthrough_errors:
        _warn(
            "passthrough_errors=True: wsgipool does not let application errors stop the "
            "server; each is logged with its traceback and answered with a 500"
        )
    if static_files:
        application = _shared_data(application, static_files)
    config = Config(
        bind=(bind_for(hostname, port),),
        threads=threads,
        expose_tracebacks=use_debugger,
        **tls_options(ssl_context),
    )
    if use_debugger:
        check_debug_bind(config, debug_allow_remote, override="debug_allow_remote=True")
    configure_logging()
    if use_reloader:
        from .supervisors.process import is_reloader_child
        from .supervisors.reloader import run_with_reloader

        if not is_reloader_child():
            # werkzeug-style: the script is run again in a child, which serves.
            raise SystemExit(
                run_with_reloader(
                    config,
                    extra_files=tuple(extra_files or ()),
                    exclude=tuple(exclude_patterns or ()),
                    interval=float(reloader_interval),
                )
            )
    if use_debugger:
        application = wrap_debugger(application, evalex=use_evalex)
    # In the reloader's child: the reloader hands the listening sockets over.
    listen_fds = take_inherited_fds(config.binds)
    Server(application, config, listen_fds=listen_fds).serve_forever()


def _warn(message: str) -> None:
    # stacklevel 3: the caller of run_simple().
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def _shared_data(app: WSGIApp, exports: Mapping[str, str | tuple[str, str]]) -> WSGIApp:
    try:
        from werkzeug.middleware.shared_data import SharedDataMiddleware
    except ImportError:
        raise ConfigError(
            "static_files: serving them needs werkzeug (pip install werkzeug)"
        ) from None
    wrapped: WSGIApp = SharedDataMiddleware(app, dict(exports))  # type: ignore[arg-type]
    return wrapped


# --- Paste Deploy ------------------------------------------------------------------------

# Names in [server:*] besides Config's fields: host and port (as most Paste servers take
# them) and waitress's listen, all turned into bind.
ADDRESS_NAMES = ("host", "port", "listen")
# Config fields of the command line's worker-process supervisor, which the Paste runner
# (serving in pserve's process) cannot honour.
PROCESS_FIELDS = ("workers", "max_requests", "max_requests_jitter", "preload")


def paste_server_runner(
    wsgi_app: WSGIApp, global_conf: Mapping[str, Any], **local_conf: str
) -> None:
    """``paste.server_runner``: serve ``wsgi_app`` with the ``[server:...]`` section's options.

    Every ``Config`` option is accepted (``threads = 8``, ``max_body_size = 10M``,
    ``expose_tracebacks = true``; dashes or underscores), plus ``host`` and ``port``
    (default 127.0.0.1 and 8000) or waitress's ``listen = HOST:PORT ...``. ``log_level``
    sets the ``wsgipool`` logger's level even when ``pserve`` configured logging. Blocks
    until SIGINT/SIGTERM.
    """
    options = options_from_strings(local_conf)
    config = Config(**options)
    from .cli import apply_umask

    apply_umask(config)
    configure_logging(config.log_level)
    if "log_level" in options:
        # Asked for in the ini: applies even when pserve configured logging already.
        logging.getLogger("wsgipool").setLevel(config.log_level.upper())
    Server(wsgi_app, config).serve_forever()


def options_from_strings(values: Mapping[str, str]) -> dict[str, Any]:
    """``Config`` keywords from the strings of an ini section, each through its option's
    converter (``options.py``)."""
    names = {key.replace("-", "_"): text for key, text in values.items()}
    # For errors: each name as written, with dashes or underscores.
    keys = {key.replace("-", "_"): key for key in values}
    # pserve serves in its own process: worker processes need the wsgipool command.
    fields = [field for field in BY_FIELD if field not in PROCESS_FIELDS]
    unknown = sorted(set(names) - set(fields) - set(ADDRESS_NAMES))
    if unknown:
        hint = ""
        if set(unknown) & set(PROCESS_FIELDS):
            hint = "; worker processes need the wsgipool command (wsgipool --workers N)"
        raise ConfigError(
            f"unknown server option(s): {', '.join(unknown)} (known: host, port, listen and "
            f"wsgipool's options: {', '.join(fields)}){hint}"
        )
    options = {
        name: convert(name, text, keys[name]) for name, text in names.items() if name in fields
    }
    addresses = _addresses(names)
    if addresses:
        if "bind" in options:
            raise ConfigError("bind: give bind, or host/port/listen, not both")
        options["bind"] = addresses
    return options


def _addresses(names: Mapping[str, str]) -> tuple[str, ...]:
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
