"""The ``wsgipool`` command: ``wsgipool myapp:app --threads 32``."""

from __future__ import annotations

import argparse
import difflib
import functools
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from . import launch, settings
from ._version import __version__
from .config import COUNT_BOUNDS, Config, ConfigError
from .integrations import gunicorn
from .integrations.waitress import CLI_ADDRESS_FLAGS, bind_from_flags, pointer_for_flag
from .loader import load_app
from .options import BIND, BY_FIELD, OPTIONS, UNITS, Option, flag_name, parse_size
from .supervisors.process import EXIT_USAGE

_DEFAULTS = Config()


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (and exit code 2), and an unknown
    option is named as one. ``source`` names where the words came from when it is not the
    command line (an environment variable)."""

    source = ""

    def error(self, message: str) -> NoReturn:
        if self.source:
            message = f"{self.source}: {message}"
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        # An unknown option's value may have been taken as APP ("--acces-log - app:app"):
        # argparse would blame "app:app"; the unknown option is what to report.
        options = [item for item in extras if item.startswith("-") and item != "-"]
        if options:
            self.error(self._unknown_option(options[0].partition("=")[0]))
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    def _unknown_option(self, flag: str) -> str:
        pointer = pointer_for_flag(flag)
        if pointer is not None:
            return f"{flag} is waitress-serve's: {pointer}"
        known = [name for name in self._option_string_actions if name.startswith("--")]
        guess = difflib.get_close_matches(flag, known, n=1)
        return f"unknown option {flag}" + (f" (did you mean {guess[0]}?)" if guess else "")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        # No "(default: None)": such options say their default in their own words.
        if action.default in (None, ""):
            return action.help
        return super()._get_help_string(action)


# What the command line can set: Config fields, and the app.
_SETTING_NAMES = frozenset({"app", *BY_FIELD})


def _largest(option: Option) -> str:
    """`` (at most 4096)`` for a whole-number option with a largest value (sizes in units)."""
    maximum = COUNT_BOUNDS.get(option.field, (0, None))[1]
    if maximum is None:
        return ""
    if option.parse is parse_size:
        unit = next(unit for unit in ("G", "M", "K", "") if maximum % UNITS[unit] == 0)
        return f" (at most {maximum // UNITS[unit]}{unit})"
    return f" (at most {maximum})"


def _environment_entry(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not equals or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {text!r}")
    problem = gunicorn.refused_environment_key(key)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="wsgipool",
        description="Serve a WSGI application with a listener thread and a worker pool. "
        "Every option can also be set in the environment (--queue-limit as "
        "WSGIPOOL_QUEUE_LIMIT) or under [tool.wsgipool] in ./pyproject.toml "
        "(queue_limit = 64); the command line wins over the environment, which wins over "
        "the file. Like gunicorn, it also reads $GUNICORN_CMD_ARGS (under the environment, "
        "over a gunicorn configuration file). To ask a running server started with "
        "--control-socket: wsgipool ctl "
        "--help, wsgipool top --help.",
        formatter_class=_HelpFormatter,
        # Abbreviations would make an option's meaning depend on which others exist.
        allow_abbrev=False,
    )
    parser.add_argument(
        "app",
        metavar="APP",
        nargs="?",
        default=argparse.SUPPRESS,
        help="the application: module:name, module:name.attr, module:factory(), "
        "module:factory(arg=1) or module (looks for app, application, create_app(), "
        "make_app()); also WSGIPOOL_APP or app = ... in pyproject.toml",
    )
    parser.add_argument("--version", action="version", version=f"wsgipool {__version__}")
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print every option's value and where it came from, then exit",
    )
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="read the settings of a gunicorn configuration file (Python; or python:MODULE) "
        "and its server hooks, below the command line and the environment (default: "
        "./gunicorn.conf.py when there is one; see docs/migrating.md)",
    )
    parser.add_argument(
        "--log-config",
        metavar="FILE",
        help="configure logging from a logging.config.dictConfig file (.json or .toml) "
        "(default: log to stderr at --log-level)",
    )
    # One address a flag (a unix: path may hold a comma or a space).
    parser.add_argument(
        *BIND.flags,
        action="append",
        default=argparse.SUPPRESS,
        metavar=BIND.metavar,
        help=f"{BIND.help} (default: {_DEFAULTS.bind[0]})",
    )
    parser.add_argument(
        "--chdir",
        metavar="DIR",
        help="change to DIR before importing the app (default: stay in the current directory)",
    )
    parser.add_argument(
        "-e",
        "--env",
        action="append",
        metavar="KEY=VALUE",
        type=_environment_entry,
        help="set KEY=VALUE in the environment before the app loads, repeatable; over a "
        "gunicorn configuration file's raw_env (default: none)",
    )
    for option in OPTIONS:
        # No argparse default: an option left off the command line may come from the
        # environment or pyproject.toml. --help still shows Config's default.
        default = getattr(_DEFAULTS, option.field)
        help_text = option.help + _largest(option)
        if default != "":
            help_text += f" (default: {default})".replace("%", "%%")
        if option.is_flag:
            parser.add_argument(
                *option.flags,
                dest=option.field,
                action="store_true",
                default=argparse.SUPPRESS,
                help=help_text,
            )
            continue
        parser.add_argument(
            *option.flags,
            dest=option.field,
            metavar=option.metavar,
            type=option.convert,
            default=argparse.SUPPRESS,
            choices=option.choices,
            help=help_text,
        )
    # Development
    parser.add_argument(
        "--reload",
        action="store_true",
        help="restart the server when a watched file changes; the sockets stay open meanwhile "
        "(development only; uses watchfiles when installed, else polls)",
    )
    parser.add_argument(
        "--reload-dir",
        action="append",
        metavar="DIR",
        help="directory to watch with --reload, repeatable (default: the current directory, "
        "after --chdir)",
    )
    parser.add_argument(
        "--reload-include",
        action="append",
        metavar="GLOB",
        help="watch files whose name or relative path matches GLOB, repeatable (default: *.py)",
    )
    parser.add_argument(
        "--reload-exclude",
        action="append",
        metavar="GLOB",
        help="ignore files, or whole directories, whose name or relative path matches GLOB, "
        "repeatable (default: none)",
    )
    # Debugging
    parser.add_argument(
        "--debug",
        action="store_true",
        help="serve the app behind werkzeug's interactive debugger, which runs Python code for "
        "whoever can reach it: local addresses only (127.0.0.1, ::1, localhost, unix:); "
        "implies --expose-tracebacks (development only; needs werkzeug)",
    )
    parser.add_argument(
        "--debug-allow-remote",
        action="store_true",
        help="let --debug listen on addresses other machines can reach (logs a warning)",
    )
    _add_waitress_flags(parser)
    return parser


def _add_waitress_flags(parser: argparse.ArgumentParser) -> None:
    """waitress-serve's spellings, kept out of --help (docs/migrating.md): --listen,
    --host, --port and --unix-socket (addresses), --call (APP is a factory to call)."""
    hidden = argparse.SUPPRESS
    parser.add_argument("--listen", action="append", default=hidden, help=hidden)
    for name in CLI_ADDRESS_FLAGS[1:]:
        parser.add_argument(flag_name(name), default=hidden, help=hidden)
    parser.add_argument("--call", action="store_true", help=hidden)


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The settings ``args`` holds: only those its words gave (the others are absent)."""
    given = {name: value for name, value in vars(args).items() if name in _SETTING_NAMES}
    if "bind" in given:
        given["bind"] = tuple(given["bind"])
    waitress_bind = bind_from_flags(
        {name: getattr(args, name) for name in CLI_ADDRESS_FLAGS if hasattr(args, name)}
    )
    if waitress_bind:
        if "bind" in given:
            raise ConfigError("-b/--bind: give -b, or --listen/--host/--port, not both")
        given["bind"] = waitress_bind
    return given


# gunicorn reads more command-line words from this variable, over its configuration file
# and under the command line; so does wsgipool, for a deployment that sets it.
GUNICORN_CMD_ARGS = "GUNICORN_CMD_ARGS"
# What it may hold besides settings (the rest, such as --print-config or APP, is refused).
_FROM_GUNICORN_CMD_ARGS = ("config", "chdir", "env", "reload")


def _gunicorn_command_args(
    environ: Mapping[str, str], args: argparse.Namespace
) -> argparse.Namespace | None:
    """The words of ``$GUNICORN_CMD_ARGS`` parsed as the command line is (None when unset).
    Its ``-c``, ``--chdir``, ``-e`` and ``--reload`` go into ``args`` where the command line
    left them unset; its settings are kept apart (``resolve_settings`` puts them under the
    command line and the WSGIPOOL_ variables, over a gunicorn configuration file)."""
    text = environ.get(GUNICORN_CMD_ARGS, "").strip()
    if not text:
        return None
    parser = build_parser()
    assert isinstance(parser, _Parser)
    parser.source = GUNICORN_CMD_ARGS
    try:
        words = shlex.split(text)
    except ValueError as exc:
        parser.error(str(exc))
    shown = [word for word in words if word in ("-h", "--help", "--version")]
    if shown:
        parser.error(f"{shown[0]} is for the command line")
    parsed = parser.parse_args(words)
    if "app" in parsed:
        parser.error(f"name the application on the command line, not {parsed.app!r} here")
    defaults = vars(parser.parse_args([]))
    for name, value in vars(parsed).items():
        if name in _SETTING_NAMES or value == defaults.get(name):
            continue
        if name not in _FROM_GUNICORN_CMD_ARGS:
            parser.error(f"--{name.replace('_', '-')} is for the command line")
        if name == "env":
            args.env = [*value, *(args.env or ())]  # the command line's last: it wins
        elif not getattr(args, name):
            setattr(args, name, value)
    return parsed


def resolve_settings(
    args: argparse.Namespace,
    gunicorn_file: gunicorn.GunicornFile | None = None,
    from_environment: argparse.Namespace | None = None,
) -> tuple[Config, str | None, settings.Resolved]:
    """The Config and app from the command line, the environment (WSGIPOOL_ variables, then
    ``$GUNICORN_CMD_ARGS`` as ``from_environment``), a gunicorn configuration file and
    ./pyproject.toml."""
    given = _given(args)
    sources = []
    if from_environment is not None:
        sources.append(
            settings.ConfigFile(
                f"environment {GUNICORN_CMD_ARGS}",
                {
                    name: (f"{GUNICORN_CMD_ARGS}: {flag_name(name)}", value)
                    for name, value in _given(from_environment).items()
                },
            )
        )
    if gunicorn_file is not None:
        sources.append(
            settings.ConfigFile(f"{gunicorn.SOURCE} {gunicorn_file.path}", gunicorn_file.values)
        )
    resolved = settings.resolve(
        given, settings.environment(), Path.cwd(), extra_fields=("app",), sources=sources
    )
    values = dict(resolved.values)
    app = values.pop("app", None)
    if app is not None and not isinstance(app, str):
        # pyproject.toml's TOML may hold a number or a list here.
        raise ConfigError(f"{resolved.labels['app']}: expected text such as 'myapp:app'")
    if getattr(args, "call", False) and app is not None:
        app = _called(app)  # From any source: WSGIPOOL_APP too.
    try:
        config = Config(**values)
    except ConfigError as exc:
        raise ConfigError(resolved.name_source(str(exc))) from None
    return config, app, resolved


def _called(app: str) -> str:
    """waitress-serve's ``--call``: ``module:factory`` is ``module:factory()``."""
    if ":" not in app:
        raise ConfigError(f"--call: name the factory to call as module:factory, not {app!r}")
    return app if app.rstrip().endswith(")") else f"{app}()"


def config_from_args(args: argparse.Namespace) -> Config:
    """The Config alone (see ``resolve_settings``)."""
    return resolve_settings(args)[0]


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    # `wsgipool ctl ...` and `wsgipool top` ask a running server; only the exact words:
    # an application named ctl is still served as `wsgipool ctl:app`.
    if arguments[:1] == ["ctl"]:
        from . import ctl  # Only here: serving never needs it.

        return ctl.main(arguments[1:])
    if arguments[:1] == ["top"]:
        from . import top

        return top.main(arguments[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    from_environment = _gunicorn_command_args(os.environ, args)
    if not args.reload and (args.reload_dir or args.reload_include or args.reload_exclude):
        parser.error("--reload-dir, --reload-include and --reload-exclude need --reload")
    if args.debug_allow_remote and not args.debug:
        parser.error("--debug-allow-remote needs --debug")
    resolved: settings.Resolved | None = None  # Known once the options are read.
    try:
        start_dir = os.getcwd()
        if args.chdir:
            try:
                os.chdir(args.chdir)
            except OSError as exc:
                raise ConfigError(f"--chdir {args.chdir}: {exc.strerror}") from None
        gunicorn_file = _read_gunicorn_file(args)
        # After --chdir: ./pyproject.toml is the project's.
        config, app_spec, resolved = resolve_settings(args, gunicorn_file, from_environment)
        warnings = (gunicorn_file.warning,) if gunicorn_file and gunicorn_file.warning else ()
        if args.print_config:
            for warning in warnings:
                print(f"wsgipool: warning: {warning}", file=sys.stderr)
            print(settings.config_report(resolved, config, app_spec))
            return 0
        if app_spec is None:
            raise ConfigError("no application: name one as APP (e.g. myapp:app)")
        # Like `python -m`, the current directory is importable.
        sys.path.insert(0, os.getcwd())
        reload = args.reload or (gunicorn_file is not None and gunicorn_file.reload)
        # gunicorn's raw_env, then -e: the app sees these (and the processes it starts).
        if gunicorn_file is not None:
            os.environ.update(gunicorn_file.environment)
        os.environ.update(args.env or ())
        return launch.run(
            launch.Launch(
                config,
                functools.partial(load_app, app_spec),
                app_name=app_spec,
                reload=_reloading(args, argv, start_dir, gunicorn_file) if reload else None,
                debugger=launch.Debugging(allow_remote=args.debug_allow_remote)
                if args.debug
                else None,
                log_config=args.log_config,
                command=_command(argv),
                directory=start_dir,
                log_config_dict=gunicorn_file.logconfig_dict if gunicorn_file else None,
                hooks=gunicorn.make_hooks(gunicorn_file, config) if gunicorn_file else None,
                warnings=warnings,
            )
        )
    except ConfigError as exc:
        message = str(exc) if resolved is None else resolved.name_source(str(exc))
        print(f"wsgipool: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        # Ctrl-C before the server took over the signal (while importing the app).
        return 130


def _read_gunicorn_file(args: argparse.Namespace) -> gunicorn.GunicornFile | None:
    """``-c FILE``, or ./gunicorn.conf.py, read; its ``chdir`` applied unless ``--chdir``
    was given (the command line wins)."""
    path = gunicorn.find_file(args.config, Path.cwd())
    if path is None:
        return None
    gunicorn_file = gunicorn.read_file(path)
    if gunicorn_file.chdir and not args.chdir:
        try:
            os.chdir(gunicorn_file.chdir)
        except OSError as exc:
            raise ConfigError(f"{path}: chdir {gunicorn_file.chdir}: {exc.strerror}") from None
    return gunicorn_file


def _reloading(
    args: argparse.Namespace,
    argv: Sequence[str] | None,
    start_dir: str,
    gunicorn_file: gunicorn.GunicornFile | None = None,
) -> launch.Reloading:
    """``--reload`` for this command line: each server process runs it again from the
    directory it was given in (it does its own ``--chdir``)."""
    return launch.Reloading(
        directories=tuple(args.reload_dir or ()),
        include=tuple(args.reload_include or ("*.py",)),
        exclude=tuple(args.reload_exclude or ()),
        extra_files=gunicorn_file.reload_extra_files if gunicorn_file else (),
        command=_command(argv),
        directory=start_dir,
    )


def _command(argv: Sequence[str] | None) -> tuple[str, ...] | None:
    """This command line, to run again (--reload, SIGHUP); None: the process's own."""
    return None if argv is None else (sys.executable, "-m", "wsgipool", *argv)
