"""The bounded task queue between the listener and the workers, and how many it keeps awake.

Under the GIL only one thread runs Python at a time, so awake workers beyond what the load
needs add GIL hand-offs, not throughput: on hello world one awake worker serves about
twice the requests/s of sixteen that are all woken. But a worker blocked in I/O (a
database, a backend, a slow client) holds no GIL, and an application that waits needs
as many awake workers as requests it is waiting on. So the queue keeps a *target* of
awake workers, from what the workers measure themselves (``Load``):

- Now and then (the first request of each worker, then every ``SAMPLE_EVERY``-th) a
  worker measures a request: the CPU time its thread spent on it (``time.thread_time``),
  and the time it was *blocked*: in the application's own code (the call, each step of
  its iterable, ``close()``), wall time less the thread's CPU time there, plus the time
  the worker waited on the client. Those spans hold none of the server's own system
  calls, so time spent waiting for the GIL does not count as blocked.
- The target is 1 + blocked / CPU over recent samples: while one worker runs Python for
  C seconds of a request, B / C others can each be waiting out the B seconds of theirs.
  Hello world blocks nowhere: one worker. An app that sleeps 10 ms around 80 us of
  Python: 126. Both are ratios of one machine's own times, so the policy means the same
  on a slow machine as on a fast one (an absolute CPU threshold did not: a blocking app
  at 6,000 requests/s reads as many cores as a busy hello world).
- Waking: while work is queued and fewer workers than the target are awake, the
  listener's ``wake_stalled`` wakes as many as the queue holds at once: a burst on a
  blocking app wakes 128 workers in one step. A ``put`` wakes one when none is awake.
- Retiring: a worker that asks for work while more than the target are awake goes back
  to sleep instead, though work waits.
- The stall net, for what the samples have not seen yet (a slow request in a CPU-bound
  app, an app that just began to block): queued work nobody has taken for
  ``STALL_DELAY`` means every awake worker is blocked, so one more wakes, and another each
  ``STALL_DELAY`` while the stall lasts. Time the listener itself held the GIL over a
  batch of ready connections is no stall. One woken beyond the target is on trial:
  unless the take rate over the next ``TRIAL`` beats the last ``LOAD_CHECK``'s by a fifth,
  the target does not make room for it and it sleeps again at its next ``get``; if it
  does, the target keeps it until the next ``LOAD_CHECK``.

Samples count for less as they age: every ``LOAD_CHECK`` their sums are halved, which
keeps the ratio and lets new behaviour take over within a few tenths of a second. Until
the first samples the target is one worker (the stall net wakes more: a blocking app's
first samples arrive with its first responses). Idle workers sleep on a lock of their
own, most recently idle first, so the same few threads stay hot.

Without a GIL (free-threaded CPython) awake workers run in parallel: every ``put`` wakes
a sleeper, as a plain queue would, and none retires.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

# How long queued work may wait with no worker taking any before one more worker wakes.
# Short enough to be invisible next to a blocking call, long enough that a busy worker
# taking a request every few tens of microseconds never looks stalled.
STALL_DELAY = 0.001
# How often samples age (their sums halve) and the take rate a trial compares with is
# measured.
LOAD_CHECK = 0.1
# A worker measures its first request, then every SAMPLE_EVERY-th: four clock reads of a
# system call each, so measuring every request would cost hello world several percent.
SAMPLE_EVERY = 32
# How long a worker woken beyond the target by a stall has to raise the take rate, and by
# how much (over the rate at the last LOAD_CHECK) to stay awake.
TRIAL = 0.01
TRIAL_GAIN = 1.2
# The take rate behind ``backlog`` is measured over windows at least this long.
RATE_WINDOW = 0.002

GIL_ENABLED: bool = getattr(sys, "_is_gil_enabled", lambda: True)()


class Load:
    """What one worker measured since it last asked for work; owned by its thread, handed
    to the queue by ``TaskQueue.get``."""

    __slots__ = ("_countdown", "blocked", "cpu", "samples")

    def __init__(self) -> None:
        self._countdown = 0  # requests until the next sample (0: this one)
        self.blocked = 0.0  # seconds blocked, over the sampled requests
        self.cpu = 0.0  # seconds of this thread's CPU time, over the sampled requests
        self.samples = 0

    def sample_now(self) -> bool:
        """Whether to measure the request about to run (counts it)."""
        if self._countdown:
            self._countdown -= 1
            return False
        self._countdown = SAMPLE_EVERY - 1
        return True

    def add(self, blocked: float, cpu: float) -> None:
        """One sampled request: seconds it kept the worker blocked, seconds of CPU."""
        self.blocked += blocked
        self.cpu += cpu
        self.samples += 1


class Sample:
    """One request a worker measures for its ``Load``: its thread's CPU time, and the time
    the application's own code kept it blocked (``enter``/``leave`` around each call into
    the app)."""

    __slots__ = ("_cpu_at", "_span_cpu", "_span_wall", "blocked")

    def __init__(self) -> None:
        self.blocked = 0.0
        self._cpu_at = time.thread_time()
        self._span_wall = self._span_cpu = 0.0

    def enter(self) -> None:
        self._span_wall, self._span_cpu = time.monotonic(), time.thread_time()

    def leave(self) -> None:
        wall = time.monotonic() - self._span_wall
        self.blocked += max(0.0, wall - (time.thread_time() - self._span_cpu))

    def timed(self, items: Iterable[bytes]) -> Iterator[bytes]:
        """``items``, each step of it measured as a call into the app."""
        iterator = iter(items)
        while True:
            self.enter()
            try:
                data = next(iterator)
            except StopIteration:
                return
            finally:
                self.leave()
            yield data

    def finish(self, load: Load, waited: float) -> None:
        """Add this request to ``load``, with the ``waited`` seconds the worker spent
        waiting on the client (blocked too)."""
        load.add(self.blocked + waited, time.thread_time() - self._cpu_at)


class TaskQueue(Generic[T]):
    """A FIFO of at most ``limit`` items, shared by one producer and many workers."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._items: deque[tuple[T, float]] = deque()
        self._lock = threading.Lock()
        # Locks of sleeping workers, each held: releasing one wakes its worker.
        self._sleepers: list[threading.Lock] = []
        self._workers = 0
        self._awake = 0
        # Workers asked to leave the pool (retire_workers): the next ones to call get.
        self._leaving = 0
        self._last_take = time.monotonic()
        self._closed = False
        # The samples so far (aged), and the target they give.
        self._blocked = 0.0
        self._cpu = 0.0
        self._target = 1 if GIL_ENABLED else sys.maxsize
        # A stall-woken worker on trial, or one whose trial succeeded, keeps this many
        # awake (until the trial fails, or the next load check); what it was before.
        self._kept = 0
        self._kept_before = 0
        # When the samples last aged.
        self._aged_at = time.monotonic()
        # The load check: when it was, takes then, and the take rate over it.
        self._checked_at = 0.0
        self._load_taken = 0
        self._load_rate = 0.0
        # A worker woken by a stall beyond the target is on trial from then (0.0: none),
        # and the takes so far when it began.
        self._trial_from = 0.0
        self._trial_taken = 0
        # Takes so far, and the take rate over the last RATE_WINDOW (see backlog).
        self._taken = 0
        self._taken_mark = 0
        self._rate_since = self._last_take
        self._take_rate = 0.0

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def oldest_wait(self, now: float) -> float:
        """How long the oldest queued item has waited (0.0: none is queued)."""
        with self._lock:
            return now - self._items[0][1] if self._items else 0.0

    @property
    def awake(self) -> int:
        """How many workers are not asleep waiting for work."""
        with self._lock:
            return self._awake

    @property
    def taken(self) -> int:
        """How many items workers have taken so far."""
        with self._lock:
            return self._taken

    @property
    def target(self) -> int:
        """How many workers the queue keeps awake while work waits (see the module)."""
        with self._lock:
            return min(self._workers, max(self._target, self._kept))

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
                self._wake(1)
        return True

    def get(
        self,
        wake_lock: threading.Lock,
        load: Load | None = None,
        before_sleep: Callable[[], None] | None = None,
    ) -> tuple[T, float] | None:
        """Take the oldest item and when it was queued, sleeping while there is none (or
        while more workers than the target are awake).

        ``wake_lock`` is the calling worker's own lock (made once per worker), ``load``
        what it measured since its last call, taken over here; ``before_sleep`` is called
        (without the queue's lock) each time the worker is about to sleep. Returns None
        once the queue is closed and empty.
        """
        while True:
            with self._lock:
                if load is not None and load.samples:
                    self._absorb(load)
                if self._leaving:
                    # This worker leaves the pool (retire_workers), as on close.
                    self._leaving -= 1
                    self._workers -= 1
                    self._awake -= 1
                    return None
                if self._awake > max(self._target, self._kept) and not self._closed:
                    pass  # Retire: sleep though work may wait.
                elif self._items:
                    self._last_take = time.monotonic()
                    self._taken += 1
                    return self._items.popleft()
                elif self._closed:
                    return None
                wake_lock.acquire()  # Held while asleep; a waker releases it.
                self._sleepers.append(wake_lock)
                self._awake -= 1
            if before_sleep is not None:
                before_sleep()
            wake_lock.acquire()
            wake_lock.release()

    def record(self, load: Load) -> None:
        """Take over what ``load`` measured (a worker does so in ``get``)."""
        with self._lock:
            self._absorb(load)

    def register_worker(self) -> None:
        """Count a new worker as awake (it will call ``get`` soon)."""
        with self._lock:
            self._workers += 1
            self._awake += 1

    def unregister_worker(self) -> None:
        """Undo ``register_worker`` for a worker that could not be started."""
        with self._lock:
            self._workers -= 1
            self._awake -= 1

    def retire_workers(self, count: int) -> None:
        """Have the next ``count`` workers that call ``get`` get None (they leave the
        pool): sleeping ones are woken for it, busy ones leave when they are done."""
        with self._lock:
            self._leaving += count
            self._wake(len(self._sleepers))

    def wake_stalled(self, now: float, producer_busy: float = 0.0) -> float | None:
        """While work is queued: wake workers up to the target; wake one more if queued
        work has waited ``STALL_DELAY`` with nobody taking any; every ``LOAD_CHECK`` age the
        samples; end a ``TRIAL`` that is due.

        Called by the listener, which says how long it was ``producer_busy`` (holding the
        GIL over a batch of ready connections) since its last call. Returns when to call
        again (None: the queue is empty).
        """
        with self._lock:
            if now >= self._aged_at + LOAD_CHECK:
                self._age(now)
            if not self._items:
                self._checked_at = 0.0
                return None
            if not self._checked_at:
                # Work again after none: measure the take rate from now, not over the
                # idle time.
                self._checked_at, self._load_taken = now, self._taken
            elif now >= self._checked_at + LOAD_CHECK:
                self._check_load(now)
            if self._trial_from and now >= self._trial_from + TRIAL:
                self._end_trial(now)
            target = min(self._workers, max(self._target, self._kept))
            if self._awake < target and self._sleepers:
                self._wake(min(target - self._awake, len(self._items)))
            self._last_take = min(now, self._last_take + producer_busy)
            due = self._last_take + STALL_DELAY
            if now < due:
                return due
            if self._sleepers:
                beyond_target = self._awake >= target
                self._wake(1)
                if beyond_target and GIL_ENABLED:
                    # On trial: let it work until the trial says whether it helps.
                    if not self._trial_from:
                        self._trial_from, self._trial_taken = now, self._taken
                        self._kept_before = self._kept
                    self._kept = max(self._kept, self._awake)
            self._last_take = now
            return now + STALL_DELAY

    def backlog(self, now: float) -> float:
        """About how many seconds of work the queue holds for a pool that runs Python
        rather than waits (a target of one), at the rate its workers took work lately;
        0.0 otherwise."""
        with self._lock:
            elapsed = now - self._rate_since
            if elapsed >= RATE_WINDOW:
                self._take_rate = (self._taken - self._taken_mark) / elapsed
                self._taken_mark = self._taken
                self._rate_since = now
            if self._target != 1 or not self._take_rate:
                return 0.0
            return len(self._items) / self._take_rate

    def close(self) -> None:
        """Wake every worker; ``get`` returns None once the queue is empty."""
        with self._lock:
            self._closed = True
            self._wake(len(self._sleepers))

    def _absorb(self, load: Load) -> None:
        # The queue lock is held.
        self._blocked += load.blocked
        self._cpu += load.cpu
        load.blocked = load.cpu = 0.0
        load.samples = 0
        if GIL_ENABLED and self._cpu > 0.0:
            self._target = 1 + int(self._blocked / self._cpu + 0.5)

    def _age(self, now: float) -> None:
        # The queue lock is held. Halving both sums keeps their ratio (the target) and
        # halves the weight of what was seen so far against what comes next. What a trial
        # kept awake is judged afresh.
        self._blocked /= 2
        self._cpu /= 2
        self._aged_at = now
        if not self._trial_from:
            self._kept = 0

    def _check_load(self, now: float) -> None:
        # The queue lock is held.
        elapsed = max(now - self._checked_at, 1e-9)
        self._load_rate = (self._taken - self._load_taken) / elapsed
        self._checked_at, self._load_taken = now, self._taken

    def _end_trial(self, now: float) -> None:
        # The queue lock is held. A woken worker that raised the take rate stays until
        # the samples next age; one that did not sleeps again at its next get.
        rate = (self._taken - self._trial_taken) / max(now - self._trial_from, 1e-9)
        if rate < TRIAL_GAIN * self._load_rate:
            self._kept = self._kept_before
        self._trial_from = 0.0

    def _wake(self, count: int) -> None:
        # The queue lock is held.
        for _ in range(min(count, len(self._sleepers))):
            self._sleepers.pop().release()
            self._awake += 1
