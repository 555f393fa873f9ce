"""The bounded task queue between the listener and the workers, and whom it wakes.

Under the GIL only one thread runs Python at a time, so every extra runnable worker adds
GIL hand-offs, not throughput: measured on hello world (50 connections, 1 core), one
awake worker serves about twice the requests/s of sixteen that are all woken. So the
queue wakes a sleeping worker only when it is needed:

- on ``put``, when no worker is awake (nobody would take the item soon);
- from the listener's ``wake_stalled``, when items wait and no worker has taken one for
  ``STALL_DELAY``: every awake worker is then blocked (in a slow app, a database call,
  a slow client), so one more sleeper wakes, and another each ``STALL_DELAY`` while the
  stall lasts (32 workers in 32 ms). Waking one per stall rather than one per waiting
  item keeps a CPU-bound pool with many connections from waking all its threads. Time
  the listener itself spent holding the GIL over a batch of ready connections is no
  stall: the workers could not have taken anything then.

Workers that find work do not sleep, so a pool under steady blocking load (an app that
waits 10 ms) stays awake at the size the load needs. But a worker descheduled by the OS
for a millisecond, or a burst of new connections, looks like a stall too, and under steady
CPU-bound load such a spurious wake would then stay for good (measured on hello world,
1000 connections: four awake workers served 21k req/s, one 37k). So every ``LOAD_CHECK``
the queue looks at the user CPU time the process used: from 0.4 cores (``GIL_BOUND_CPU``)
until it drops below 0.2 (``GIL_FREE_CPU``), the awake workers are taken to run
Python one at a time rather than wait on I/O. The pool is then *GIL-bound*, and one awake
worker beyond the first *retires*: it goes back to sleep at its next ``get``, though work
waits. A worker that a stall wakes in a GIL-bound pool is also on trial: unless the take
rate over the next ``TRIAL`` beats the last ``LOAD_CHECK``'s by a fifth, it goes back to
sleep then, not up to a tenth of a second later (each such tenth cost hello world at 1000
connections half its throughput). A pool blocked in I/O uses little CPU and keeps its
size. Idle workers sleep on a lock of their own, most recently idle first, so the same
few threads stay hot.

Without a GIL (free-threaded CPython) more awake workers do mean more parallelism, so
there every ``put`` wakes a sleeper, as a plain queue would, and no worker retires.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Generic, TypeVar

try:
    import resource
except ImportError:  # Not on Windows.
    resource = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")

# How long queued work may wait with no worker taking any before more workers are woken.
# Short enough to be invisible next to a blocking call, long enough that a busy worker
# taking a request every few tens of microseconds never looks stalled.
STALL_DELAY = 0.001
# How often the queue checks whether the pool is GIL-bound (and then retires a worker).
LOAD_CHECK = 0.1
# User CPU time, in cores, from which the pool counts as GIL-bound, and below which it no
# longer does. User time, because time in the kernel (sending a large body, say) runs
# without the GIL; busy hello world spends about 40% of its CPU time in system calls, a
# blocking app (10 ms sleeps) and one sending 1 MiB bodies read 0.08 and 0.14 cores. The
# margin between the two, because the kernel samples the split between user and system
# time at its clock tick: over one LOAD_CHECK a steady hello world reads anywhere from 0.3
# to 0.8 cores, and with a single threshold at 0.5 the pool flipped in and out of
# GIL-bound every few tenths of a second, losing 20% of its throughput each time.
GIL_BOUND_CPU = 0.4
GIL_FREE_CPU = 0.2
# How long a worker woken by a stall in a GIL-bound pool has to raise the take rate, and
# by how much (over the rate at the last LOAD_CHECK) to stay awake.
TRIAL = 0.01
TRIAL_GAIN = 1.2
# The take rate behind ``backlog`` is measured over windows at least this long.
RATE_WINDOW = 0.002

GIL_ENABLED: bool = getattr(sys, "_is_gil_enabled", lambda: True)()


def user_cpu_time() -> float:
    """Seconds of CPU time the process spent running in user mode (all threads)."""
    if resource is None:
        return os.times().user  # Clock ticks (10 ms), where getrusage is missing.
    return resource.getrusage(resource.RUSAGE_SELF).ru_utime  # Microseconds.


class TaskQueue(Generic[T]):
    """A FIFO of at most ``limit`` items, shared by one producer and many workers.

    ``cpu_clock`` is the process's user CPU time in seconds; tests pass their own.
    """

    def __init__(self, limit: int, cpu_clock: Callable[[], float] = user_cpu_time) -> None:
        self._limit = limit
        self._items: deque[tuple[T, float]] = deque()
        self._lock = threading.Lock()
        # Locks of sleeping workers, each held: releasing one wakes its worker.
        self._sleepers: list[threading.Lock] = []
        self._awake = 0
        self._last_take = time.monotonic()
        self._closed = False
        # The load check: whether the pool is GIL-bound, from the CPU used since the last.
        self._cpu_clock = cpu_clock
        self._cpu_mark = 0.0
        self._cpu_mark_at = 0.0
        # Whether the load is being measured: only while work is queued, from when it was.
        self._load_window_open = False
        self._gil_bound = False
        # Takes at the last load check, and the rate of takes over that LOAD_CHECK.
        self._load_taken = 0
        self._load_rate = 0.0
        # A worker woken by a stall in a GIL-bound pool is on trial for TRIAL from then
        # (0.0: none), and the takes so far when it began.
        self._trial_from = 0.0
        self._trial_taken = 0
        # Set by the load check: the next worker to ask for work sleeps instead.
        self._retire = False
        # Takes so far, and the take rate over the last RATE_WINDOW (see backlog).
        self._taken = 0
        self._taken_mark = 0
        self._rate_since = self._last_take
        self._take_rate = 0.0

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def put(self, item: T) -> bool:
        """Queue ``item``; False (and nothing queued) when the queue is full."""
        with self._lock:
            if len(self._items) >= self._limit:
                return False
            now = time.monotonic()
            if not self._items:
                # Waiting starts now: a worker cannot be late for work that was not there.
                self._last_take = now
            self._items.append((item, now))
            if self._sleepers and (self._awake == 0 or not GIL_ENABLED):
                self._wake_one()
        return True

    def get(self, wake_lock: threading.Lock) -> tuple[T, float] | None:
        """Take the oldest item and when it was queued, sleeping while there is none (or
        while this worker is the one retired).

        ``wake_lock`` is the calling worker's own lock (made once per worker). Returns
        None once the queue is closed and empty.
        """
        while True:
            with self._lock:
                if self._retire and self._awake > 1 and not self._closed:
                    self._retire = False
                elif self._items:
                    self._last_take = time.monotonic()
                    self._taken += 1
                    return self._items.popleft()
                elif self._closed:
                    return None
                wake_lock.acquire()  # Held while asleep; a waker releases it.
                self._sleepers.append(wake_lock)
                self._awake -= 1
            wake_lock.acquire()
            wake_lock.release()

    def register_worker(self) -> None:
        """Count a new worker as awake (it will call ``get`` soon)."""
        with self._lock:
            self._awake += 1

    def wake_stalled(self, now: float, producer_busy: float = 0.0) -> float | None:
        """Wake a sleeper if queued work has waited ``STALL_DELAY`` with nobody taking any;
        every ``LOAD_CHECK``, retire an awake worker if the pool is GIL-bound; at the end of
        a ``TRIAL``, retire the worker on trial if it did not raise the take rate.

        Called by the listener, which says how long it was ``producer_busy`` (holding the
        GIL over a batch of ready connections) since its last call. Returns when to call
        again (None: the queue is empty).
        """
        with self._lock:
            if not self._items:
                self._load_window_open = False
                self._trial_from = 0.0  # Nothing to measure a woken worker by.
                return None
            if not self._load_window_open:
                # Work again after none: measure the load from now, not over the idle time.
                self._open_load_window(now)
            elif now >= self._cpu_mark_at + LOAD_CHECK:
                self._check_load(now)
            if self._trial_from and now >= self._trial_from + TRIAL:
                self._end_trial(now)
            self._last_take = min(now, self._last_take + producer_busy)
            due = self._last_take + STALL_DELAY
            if now < due:
                return due
            if self._sleepers:
                self._wake_one()
                if self._gil_bound and not self._trial_from:
                    self._start_trial(now)
            self._retire = False
            self._last_take = now
            return now + STALL_DELAY

    def backlog(self, now: float) -> float:
        """About how many seconds of work the queue holds for a GIL-bound pool, at the rate
        its workers took work lately; 0.0 when the pool is not GIL-bound."""
        with self._lock:
            elapsed = now - self._rate_since
            if elapsed >= RATE_WINDOW:
                self._take_rate = (self._taken - self._taken_mark) / elapsed
                self._taken_mark = self._taken
                self._rate_since = now
            if not (self._gil_bound and self._take_rate):
                return 0.0
            return len(self._items) / self._take_rate

    def close(self) -> None:
        """Wake every worker; ``get`` returns None once the queue is empty."""
        with self._lock:
            self._closed = True
            while self._sleepers:
                self._wake_one()

    def _open_load_window(self, now: float) -> None:
        # The queue lock is held.
        self._cpu_mark, self._cpu_mark_at = self._cpu_clock(), now
        self._load_taken = self._taken
        self._load_window_open = True

    def _start_trial(self, now: float) -> None:
        # The queue lock is held.
        self._trial_from = now
        self._trial_taken = self._taken

    def _end_trial(self, now: float) -> None:
        # The queue lock is held. A woken worker that did not raise the take rate goes back
        # to sleep now, not at the next load check.
        rate = (self._taken - self._trial_taken) / max(now - self._trial_from, 1e-9)
        if self._gil_bound and self._awake > 1 and rate < TRIAL_GAIN * self._load_rate:
            self._retire = True
        self._trial_from = 0.0

    def _check_load(self, now: float) -> None:
        # The queue lock is held.
        cpu = self._cpu_clock()
        elapsed = max(now - self._cpu_mark_at, 1e-9)
        cores = (cpu - self._cpu_mark) / elapsed
        self._load_rate = (self._taken - self._load_taken) / elapsed
        self._load_taken = self._taken
        self._cpu_mark, self._cpu_mark_at = cpu, now
        threshold = GIL_FREE_CPU if self._gil_bound else GIL_BOUND_CPU
        self._gil_bound = GIL_ENABLED and cores >= threshold
        self._retire = self._gil_bound and self._awake > 1

    def _wake_one(self) -> None:
        # The queue lock is held.
        self._sleepers.pop().release()
        self._awake += 1
