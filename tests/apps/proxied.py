"""The application behind nginx and HAProxy in tests/test_integration_proxies.py.

It runs in the test process (``Server``) and, copied to ``app.py``, in ``wsgipool --workers``
processes. Routes:

- ``/info``: JSON of what the application sees (address, scheme, host, pid, the TLS keys
  ``HTTPS`` and ``SSL_*`` but the certificate's PEM) and of the connection's real peer,
  which forwarded headers do not change;
- ``/upload``: reads the whole body in pieces and returns its length and SHA-256 (and the
  pid);
- ``/download?size=N``: streams ``payload(N)``, which never exists whole in memory;
- ``/healthz``: 200 ``ok``, the readiness probe of docs/deployment.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable, Iterator
from typing import Any

CHUNK = 1 << 20
_BLOCK = random.Random(3333).randbytes(CHUNK)


def payload(size: int) -> Iterator[bytes]:
    """``size`` bytes in chunks of 1 MiB, each one different (its index in front)."""
    index = 0
    while size > 0:
        chunk = (index.to_bytes(8, "big") + _BLOCK[8:])[:size]
        yield chunk
        size -= len(chunk)
        index += 1


def _peer(environ: dict[str, Any]) -> str:
    """The connection's peer: before forwarded headers changed REMOTE_ADDR/REMOTE_PORT."""
    before = environ.get("wsgipool.forwarded_from") or {}
    addr = before.get("REMOTE_ADDR") or environ["REMOTE_ADDR"]
    port = before.get("REMOTE_PORT") or environ["REMOTE_PORT"]
    return f"{addr}:{port}"


def _json(start_response: Callable[..., Any], data: dict[str, Any]) -> list[bytes]:
    body = json.dumps(data).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
    path = environ["PATH_INFO"]
    if path == "/upload":
        digest = hashlib.sha256()
        length = 0
        stream = environ["wsgi.input"]
        while data := stream.read(256 * 1024):
            digest.update(data)
            length += len(data)
        return _json(
            start_response,
            {"length": length, "sha256": digest.hexdigest(), "pid": os.getpid()},
        )
    if path == "/download":
        size = int(environ["QUERY_STRING"].partition("size=")[2])
        start_response(
            "200 OK",
            [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))],
        )
        return payload(size)
    if path == "/healthz":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]
    return _json(
        start_response,
        {
            "remote_addr": environ["REMOTE_ADDR"],
            "remote_port": environ["REMOTE_PORT"],
            "scheme": environ["wsgi.url_scheme"],
            "host": environ.get("HTTP_HOST", ""),
            "x_forwarded_for": environ.get("HTTP_X_FORWARDED_FOR"),
            "peer": _peer(environ),
            "pid": os.getpid(),
            "tls": {
                key: value
                for key, value in environ.items()
                if (key == "HTTPS" or key.startswith("SSL_")) and key != "SSL_CLIENT_CERT"
            },
        },
    )
