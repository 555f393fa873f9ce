"""WSGI applications and wrappers the tests serve."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def hello_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    body = b"Hello, World!"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [body]


def validated(app: Any) -> Any:
    """Wrap ``app`` in ``wsgiref.validate.validator`` so every request also checks the server's
    environ and start_response against PEP 3333 (run with warnings as errors)."""
    from wsgiref.validate import validator

    return validator(app)
