"""The one start-up sequence, behind every way of starting wsgipool.

The command line, ``serve()``, ``run_simple``, the Paste runner and ``flask serve`` each
turn their own arguments into a ``Launch`` (a ``Config``, how to load the application and
the development modes asked for) and call ``run``, which:

1. settles the development modes: the debugger needs a local address and one process, and
   shows tracebacks; ``--reload`` runs one server process;
2. sets the process up: umask, logging (the error log, captured output), the open-file
   limit, the pid file;
3. chooses how to serve: a reloader supervisor (which never imports the application), a
   worker-process supervisor (``workers`` > 1 or ``max_requests``), or one ``Server`` here;
   ``user`` and ``group`` take effect once the sockets are bound, before the application
   is loaded. The server hooks (``hooks.ProcessHooks``) are called on the way.

So an option means the same from every front end, and none is dropped on the way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import PROCESS_DEFAULTS, Config, ConfigError
from .hooks import NO_HOOKS, ProcessHooks
from .integrations.debugger import check_debug_bind, wrap_debugger
from .server import Server
from .supervisors.process import (
    PidFile,
    capture_output,
    drop_privileges,
    is_reloader_child,
    take_inherited_fds,
)
from .supervisors.reloader import run_with_reloader
from .supervisors.restart import RestartOnHangup
from .supervisors.workers import run_worker_processes
from .wsgi import WSGIApp

log = logging.getLogger("wsgipool.error")

LOG_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
LOG_DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"


@dataclass(frozen=True)
class Reloading:
    """``--reload``: what to watch, and the command that serves (run again on changes)."""

    directories: tuple[str, ...] = ()  # none: the current directory
    include: tuple[str, ...] = ("*.py",)
    exclude: tuple[str, ...] = ()
    extra_files: tuple[str, ...] = ()
    interval: float = 1.0
    command: tuple[str, ...] | None = None  # None: this process's own command line
    # Where the command runs (the command line's directory before --chdir); None: here.
    directory: str | None = None


@dataclass(frozen=True)
class Debugging:
    """Werkzeug's interactive debugger in front of the application."""

    evalex: bool = True
    allow_remote: bool = False
    # How the front end spells the override, for the error that asks for it.
    allow_remote_option: str = "--debug-allow-remote"


@dataclass(frozen=True)
class Launch:
    """What a front end asks for. ``load`` returns the application: it is called in the
    process that serves (after the fork of a worker process, unless ``config.preload``), so
    a front end holding an application object passes ``lambda: app``."""

    config: Config
    load: Callable[[], WSGIApp]
    app_name: str
    reload: Reloading | None = None
    debugger: Debugging | None = None
    log_config: str | None = None  # a logging.config.dictConfig file (.json, .toml)
    # How to run this command again on SIGHUP: its command line (None: this process's)
    # and the directory it ran in (None: here).
    command: tuple[str, ...] | None = None
    directory: str | None = None
    log_config_dict: Mapping[str, Any] | None = None  # logging.config.dictConfig's, applied last
    hooks: ProcessHooks | None = None  # gunicorn's server hooks (integrations/gunicorn.py)
    warnings: tuple[str, ...] = ()  # logged once logging is set up (not on each reload)


def run(launch: Launch) -> int:
    """Serve as ``launch`` asks until SIGINT or SIGTERM; the exit status. Raises
    ``ConfigError`` for anything that cannot start."""
    # Logging first: settling the modes may warn.
    set_up_process(launch.config, launch.log_config, launch.log_config_dict)
    hooks = launch.hooks or NO_HOOKS
    # The process that was started, not a reloader's server process: it owns the pid
    # file and has the server's moments (on_starting, on_exit).
    starting = not is_reloader_child()
    if starting:
        for warning in launch.warnings:
            log.warning("%s", warning)
    config = settle_modes(launch)
    pidfile = PidFile(config.pidfile) if starting and config.pidfile else None
    try:
        if starting:
            hooks.starting()
        return _serve(launch, config, hooks)
    finally:
        if starting:
            hooks.exiting()
        if pidfile is not None:
            pidfile.remove()


def _serve(launch: Launch, config: Config, hooks: ProcessHooks) -> int:
    if launch.reload is not None and not is_reloader_child():
        # This process only holds the sockets and restarts a server process: it never
        # imports the app, so an app that fails to import cannot stop it.
        reloading = launch.reload
        return run_with_reloader(
            config,
            reload_dirs=reloading.directories,
            include=reloading.include,
            exclude=reloading.exclude,
            extra_files=reloading.extra_files,
            interval=reloading.interval,
            argv=reloading.command,
            cwd=reloading.directory,
        )
    if uses_worker_processes(config):
        # The supervisor forks the worker processes; each loads the app (or, with preload,
        # the supervisor does once before forking).
        return run_worker_processes(config, launch.load, launch.app_name, hooks)
    if is_reloader_child():
        return serve_here(launch, config, hooks, take_inherited_fds(config.binds), reloading=True)
    # SIGHUP: finish in-flight requests, then run again with the same sockets (restart.py).
    restart = RestartOnHangup(config, launch.command, launch.directory)
    with restart.installed():
        # Bound here, not by the Server: when_ready comes before the app loads (as in
        # gunicorn), and --user takes effect after binding (ports below 1024), before it.
        listen_fds = restart.bind()
        hooks.ready()
        serve_here(
            launch,
            config,
            hooks,
            listen_fds,
            serve=restart.serve,
            socket_files=restart.socket_files,
        )
    restart.run_again_if_asked()
    return 0


def serve_here(
    launch: Launch,
    config: Config,
    hooks: ProcessHooks,
    listen_fds: list[int] | None,
    *,
    reloading: bool = False,
    serve: Callable[[Server], None] = Server.serve_forever,
    socket_files: Sequence[str] = (),
) -> int:
    """One server in this process, until it stops, on ``listen_fds`` (None: the server
    binds); ``reloading``: a reloader's server process."""
    drop_privileges(config)
    app = load_in_reloader(launch, config) if reloading else launch.load()
    modes = []
    if reloading:
        modes.append("reloading on changes")
    if launch.debugger is not None:
        app = wrap_debugger(app, evalex=launch.debugger.evalex)
        modes.append("interactive debugger ON: never expose this to others")
    hooks.worker_ready()
    server = Server(
        app,
        # The process options are applied (umask) or mean nothing for one process.
        dataclasses.replace(config, **PROCESS_DEFAULTS),
        app_name=launch.app_name,
        modes=modes,
        listen_fds=listen_fds,
        socket_files=socket_files,
        request_hooks=hooks.request_hooks,
    )
    try:
        serve(server)
    finally:
        hooks.worker_exiting()
    return 0


def run_here(launch: Launch) -> None:
    """``run`` for a front end called from Python: returns when the server stopped
    cleanly. The reloader's supervisor, and a failure to serve, end the process
    (``SystemExit`` with the status): the rest of the program must not run as if it had
    served."""
    if threading.current_thread() is not threading.main_thread():
        # Its signal handlers could not be installed (a ValueError from deep inside), and
        # nothing could stop it: SIGINT and SIGTERM reach the main thread only.
        raise ConfigError(
            "serve(), run_simple and the Paste runner serve the whole process until SIGINT "
            "or SIGTERM, on its main thread: to serve from another thread, use "
            "Server(app, ...).start() and .stop()"
        )
    supervising_reloads = launch.reload is not None and not is_reloader_child()
    status = run(launch)
    if status or supervising_reloads:
        raise SystemExit(status)


def serve(app: WSGIApp, **options: Any) -> None:
    """Serve ``app`` until SIGINT or SIGTERM. Options are those of ``Config``, and
    waitress's ``serve()`` keywords that have a meaning here (``host``, ``port``,
    ``listen``, ``threads``, ``url_scheme``...; see integrations/waitress.py);
    ``bind=(host, port)`` works too. With ``workers`` > 1 (or ``max_requests``) this
    process supervises worker processes, each forked with ``app`` already loaded."""
    from .integrations.waitress import config_from_keywords

    config = config_from_keywords(options)
    run_here(Launch(config, lambda: app, app_name=name_of(app)))


def name_of(app: object) -> str:
    """How logs name an application object: ``module:qualified.name``."""
    return f"{getattr(app, '__module__', '?')}:{getattr(app, '__qualname__', type(app).__name__)}"


# --- the steps ---------------------------------------------------------------------------


def uses_worker_processes(config: Config) -> bool:
    return config.workers > 1 or config.max_requests > 0 or config.stuck_recycle > 0


def settle_modes(launch: Launch) -> Config:
    """The config with the development modes applied, or ``ConfigError``."""
    config = launch.config
    if launch.reload is not None and uses_worker_processes(config):
        # Development: one server process, restarted on changes.
        if not is_reloader_child():
            log.warning(
                "reload runs one server process: ignoring workers, max_requests and stuck_recycle"
            )
        config = dataclasses.replace(config, workers=1, max_requests=0, stuck_recycle=0.0)
    if launch.debugger is not None:
        check_debug_bind(
            config,
            launch.debugger.allow_remote,
            override=launch.debugger.allow_remote_option,
        )
        if uses_worker_processes(config):
            raise ConfigError(
                "debugger: it needs a single server process (it keeps its state in "
                "memory): drop workers, max_requests and stuck_recycle"
            )
        # Whoever can use the debugger can run code; a traceback in a 500 is no more.
        config = dataclasses.replace(config, expose_tracebacks=True)
    return config


def set_up_process(
    config: Config,
    log_config: str | None = None,
    log_config_dict: Mapping[str, Any] | None = None,
) -> None:
    """Umask first (log files and Unix sockets get it), then logging (and the output
    captured into the error log), then the limit on open files."""
    if config.umask_value is not None:
        os.umask(config.umask_value)
    configure_logging(
        config.log_level,
        log_config,
        config.error_log,
        log_config_dict,
        output_captured=config.capture_output,
    )
    if config.capture_output:
        capture_output(config.error_log)
    raise_open_file_limit(config.max_connections)


def configure_logging(
    level: str,
    config_file: str | None = None,
    error_log: str = "",
    config_dict: Mapping[str, Any] | None = None,
    *,
    output_captured: bool = False,
) -> None:
    """Log to stderr (or to the ``error_log`` file), unless the program configured logging
    already; either way the ``wsgipool`` loggers log at ``level``. ``config_file``, then
    ``config_dict``, are applied on top. ``output_captured``: stdout and stderr go to the
    ``error_log`` file (``capture_output``), and a program's handlers writing there with
    them."""
    to_file = error_log not in ("", "-")
    configured = bool(logging.getLogger().handlers)  # basicConfig then does nothing
    try:
        logging.basicConfig(
            level=level.upper(),
            format=LOG_FORMAT,
            datefmt=LOG_DATE_FORMAT,
            filename=error_log if to_file else None,
        )
        if to_file and configured and not output_captured:
            _log_to_file_too(error_log)
    except OSError as exc:
        raise ConfigError(f"error_log: cannot open {error_log}: {exc.strerror}") from None
    logging.getLogger("wsgipool").setLevel(level.upper())
    if config_file:
        from .settings import apply_logging_config

        apply_logging_config(Path(config_file))
    if config_dict:
        from logging.config import dictConfig

        try:
            dictConfig(dict(config_dict))
        except (ValueError, TypeError, AttributeError, ImportError) as exc:
            raise ConfigError(f"logconfig_dict: {exc}") from None


def _log_to_file_too(error_log: str) -> None:
    """``error_log`` for a program that configured logging itself (``serve()`` in it, the
    Paste runner under ``pserve``): the ``wsgipool`` loggers write there too, and their
    records still reach the program's handlers."""
    logger = logging.getLogger("wsgipool")
    path = os.path.abspath(error_log)
    if any(getattr(handler, "baseFilename", None) == path for handler in logger.handlers):
        return  # Started again in this process: the file has its handler already.
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, LOG_DATE_FORMAT))
    logger.addHandler(handler)


def raise_open_file_limit(max_connections: int) -> None:
    """Let the process hold ``max_connections`` sockets, as far as the hard limit allows.

    Soft limits are often 1024, far below what the listener can hold; running out shows up
    as EMFILE on accept.
    """
    try:
        import resource
    except ImportError:  # Not on this platform.
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + 64  # Listening sockets, log files, the app's own files.
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def load_in_reloader(launch: Launch, config: Config) -> WSGIApp:
    """Load the app; if that fails, answer 500 until a change fixes it, so a request never
    waits for a server that will not come. The error is logged once; it is in the answer
    when tracebacks are shown (``expose_tracebacks``, the debugger), where the debugger
    renders it."""
    try:
        return launch.load()
    except Exception as exc:
        log.error(
            "%s failed to load: %s; answering 500 until a change fixes it",
            launch.app_name,
            exc,
            exc_info=not isinstance(exc, ConfigError),
        )
        return _failed_to_load(exc, launch, show=config.expose_tracebacks)


def _failed_to_load(error: Exception, launch: Launch, *, show: bool) -> WSGIApp:
    if launch.debugger is not None:

        def raising(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            raise error from None

        return raising
    text = f"{launch.app_name} failed to load: {error}" if show else "the app failed to load"
    body = f"500 Internal Server Error: {text}; the server restarts when a file changes\n"
    data = body.encode("utf-8", "replace")

    def answering(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response(
            "500 Internal Server Error",
            [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))],
        )
        return [data]

    return answering
