"""Find the WSGI application named on the command line: ``module:attr``, ``module:factory()``.

The part after the colon is parsed with ``ast``: a dotted name, optionally called with
literal arguments. Nothing is ever ``eval``-ed.
"""

from __future__ import annotations

import ast
import importlib
import logging
import os
import sys
import traceback
from types import ModuleType
from typing import Any

from .config import ConfigError

# Looked up in this order when only a module is named, as Flask does.
DEFAULT_NAMES = ("app", "application")
DEFAULT_FACTORIES = ("create_app", "make_app")


log = logging.getLogger("wsgipool.error")

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class AppLoadError(ConfigError):
    """The application could not be found or imported; the message says why, in one line."""


def load_app(spec: str) -> Any:
    """Import and return the WSGI callable ``spec`` names."""
    module_name, colon, expression = spec.partition(":")
    if not module_name or (colon and not expression.strip()):
        raise AppLoadError(f"invalid application {spec!r}: expected MODULE or MODULE:NAME")
    module = _import(module_name)
    app = _find_default(module) if not colon else _evaluate(module, expression.strip(), spec)
    if not callable(app):
        raise AppLoadError(f"{spec!r} is a {type(app).__name__}, not a WSGI callable")
    return app


# How to name a module instead of its file (app.py, ./app, /srv/app.py).
_NOT_A_PATH = (
    "name the module as Python imports it (myapp, or package.module) and, if it is "
    "elsewhere, the directory to import it from with --chdir DIR"
)


def _import(module_name: str) -> ModuleType:
    if "/" in module_name or module_name.startswith("."):
        # importlib's own words would be about relative imports.
        raise AppLoadError(f"{module_name!r} is not a module name: {_NOT_A_PATH}")
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Tell "the module you named does not exist" from "it imports something missing".
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            hint = f": {_NOT_A_PATH}" if module_name.endswith(".py") else ""
            raise AppLoadError(
                f"no module named {module_name!r} (from {sys.path[0] or '.'}){hint}"
            ) from None
        raise AppLoadError(f"error importing {module_name!r}: {_brief(exc)}") from None
    except KeyboardInterrupt:
        raise  # Ctrl-C while importing: the command stops as on any Ctrl-C.
    except BaseException as exc:
        # Also SystemExit or a BaseException subclass raised by the module: an error in
        # the application, reported in one line like any other.
        raise AppLoadError(f"error importing {module_name!r}: {_brief(exc)}") from None


def _brief(exc: BaseException) -> str:
    """One line: the exception, and where in the application's code it was raised. The
    whole traceback is logged at debug level (``--log-level debug``)."""
    log.debug("the application's error, in full:", exc_info=exc)
    frames = traceback.extract_tb(exc.__traceback__)
    where = ""
    for frame in reversed(frames):
        # Point at the application's code, not at the import machinery or wsgipool.
        if "importlib" not in frame.filename and not frame.filename.startswith(_PACKAGE_DIR):
            where = f" ({frame.filename}:{frame.lineno})"
            break
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f" ({exc.filename}:{exc.lineno})"
    message = str(exc).splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}{': ' if message else ''}{message}{where}"


def _find_default(module: ModuleType) -> Any:
    for name in DEFAULT_NAMES:
        if hasattr(module, name):
            return getattr(module, name)
    for name in DEFAULT_FACTORIES:
        factory = getattr(module, name, None)
        if callable(factory):
            return _call(factory, [], {}, f"{module.__name__}:{name}()")
    raise AppLoadError(
        f"module {module.__name__!r} has no 'app' or 'application', and no create_app() or "
        f"make_app() factory; name one as {module.__name__}:NAME"
    )


def _evaluate(module: ModuleType, expression: str, spec: str) -> Any:
    try:
        tree = ast.parse(expression, mode="eval").body
    except SyntaxError:
        raise AppLoadError(f"cannot parse {expression!r} in {spec!r}") from None
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    call = isinstance(tree, ast.Call)
    if isinstance(tree, ast.Call):
        try:
            args = [ast.literal_eval(arg) for arg in tree.args]
            kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in tree.keywords if kw.arg}
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise AppLoadError(
                f"factory arguments in {spec!r} must be literals (strings, numbers, ...)"
            ) from None
        if len(kwargs) != len(tree.keywords):
            raise AppLoadError(f"**kwargs are not supported in {spec!r}")
        tree = tree.func
    names = _dotted_names(tree)
    if names is None:
        raise AppLoadError(f"{expression!r} in {spec!r} is not a name or a call of one")
    target: Any = module
    for depth, name in enumerate(names):
        try:
            target = getattr(target, name)
        except AttributeError:
            owner = ".".join([module.__name__, *names[:depth]])
            raise AppLoadError(f"{owner!r} has no attribute {name!r}") from None
    if call:
        return _call(target, args, kwargs, spec)
    return target


def _dotted_names(node: ast.expr) -> list[str] | None:
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        parent = _dotted_names(node.value)
        return None if parent is None else [*parent, node.attr]
    return None


def _call(factory: Any, args: list[Any], kwargs: dict[str, Any], spec: str) -> Any:
    try:
        return factory(*args, **kwargs)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # As for an import (see _import).
        raise AppLoadError(f"error calling the factory {spec!r}: {_brief(exc)}") from None
