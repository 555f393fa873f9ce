"""``paste_server_runner``: the ``paste.server_runner`` entry point behind
``[server:main] use = egg:wsgipool`` in a Paste Deploy (Pyramid) ini file."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import launch
from ..config import Config, ConfigError
from ..options import BY_FIELD, convert
from ..wsgi import WSGIApp
from .waitress import addresses, from_ini

# Names in [server:*] besides Config's fields: host and port (as most Paste servers take
# them) and waitress's listen, all turned into bind.
ADDRESS_NAMES = ("host", "port", "listen")


def paste_server_runner(
    wsgi_app: WSGIApp, global_conf: Mapping[str, Any], **local_conf: str
) -> None:
    """``paste.server_runner``: serve ``wsgi_app`` with the ``[server:...]`` section's options.

    Every ``Config`` option is accepted (``threads = 8``, ``max_body_size = 10M``,
    ``expose_tracebacks = true``, ``workers = 4``; dashes or underscores), plus ``host``
    and ``port`` (default 127.0.0.1 and 8000) or waitress's ``listen = HOST:PORT ...``,
    and waitress's other keys as ``serve()`` takes them (``integrations/waitress.py``);
    called from a program, ``port`` may be a number and ``listen`` a list, as there.
    ``log_level`` sets the ``wsgipool`` loggers' level even when ``pserve`` configured
    logging. Worker processes are forked from pserve's process with the application
    loaded. Blocks until SIGINT/SIGTERM.
    """
    config = Config(**options_from_strings(local_conf))
    launch.run_here(launch.Launch(config, lambda: wsgi_app, app_name=launch.name_of(wsgi_app)))


def options_from_strings(values: Mapping[str, str]) -> dict[str, Any]:
    """``Config`` keywords from the strings of an ini section, each through its option's
    converter (``options.py``)."""
    _refuse_a_key_twice(values)
    values = {
        key: _address_text(text) if key in ADDRESS_NAMES else text for key, text in values.items()
    }
    names = from_ini({key.replace("-", "_"): text for key, text in values.items()})
    # For errors: each name as written, with dashes or underscores.
    keys = {key.replace("-", "_"): key for key in values}
    keys.update((name, name) for name in names if name not in keys)
    unknown = sorted(set(names) - set(BY_FIELD) - set(ADDRESS_NAMES))
    if unknown:
        raise ConfigError(
            f"unknown server option(s): {', '.join(unknown)} (known: host, port, listen and "
            f"wsgipool's options: {', '.join(BY_FIELD)})"
        )
    options = {
        name: convert(name, text, keys[name]) for name, text in names.items() if name in BY_FIELD
    }
    bind = addresses(names)
    if bind:
        if "bind" in options:
            raise ConfigError("bind: give bind, or host/port/listen, not both")
        options["bind"] = bind
    return options


def _refuse_a_key_twice(values: Mapping[str, str]) -> None:
    """``queue-limit`` and ``queue_limit`` are one option: an ini section may hold both
    (as pyproject.toml may, which refuses them too), and neither may be dropped unsaid."""
    seen: dict[str, str] = {}
    for key in values:
        name = key.replace("-", "_")
        if name in seen:
            raise ConfigError(f"{name}: set twice, as {seen[name]} and {key}")
        seen[name] = key


def _address_text(value: Any) -> str:
    """An address as an ini file gives it, from a program calling the runner itself with
    ``port=6543`` or ``listen=[...]`` (as ``serve()`` takes them)."""
    if isinstance(value, (list, tuple)):
        return " ".join(str(item) for item in value)
    return str(value)
