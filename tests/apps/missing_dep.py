"""Importing this module fails: it needs a package that is not installed."""

import wsgipool_tests_no_such_package  # noqa: F401


def app(environ, start_response):
    start_response("200 OK", [])
    return [b""]
