"""Scenario 6b: a large file served through ``environ['wsgi.file_wrapper']``.

The runner creates the file in a temporary directory and passes its path in
``WSGIPOOL_BENCH_FILE``. A server without ``wsgi.file_wrapper`` gets a plain
block iterator instead (the WSGI spec's fallback), so it still works, just
without any sendfile() shortcut.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO

PATH = os.environ["WSGIPOOL_BENCH_FILE"]
SIZE = os.path.getsize(PATH)
BLOCK = 1 << 16
HEADERS = [("Content-Type", "application/octet-stream"), ("Content-Length", str(SIZE))]


class _FileIterator:
    """Fallback for servers that do not offer ``wsgi.file_wrapper``."""

    def __init__(self, f: BinaryIO, block: int) -> None:
        self._f = f
        self._block = block

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self._f.read(self._block):
            yield chunk

    def close(self) -> None:
        self._f.close()


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    f = open(PATH, "rb")  # noqa: SIM115 - closed by the server via close()
    start_response("200 OK", list(HEADERS))
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is not None:
        return wrapper(f, BLOCK)  # type: ignore[no-any-return]
    return _FileIterator(f, BLOCK)
