"""The ``wsgipool`` command: ``wsgipool myapp:app --threads 32``."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from . import __version__
from .config import Config, ConfigError
from .loader import load_app
from .server import Server

EXIT_USAGE = 2
_DEFAULTS = Config()
CONFIG_FIELDS = frozenset(field.name for field in dataclasses.fields(Config))


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (and exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def parse_size(text: str) -> int:
    """``1048576``, ``512K``, ``10M``, ``1G`` (binary multiples) to bytes."""
    match = re.fullmatch(r"(\d+)\s*([KMG]i?B?)?", text.strip(), re.IGNORECASE)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"invalid size {text!r} (examples: 1048576, 512K, 10M, 1G)"
        )
    number = int(match.group(1))
    unit = (match.group(2) or "")[:1].upper()
    return number * {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[unit]


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        # No "(default: None)": such options say their default in their own words.
        if action.default in (None, ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="wsgipool",
        description="Serve a WSGI application with a listener thread and a worker pool.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "app",
        metavar="APP",
        help="the application: module:name, module:name.attr, module:factory(), "
        "module:factory(arg=1) or module (looks for app, application, create_app(), make_app())",
    )
    parser.add_argument("--version", action="version", version=f"wsgipool {__version__}")
    parser.add_argument(
        "-b",
        "--bind",
        action="append",
        metavar="ADDRESS",
        help="where to listen, repeatable: HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N "
        f"(default: {_DEFAULTS.bind[0]})",
    )
    parser.add_argument(
        "-t",
        "--threads",
        metavar="N",
        type=int,
        default=_DEFAULTS.threads,
        help="worker threads running the application",
    )
    parser.add_argument(
        "--queue-limit",
        metavar="N",
        type=int,
        default=_DEFAULTS.queue_limit,
        help="ready connections that may wait for a worker before new requests get 503",
    )
    parser.add_argument(
        "--backlog",
        metavar="N",
        type=int,
        default=_DEFAULTS.backlog,
        help="listen() backlog of each socket",
    )
    parser.add_argument(
        "--chdir",
        metavar="DIR",
        help="change to DIR before importing the app (default: stay in the current directory)",
    )
    parser.add_argument(
        "--root-path",
        default=_DEFAULTS.root_path,
        metavar="PATH",
        help="SCRIPT_NAME the app is mounted at, e.g. /api (default: none, the app is at /)",
    )
    parser.add_argument(
        "--url-scheme",
        metavar="SCHEME",
        default=_DEFAULTS.url_scheme,
        choices=("http", "https"),
        help="wsgi.url_scheme",
    )
    parser.add_argument(
        "--max-body-size",
        type=parse_size,
        default=_DEFAULTS.max_body_size,
        metavar="SIZE",
        help="largest request body in bytes (K, M, G allowed); larger gets 413",
    )
    parser.add_argument(
        "--max-request-line",
        type=parse_size,
        default=_DEFAULTS.max_request_line,
        metavar="SIZE",
        help="longest request line; longer gets 414",
    )
    parser.add_argument(
        "--max-header-size",
        type=parse_size,
        default=_DEFAULTS.max_header_size,
        metavar="SIZE",
        help="largest request head; larger gets 431",
    )
    parser.add_argument(
        "--max-header-count",
        metavar="N",
        type=int,
        default=_DEFAULTS.max_header_count,
        help="most header fields in a request; more gets 431",
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=_DEFAULTS.header_timeout,
        metavar="SECONDS",
        help="a whole request head must arrive within this",
    )
    parser.add_argument(
        "--keepalive-timeout",
        type=float,
        default=_DEFAULTS.keepalive_timeout,
        metavar="SECONDS",
        help="close keep-alive connections idle this long",
    )
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=_DEFAULTS.body_timeout,
        metavar="SECONDS",
        help="longest wait for the next piece of a request body",
    )
    parser.add_argument(
        "--send-timeout",
        type=float,
        default=_DEFAULTS.send_timeout,
        metavar="SECONDS",
        help="longest wait for a client to take response bytes",
    )
    parser.add_argument(
        "--graceful-timeout",
        type=float,
        default=_DEFAULTS.graceful_timeout,
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, how long in-flight requests may take to finish",
    )
    parser.add_argument(
        "--expose-tracebacks",
        action="store_true",
        help="put the traceback of an application error in the 500 response (development only)",
    )
    parser.add_argument(
        "--log-level",
        metavar="LEVEL",
        default=_DEFAULTS.log_level,
        choices=("debug", "info", "warning", "error", "critical"),
        help="error log level",
    )
    parser.add_argument(
        "--poller",
        metavar="KIND",
        default=_DEFAULTS.poller,
        choices=("auto", "epoll", "selectors"),
        help="readiness API for idle connections",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    options: dict[str, Any] = {
        name: getattr(args, name)
        for name in (
            "threads",
            "queue_limit",
            "backlog",
            "root_path",
            "url_scheme",
            "max_body_size",
            "max_request_line",
            "max_header_size",
            "max_header_count",
            "header_timeout",
            "keepalive_timeout",
            "body_timeout",
            "send_timeout",
            "graceful_timeout",
            "expose_tracebacks",
            "log_level",
            "poller",
        )
    }
    if args.bind:
        options["bind"] = tuple(args.bind)
    return Config(**options)


def _option_name(message: str) -> str:
    """``root_path: must ...`` -> ``--root-path: must ...``: name the option the user typed."""
    field, colon, rest = message.partition(":")
    if colon and field.isidentifier() and field in CONFIG_FIELDS:
        return f"--{field.replace('_', '-')}:{rest}"
    return message


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S %z",
    )
    try:
        config = config_from_args(args)
        if args.chdir:
            try:
                os.chdir(args.chdir)
            except OSError as exc:
                raise ConfigError(f"--chdir {args.chdir}: {exc.strerror}") from None
        # Like `python -m`, the current directory is importable.
        sys.path.insert(0, os.getcwd())
        app = load_app(args.app)
        Server(app, config).serve_forever()
    except ConfigError as exc:
        print(f"wsgipool: error: {_option_name(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        # Ctrl-C before the server took over the signal (while importing the app).
        return 130
    return 0
