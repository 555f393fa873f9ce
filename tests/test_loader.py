"""``load_app``: finding the WSGI callable named on the command line, and one-line errors."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wsgipool.config import ConfigError
from wsgipool.loader import AppLoadError, load_app

APPS = Path(__file__).parent / "apps"
APP_MODULES = (
    "goodapp",
    "app_application",
    "app_make",
    "app_factories",
    "noapp",
    "raises_on_import",
    "missing_dep",
    "syntax_error_app",
)


def line_of(path: Path, marker: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if marker in line:
            return number
    raise AssertionError(f"{marker} not in {path}")


def body_of(app: Any, path: str = "/") -> bytes:
    """Call a WSGI app directly and return its body."""
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        statuses.append(status)
        return lambda data: None

    environ = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "wsgi.input": None,
    }
    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close:
            close()
    assert statuses and statuses[0].startswith("200")
    return body


@pytest.fixture(autouse=True)
def apps_importable(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """tests/apps on sys.path; every test imports the app modules afresh."""
    monkeypatch.syspath_prepend(str(APPS))
    for name in APP_MODULES:
        sys.modules.pop(name, None)
    yield
    for name in APP_MODULES:
        sys.modules.pop(name, None)


def load_error(spec: str) -> str:
    """The message of the AppLoadError ``load_app(spec)`` raises; it must be one line."""
    with pytest.raises(AppLoadError) as info:
        load_app(spec)
    message = str(info.value)
    assert message.strip(), "empty error message"
    assert "\n" not in message, f"multi-line error message: {message!r}"
    return message


# --- finding the application ---------------------------------------------------------------


def test_module_colon_attribute() -> None:
    import goodapp

    assert load_app("goodapp:app") is goodapp.app


def test_nested_attribute() -> None:
    assert body_of(load_app("goodapp:ns.app")) == b"hello from ns.app"
    assert body_of(load_app("goodapp:ns.inner.app")) == b"hello from ns.inner.app"


def test_factory_without_arguments() -> None:
    assert body_of(load_app("goodapp:create_app()")) == b"hi"


@pytest.mark.parametrize(
    ("spec", "body"),
    [
        ("goodapp:create_app(greeting='yo')", b"yo"),
        ('goodapp:create_app(greeting="double")', b"double"),
        ("goodapp:create_app('positional')", b"positional"),
        ("goodapp:create_app('a', punctuation='!')", b"a!"),
        ("goodapp:create_app(greeting=1)", b"1"),
        ("goodapp:create_app(greeting=-2.5)", b"-2.5"),
        ("goodapp:create_app(greeting=(1, 2))", b"(1, 2)"),
        ("goodapp:create_app(greeting=None)", b"None"),
        ("goodapp:create_app(greeting={'k': [1, 2]})", b"{'k': [1, 2]}"),
        ("goodapp: create_app(greeting='spaces') ", b"spaces"),
    ],
)
def test_factory_with_literal_arguments(spec: str, body: bytes) -> None:
    assert body_of(load_app(spec)) == body


def test_module_alone_prefers_app_over_application() -> None:
    import goodapp

    assert load_app("goodapp") is goodapp.app


def test_module_alone_finds_application() -> None:
    assert body_of(load_app("app_application")) == b"application"


def test_module_alone_calls_make_app() -> None:
    assert body_of(load_app("app_make")) == b"make_app"


def test_module_alone_prefers_create_app_over_make_app() -> None:
    assert body_of(load_app("app_factories")) == b"create_app"


def test_dotted_module_path() -> None:
    # A package module works too (tests/apps is not a package, but the stdlib is).
    import wsgiref.simple_server

    assert load_app("wsgiref.simple_server:demo_app") is wsgiref.simple_server.demo_app


# --- errors: one line, the reason ------------------------------------------------------------


def test_app_load_error_is_a_config_error() -> None:
    assert issubclass(AppLoadError, ConfigError)


def test_unknown_module() -> None:
    message = load_error("wsgipool_tests_no_such_module:app")
    assert "wsgipool_tests_no_such_module" in message
    assert "no module" in message.lower()


def test_unknown_module_alone() -> None:
    assert "wsgipool_tests_no_such_module" in load_error("wsgipool_tests_no_such_module")


def test_unknown_attribute() -> None:
    message = load_error("goodapp:nope")
    assert "nope" in message and "goodapp" in message


def test_unknown_nested_attribute() -> None:
    message = load_error("goodapp:ns.nope")
    assert "nope" in message and "ns" in message


def test_unknown_factory() -> None:
    assert "no_factory" in load_error("goodapp:no_factory()")


def test_module_without_an_app() -> None:
    message = load_error("noapp")
    assert "noapp" in message
    for name in ("app", "application", "create_app", "make_app"):
        assert name in message


def test_not_callable() -> None:
    message = load_error("goodapp:not_callable")
    assert "int" in message and "callable" in message


def test_import_error_inside_the_app_shows_type_message_and_location() -> None:
    message = load_error("raises_on_import:app")
    assert "RuntimeError" in message
    assert "raised-at-import-marker" in message
    path = APPS / "raises_on_import.py"
    assert f"raises_on_import.py:{line_of(path, 'RAISE_LINE')}" in message


def test_missing_dependency_is_not_reported_as_a_missing_app_module() -> None:
    message = load_error("missing_dep:app")
    assert "ModuleNotFoundError" in message
    assert "wsgipool_tests_no_such_package" in message
    # The module named on the command line exists; what is missing is its dependency.
    assert "no module named 'missing_dep'" not in message.lower()
    assert f"missing_dep.py:{line_of(APPS / 'missing_dep.py', 'import wsgipool_tests')}" in message


def test_missing_dependency_module_alone() -> None:
    assert "wsgipool_tests_no_such_package" in load_error("missing_dep")


def test_syntax_error_in_the_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Written at test time so that linters of the repository never see a broken file.
    (tmp_path / "syntax_error_app.py").write_text(
        textwrap.dedent(
            """\
            def app(environ, start_response):
                start_response("200 OK", [])
                return [b"x"

            other = 1
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    message = load_error("syntax_error_app:app")
    assert "SyntaxError" in message
    # "'[' was never closed", reported at the line that opens it.
    assert "syntax_error_app.py:3" in message


def test_factory_raising_shows_type_message_and_location() -> None:
    message = load_error("goodapp:failing_factory()")
    assert "LookupError" in message
    assert "the factory failed" in message
    assert f"goodapp.py:{line_of(APPS / 'goodapp.py', 'FAILING_FACTORY_LINE')}" in message


def test_factory_called_with_wrong_arguments() -> None:
    message = load_error("goodapp:create_app(nonsense=1)")
    assert "TypeError" in message and "nonsense" in message
    # The location shown is meant to be in the application's code; here there is none, and
    # wsgipool's own loader is not where the user's mistake is.
    assert "wsgipool/loader.py" not in message


@pytest.mark.parametrize(
    "spec",
    [
        "goodapp:create_app(__import__('os'))",
        "goodapp:create_app(greeting=__import__('os').getcwd())",
        "goodapp:create_app(open('/etc/passwd'))",
        "goodapp:create_app(greeting=[x for x in 'ab'])",
        "goodapp:create_app(greeting=1 + 1)",
        "goodapp:create_app(greeting=goodapp)",
        "goodapp:create_app(*['a'])",
        "goodapp:create_app(**{'greeting': 'a'})",
    ],
)
def test_factory_arguments_must_be_literals(spec: str) -> None:
    message = load_error(spec)
    assert "literal" in message or "not supported" in message


def test_factory_arguments_are_never_evaluated() -> None:
    import goodapp

    load_error("goodapp:create_app(greeting=__import__('goodapp').mark())")
    assert goodapp.MARKED == []


@pytest.mark.parametrize(
    "spec",
    [
        # Literals ast.literal_eval accepts syntactically but cannot build (unhashable keys).
        "goodapp:create_app(greeting={[]: 1})",
        "goodapp:create_app(greeting={[1]})",
    ],
)
def test_unbuildable_literal_arguments_are_a_load_error(spec: str) -> None:
    load_error(spec)


@pytest.mark.parametrize(
    "spec",
    [
        "goodapp:app[0]",
        "goodapp:lambda: 1",
        "goodapp:create_app()()",
        "goodapp:'app'",
        "goodapp:app.",
        "goodapp:import os",
        "goodapp:app; app",
    ],
)
def test_expressions_other_than_names_and_calls_are_refused(spec: str) -> None:
    load_error(spec)


@pytest.mark.parametrize("spec", ["", ":app", "goodapp:", "goodapp:  "])
def test_malformed_spec(spec: str) -> None:
    load_error(spec)
