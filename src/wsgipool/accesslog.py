"""The access log: one line per request, in gunicorn's format vocabulary.

Off by default. When on, lines go through the ``wsgipool.access`` logger, so any
``logging`` handler or a ``--log-config`` file can route them. Atoms are computed only
when the format uses them.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Mapping
from typing import Any

# Apache's combined log format.
COMBINED = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'

access_logger = logging.getLogger("wsgipool.access")

_VARIABLE_ATOM = re.compile(r"\{([^}]*)\}([ieo])")

# What an atom's value may not write as is: control characters (C0, DEL, and C1, which
# PATH_INFO's latin-1 decoding turns bytes 0x80-0x9f into; U+0085 and the Unicode line
# separators end a line for some readers), so that no request can forge or split a line;
# and '"' and backslash, so that a value cannot close a quoted field and every escape
# reads one way. Apache escapes the same (control characters as \xhh, then \" and \\).
_UNSAFE_IN_LOG = re.compile(r'[\x00-\x1f\x7f-\x9f"\\\u2028\u2029]')


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    if char in '"\\':
        return "\\" + char
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_log_value(value: str) -> str:
    """``value`` with control characters, '"' and '\\' escaped, fit for one log line."""
    if _UNSAFE_IN_LOG.search(value) is None:  # The common case: one scan, no copy.
        return value
    return _UNSAFE_IN_LOG.sub(_escape_char, value)


class Atoms(Mapping[str, str]):
    """The values ``%(x)s`` can name, computed on first use."""

    def __init__(
        self,
        environ: dict[str, Any],
        status: str,
        response_headers: list[tuple[str, str]],
        sent: int,
        duration: float,
        queue_wait: float,
    ) -> None:
        self._environ = environ
        self._status = status
        self._headers = response_headers
        self._sent = sent
        self._duration = duration
        self._queue_wait = queue_wait

    def __getitem__(self, key: str) -> str:
        # Every value is escaped here, once: the request decides most of them.
        variable = _VARIABLE_ATOM.fullmatch(key)
        if variable is not None:
            return escape_log_value(self._variable(variable.group(1), variable.group(2)))
        compute = getattr(self, "_atom_" + key, None)
        if compute is None:
            return "-"
        value: str = compute()
        return escape_log_value(value)

    def __iter__(self) -> Any:
        return iter(())

    def __len__(self) -> int:
        return 0

    def _variable(self, name: str, kind: str) -> str:
        if kind == "i":
            key = "HTTP_" + name.upper().replace("-", "_")
            if key in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                key = key[5:]
            return str(self._environ.get(key, "-"))
        if kind == "o":
            lowered = name.lower()
            for header, value in self._headers:
                if header.lower() == lowered:
                    return value
            return "-"
        return str(self._environ.get(name, "-"))

    def _atom_h(self) -> str:
        return str(self._environ.get("REMOTE_ADDR") or "-")

    def _atom_l(self) -> str:
        return "-"

    def _atom_u(self) -> str:
        return str(self._environ.get("REMOTE_USER") or "-")

    def _atom_t(self) -> str:
        return time.strftime("[%d/%b/%Y:%H:%M:%S %z]")

    def _atom_r(self) -> str:
        environ = self._environ
        return f"{environ['REQUEST_METHOD']} {environ['RAW_URI']} {environ['SERVER_PROTOCOL']}"

    def _atom_m(self) -> str:
        return str(self._environ["REQUEST_METHOD"])

    def _atom_U(self) -> str:
        return str(self._environ["PATH_INFO"])

    def _atom_q(self) -> str:
        return str(self._environ["QUERY_STRING"])

    def _atom_H(self) -> str:
        return str(self._environ["SERVER_PROTOCOL"])

    def _atom_s(self) -> str:
        return self._status.split(" ", 1)[0]

    def _atom_B(self) -> str:
        return str(self._sent)

    def _atom_b(self) -> str:
        return str(self._sent) if self._sent else "-"

    def _atom_f(self) -> str:
        return str(self._environ.get("HTTP_REFERER", "-"))

    def _atom_a(self) -> str:
        return str(self._environ.get("HTTP_USER_AGENT", "-"))

    def _atom_T(self) -> str:
        return str(int(self._duration))

    def _atom_D(self) -> str:
        return str(int(self._duration * 1_000_000))

    def _atom_M(self) -> str:
        return str(int(self._duration * 1000))

    def _atom_L(self) -> str:
        return f"{self._duration:.6f}"

    def _atom_p(self) -> str:
        return f"<{os.getpid()}>"

    def _atom_w(self) -> str:
        """wsgipool's own: milliseconds the request waited in the queue for a worker."""
        return f"{self._queue_wait * 1000:.3f}"


def check_format(access_format: str) -> None:
    """Raise ``ValueError`` when the format cannot be applied."""
    sample = Atoms(
        {
            "REQUEST_METHOD": "GET",
            "RAW_URI": "/",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "PATH_INFO": "/",
            "QUERY_STRING": "",
        },
        "200 OK",
        [],
        0,
        0.0,
        0.0,
    )
    try:
        access_format % sample
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"invalid access log format {access_format!r}: {exc}") from None


def open_access_log(target: str) -> logging.Handler:
    """Send ``wsgipool.access`` lines to ``target`` (a file path, or "-" for stdout);
    return the handler, for ``close_access_log``."""
    handler: logging.Handler
    if target == "-":
        handler = logging.StreamHandler(sys.stdout)
    else:
        handler = logging.FileHandler(target, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    access_logger.addHandler(handler)
    access_logger.setLevel(logging.INFO)
    # Access lines are not errors: keep them out of the error log's handlers.
    access_logger.propagate = False
    return handler


def close_access_log(handler: logging.Handler) -> None:
    access_logger.removeHandler(handler)
    handler.close()


class AccessLog:
    """Formats and emits one line per request through ``wsgipool.access``."""

    def __init__(self, access_format: str) -> None:
        check_format(access_format)
        self._format = access_format

    def log(self, atoms: Atoms) -> None:
        if not access_logger.isEnabledFor(logging.INFO):
            return
        try:
            access_logger.info(self._format % atoms)
        except Exception:
            logging.getLogger("wsgipool.error").exception("could not write the access log")
