"""The access log: one line per request, in gunicorn's format vocabulary.

Off by default. When on, each ``Server`` owns an ``AccessLog``: its format and its own
handler, to a file or stdout. Nothing process-wide is changed for it, so two servers in one
process each write their own lines to their own target. Every line is also handed to the
handlers configured on the ``wsgipool.access`` logger itself, so a ``--log-config`` file
can route them. Atoms are computed only when the format uses them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .scoreboard import InFlight, Timings

# Apache's combined log format.
COMBINED = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'

# flask run's request lines (werkzeug's development server): `flask serve`'s default.
WERKZEUG = '%(h)s - - [%(werkzeug_t)s] "%(r)s" %(s)s -'

# Lines also go to the handlers configured on this logger (see AccessLog.log). No server
# changes it: its level, propagation and handlers are the user's.
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
        request: InFlight | None = None,
    ) -> None:
        self._environ = environ
        self._status = status
        self._headers = response_headers
        self._sent = sent
        self._duration = duration
        self._queue_wait = queue_wait
        self._request = request  # the scoreboard's record: its timings
        self._timings: Timings | None = None

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

    def _atom_werkzeug_t(self) -> str:
        """wsgipool's own: the time as werkzeug's server writes it, 03/Dec/2026 10:00:00."""
        return time.strftime("%d/%b/%Y %H:%M:%S")

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

    # wsgipool's own, spelled out (gunicorn has none of them); see docs/configuration.md.

    def _atom_queue_ms(self) -> str:
        return self._atom_w()

    def _atom_read_ms(self) -> str:
        return self._milliseconds("read")

    def _atom_app_ms(self) -> str:
        return self._milliseconds("app")

    def _atom_send_ms(self) -> str:
        return self._milliseconds("send")

    def _atom_request_id(self) -> str:
        return str(self._environ.get("wsgipool.request_id") or "-")

    def _atom_worker(self) -> str:
        return str(self._environ.get("wsgipool.worker_index", "-"))

    def _atom_thread(self) -> str:
        return str(self._environ.get("wsgipool.thread_name") or "-")

    def _milliseconds(self, part: str) -> str:
        if self._request is None:
            return "-"
        if self._timings is None:
            self._timings = self._request.timings()
        seconds: float = getattr(self._timings, part)
        return f"{seconds * 1000:.3f}"


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


# Every access log on stdout takes this one lock to write: stdout is one stream, and the
# lines of two servers must not interleave on it.
_STDOUT_LOCK = threading.RLock()

# The handlers of the access logs open in this process, for ``reopen_log_files``
# (SIGUSR1): they are on no logger, where it looks for the others.
_open_handlers: set[logging.Handler] = set()
_open_handlers_lock = threading.Lock()


def open_access_log_handlers() -> list[logging.Handler]:
    """The handlers of the access logs open now (a copy)."""
    with _open_handlers_lock:
        return list(_open_handlers)


def _open_handler(target: str) -> logging.Handler:
    """A handler writing bare lines to ``target``: a file path, or "-" for stdout."""
    handler: logging.Handler
    if target == "-":
        handler = logging.StreamHandler(sys.stdout)
        handler.lock = _STDOUT_LOCK
    else:
        handler = logging.FileHandler(target, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def _forward(record: logging.LogRecord) -> None:
    """Hand a line to the handlers configured on ``wsgipool.access`` itself (by a
    ``--log-config``, say), unless that logger is disabled, filters the record out or has a
    level above INFO. Never to its ancestors' handlers: access lines are not errors."""
    logger = access_logger
    if not logger.handlers or logger.disabled or logger.level > logging.INFO:
        return
    if not logger.filter(record):
        return
    # A snapshot: another thread may add or remove a handler meanwhile (logging's own
    # callHandlers reads the list without a lock too).
    for handler in tuple(logger.handlers):
        if record.levelno >= handler.level:
            handler.handle(record)


class AccessLog:
    """One server's access log: its format and its own handler, to ``target`` (a file
    path, or "-" for stdout). Opens the file at once (``OSError`` if it cannot); ``close``
    when the server stops."""

    def __init__(self, access_format: str, target: str) -> None:
        check_format(access_format)
        self._format = access_format
        self.target = target
        self._handler = _open_handler(target)
        self._closed = False
        with _open_handlers_lock:
            _open_handlers.add(self._handler)

    def close(self) -> None:
        handler = self._handler
        with _open_handlers_lock:
            _open_handlers.discard(handler)
        # Under the handler's lock, so no line is being written: a FileHandler would reopen
        # its file for a line that came after close().
        handler.acquire()
        try:
            self._closed = True
        finally:
            handler.release()
        handler.close()

    def log(self, atoms: Atoms) -> None:
        try:
            record = access_logger.makeRecord(
                access_logger.name, logging.INFO, __file__, 0, self._format % atoms, (), None
            )
            handler = self._handler
            handler.acquire()
            try:
                if self._closed:
                    return  # A worker that outlived a forced stop: its line goes nowhere.
                handler.handle(record)
            finally:
                handler.release()
            _forward(record)
        except Exception:
            logging.getLogger("wsgipool.error").exception("could not write the access log")


def reopen_log_files() -> int:
    """Close and reopen every ``logging.FileHandler`` on a logger and every server's access
    log file, so a rotated file is let go and a new one created at the configured path.
    Returns how many handlers were reopened. Call from a thread, not from inside a signal
    handler."""
    loggers: list[logging.Logger] = [logging.getLogger()]
    loggers += [
        item
        for item in logging.Logger.manager.loggerDict.values()
        if isinstance(item, logging.Logger)
    ]
    handlers = [handler for logger in loggers for handler in list(logger.handlers)]
    # A server's access log handler is on no logger.
    handlers += open_access_log_handlers()
    seen: set[int] = set()
    count = 0
    for handler in handlers:
        if not isinstance(handler, logging.FileHandler) or id(handler) in seen:
            continue
        seen.add(id(handler))
        handler.acquire()
        try:
            if handler.stream is None:  # delay=True and nothing written yet
                continue
            with contextlib.suppress(OSError):
                handler.stream.close()
            handler.stream = handler._open()
            count += 1
        except OSError:
            logging.getLogger("wsgipool.error").exception("cannot reopen %s", handler.baseFilename)
        finally:
            handler.release()
    return count
