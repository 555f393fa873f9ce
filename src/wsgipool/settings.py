"""Where each option's value comes from: command line, then environment, then pyproject.toml.

Every ``Config`` option can be set as ``--threads 32``, as ``WSGIPOOL_THREADS=32``, or as
``threads = 32`` under ``[tool.wsgipool]`` in the current directory's ``pyproject.toml``;
the first of those that is present wins, and ``Config``'s default applies otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .config import PYTHON_ONLY_FIELDS, SECRET_FIELDS, Config, ConfigError
from .reload import INHERITED_FDS_ENV, POLL_ENV

ENV_PREFIX = "WSGIPOOL_"
# The WSGIPOOL_ variables that are not options: wsgipool's own, for its child processes and
# its reloader, and benchmarks/run.py's for the file its file-serving app sends. Any other
# WSGIPOOL_ variable is a mistake, refused as an unknown pyproject.toml key is.
OTHER_ENV_VARIABLES = frozenset({INHERITED_FDS_ENV, POLL_ENV, "WSGIPOOL_BENCH_FILE"})
PYPROJECT = "pyproject.toml"
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


# --- text to values: the command line's converters, also for the environment and the file ---


class InvalidValue(argparse.ArgumentTypeError, ValueError):
    """Text that is not a value of its option's kind. argparse shows the message as it is
    (an ArgumentTypeError); everyone else catches the ValueError it also is."""


# More digits than any option's largest value has, and few enough that int() takes them.
_MAX_DIGITS = 24
_WHOLE_NUMBER = re.compile(r"[0-9]+")
# Decimal, with the exponent Python prints small floats with (1e-06), so that what
# --print-config shows reads back. Not nan, inf or 1_0, which float() takes.
_DECIMAL = re.compile(r"([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")
# re.ASCII: otherwise IGNORECASE matches the Kelvin sign for K.
_SIZE = re.compile(r"([0-9]+)\s*([KMG]i?B?)?", re.IGNORECASE | re.ASCII)
UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def parse_count(text: str) -> int:
    """A whole number in ASCII digits: ``16``. Not ``1_000``, ``+5``, ``-1`` or digits of
    other scripts (Arabic-Indic...), which ``int()`` takes."""
    digits = text.strip()
    if not _WHOLE_NUMBER.fullmatch(digits):
        raise InvalidValue(f"expected a whole number such as 16, not {_shown(text)}")
    return _whole(digits, text)


def parse_size(text: str) -> int:
    """``1048576``, ``512K``, ``10M``, ``1G`` (binary multiples) to bytes."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise InvalidValue(f"invalid size {_shown(text)} (examples: 1048576, 512K, 10M, 1G)")
    unit = (match.group(2) or "")[:1].upper()
    return _whole(match.group(1), text) * UNITS[unit]


def parse_seconds(text: str) -> float:
    """Seconds as a plain decimal number: ``30``, ``2.5``, ``.5``, or ``1e-3`` as Python
    prints small numbers. Not ``nan``, ``inf``, ``1_0`` or digits of other scripts, which
    ``float()`` takes."""
    number = text.strip()
    if not _DECIMAL.fullmatch(number):
        raise InvalidValue(f"expected a number of seconds such as 2.5, not {_shown(text)}")
    value = float(number)
    if not math.isfinite(value):  # 1e999
        raise InvalidValue(f"{_shown(text)} is too large")
    return value


def _whole(digits: str, text: str) -> int:
    if len(digits.lstrip("0")) > _MAX_DIGITS:
        raise InvalidValue(f"{_shown(text)} is too large")
    return int(digits)


def _shown(text: str) -> str:
    """``text`` quoted for an error message, cut short if it is long."""
    return repr(text) if len(text) <= 40 else repr(text[:40]) + "..."


# --- where values come from -------------------------------------------------------------------


def env_name(field: str) -> str:
    """``queue_limit`` -> ``WSGIPOOL_QUEUE_LIMIT``."""
    return ENV_PREFIX + field.upper()


def flag_name(field: str) -> str:
    """``queue_limit`` -> ``--queue-limit``."""
    return "--" + field.replace("_", "-")


def read_pyproject(directory: Path) -> dict[str, tuple[str, Any]]:
    """The ``[tool.wsgipool]`` table of ``directory/pyproject.toml`` ({} when absent): each
    option's name (dashes as underscores) -> its key as written there, and its value."""
    path = directory / PYPROJECT
    if not path.is_file():
        return {}
    data = path.read_bytes()
    if b"[tool.wsgipool" not in data:
        return {}
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    table = _load_toml(text, path).get("tool", {}).get("wsgipool", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.wsgipool] must be a table")
    entries: dict[str, tuple[str, Any]] = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name in entries:
            raise ConfigError(
                f"{path}: [tool.wsgipool] sets {name} twice, as {entries[name][0]} and {key}"
            )
        entries[name] = (key, value)
    return entries


def _load_toml(text: str, path: Path) -> dict[str, Any]:
    try:
        import tomllib  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[import-not-found,no-redef,unused-ignore]
        except ImportError:
            raise ConfigError(
                f"{path}: reading TOML on Python {sys.version_info[0]}.{sys.version_info[1]} "
                "needs the 'tomli' package"
            ) from None
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return data


class Resolved:
    """The chosen value of each option and where it came from."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        # For --print-config: "command line", "environment WSGIPOOL_X" or "pyproject.toml".
        self.sources: dict[str, str] = {}
        # For errors: how the user set it (--threads, WSGIPOOL_THREADS='0', or the file's key).
        self.labels: dict[str, str] = {}

    def set(self, field: str, value: Any, source: str, label: str) -> None:
        self.values[field] = value
        self.sources[field] = source
        self.labels[field] = label

    def name_source(self, message: str) -> str:
        """An error about an option, naming it as the user set it: ``threads: must be ...``
        -> ``WSGIPOOL_THREADS='0': must be ...`` (``--threads: ...`` from the command line or
        by default; the file and key from pyproject.toml). Other messages are left alone."""
        match = _ABOUT_AN_OPTION.match(message)
        if match is None or match.group(1) not in _OPTION_NAMES:
            return message
        field = match.group(1)
        label = self.labels.get(field, flag_name(field))
        if match.group(2) == ":":
            return label + message[len(field) :]
        # "bind '127.0.0.1:x': ...": the value is in the message already.
        if self.sources.get(field, "command line") == "command line":
            return message
        return f"{label}: {message}"


# "field: ..." or "field '...': ..." (BindAddress's errors).
_ABOUT_AN_OPTION = re.compile(r"([a-z_]+)(:| ')")
_OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(Config) if f.init)


def resolve(
    given: Mapping[str, Any],
    parsers: Mapping[str, Callable[[str], Any]],
    environ: Mapping[str, str],
    directory: Path,
    extra_fields: tuple[str, ...] = (),
) -> Resolved:
    """Merge command-line ``given`` values over the environment over ``pyproject.toml``.

    ``parsers`` turns an environment string into a value, per field (the command line's own
    converters). ``extra_fields`` are settings that are not ``Config`` fields (the app).
    Unknown ``[tool.wsgipool]`` keys and ``WSGIPOOL_`` variables are errors.
    """
    fields = [f.name for f in dataclasses.fields(Config) if f.init]
    known = [*extra_fields, *fields]
    path = directory / PYPROJECT
    table = read_pyproject(directory)
    _refuse_unknown(
        f"{path}: unknown [tool.wsgipool] key",
        [key for name, (key, _value) in table.items() if name not in known],
        known,
    )
    allowed = {env_name(field) for field in known} | OTHER_ENV_VARIABLES
    _refuse_unknown(
        "unknown environment variable",
        [name for name in environ if name.startswith(ENV_PREFIX) and name not in allowed],
        known,
        spell=env_name,
    )
    resolved = Resolved()
    for field in known:
        if field in given:
            resolved.set(field, given[field], "command line", flag_name(field))
        elif env_name(field) in environ:
            text = environ[env_name(field)]
            label = f"{env_name(field)}={_shown(text)}"
            value = _from_env(field, text, parsers, label)
            resolved.set(field, value, f"environment {env_name(field)}", label)
        elif field in table:
            key, value = table[field]
            shown = _shown(value) if isinstance(value, str) else repr(value)
            label = f"{path}: {key} = {shown}"
            resolved.set(field, _from_file(field, value, parsers, label), PYPROJECT, label)
    return resolved


def _refuse_unknown(
    what: str, unknown: list[str], known: list[str], spell: Callable[[str], str] = str
) -> None:
    """Refuse the ``unknown`` names, each with a guess among the ``known`` option names
    (written as ``spell`` returns them) at what it meant."""
    if not unknown:
        return
    described = []
    for name in sorted(unknown):
        as_option = name.removeprefix(ENV_PREFIX).lower().replace("-", "_")
        guess = difflib.get_close_matches(as_option, known, n=1)
        described.append(f"{name} (did you mean {spell(guess[0])}?)" if guess else name)
    plural = "s" if len(unknown) > 1 else ""
    raise ConfigError(f"{what}{plural}: {', '.join(described)}")


def _from_env(
    field: str, text: str, parsers: Mapping[str, Callable[[str], Any]], label: str
) -> Any:
    default = getattr(Config(), field, None)
    try:
        if isinstance(default, bool):
            word = text.strip().lower()
            if word not in TRUE_WORDS | FALSE_WORDS:
                raise ValueError(f"expected one of {', '.join(sorted(TRUE_WORDS | FALSE_WORDS))}")
            return word in TRUE_WORDS
        if field == "bind":
            return tuple(part.strip() for part in text.split(",") if part.strip())
        parse = parsers.get(field, str)
        return parse(text)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{label}: {exc}") from None


def _from_file(
    field: str, value: Any, parsers: Mapping[str, Callable[[str], Any]], label: str
) -> Any:
    # TOML has its own types; a string for a size or number ("10M") goes through the
    # command line's converter, like the environment's.
    if field == "bind" and isinstance(value, list):
        return tuple(value)
    if isinstance(value, str) and field in parsers and parsers[field] is not str:
        try:
            return parsers[field](value)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{label}: {exc}") from None
    return value


def describe(resolved: Resolved, config: Config, app: str | None) -> str:
    """The ``--print-config`` report: every option, its value and where it came from."""
    lines = [f"app = {app!r}  # {resolved.sources.get('app', 'not set')}"]
    for f in dataclasses.fields(Config):
        if not f.init or f.name in PYTHON_ONLY_FIELDS:
            continue
        value = getattr(config, f.name)
        if f.name in SECRET_FIELDS and value:
            value = "(hidden)"
        source = resolved.sources.get(f.name, "default")
        lines.append(f"{f.name} = {value!r}  # {source}")
    return "\n".join(lines)


def environment() -> Mapping[str, str]:
    return os.environ


def apply_logging_config(path: Path) -> None:
    """Configure ``logging`` from a dictConfig file: JSON, or TOML by its extension."""
    import json
    import logging.config

    try:
        text = path.read_text(encoding="utf-8")
        data = _load_toml(text, path) if path.suffix == ".toml" else json.loads(text)
        logging.config.dictConfig(data)
    except OSError as exc:
        raise ConfigError(f"--log-config {path}: {exc.strerror}") from None
    except (ValueError, TypeError, AttributeError, ImportError) as exc:
        raise ConfigError(f"--log-config {path}: {exc}") from None
