"""Metrics that survive worker processes: counters, gauges and histograms in shared memory.

One ``MetricsStore`` is an anonymous shared memory block (``mmap.mmap(-1, size)``, which is
``MAP_SHARED``), made by the process that forks the workers *before* it forks them, so that
every worker writes into the same physical pages and nothing is ever left on disk. It holds
one fixed-size *slot* per live worker process:

- **One writer per slot.** The supervisor ``assign``\\ s a free slot to a worker index
  before forking; the forked process makes its ``Recorder`` on it and is from then on the
  only process that writes it. Within that process each worker thread counts its
  requests in a tally of its own (plain Python under the tally's lock, found through a
  ``threading.local``), added to the slot in batches (``Recorder``) under a lock of the
  ``Recorder``'s own (held for that group of stores, never while anything else runs),
  so nothing leans on the GIL and a request costs half what a seqlock group of its own
  did. (A sub-slot per thread in the shared block would make a slot's size
  grow with the thread count.)
- **A sequence number per slot** (a seqlock): the writer makes it odd before a group of
  stores and even after, so a reader in any process or thread copies the slot, and keeps
  the copy if the number was even and unchanged around it; otherwise it tries again. The
  reader never takes a lock a writer holds. A slot whose writer died in the middle of a
  group (SIGKILL) stays odd: after a bounded number of tries the reader takes it as it is,
  which at worst counts that one batch partly. Every counter only grows, so even such a
  copy never makes a total go backwards.
- **Retiring.** When a worker process has exited (reaped), the supervisor ``retire``\\ s
  its slot: its counters are folded into the *retired* totals the store keeps in the
  supervisor's memory, and the slot is zeroed for a replacement. Totals never go back.

The slot layout (every field one 8-byte word, native byte order, integers as unsigned
``Q`` and sums as ``d``; the block starts with a header of the layout's magic, version and
sizes)::

    word 0      sequence number (odd while the writer is in a group of stores)
    word 1      state: free, assigned (by the supervisor) or live (the writer attached)
    word 2      worker index          word 3   pid (internal; never a label)
    word 4      request rows in use   word 5   requests rejected (queue full)
    word 6      (unused)              word 7   (reserved)
    8..23       gauges (GAUGE_FIELDS), written together by ``Recorder.publish``
    24..        queue-wait histogram: one count per bucket, then the sum
    then        ``rows`` row keys (method, status code, scheme packed in a word)
    then        ``rows + 1`` request-duration histograms (counts per bucket, then the sum);
                the last is the overflow row

A histogram stores one count per bucket, not cumulative counts, and no ``_count``: an
observation is then one increment, and the count is the counts' sum. Rows for a
(method, status code, scheme) are taken in the order they first occur, up to ``rows`` per
process; later combinations are counted in the overflow row, exposed with every label
``_OTHER``. Methods outside ``METHODS`` and status codes outside 100-599 are ``_OTHER`` too
(OpenTelemetry's convention for the method), so no client can grow the table.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import resource
import threading
import time
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, NamedTuple, TypeVar

# Bucket upper bounds, in seconds, of every histogram: Prometheus' defaults extended down
# to 0.5 ms (a hello-world request or an idle queue's wait is well under a millisecond) and
# up to 60 s (the stuck-request threshold's default). The last bucket is +Inf.
BUCKET_BOUNDS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
BUCKETS = len(BUCKET_BOUNDS) + 1  # with +Inf
FIRST_BOUND = BUCKET_BOUNDS[0]

OTHER = "_OTHER"
# The methods of RFC 9110 and PATCH (RFC 5789), as OpenTelemetry's http.request.method.
METHODS: tuple[str, ...] = (
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "CONNECT",
    "OPTIONS",
    "TRACE",
    "PATCH",
    OTHER,
)
SCHEMES: tuple[str, ...] = ("http", "https", OTHER)
# Why a worker process was replaced (wsgipool_worker_restarts_total's reason); anything
# else counts as "other".
RESTART_REASONS: tuple[str, ...] = (
    "crash",  # exited with an error status
    "signal",  # killed by a signal it did not ask for
    "max_requests",  # retired itself after --max-requests
    "reload",  # a rolling restart (SIGHUP)
    "stuck",  # recycled for a stuck request (--stuck-recycle)
    "boot_failure",  # could not load the application
    "other",
)
THREAD_STATES: tuple[str, ...] = ("idle", "reading", "app", "sending")
CONNECTION_STATES: tuple[str, ...] = ("active", "idle")

# Request rows per process before combinations go to the overflow row. A typical site
# uses a few dozen (GET/HEAD/POST times a dozen status codes times one scheme).
DEFAULT_ROWS = 64
MAX_ROWS = 4096

MAGIC = int.from_bytes(b"wsgipool", "little")
LAYOUT_VERSION = 1

# The block's header: magic, layout version, header bytes, slot bytes, slots, rows per
# slot, buckets per histogram; then a spare word, so slots start on a 64-byte line.
HEADER_WORDS = 8

# A slot's fixed words.
_SEQ, _STATE, _WORKER, _PID, _ROWS_USED, _REJECTED = range(6)
_GAUGES = 8
_GAUGE_WORDS = 16
_QUEUE_WAIT = _GAUGES + _GAUGE_WORDS
_ROW_WORDS = BUCKETS + 1  # the counts, then the sum
_KEYS = _QUEUE_WAIT + _ROW_WORDS

_FREE, _ASSIGNED, _LIVE = 0, 1, 2

# A reader's tries at a slot whose writer is in a group of stores: a few at once, then
# sleeping briefly between tries, so that a writer another process descheduled in the
# middle (a loaded machine) gets to finish. A writer holds a group for well under a
# microsecond when it runs, so a slot still mid-write after _READ_PATIENCE seconds has a
# writer that died there (SIGKILL): the copy is then used as it is.
_SPIN_TRIES = 8
_READ_PAUSE = 0.0002
_READ_PATIENCE = 0.1

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE_SIZE = mmap.PAGESIZE


class RequestKey(NamedTuple):
    """The labels of one http_server_request_duration_seconds series."""

    method: str
    status_code: str  # "200", or "_OTHER"
    scheme: str


OVERFLOW_KEY = RequestKey(OTHER, OTHER, OTHER)


@dataclass(frozen=True)
class Histogram:
    """Observations per bucket of ``BUCKET_BOUNDS`` (and +Inf, last), not cumulative."""

    counts: tuple[int, ...] = (0,) * BUCKETS
    sum: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[int]:
        """The counts of observations at or below each bound, +Inf last (== ``count``)."""
        total = 0
        result = []
        for count in self.counts:
            total += count
            result.append(total)
        return result

    def __add__(self, other: Histogram) -> Histogram:
        return Histogram(
            tuple(a + b for a, b in zip(self.counts, other.counts, strict=True)),
            self.sum + other.sum,
        )

    def quantile(self, q: float) -> float | None:
        """An estimate of the ``q``-quantile (0 <= q <= 1), interpolated within its bucket
        as Prometheus' histogram_quantile does; None without observations. Observations
        past the last finite bound give that bound."""
        total = self.count
        if total == 0:
            return None
        rank = q * total
        below = 0
        for index, count in enumerate(self.counts):
            if count and below + count >= rank:
                if index == len(BUCKET_BOUNDS):
                    return BUCKET_BOUNDS[-1]
                lower = BUCKET_BOUNDS[index - 1] if index else 0.0
                upper = BUCKET_BOUNDS[index]
                return lower + (upper - lower) * max(0.0, rank - below) / count
            below += count
        return BUCKET_BOUNDS[-1]  # pragma: no cover - the loop always returns


EMPTY_HISTOGRAM = Histogram()


@dataclass(frozen=True)
class Gauges:
    """What one worker process is doing now, published by it as a whole (``Recorder.publish``)."""

    active_requests: int = 0  # requests between their head and their last byte
    queue_length: int = 0
    queue_limit: int = 0
    stuck_requests: int = 0
    threads_idle: int = 0
    threads_reading: int = 0
    threads_app: int = 0
    threads_sending: int = 0
    connections_active: int = 0
    connections_idle: int = 0
    # How long the oldest request in the queue has waited, in microseconds (0: none
    # waits); /readyz with --ready-max-queue-wait reads it.
    queue_oldest_wait_us: int = 0

    def __add__(self, other: Gauges) -> Gauges:
        return Gauges(*(getattr(self, name) + getattr(other, name) for name in GAUGE_FIELDS))


GAUGE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Gauges))
assert len(GAUGE_FIELDS) <= _GAUGE_WORDS


@dataclass(frozen=True)
class ProcessStats:
    """One process's resources, read from /proc (or, for this process without /proc, from
    ``resource``); a field is None where the system does not tell."""

    resident_memory_bytes: int | None = None
    cpu_seconds: float | None = None
    threads: int | None = None
    open_fds: int | None = None

    def __add__(self, other: ProcessStats) -> ProcessStats:
        return ProcessStats(
            _add_known(self.resident_memory_bytes, other.resident_memory_bytes),
            _add_known(self.cpu_seconds, other.cpu_seconds),
            _add_known(self.threads, other.threads),
            _add_known(self.open_fds, other.open_fds),
        )


N = TypeVar("N", int, float)


def _add_known(a: N | None, b: N | None) -> N | None:
    """A sum over what is known: None only when neither is."""
    return b if a is None else a if b is None else a + b


@dataclass(frozen=True)
class WorkerReading:
    """Everything known about one worker index: the sum over its live processes (two while
    a rolling restart overlaps the old one with its replacement)."""

    processes: int = 0
    gauges: Gauges = field(default_factory=Gauges)
    process: ProcessStats = field(default_factory=ProcessStats)


@dataclass(frozen=True)
class Snapshot:
    """Totals over every process, live and retired, at one moment."""

    request_duration: Mapping[RequestKey, Histogram]
    queue_wait: Histogram
    rejected: int
    busy_seconds: Mapping[int, float]  # by worker index, retired processes included
    restarts: Mapping[str, int]  # every reason of RESTART_REASONS
    workers: Mapping[int, WorkerReading]  # live worker indexes only

    @property
    def requests(self) -> int:
        return sum(histogram.count for histogram in self.request_duration.values())


def read_process_stats(pid: int | None = None) -> ProcessStats:
    """Memory, CPU, threads and open files of process ``pid`` (None: this one), from
    /proc; a process that is gone, or one /proc does not show us, gives what it can."""
    where = f"/proc/{pid if pid is not None else 'self'}"
    stats = ProcessStats()
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open(f"{where}/statm", "rb") as statm:
            stats = replace(stats, resident_memory_bytes=int(statm.read().split()[1]) * _PAGE_SIZE)
        with open(f"{where}/stat", "rb") as stat:
            # The command name, in parentheses, may hold spaces: split after the last ')'.
            after_name = stat.read().rpartition(b")")[2].split()
        # Fields 14 and 15 (utime, stime) and 20 (num_threads), counted from 1 with the
        # pid and the name as the first two.
        cpu = (int(after_name[11]) + int(after_name[12])) / _CLOCK_TICKS
        stats = replace(stats, cpu_seconds=cpu, threads=int(after_name[17]))
        stats = replace(stats, open_fds=len(os.listdir(f"{where}/fd")))
    if pid is None or pid == os.getpid():
        stats = _fill_from_resource(stats)
    return stats


def _fill_from_resource(stats: ProcessStats) -> ProcessStats:
    """This process's CPU time and thread count without /proc (macOS, the BSDs)."""
    if stats.cpu_seconds is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        stats = replace(stats, cpu_seconds=usage.ru_utime + usage.ru_stime)
    if stats.threads is None:
        stats = replace(stats, threads=threading.active_count())
    return stats


class _Layout:
    """Word offsets within a slot, for ``rows`` request rows."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.row_data = _KEYS + rows
        words = self.row_data + (rows + 1) * _ROW_WORDS
        self.slot_words = -(-words // 8) * 8  # whole 64-byte lines: no slot shares one
        self.overflow_row = self.row_data + rows * _ROW_WORDS

    def row(self, index: int) -> int:
        return self.row_data + index * _ROW_WORDS


def _pack_key(method: str, status: int, scheme: str) -> int:
    return (METHODS.index(method) << 24) | (SCHEMES.index(scheme) << 16) | status


def _unpack_key(word: int) -> RequestKey:
    """The labels of a packed key; a word no writer packs (a copy taken from a writer that
    died mid-write) reads as _OTHER rather than failing the scrape."""
    method, scheme, status = (word >> 24) & 0xFF, (word >> 16) & 0xFF, word & 0xFFFF
    return RequestKey(
        METHODS[method] if method < len(METHODS) else OTHER,
        str(status) if 100 <= status <= 599 else OTHER,
        SCHEMES[scheme] if scheme < len(SCHEMES) else OTHER,
    )


def _canonical(method: str, status: int, scheme: str) -> tuple[str, int, str]:
    """The bounded form of a request's labels: unknown methods and schemes are _OTHER, a
    status code outside 100-599 is 0 (exposed as _OTHER)."""
    return (
        method if method in METHODS else OTHER,
        status if 100 <= status <= 599 else 0,
        scheme if scheme in SCHEMES else OTHER,
    )


@dataclass
class _SlotReading:
    worker: int
    pid: int
    rows: dict[RequestKey, Histogram]
    queue_wait: Histogram
    rejected: int
    busy: float
    gauges: Gauges


def _histogram(counts: memoryview[int], sums: memoryview[float], start: int) -> Histogram:
    return Histogram(tuple(counts[start : start + BUCKETS]), sums[start + BUCKETS])


@dataclass
class _Retired:
    """The counters of every process that has exited, kept by the supervisor."""

    rows: dict[RequestKey, Histogram] = field(default_factory=dict)
    queue_wait: Histogram = EMPTY_HISTOGRAM
    rejected: int = 0
    busy: dict[int, float] = field(default_factory=dict)

    def fold(self, reading: _SlotReading) -> None:
        for key, histogram in reading.rows.items():
            self.rows[key] = self.rows.get(key, EMPTY_HISTOGRAM) + histogram
        self.queue_wait += reading.queue_wait
        self.rejected += reading.rejected
        self.busy[reading.worker] = self.busy.get(reading.worker, 0.0) + reading.busy

    def copy(self) -> _Retired:
        return _Retired(dict(self.rows), self.queue_wait, self.rejected, dict(self.busy))


class MetricsStore:
    """The shared block of ``slots`` slots. Make it before forking; see the module's doc.

    Single process: ``store = MetricsStore(); recorder = store.recorder(store.assign(0))``.
    Under a supervisor: ``assign`` a slot before each fork, make the ``recorder`` in the
    child, ``retire`` the slot once the child has been reaped; ``snapshot`` any time.
    ``assign``, ``retire``, ``worker_restart`` and ``snapshot`` share a lock of the store,
    in the supervisor only (no writer takes it): a child never touches it, so forking while
    another thread holds it is safe.
    """

    def __init__(self, slots: int = 1, rows: int = DEFAULT_ROWS) -> None:
        if not 1 <= slots <= 65536:
            raise ValueError(f"slots must be 1-65536, not {slots}")
        if not 1 <= rows <= MAX_ROWS:
            raise ValueError(f"rows must be 1-{MAX_ROWS}, not {rows}")
        self.layout = _Layout(rows)
        self.slots = slots
        self.size = (HEADER_WORDS + slots * self.layout.slot_words) * 8
        self._mmap = mmap.mmap(-1, self.size)  # anonymous and MAP_SHARED: forks share it
        self._counts = memoryview(self._mmap).cast("Q")
        self._sums = memoryview(self._mmap).cast("d")
        slot_bytes = self.layout.slot_words * 8
        header = (MAGIC, LAYOUT_VERSION, HEADER_WORDS * 8, slot_bytes, slots, rows, BUCKETS)
        self._counts[: len(header)] = array("Q", header)
        self._lock = threading.Lock()
        self._retired = _Retired()
        self._restarts = dict.fromkeys(RESTART_REASONS, 0)

    # --- the supervisor's side -------------------------------------------------------------

    def assign(self, worker: int) -> int | None:
        """Take a free slot for a process of worker index ``worker`` (before forking it);
        None when every slot is taken (that process then records nothing)."""
        if not 0 <= worker < 1 << 32:
            raise ValueError(f"worker index out of range: {worker}")
        with self._lock:
            for slot in range(self.slots):
                base = self._base(slot)
                if self._counts[base + _STATE] == _FREE:
                    self._zero(slot)
                    self._counts[base + _WORKER] = worker
                    self._counts[base + _STATE] = _ASSIGNED
                    return slot
        return None

    def retire(self, slot: int) -> None:
        """Fold the counters of ``slot``, whose process has exited, into the retired totals
        and free it. Call it only once its writer is gone (reaped); a free slot holds
        nothing, so retiring it again changes nothing."""
        with self._lock:
            self._retired.fold(self._read_slot(slot)[0])
            self._zero(slot)

    def worker_restart(self, reason: str) -> None:
        """Count a replaced worker process (``reason`` from ``RESTART_REASONS``)."""
        with self._lock:
            key = reason if reason in self._restarts else "other"
            self._restarts[key] += 1

    # --- the worker's side -----------------------------------------------------------------

    def recorder(self, slot: int | None) -> Recorder:
        """The writer of ``slot``, in the process that is to own it (after the fork); a
        recorder that records nothing for None (no free slot)."""
        if slot is None:
            return NullRecorder()
        base = self._base(slot)
        if self._counts[base + _STATE] != _ASSIGNED:
            # A second recorder would be a second writer, with a lock of its own.
            raise ValueError(f"slot {slot} is not assigned, or already has its recorder")
        self._counts[base + _PID] = os.getpid()
        self._counts[base + _STATE] = _LIVE
        return Recorder(self._counts, self._sums, base, self.layout)

    # --- reading ---------------------------------------------------------------------------

    def snapshot(self, process_stats: bool = True) -> Snapshot:
        """Every total now; with ``process_stats``, each live process's resources too."""
        with self._lock:
            readings = [
                self._read_slot(slot)[0]
                for slot in range(self.slots)
                if self._counts[self._base(slot) + _STATE] != _FREE
            ]
            retired = self._retired.copy()
            restarts = dict(self._restarts)
        return _merge(readings, retired, restarts, process_stats)

    def close(self) -> None:
        """Unmap the block (every ``Recorder`` on it stops working)."""
        self._counts.release()
        self._sums.release()
        self._mmap.close()

    def _base(self, slot: int) -> int:
        if not 0 <= slot < self.slots:
            raise IndexError(f"no slot {slot}")
        return HEADER_WORDS + slot * self.layout.slot_words

    def _zero(self, slot: int) -> None:
        start = self._base(slot) * 8
        self._mmap[start : start + self.layout.slot_words * 8] = bytes(self.layout.slot_words * 8)

    def _read_slot(self, slot: int) -> tuple[_SlotReading, bool]:
        """A consistent copy of ``slot`` (seqlock), and whether it is one: False when the
        writer stayed in the middle of a group of stores through every try."""
        base = self._base(slot)
        start, end = base * 8, (base + self.layout.slot_words) * 8
        raw = b""
        consistent = False
        give_up = 0.0
        attempt = 0
        while True:
            before = self._counts[base + _SEQ]
            if not before & 1:
                raw = self._mmap[start:end]
                if self._counts[base + _SEQ] == before:
                    consistent = True
                    break
            attempt += 1
            if attempt > _SPIN_TRIES:
                now = time.monotonic()
                if not give_up:
                    give_up = now + _READ_PATIENCE
                elif now > give_up:
                    break
                time.sleep(_READ_PAUSE)
        if not consistent:
            raw = self._mmap[start:end]
        return self._decode(raw), consistent

    def _decode(self, raw: bytes) -> _SlotReading:
        counts = memoryview(raw).cast("Q")
        sums = memoryview(raw).cast("d")
        layout = self.layout
        rows: dict[RequestKey, Histogram] = {}
        used = min(counts[_ROWS_USED], layout.rows)
        for index in range(used):
            key = _unpack_key(counts[_KEYS + index])
            rows[key] = rows.get(key, EMPTY_HISTOGRAM) + _histogram(counts, sums, layout.row(index))
        overflow = _histogram(counts, sums, layout.overflow_row)
        if overflow.count:
            rows[OVERFLOW_KEY] = rows.get(OVERFLOW_KEY, EMPTY_HISTOGRAM) + overflow
        queue_wait = _histogram(counts, sums, _QUEUE_WAIT)
        # A thread is held from taking a request to its last byte: its duration less its
        # queue wait. Both sums only grow, so their difference does too.
        busy = max(0.0, sum(histogram.sum for histogram in rows.values()) - queue_wait.sum)
        return _SlotReading(
            worker=counts[_WORKER],
            pid=counts[_PID],
            rows=rows,
            queue_wait=queue_wait,
            rejected=counts[_REJECTED],
            busy=busy,
            gauges=Gauges(*counts[_GAUGES : _GAUGES + len(GAUGE_FIELDS)]),
        )


def _merge(
    readings: Iterable[_SlotReading],
    retired: _Retired,
    restarts: dict[str, int],
    process_stats: bool,
) -> Snapshot:
    rows = retired.rows
    queue_wait = retired.queue_wait
    rejected = retired.rejected
    busy = retired.busy
    workers: dict[int, WorkerReading] = {}
    for reading in readings:
        for key, histogram in reading.rows.items():
            rows[key] = rows.get(key, EMPTY_HISTOGRAM) + histogram
        queue_wait += reading.queue_wait
        rejected += reading.rejected
        busy[reading.worker] = busy.get(reading.worker, 0.0) + reading.busy
        stats = read_process_stats(reading.pid) if process_stats and reading.pid else None
        known = workers.get(reading.worker, WorkerReading())
        workers[reading.worker] = WorkerReading(
            known.processes + 1,
            known.gauges + reading.gauges,
            known.process + stats if stats is not None else known.process,
        )
    return Snapshot(
        request_duration=dict(sorted(rows.items())),
        queue_wait=queue_wait,
        rejected=rejected,
        busy_seconds=dict(sorted(busy.items())),
        restarts=restarts,
        workers=dict(sorted(workers.items())),
    )


# A worker thread adds its requests to its process's slot every FLUSH_EVERY requests, and
# whenever it is about to wait for work (``Recorder.flush``); the process adds every
# thread's at each scrape or sample and at stop (``Recorder.flush_all``). One sequence
# group per batch instead of per request halves what recording costs a request.
FLUSH_EVERY = 32


class _Tally:
    """One worker thread's requests not yet added to the slot: plain Python counts that
    its thread writes (found through a ``threading.local``), under a lock of its own so
    that another thread may add them to the slot too (``flush_all``)."""

    __slots__ = ("by_labels", "lock", "pending", "queue_wait", "rows")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # The canonical labels (as _canonical gives them) -> counts per bucket, then the
        # sum; and the same lists by a request's own (method, status text, scheme) when
        # those are canonical already, so neither can grow past METHODS x 501 x SCHEMES.
        self.by_labels: dict[tuple[str, int, str], list[Any]] = {}
        self.rows: dict[tuple[str, str, str], list[Any]] = {}
        self.queue_wait: list[Any] = _empty_tally_row()
        self.pending = 0

    def row(self, key: tuple[str, str, str]) -> list[Any]:
        """The counts of a request's labels not met yet."""
        method, status, scheme = key
        code = int(status) if status.isascii() and status.isdigit() else 0
        canonical = _canonical(method, code, scheme)
        row = self.by_labels.get(canonical)
        if row is None:
            row = self.by_labels[canonical] = _empty_tally_row()
        if canonical == (method, code, scheme) and status == str(code):
            self.rows[key] = row
        return row


def _empty_tally_row() -> list[Any]:
    return [0] * BUCKETS + [0.0]


class Recorder:
    """Records into one slot, from the worker threads of the process that owns it.

    Each thread counts its requests in a tally of its own (its own lock, no shared
    memory), added to the slot as one group of the seqlock, under the recorder's lock:
    by the thread every ``FLUSH_EVERY`` requests and before it waits for work (``flush``),
    and for every thread at each scrape or gauge sample and at stop (``flush_all``). So a
    scrape counts every finished request; a worker process killed by SIGKILL loses what
    its threads finished since its last sample (a second at most).
    """

    __slots__ = ("_base", "_counts", "_layout", "_local", "_lock", "_rows", "_sums", "_tallies")

    def __init__(
        self, counts: memoryview[int], sums: memoryview[float], base: int, layout: _Layout
    ) -> None:
        self._counts = counts
        self._sums = sums
        self._base = base
        self._layout = layout
        # Canonical labels -> the word where their row starts in the slot (under _lock).
        self._rows: dict[tuple[str, int, str], int] = {}
        # Made here, in the owning process, never inherited through a fork.
        self._lock = threading.Lock()
        self._local = threading.local()
        self._tallies: list[_Tally] = []  # every thread's (under _lock)

    def request_done(
        self, method: str, status: str, scheme: str, duration: float, queue_wait: float
    ) -> None:
        """One finished request: its method, the status line it was answered with ("" if
        none), its URL scheme, its duration (head received to last byte sent) and the time
        it waited in the queue, in seconds. It runs once per request, so it is kept lean:
        most requests take under the first bucket's bound, which needs no search."""
        try:
            tally: _Tally = self._local.tally
        except AttributeError:
            tally = self._new_tally()
        duration_bucket = 0 if duration <= FIRST_BOUND else bisect_left(BUCKET_BOUNDS, duration)
        wait_bucket = 0 if queue_wait <= FIRST_BOUND else bisect_left(BUCKET_BOUNDS, queue_wait)
        key = (method, status[:3], scheme)
        lock = tally.lock
        lock.acquire()  # not `with`: its two method calls cost as much as a store here
        try:
            row = tally.rows.get(key)
            if row is None:
                row = tally.row(key)
            row[duration_bucket] += 1
            row[BUCKETS] += duration
            queue = tally.queue_wait
            queue[wait_bucket] += 1
            queue[BUCKETS] += queue_wait
            tally.pending += 1
            full = tally.pending >= FLUSH_EVERY
        finally:
            lock.release()
        if full:
            self._add(tally)

    def flush(self) -> None:
        """Add the calling thread's tally to the slot (a worker thread does so before it
        waits for work, and when it leaves the pool)."""
        tally: _Tally | None = getattr(self._local, "tally", None)
        if tally is not None:
            self._add(tally)

    def leave(self) -> None:
        """The calling thread records no more (it leaves the pool): add its tally and
        forget it."""
        tally: _Tally | None = getattr(self._local, "tally", None)
        if tally is None:
            return
        self._add(tally)
        with self._lock:
            self._tallies.remove(tally)
        del self._local.tally

    def flush_all(self) -> None:
        """Add every thread's tally to the slot (before a scrape reads it, at each gauge
        sample, and once the pool has stopped: a thread left inside the application
        keeps nothing back)."""
        with self._lock:
            tallies = list(self._tallies)
        for tally in tallies:
            self._add(tally)

    def _new_tally(self) -> _Tally:
        tally = self._local.tally = _Tally()
        with self._lock:
            self._tallies.append(tally)
        return tally

    def _add(self, tally: _Tally) -> None:
        # Lock order: the tally's, then the recorder's (flush_all takes them the same way).
        with tally.lock:
            if tally.pending:
                self._add_locked(tally)

    def _add_locked(self, tally: _Tally) -> None:
        counts = self._counts
        sums = self._sums
        seq = self._base  # + _SEQ, which is 0
        with self._lock:
            # Rows first: a new row is a group of stores of its own.
            rows = [
                (self._row(labels), row)
                for labels, row in tally.by_labels.items()
                if any(row[:BUCKETS])
            ]
            rows.append((seq + _QUEUE_WAIT, tally.queue_wait))
            counts[seq] += 1
            for start, row in rows:
                for bucket in range(BUCKETS):
                    if row[bucket]:
                        counts[start + bucket] += row[bucket]
                        row[bucket] = 0
                sums[start + BUCKETS] += row[BUCKETS]
                row[BUCKETS] = 0.0
            counts[seq] += 1
        tally.pending = 0

    def rejected(self) -> None:
        """One request refused because the queue was full."""
        # One word: no group, so no sequence number (a copy of one aligned word is never
        # torn).
        self._lock.acquire()
        try:
            self._counts[self._base + _REJECTED] += 1
        finally:
            self._lock.release()

    def publish(self, gauges: Gauges) -> None:
        """Replace the process's gauges (from a sampler, now and then)."""
        values = array("Q", [getattr(gauges, name) for name in GAUGE_FIELDS])
        start = self._base + _GAUGES
        with self._lock:
            self._counts[self._base + _SEQ] += 1
            self._counts[start : start + len(values)] = values
            self._counts[self._base + _SEQ] += 1

    def _row(self, labels: tuple[str, int, str]) -> int:
        """The word where the row of canonical ``labels`` starts (under the lock): taken
        the first time, the overflow row once every row is taken."""
        row = self._rows.get(labels)
        if row is None:
            row = self._rows[labels] = self._new_row(*labels)
        return row

    def _new_row(self, method: str, status: int, scheme: str) -> int:
        """Take the next free row for a canonical combination, or the overflow row."""
        base = self._base
        used = self._counts[base + _ROWS_USED]
        if used >= self._layout.rows:
            return base + self._layout.overflow_row
        counts = self._counts
        counts[base + _SEQ] += 1
        counts[base + _KEYS + used] = _pack_key(method, status, scheme)
        counts[base + _ROWS_USED] = used + 1
        counts[base + _SEQ] += 1
        return base + self._layout.row(used)


class NullRecorder(Recorder):
    """The recorder of a process that got no slot: records nothing."""

    __slots__ = ()

    def __init__(self) -> None:
        pass

    def request_done(
        self, method: str, status: str, scheme: str, duration: float, queue_wait: float
    ) -> None:
        pass

    def flush(self) -> None:
        pass

    def flush_all(self) -> None:
        pass

    def leave(self) -> None:
        pass

    def rejected(self) -> None:
        pass

    def publish(self, gauges: Gauges) -> None:
        pass
