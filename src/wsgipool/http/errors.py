"""The one exception the sans-IO protocol code raises for bad input."""

from __future__ import annotations


class ProtocolError(Exception):
    """The peer broke HTTP/1.1; answer with ``status`` and close the connection.

    Every parse failure is one of these, so a caller (or a fuzzer) can tell a defined HTTP
    error from a bug: anything else escaping the parser is a bug.
    """

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
