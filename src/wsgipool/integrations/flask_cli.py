"""``flask serve``: ``flask run`` with wsgipool instead of werkzeug's development server.

Registered through the ``flask.commands`` entry point, so with wsgipool installed next to
Flask::

    flask --app hello serve                 # like flask run: 127.0.0.1:5000
    flask --app hello --debug serve         # reloader and debugger on, as with flask run
    flask --app hello serve --port 0 --threads 32 --access-log -

It takes ``flask run``'s options (and reads ``FLASK_RUN_HOST``, ``FLASK_RUN_PORT``... as
well as ``FLASK_SERVE_*``), follows ``--debug``/``FLASK_DEBUG`` the way ``flask run`` does,
loads the app with Flask's own discovery, and adds every ``wsgipool`` option.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource
from flask.cli import ScriptInfo, pass_script_info
from flask.helpers import get_debug_flag

from .. import launch
from ..accesslog import WERKZEUG
from ..config import Config, ConfigError
from ..options import BIND, OPTIONS, parse_boolean
from ..supervisors.process import is_reloader_child
from .waitress import bind_for
from .werkzeug import adhoc_ssl_context

_DEFAULTS = Config()
# flask run's own flags; a wsgipool option never takes one of them.
RUN_FLAGS = frozenset(
    {
        "-h",
        "--host",
        "-p",
        "--port",
        "--cert",
        "--key",
        "--reload",
        "--debugger",
        "--with-threads",
        "--extra-files",
        "--exclude-patterns",
        "--debug",
        "--bind",
        "--request-log",
    }
)


class ServeError(click.ClickException):
    """A configuration error: ``Error: ...`` on stderr and exit status 2, like ``wsgipool``."""

    exit_code = 2


def _path_list(ctx: click.Context, param: click.Parameter, value: Any) -> list[str] | None:
    """Paths or patterns separated by ``os.pathsep``, as ``flask run`` takes them."""
    if value is None:
        return None
    return [item for item in str(value).split(os.pathsep) if item]


def _converted(
    convert: Callable[[str], Any],
) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback running the option's converter from ``options.py`` (sizes: 10M), on
    text from the command line or the environment."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return convert(value)
        except (ValueError, argparse.ArgumentTypeError) as exc:
            raise click.BadParameter(str(exc), ctx, param) from None

    return callback


def _run_envvars(name: str) -> list[str]:
    """``flask serve`` reads FLASK_SERVE_NAME, then flask run's FLASK_RUN_NAME."""
    return [f"FLASK_SERVE_{name}", f"FLASK_RUN_{name}"]


class _Boolean(click.types.BoolParamType):
    """click's flag type, with the words of every other source (``FLASK_SERVE_PRELOAD=yes``)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> bool:
        if isinstance(value, bool):  # The flag given, or its default.
            return value
        try:
            return parse_boolean(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def wsgipool_params() -> list[click.Parameter]:
    """A click option for every ``wsgipool`` option (``wsgipool.options.OPTIONS``)."""
    params: list[click.Parameter] = []
    for option in OPTIONS:
        default = getattr(_DEFAULTS, option.field)
        flags = [flag for flag in option.flags if flag not in RUN_FLAGS]
        text = option.help.replace("%%", "%")  # argparse escapes; click does not
        if option.is_flag:
            params.append(
                click.Option(flags, is_flag=True, type=_Boolean(), default=default, help=text)
            )
            continue
        params.append(
            click.Option(
                flags,
                type=click.STRING,
                callback=_converted(option.convert),
                default=default,
                metavar=option.metavar,
                show_default=default not in ("", None),
                help=text,
            )
        )
    params.append(
        click.Option(
            BIND.flags,
            multiple=True,
            metavar=BIND.metavar,
            help="where to listen, repeatable, instead of --host/--port: HOST:PORT, "
            "[IPv6]:PORT, unix:PATH or fd://N",
        )
    )
    params.append(
        click.Option(
            ["--debug-allow-remote"],
            is_flag=True,
            default=False,
            help="let the debugger listen on addresses other machines can reach "
            "(it runs arbitrary code for anyone who can reach it)",
        )
    )
    return params


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool | None) -> bool | None:
    # As flask run's --debug: only an explicit flag counts, and it goes to FLASK_DEBUG so the
    # app factory (and a reloaded child) sees it.
    source = ctx.get_parameter_source(param.name or "debug")
    if value is None or source in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP):
        return None
    os.environ["FLASK_DEBUG"] = "1" if value else "0"
    return value


@click.command(
    "serve", short_help="Serve the app with wsgipool (flask run's options, and wsgipool's)."
)
@click.option(
    "--debug/--no-debug",
    default=None,
    expose_value=False,
    callback=_set_debug,
    help="Set debug mode (turns the reloader and debugger on).",
)
@click.option(
    "--host", "-h", default="127.0.0.1", envvar=_run_envvars("HOST"), help="Interface to bind to."
)
@click.option(
    "--port",
    "-p",
    default=5000,
    type=click.IntRange(0, 65535),
    envvar=_run_envvars("PORT"),
    help="Port to bind to (0: any free port, logged as 'listening on').",
)
@click.option(
    "--cert",
    envvar=_run_envvars("CERT"),
    help="Serve HTTPS with this certificate file, or 'adhoc' for a throwaway self-signed one "
    "(as --certfile).",
)
@click.option(
    "--key",
    envvar=_run_envvars("KEY"),
    help="The private key of --cert, when not in the same file (as --keyfile).",
)
@click.option(
    "--reload/--no-reload",
    default=None,
    envvar=_run_envvars("RELOAD"),
    help="Restart when files change; on by default in debug mode.",
)
@click.option(
    "--debugger/--no-debugger",
    default=None,
    envvar=_run_envvars("DEBUGGER"),
    help="Werkzeug's interactive debugger; on by default in debug mode.",
)
@click.option(
    "--with-threads/--without-threads",
    default=None,
    envvar=_run_envvars("WITH_THREADS"),
    help="--without-threads runs one worker thread (requests one at a time).",
)
@click.option(
    "--extra-files",
    default=None,
    callback=_path_list,
    envvar=_run_envvars("EXTRA_FILES"),
    help=f"Files that also trigger a reload, separated by {os.pathsep!r}.",
)
@click.option(
    "--exclude-patterns",
    default=None,
    callback=_path_list,
    envvar=_run_envvars("EXCLUDE_PATTERNS"),
    help=f"fnmatch patterns of files that never trigger a reload, separated by {os.pathsep!r}.",
)
@click.option(
    "--request-log/--no-request-log",
    default=True,
    envvar=_run_envvars("REQUEST_LOG"),
    help="Log one line per request to stdout, as flask run does; --access-log replaces it.",
)
@pass_script_info
def serve_command(
    info: ScriptInfo,
    /,
    host: str,
    port: int,
    cert: str | None,
    key: str | None,
    reload: bool | None,
    debugger: bool | None,
    with_threads: bool | None,
    extra_files: list[str] | None,
    exclude_patterns: list[str] | None,
    request_log: bool,
    bind: tuple[str, ...],
    debug_allow_remote: bool,
    **options: Any,
) -> None:
    """Serve the Flask app with wsgipool, a multithreaded HTTP/1.1 server.

    A drop-in for 'flask run': the same options and defaults, debug mode turns the reloader
    and werkzeug's debugger on, and every wsgipool option is available too. The debugger
    only listens on local addresses unless --debug-allow-remote.
    """
    ctx = click.get_current_context()
    debug = get_debug_flag()
    if reload is None:
        reload = debug
    if debugger is None:
        debugger = debug
    if debug_allow_remote and not debugger:
        raise ServeError("--debug-allow-remote needs the debugger (--debug or --debugger)")
    values: dict[str, Any] = {option.field: options[option.field] for option in OPTIONS}
    values.update(_flask_tls(cert, key, values))
    if bind:
        for name in ("host", "port"):
            if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE:
                raise ServeError(f"--bind replaces --{name}: give one or the other")
        values["bind"] = bind
    else:
        values["bind"] = (bind_for(host, port),)
    if with_threads is False:
        if ctx.get_parameter_source("threads") is ParameterSource.COMMANDLINE:
            raise ServeError("--without-threads means one thread: drop it or --threads")
        values["threads"] = 1
    if request_log and not values["access_log"]:
        values["access_log"] = "-"
        if ctx.get_parameter_source("access_log_format") is ParameterSource.DEFAULT:
            values["access_log_format"] = WERKZEUG
    try:
        config = Config(**values)
    except ConfigError as exc:
        raise ServeError(str(exc)) from None
    if not is_reloader_child():
        _banner(info, debug)
    try:
        # Flask's discovery loads the app (in each worker process, or once with --preload);
        # its errors stop the command, as with flask run.
        status = launch.run(
            launch.Launch(
                config,
                info.load_app,
                app_name=info.app_import_path or "the Flask app",
                reload=launch.Reloading(
                    extra_files=tuple(extra_files or ()), exclude=tuple(exclude_patterns or ())
                )
                if reload
                else None,
                debugger=launch.Debugging(allow_remote=debug_allow_remote) if debugger else None,
            )
        )
    except ConfigError as exc:
        raise ServeError(str(exc)) from None
    if status:
        ctx.exit(status)


def _flask_tls(cert: str | None, key: str | None, values: dict[str, Any]) -> dict[str, Any]:
    """``flask run``'s --cert/--key as wsgipool options."""
    if cert is None:
        if key is not None:
            raise ServeError('--key needs "--cert"')
        return {}
    if values.get("certfile"):
        raise ServeError("--cert and --certfile: give one or the other")
    if cert == "adhoc":
        if key is not None:
            raise ServeError('--key cannot be used with "--cert adhoc"')
        try:
            return {"ssl_context": adhoc_ssl_context()}
        except ConfigError as exc:
            raise ServeError(str(exc)) from None
    return {"certfile": cert, "keyfile": key or ""}


def _banner(info: ScriptInfo, debug: bool) -> None:
    if info.app_import_path:
        click.echo(f" * Serving Flask app '{info.app_import_path}' with wsgipool")
    click.echo(f" * Debug mode: {'on' if debug else 'off'}")


serve_command.params.extend(wsgipool_params())
