"""Where each option's value comes from: command line, then environment, then pyproject.toml.

Every ``Config`` option can be set as ``--threads 32``, as ``WSGIPOOL_THREADS=32``, or as
``threads = 32`` under ``[tool.wsgipool]`` in the current directory's ``pyproject.toml``;
the first of those that is present wins, and ``Config``'s default applies otherwise.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .config import PYTHON_ONLY_FIELDS, SECRET_FIELDS, Config, ConfigError

ENV_PREFIX = "WSGIPOOL_"
PYPROJECT = "pyproject.toml"
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def env_name(field: str) -> str:
    """``queue_limit`` -> ``WSGIPOOL_QUEUE_LIMIT``."""
    return ENV_PREFIX + field.upper()


def read_pyproject(directory: Path) -> dict[str, Any]:
    """The ``[tool.wsgipool]`` table of ``directory/pyproject.toml`` ({} when absent)."""
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
    return {key.replace("-", "_"): value for key, value in table.items()}


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
        self.sources: dict[str, str] = {}

    def set(self, field: str, value: Any, source: str) -> None:
        self.values[field] = value
        self.sources[field] = source


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
    """
    fields = [f.name for f in dataclasses.fields(Config) if f.init]
    known = set(fields) | set(extra_fields)
    table = read_pyproject(directory)
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(
            f"{directory / PYPROJECT}: unknown [tool.wsgipool] key(s): {', '.join(unknown)}"
        )
    resolved = Resolved()
    for field in (*extra_fields, *fields):
        if field in given:
            resolved.set(field, given[field], "command line")
        elif env_name(field) in environ:
            text = environ[env_name(field)]
            resolved.set(field, _from_env(field, text, parsers), f"environment {env_name(field)}")
        elif field in table:
            resolved.set(field, _from_file(field, table[field], parsers), PYPROJECT)
    return resolved


def _from_env(field: str, text: str, parsers: Mapping[str, Callable[[str], Any]]) -> Any:
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
        raise ConfigError(f"{env_name(field)}={text!r}: {exc}") from None


def _from_file(field: str, value: Any, parsers: Mapping[str, Callable[[str], Any]]) -> Any:
    # TOML has its own types; a string for a size or number ("10M") goes through the
    # command line's converter, like the environment's.
    if field == "bind" and isinstance(value, list):
        return tuple(value)
    if isinstance(value, str) and field in parsers and parsers[field] is not str:
        try:
            return parsers[field](value)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{PYPROJECT} {field} = {value!r}: {exc}") from None
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
