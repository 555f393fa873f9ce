"""The scoreboard: what each worker thread is doing, readable from any thread without a lock.

Each worker thread claims one ``Slot`` and is its only writer. Per request it calls
``begin`` (which returns the request's ``InFlight`` record), ``enter(State.SENDING)`` and
the like as the request moves on, the record's ``received``/``sent`` as body bytes move,
and ``done``. Readers (the stuck-request
watchdog, a signal-triggered dump, a control socket, a metrics scrape) call
``Scoreboard.read`` and get one ``SlotView`` per thread.

Redaction happens when a request begins: the record keeps the path without its query
string and only the headers whose names are on the scoreboard's allowlist; nothing else of
the request (other headers, cookies, the body, the environ) is ever stored.

Why readers take no lock, with the GIL or without it
-----------------------------------------------------
A slot's thread publishes what it does by storing one reference: ``slot.activity =
(state, request)``, a new two-item tuple (or a shared constant one) at every change. A
reader loads that attribute once and works on the tuple it got; the tuple never changes, so
the state and the request in it always belong together, whatever the writer does next.
An ``InFlight`` record's identity fields (method, path, client, times, request id, headers)
are all written in its constructor, before the record is published, and never again. Its
counters (``bytes_in``, ``bytes_out``, ``progress``, ``finished``) are each a single
attribute store by the owner thread: a reader may see a value a moment old, never a torn
one, and since it reached them through the record, never another request's. The slot list
is a tuple replaced whole (copy on write) under a lock that only ``claim``/``release``
take; a reader loads the current tuple and takes no lock at all.

So everything rests on one operation: storing and loading a reference in an attribute
declared in ``__slots__`` (a member descriptor), each a single step:

- With the GIL, one thread's store or load is never interleaved with another's.
- In the free-threaded build (CPython 3.13 and later), ``PyMember_SetOne`` in
  ``Python/structmember.c`` stores the new reference with ``FT_ATOMIC_STORE_PTR_RELEASE``
  (inside the object's per-object critical section), and ``PyMember_GetOne`` loads it with
  ``FT_ATOMIC_LOAD_PTR`` and takes a reference with ``_Py_TryIncrefCompare``, retrying
  under that critical section only when a store raced with it. A reader therefore gets the
  old reference or the new one, whole and alive; and because the store is a release, what
  the writer wrote before it (the tuple's items, the record's fields) is visible to a
  reader that sees the new reference. That is exactly the publication this module needs.
- The per-object critical section is an interpreter-internal mutex held for that one
  store, never across Python code or a blocking call, and released when its thread
  blocks: no application code can hold it, so a reader never waits on the application.

The documented free-threading guarantees (the "Thread Safety Guarantees" page of the
Python documentation) list the built-in containers; for attribute stores the guarantee is
the implementation above, the one that keeps any racing pure-Python program memory-safe
(PEP 703). Nothing here needs more than it: no read-modify-write is shared (``+=`` on a
counter is done by its owner only), and no reader assumes two loads agree.

The write cost per request is a few hundred nanoseconds: one record (one object), three
small tuples, and plain attribute stores (``tools/scoreboard_cost.py`` measures it).
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Iterable, Sequence
from time import monotonic
from typing import NamedTuple


class State(enum.Enum):
    """What a worker thread is doing."""

    IDLE = "idle"  # waiting for work from the queue
    READING = "reading"  # took a connection; reading or parsing a request head
    # Has a parsed request that has not reached the application yet. The pool's threads
    # take connections, not requests, off the task queue (the queue wait is measured
    # separately), so they go from READING to APP; a front end that hands parsed requests
    # to threads would show them here.
    QUEUED = "queued"
    APP = "app"  # inside the application's call
    SENDING = "sending"  # sending the response (iterating the application's result)


class Timings(NamedTuple):
    """Where a request's time went, in seconds (see ``InFlight.timings``)."""

    read: float  # from the first bytes of its head to the head complete
    queue: float  # from the head complete to a worker thread taking it
    app: float  # from the worker taking it to the response head sent (time to first byte)
    send: float  # from the response head sent to its last byte
    total: float  # from the head complete to the last byte: queue + app + send


class InFlight:
    """One request on a slot: what was asked, by whom, since when, and how it moves.

    The fields set by the constructor are never written again. ``bytes_in``,
    ``bytes_out``, ``progress`` (monotonic time of the last body bytes read or sent; the
    start until then), ``head_sent`` (monotonic time the response head went out; 0 before)
    and ``finished`` (monotonic time ``done`` was called; 0 before) are written by the
    slot's thread only. ``number`` is the slot's request sequence: a reader tells a new
    request on the same thread from the one it saw before by it.

    The times, all monotonic: ``head_started`` (the first bytes of the head arrived; the
    same as ``started`` when it came whole), ``started`` (the head was complete),
    ``started + queue_wait`` (a worker thread took it), ``head_sent``, ``finished``.
    """

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "client",
        "finished",
        "head_sent",
        "head_started",
        "headers",
        "method",
        "number",
        "path",
        "progress",
        "queue_wait",
        "request_id",
        "started",
        "started_wall",
    )

    def __init__(
        self,
        number: int,
        method: str,
        path: str,
        client: object,
        queue_wait: float,
        request_id: str | None,
        headers: tuple[tuple[str, str], ...],
        started: float,
        started_wall: float,
        head_started: float = 0.0,
    ) -> None:
        self.number = number
        self.method = method
        self.path = path
        self.client = client
        self.queue_wait = queue_wait
        self.request_id = request_id
        self.headers = headers
        self.started = started
        self.started_wall = started_wall
        self.head_started = head_started if 0 < head_started < started else started
        self.bytes_in = 0
        self.bytes_out = 0
        self.progress = started
        self.head_sent = 0.0
        self.finished = 0.0

    def received(self, nbytes: int) -> None:
        """``nbytes`` of the request body were read (the slot's thread only)."""
        self.bytes_in += nbytes
        self.progress = monotonic()

    def sent(self, nbytes: int) -> None:
        """``nbytes`` of the response were sent (the slot's thread only)."""
        self.bytes_out += nbytes
        self.progress = monotonic()

    def timings(self, now: float | None = None) -> Timings:
        """Where its time went; before it finished, up to ``now`` (default: the clock).
        A part not reached yet counts 0 (``app`` runs on until the head is sent)."""
        end = self.finished or (monotonic() if now is None else now)
        taken = self.started + self.queue_wait
        head_sent = self.head_sent
        app = (head_sent or end) - taken
        send = end - head_sent if head_sent else 0.0
        return Timings(
            self.started - self.head_started,
            self.queue_wait,
            max(0.0, app),
            max(0.0, send),
            max(0.0, end - self.started),
        )

    @property
    def request_line(self) -> str:
        """Method and path, with any control character escaped (safe for a log line)."""
        return printable(f"{self.method} {self.path}")

    def __repr__(self) -> str:
        return f"<InFlight #{self.number} {self.request_line}>"


Activity = tuple[State, InFlight | None]

# The activities without a request, shared: publishing them allocates nothing.
IDLE: Activity = (State.IDLE, None)
READING: Activity = (State.READING, None)


class SlotView(NamedTuple):
    """What a reader saw of one slot: one load of its activity, then of the counters."""

    thread_name: str
    ident: int
    state: State
    request: InFlight | None
    bytes_in: int
    bytes_out: int
    last_progress: float  # monotonic; 0.0 without a request


class Slot:
    """One worker thread's entry: written by that thread only (see the module docstring)."""

    __slots__ = ("_allowlist", "activity", "ident", "requests", "thread_name")

    def __init__(self, allowlist: frozenset[str]) -> None:
        thread = threading.current_thread()
        self.ident = threading.get_ident()
        self.thread_name = thread.name
        self._allowlist = allowlist
        self.requests = 0
        self.activity: Activity = IDLE

    def reading(self) -> None:
        """The thread took a connection and reads a request head."""
        self.activity = READING

    def begin(
        self,
        method: str,
        path: str,
        client: object,
        *,
        queue_wait: float = 0.0,
        request_id: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        state: State = State.APP,
        started: float | None = None,
        started_wall: float | None = None,
        head_started: float = 0.0,
    ) -> InFlight:
        """Publish a new request in ``state`` and return its record.

        ``path`` is cut at ``?``: a query string is never stored. Of ``headers`` (lower-case
        names, as the parser gives them) only the allowlisted ones are kept. ``started`` and
        ``started_wall`` default to now (monotonic and wall clock): pass the times the
        caller already took to spare two clock reads; ``head_started`` is when the
        head's first bytes arrived (0: it came whole, at ``started``).
        """
        if "?" in path:
            path = path.partition("?")[0]
        kept: tuple[tuple[str, str], ...] = ()
        if self._allowlist:
            allowlist = self._allowlist
            # The parser's own (name, value) tuples, kept as they are: immutable.
            kept = tuple([header for header in headers if header[0] in allowlist])
        self.requests = number = self.requests + 1
        request = InFlight(
            number,
            method,
            path,
            client,
            queue_wait,
            request_id,
            kept,
            monotonic() if started is None else started,
            time.time() if started_wall is None else started_wall,
            head_started,
        )
        self.activity = (state, request)
        return request

    def sending(self, now: float) -> None:
        """The current request's response head went out at ``now`` (monotonic)."""
        request = self.activity[1]
        if request is not None:
            request.head_sent = now
        self.activity = (State.SENDING, request)

    def enter(self, state: State) -> None:
        """The current request moves to ``state`` (``State.APP``, ``State.SENDING``)."""
        self.activity = (state, self.activity[1])

    def done(self, now: float | None = None) -> None:
        """The current request is over (``now``: its monotonic end time); the thread is idle."""
        request = self.activity[1]
        if request is not None:
            request.finished = monotonic() if now is None else now
        self.activity = IDLE

    def view(self) -> SlotView:
        """A consistent view of this slot (any thread)."""
        state, request = self.activity
        if request is None:
            return SlotView(self.thread_name, self.ident, state, None, 0, 0, 0.0)
        return SlotView(
            self.thread_name,
            self.ident,
            state,
            request,
            request.bytes_in,
            request.bytes_out,
            request.progress,
        )


class Scoreboard:
    """One slot per worker thread of this process.

    ``header_allowlist`` names the request headers a dump may show (case-insensitive);
    empty by default, which keeps every header out of the scoreboard.
    """

    def __init__(self, header_allowlist: Iterable[str] = ()) -> None:
        self.header_allowlist = frozenset(name.strip().lower() for name in header_allowlist)
        self._slots: tuple[Slot, ...] = ()
        # Taken by claim/release and requests_begun, never across other code: read()
        # takes no lock at all.
        self._registry = threading.Lock()
        # Requests begun on slots since released (their threads left the pool).
        self.released_requests = 0

    def claim(self) -> Slot:
        """A slot for the calling thread, which becomes its only writer: call it on the
        worker thread itself (the slot records its ident and name)."""
        slot = Slot(self.header_allowlist)
        with self._registry:
            self._slots = (*self._slots, slot)
        return slot

    def release(self, slot: Slot) -> None:
        """Drop ``slot`` (its thread is leaving the pool)."""
        with self._registry:
            self._slots = tuple(other for other in self._slots if other is not slot)
            self.released_requests += slot.requests

    @property
    def slots(self) -> tuple[Slot, ...]:
        return self._slots

    def read(self) -> list[SlotView]:
        """A view of every slot, without taking a lock."""
        return [slot.view() for slot in self._slots]

    def requests_begun(self) -> int:
        """Requests begun on every slot, released ones included (a moment old at worst)."""
        with self._registry:  # the slots and the released count, from the same moment
            return self.released_requests + sum(slot.requests for slot in self._slots)


def in_flight(views: Sequence[SlotView]) -> list[SlotView]:
    """The views that hold a request, oldest request first."""
    busy = [view for view in views if view.request is not None]
    busy.sort(key=_started)
    return busy


def _started(view: SlotView) -> float:
    assert view.request is not None
    return view.request.started


def format_client(client: object) -> str:
    """``host:port`` for an address tuple (``[v6]:port``), the text itself, or ``-``."""
    if isinstance(client, tuple) and len(client) >= 2:
        host, port = client[0], client[1]
        host = f"[{host}]" if ":" in str(host) else host
        return printable(f"{host}:{port}")
    if client:
        return printable(str(client))
    return "-"


_CONTROL = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F)}


def printable(text: str) -> str:
    """``text`` with control characters escaped, so it cannot break or forge a log line."""
    return text.translate(_CONTROL)
