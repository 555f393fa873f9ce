"""A well-behaved application module: ``app``, ``application``, a factory, a nested app."""

from __future__ import annotations

import sys
import time
import types

# Set by ``mark()``; lets the loader tests prove that factory arguments are never evaluated.
MARKED: list[str] = []


def _text_app(text: str):
    body = text.encode()

    def wsgi(environ, start_response):
        start_response(
            "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        )
        return [body]

    return wsgi


app = _text_app("hello from goodapp")

# Present so that ``goodapp`` alone proves ``app`` is preferred over ``application``.
application = _text_app("goodapp.application (should not be picked)")


def create_app(greeting="hi", punctuation=""):
    return _text_app(f"{greeting}{punctuation}")


def failing_factory():
    raise LookupError("the factory failed")  # FAILING_FACTORY_LINE


def echo(environ, start_response):
    """Echo where the request was routed, and the body size."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    data = environ["wsgi.input"].read(length) if length else b""
    body = f"{environ['SCRIPT_NAME']}|{environ['PATH_INFO']}|{len(data)}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def crash(environ, start_response):
    raise ZeroDivisionError("crash-marker-1234")


def slow(environ, start_response):
    """Announce on stderr that a request is in flight, then take a moment to finish."""
    sys.stderr.write("slow-request-started\n")
    sys.stderr.flush()
    time.sleep(0.5)
    body = b"slow done"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def mark():
    MARKED.append("called")
    return "marked"


ns = types.SimpleNamespace(app=_text_app("hello from ns.app"), inner=types.SimpleNamespace())
ns.inner.app = _text_app("hello from ns.inner.app")

not_callable = 42
