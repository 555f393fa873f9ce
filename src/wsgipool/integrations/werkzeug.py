"""``run_simple``: the signature of ``werkzeug.serving.run_simple``, served by wsgipool.

Change the import and keep the call. Arguments wsgipool cannot honour are refused with
``ConfigError`` or warned about with a ``RuntimeWarning``; none is silently ignored.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from .. import launch
from ..config import Config, ConfigError, require_seconds
from ..wsgi import WSGIApp
from .waitress import bind_for

RELOADER_TYPES = ("auto", "stat", "watchdog")


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
    **options: Any,
) -> None:
    """Serve ``application`` like ``werkzeug.serving.run_simple``, with wsgipool.

    Blocks until SIGINT/SIGTERM. Differences from werkzeug:

    - connections are kept alive (HTTP/1.1 persistent connections), and requests run on a
      pool of worker threads (``Config.threads``);
    - any other ``Config`` option may be passed by keyword (``threads=32``,
      ``max_body_size=...``, ``workers=4``), except ``bind``: ``hostname`` and ``port``
      say where to listen;
    - ``threaded=False`` runs one worker thread, so requests still run one at a time, but
      not on the main thread (a ``RuntimeWarning`` says so);
    - ``processes=N`` runs N worker processes (as ``workers=N``), each with its pool of
      threads, forked with ``application`` loaded; werkzeug forks one process per request;
    - ``request_handler`` raises ``ConfigError``: wsgipool has its own HTTP implementation;
    - ``ssl_context`` takes what werkzeug's does: an ``ssl.SSLContext``, a
      ``(certfile, keyfile)`` pair or ``"adhoc"`` (a throwaway self-signed certificate,
      made by werkzeug; needs the ``cryptography`` package);
    - ``passthrough_errors=True`` warns: an application error is logged with its
      traceback and answered with a 500 (or the debugger's page); it never stops the
      server;
    - ``use_debugger`` refuses addresses other computers can reach (the debugger runs
      code for anyone who can reach it) unless ``debug_allow_remote=True``, and more than
      one process;
    - ``use_reloader``: wsgipool's reloader watches ``*.py`` files under the current
      directory (and ``extra_files``), with watchfiles when installed, else by polling;
      ``reloader_type="watchdog"`` warns that it does so; it runs one server process.
    - ``static_files`` needs werkzeug (``SharedDataMiddleware``).
    """
    if request_handler is not None:
        raise ConfigError(
            "request_handler: wsgipool has its own HTTP/1.1 implementation and cannot use a "
            "BaseHTTPRequestHandler subclass; use WSGI middleware instead"
        )
    if reloader_type not in RELOADER_TYPES:
        raise ConfigError(
            f"reloader_type={reloader_type!r}: expected one of {', '.join(RELOADER_TYPES)}"
        )
    if "bind" in options:
        raise ConfigError("bind: run_simple listens on hostname and port; give those instead")
    # 0 (or less) would have the polling reloader rescan the tree without a pause.
    require_seconds("reloader_interval", reloader_interval)
    for name, paths in (("extra_files", extra_files), ("exclude_patterns", exclude_patterns)):
        if isinstance(paths, (str, bytes)):
            # Iterated, it would be one name per character.
            raise ConfigError(f"{name}: a list of paths, not one string: [{paths!r}]")
    if use_reloader and reloader_type == "watchdog":
        _warn(
            "reloader_type='watchdog': wsgipool's reloader uses watchfiles when installed, "
            "else polls file times"
        )
    if not threaded:
        if "threads" in options:
            raise ConfigError("threads: threaded=False means one thread; give one or the other")
        _warn(
            "threaded=False: wsgipool is always threaded; it runs one worker thread, so "
            "requests run one at a time (but not on the main thread)"
        )
        options["threads"] = 1
    if processes != 1:
        if "workers" in options:
            raise ConfigError("workers: processes and workers are the same; give one")
        options["workers"] = processes
    if passthrough_errors:
        _warn(
            "passthrough_errors=True: wsgipool does not let application errors stop the "
            "server; each is logged with its traceback and answered with a 500"
        )
    if static_files:
        application = _shared_data(application, static_files)
    config = Config.from_options(
        bind=(bind_for(hostname, port),), **tls_options(ssl_context), **options
    )
    app = application
    launch.run_here(
        launch.Launch(
            config,
            lambda: app,
            app_name=launch.name_of(app),
            reload=launch.Reloading(
                extra_files=tuple(extra_files or ()),
                exclude=tuple(exclude_patterns or ()),
                interval=float(reloader_interval),
            )
            if use_reloader
            else None,
            debugger=launch.Debugging(
                evalex=use_evalex,
                allow_remote=debug_allow_remote,
                allow_remote_option="debug_allow_remote=True",
            )
            if use_debugger
            else None,
        )
    )


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
