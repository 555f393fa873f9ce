"""Where each option's value comes from: command line, then environment (WSGIPOOL_
variables, then the words of ``$GUNICORN_CMD_ARGS``), then a gunicorn configuration file,
then pyproject.toml.

Every ``Config`` option can be set as ``--threads 32``, as ``WSGIPOOL_THREADS=32``, as
``threads = 32`` in a gunicorn configuration file (``-c gunicorn.conf.py``, or
``./gunicorn.conf.py``: see ``integrations/gunicorn.py``), or as ``threads = 32`` under
``[tool.wsgipool]`` in the current directory's ``pyproject.toml``; the first of those that
is present wins, and ``Config``'s default applies otherwise. The text of each goes through
the option's converter in ``options.py``.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import PYTHON_ONLY_FIELDS, SECRET_FIELDS, Config, ConfigError
from .options import BY_FIELD, ENV_PREFIX, convert, env_label, env_name, flag_name, shown
from .supervisors.process import INHERITED_FDS_ENV, RESTARTED_ENV
from .supervisors.reloader import POLL_ENV

# The WSGIPOOL_ variables that are not options: wsgipool's own, for its child processes and
# its reloader, and benchmarks/run.py's for the file its file-serving app sends. Any other
# WSGIPOOL_ variable is a mistake, refused as an unknown pyproject.toml key is.
OTHER_ENV_VARIABLES = frozenset({INHERITED_FDS_ENV, RESTARTED_ENV, POLL_ENV, "WSGIPOOL_BENCH_FILE"})
PYPROJECT = "pyproject.toml"


# --- where values come from -------------------------------------------------------------------


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


@dataclass(frozen=True)
class ConfigFile:
    """A configuration file's values: option -> (how errors name it, the converted value),
    and how ``--print-config`` names the file (``gunicorn config /srv/gunicorn.conf.py``)."""

    source: str
    values: Mapping[str, tuple[str, Any]]


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
        if match is None or match.group(1) not in BY_FIELD:
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


def resolve(
    given: Mapping[str, Any],
    environ: Mapping[str, str],
    directory: Path,
    extra_fields: tuple[str, ...] = (),
    sources: Sequence[ConfigFile] = (),
) -> Resolved:
    """Merge command-line ``given`` values over the environment over ``sources`` (in their
    order: ``$GUNICORN_CMD_ARGS``, a gunicorn configuration file) over ``pyproject.toml``.

    Text from the environment or the files goes through its option's converter
    (``options.convert``; the ``sources``' values come converted). ``extra_fields`` are
    settings that are not ``Config`` fields (the app). Unknown ``[tool.wsgipool]`` keys and
    ``WSGIPOOL_`` variables are errors.
    """
    known = [*extra_fields, *BY_FIELD]
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
            label = env_label(env_name(field), text)
            resolved.set(
                field, convert(field, text, label), f"environment {env_name(field)}", label
            )
        elif source := next((source for source in sources if field in source.values), None):
            label, value = source.values[field]
            resolved.set(field, value, source.source, label)
        elif field in table:
            key, value = table[field]
            label = f"{path}: {key} = {shown(value) if isinstance(value, str) else repr(value)}"
            resolved.set(field, convert(field, value, label), PYPROJECT, label)
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


def config_report(resolved: Resolved, config: Config, app: str | None) -> str:
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
    except json.JSONDecodeError as exc:
        # gunicorn's --log-config takes an ini file (fileConfig): say what this one takes.
        raise ConfigError(
            f"--log-config {path}: not JSON ({exc}): give a logging.config.dictConfig file "
            "in JSON, or in TOML named *.toml (ini files are not read)"
        ) from None
    except (ValueError, TypeError, AttributeError, ImportError) as exc:
        raise ConfigError(f"--log-config {path}: {exc}") from None
