"""The control socket (``--control-socket PATH``): ``wsgipool ctl`` asks a running server.

A Unix socket, mode 0600 (only the server's user gets in), off by default. The protocol is
one JSON line in (``{"command": "requests", "stacks": true}``), one JSON document out,
then the server closes the connection. Every answer has ``ok`` and either ``error`` or
``processes``: one entry per server process (``pid``, ``worker``: the worker index or
None, and what that process answered, or ``error``).

Nothing here runs application code or waits on a worker thread: a process answers from
its scoreboard (read without locks), its gauges and thread stacks (``dumps.py``, redacted
as the SIGUSR2 dump). A ``ControlEndpoint`` is an ``endpoints.Endpoint``:
every exchange from one selector, never blocking, on a thread of its own in a server
process or from the worker-process supervisor's ``select`` loop.

Under ``--workers`` the supervisor listens on PATH and each worker process on a private
socket beside it (``worker_socket``: PATH.worker-N). The supervisor passes a command on
to every worker process at once and gives them ``FANOUT_TIMEOUT``; a worker process
that has not answered by then is reported as such. Their answers are a ``Gathering``
the endpoint drives from its own selector, so the supervisor's loop never waits on them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .accesslog import reopen_log_files
from .config import COUNT_BOUNDS, BindAddress, ConfigError
from .dumps import format_in_flight, thread_frames, thread_hex, thread_stack
from .endpoints import Endpoint, Exchange
from .metrics import Gauges, Snapshot
from .scoreboard import Scoreboard, format_client, in_flight
from .sockets import BindError, bind_socket

log = logging.getLogger("wsgipool.error")

# The commands a process answers (``workers`` is the supervisor's, or answered as one).
COMMANDS = ("stats", "requests", "threads", "workers", "drain", "reopen-logs")
SOCKET_MODE = 0o600
# How long the supervisor waits for its worker processes' answers.
FANOUT_TIMEOUT = 2.0
# A whole exchange (request line in, answer out) gets this long, then it is closed.
EXCHANGE_TIMEOUT = 10.0
MAX_EXCHANGES = 16
MAX_REQUEST = 4096
RECV_SIZE = 65536
NO_ANSWER = "no answer in time"

Request = dict[str, Any]
Answer = dict[str, Any]


# The longest path a Unix socket can be bound at (sun_path, less its final NUL).
MAX_SOCKET_PATH = 107 if sys.platform.startswith("linux") else 103


def worker_socket(path: str, index: int) -> str:
    """The private control socket of worker process ``index`` under ``--workers``."""
    return f"{path}.worker-{index}"


def check_worker_sockets(path: str) -> None:
    """``ConfigError`` when the worker processes' sockets beside ``path`` could not be
    bound for their length: found now, not as every worker process fails to start."""
    longest = worker_socket(os.path.abspath(path), 9999)
    if len(os.fsencode(longest)) > MAX_SOCKET_PATH:
        raise ConfigError(
            f"control_socket: {path} is too long for the worker processes' sockets beside it "
            f"({path}.worker-N): keep it under {MAX_SOCKET_PATH - len('.worker-9999')} bytes"
        )


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def check_request(request: object) -> str | None:
    """Why ``request`` is not a control request, or None."""
    if not isinstance(request, dict):
        return "a control request is a JSON object"
    command = request.get("command")
    if command not in COMMANDS:
        return f"unknown command {command!r}: try {', '.join(COMMANDS)}"
    count = request.get("count")
    if count is not None:
        low, high = COUNT_BOUNDS["threads"]
        if command != "threads":
            return "a count goes with threads only"
        if type(count) is not int or not low <= count <= (high or count):
            return f"threads: a whole number from {low} to {high}, not {count!r}"
    return None


# --- what one server process answers ---------------------------------------------------------


class ProcessControl:
    """Answers a command for one server process, from its scoreboard and gauges."""

    def __init__(
        self,
        scoreboard: Scoreboard,
        worker_index: int | None,
        gauges: Callable[[], Gauges],
        drain: Callable[[], None],
        draining: Callable[[], bool],
        threads: Callable[[], int],
        resize: Callable[[int], None],
        totals: Callable[[], Snapshot] | None = None,
    ) -> None:
        self._scoreboard = scoreboard
        self._worker_index = worker_index
        self._gauges = gauges
        self._drain = drain
        self._draining = draining
        self._threads = threads
        self._resize = resize
        self._totals = totals
        self._started = time.monotonic()

    def answer(self, request: Request) -> Answer:
        """The whole answer (``ok``, ``processes``: this one), or ``ok`` false and why."""
        problem = check_request(request)
        if problem is not None:
            return {"ok": False, "error": problem}
        command = request["command"]
        part = getattr(self, "_command_" + command.replace("-", "_"))(request)
        answer: Answer = {"ok": True, "processes": [{**self._identity(), **part}]}
        if command == "stats" and self._totals is not None:
            answer["totals"] = totals_of(self._totals())
        return answer

    def _identity(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "worker": self._worker_index}

    def requests_served(self) -> int:
        return self._scoreboard.requests_begun()

    def _command_stats(self, request: Request) -> Answer:
        return {
            "uptime": round(time.monotonic() - self._started, 3),
            "threads": self._threads(),
            "requests": self.requests_served(),
            "draining": self._draining(),
            "gauges": dataclasses.asdict(self._gauges()),
        }

    def _command_workers(self, request: Request) -> Answer:
        return {
            "age": round(time.monotonic() - self._started, 3),
            "requests": self.requests_served(),
            "state": "draining" if self._draining() else "serving",
        }

    def _command_requests(self, request: Request) -> Answer:
        """The in-flight requests, redacted as the SIGUSR2 dump (dumps.py): the dump's own
        text, and the same fields one by one."""
        stacks = bool(request.get("stacks"))
        views = self._scoreboard.read()
        frames = thread_frames() if stacks else {}
        now = time.monotonic()
        items = []
        for view in in_flight(views):
            record = view.request
            assert record is not None
            stack = thread_stack(view.ident, frames) if stacks else None
            item: dict[str, Any] = {
                "request_line": record.request_line,
                "client": format_client(record.client),
                "state": view.state.value,
                "thread": view.thread_name,
                "thread_id": thread_hex(view.ident),
                "elapsed": round(now - record.started, 3),
                "queue_wait": round(record.queue_wait, 3),
                "bytes_in": view.bytes_in,
                "bytes_out": view.bytes_out,
                "request_id": record.request_id,
                "headers": [list(header) for header in record.headers],
            }
            if stacks:
                item["stack"] = stack
            items.append(item)
        frames = {}  # a frame holds its locals alive: let go now
        text = format_in_flight(
            self._scoreboard, process_label="wsgipool", worker_index=self._worker_index
        )
        if not stacks:
            text = "".join(
                line
                for line in text.splitlines(keepends=True)
                if not line.startswith(" ") or line.startswith("    header ")
            )
        return {"requests": items, "text": text}

    def _command_threads(self, request: Request) -> Answer:
        """Every thread of the process with its stack (file, line, function, source line);
        with a ``count``, resize the pool to that many worker threads instead."""
        count = request.get("count")
        if count is not None:
            before = self._threads()
            try:
                self._resize(count)
            except RuntimeError as exc:  # "can't start new thread"
                return {"error": f"cannot start more threads ({exc}); {self._threads()} now"}
            if count != before:
                log.info("control socket: %d worker threads (were %d)", count, before)
            return {"resized": [before, self._threads()]}
        frames = thread_frames()
        threads = [
            {
                "name": thread.name,
                "thread_id": thread_hex(thread.ident or 0),
                "stack": thread_stack(thread.ident or 0, frames),
            }
            for thread in threading.enumerate()
        ]
        return {"threads": threads}

    def _command_drain(self, request: Request) -> Answer:
        if not self._draining():
            log.info("control socket: draining: no longer accepting connections")
        self._drain()
        return {"draining": True}

    def _command_reopen_logs(self, request: Request) -> Answer:
        return {"reopened": reopen_log_files()}


def totals_of(snapshot: Snapshot) -> dict[str, Any]:
    """What ``stats`` adds from a metrics store: requests finished, refused for a full
    queue, and the queue wait histogram's counts per bucket (metrics.BUCKET_BOUNDS, +Inf
    last), so a client can take quantiles over any interval."""
    return {
        "requests": snapshot.requests,
        "rejected": snapshot.rejected,
        "queue_wait_counts": list(snapshot.queue_wait.counts),
    }


# --- asking control sockets ------------------------------------------------------------------


class Gathering:
    """``request`` sent to every control socket of ``paths`` at once, and their answers
    as they come: each one's answer, or ``{"ok": False, "error": ...}`` (cannot connect;
    ``NO_ANSWER`` once ``timeout`` has passed). ``combine`` makes the answers one.

    Driven by a selector: ``start`` registers a socket per path that connected (data:
    this gathering), ``read`` takes what one has sent, ``done`` says when every one has
    answered or the time is up, and ``close`` lets go of the rest. ``ask_all`` drives one
    to its end; a ``ControlEndpoint`` drives one from its own selector, never waiting.
    """

    def __init__(
        self,
        paths: Sequence[str],
        request: Request,
        timeout: float,
        combine: Callable[[list[Answer]], Answer] = lambda answers: answers[0],
    ) -> None:
        self.paths = list(paths)
        self.request = request
        self.combine = combine
        self.answers: list[Answer] = [{"ok": False, "error": NO_ANSWER} for _ in paths]
        self.deadline = time.monotonic() + timeout
        self._peers: dict[socket.socket, tuple[int, bytearray]] = {}

    def start(self, selector: selectors.BaseSelector) -> None:
        line = encode(self.request)
        for number, path in enumerate(self.paths):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                sock.connect(path)
                sock.send(line)  # a short line: it fits the socket's buffer whole
            except OSError as exc:
                sock.close()
                self.answers[number] = {"ok": False, "error": _reason(path, exc)}
                continue
            self._peers[sock] = (number, bytearray())
            selector.register(sock, selectors.EVENT_READ, self)

    def read(self, sock: socket.socket, selector: selectors.BaseSelector) -> None:
        """Take what ``sock`` sent; at its end, its answer is complete."""
        number, inbox = self._peers[sock]
        try:
            data = sock.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            inbox += data
            return
        self._drop(sock, selector)
        self.answers[number] = _decode(inbox, self.paths[number])

    def done(self, now: float) -> bool:
        return not self._peers or now >= self.deadline

    def close(self, selector: selectors.BaseSelector) -> None:
        """Stop waiting: the peers that have not answered stay ``NO_ANSWER``."""
        for sock in list(self._peers):
            self._drop(sock, selector)

    def close_after_fork(self) -> None:
        """In a forked child: close the sockets without touching the selector."""
        for sock in self._peers:
            sock.close()
        self._peers.clear()

    def result(self) -> Answer:
        return self.combine(self.answers)

    def _drop(self, sock: socket.socket, selector: selectors.BaseSelector) -> None:
        del self._peers[sock]
        with contextlib.suppress(KeyError, ValueError, OSError):
            selector.unregister(sock)
        sock.close()


def ask_all(paths: Sequence[str], request: Request, timeout: float) -> list[Answer]:
    """Send ``request`` to every control socket of ``paths`` at once and wait, at most
    ``timeout`` in all, for their answers (see ``Gathering``)."""
    gathering = Gathering(paths, request, timeout)
    with selectors.DefaultSelector() as selector:
        gathering.start(selector)
        try:
            while not gathering.done(time.monotonic()):
                remaining = max(0.0, gathering.deadline - time.monotonic())
                for key, _events in selector.select(remaining):
                    assert isinstance(key.fileobj, socket.socket)  # what start registered
                    gathering.read(key.fileobj, selector)
        finally:
            gathering.close(selector)
    return gathering.answers


def _reason(path: str, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"no control socket at {path}"
    if isinstance(exc, ConnectionRefusedError):
        return f"nothing listens on {path} (connection refused)"
    if isinstance(exc, BlockingIOError):
        return f"{path} is too busy to accept"
    return f"cannot connect to {path}: {exc.strerror or exc}"


def _decode(data: bytes | bytearray, path: str) -> Answer:
    try:
        answer = json.loads(data)
    except ValueError:
        if data.lstrip()[:1] in (b"{", b""):
            return {"ok": False, "error": "the answer was cut short"}
        # An HTTP server's 400, say: --bind's or --metrics-bind's Unix socket.
        return {
            "ok": False,
            "error": f"{path} answered, but not as a control socket: is it --control-socket's?",
        }
    if not isinstance(answer, dict):
        return {"ok": False, "error": "the answer is not a JSON object"}
    return answer


# --- serving a control socket ----------------------------------------------------------------


class _Exchange(Exchange):
    """One connection to the control socket: its request line, then its answer."""

    __slots__ = ("gathering",)

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__(sock, deadline)
        self.gathering: Gathering | None = None  # the answers it waits for


class ControlEndpoint(Endpoint):
    """Serves control requests on ``sock`` (a listening Unix socket) with ``answer``: an
    answer, or a ``Gathering`` of other control sockets' answers, which the endpoint
    drives from its own selector and sends back once done."""

    exchange_type = _Exchange

    def __init__(
        self,
        sock: socket.socket,
        answer: Callable[[Request], Answer | Gathering],
        unix_path: str = "",
    ) -> None:
        super().__init__(
            sock,
            name="control",
            max_exchanges=MAX_EXCHANGES,
            timeout=EXCHANGE_TIMEOUT,
            recv_size=MAX_REQUEST,
            unix_path=unix_path,
        )
        self._answer = answer

    @classmethod
    def bind(cls, path: str, answer: Callable[[Request], Answer | Gathering]) -> ControlEndpoint:
        """Listen on ``path``, mode 0600 (``BindError``, naming the option, if it cannot)."""
        try:
            sock = bind_socket(BindAddress("unix", path=path), MAX_EXCHANGES, SOCKET_MODE)
        except BindError as exc:
            raise BindError(f"control_socket: {exc}") from None
        return cls(sock, answer, path)

    def _other_ready(self, key: selectors.SelectorKey) -> None:
        # A worker process's answer to a gathering (what Gathering.start registered).
        assert isinstance(key.data, Gathering) and isinstance(key.fileobj, socket.socket)
        key.data.read(key.fileobj, self._selector)

    def _deadline(self, exchange: _Exchange) -> float:
        gathering = exchange.gathering
        return min(exchange.deadline, gathering.deadline) if gathering else exchange.deadline

    def _overdue(self, exchange: _Exchange, now: float) -> None:
        gathering = exchange.gathering
        if gathering is not None and gathering.done(now):
            exchange.gathering = None
            gathering.close(self._selector)
            self._reply(exchange, encode(gathering.result()))
        elif exchange.deadline <= now:
            self._finish(exchange)

    def _release(self, exchange: _Exchange) -> None:
        if exchange.gathering is not None:
            exchange.gathering.close(self._selector)
            exchange.gathering = None

    def _release_after_fork(self, exchange: _Exchange) -> None:
        if exchange.gathering is not None:
            exchange.gathering.close_after_fork()

    def _read(self, exchange: _Exchange) -> None:
        if b"\n" not in exchange.inbox:
            if len(exchange.inbox) > MAX_REQUEST:
                self._answer_with(exchange, {"ok": False, "error": "request line too long"})
            return
        try:
            request = json.loads(exchange.inbox.partition(b"\n")[0])
        except ValueError:
            error = "a control request is one JSON line"
            self._answer_with(exchange, {"ok": False, "error": error})
            return
        problem = check_request(request)
        if problem is not None:
            self._answer_with(exchange, {"ok": False, "error": problem})
            return
        try:
            answer = self._answer(request)
            if isinstance(answer, Gathering):
                # Answered once the others have (_overdue): meanwhile this client waits,
                # nobody else does.
                self._selector.unregister(exchange.sock)
                exchange.gathering = answer
                answer.start(self._selector)
                return
        except Exception:
            log.exception("control socket: cannot answer %r", request.get("command"))
            answer = {"ok": False, "error": "internal error (see the error log)"}
        self._answer_with(exchange, answer)

    def _answer_with(self, exchange: _Exchange, answer: Answer) -> None:
        self._reply(exchange, encode(answer))
