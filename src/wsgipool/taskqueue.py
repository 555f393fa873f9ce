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
  item keeps a CPU-bound pool with many connections (whose listener can hold the GIL
  for a millisecond on a large batch of ready connections) from waking all its threads.

Workers that find work never sleep, so a pool under steady blocking load (an app that
waits 10 ms) stays awake at the size the load needs. Idle workers sleep on a lock of
their own, most recently idle first, so the same few threads stay hot.

Without a GIL (free-threaded CPython) more awake workers do mean more parallelism, so
there every ``put`` wakes a sleeper, as a plain queue would.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")

# How long queued work may wait with no worker taking any before more workers are woken.
# Short enough to be invisible next to a blocking call, long enough that a busy worker
# taking a request every few tens of microseconds never looks stalled.
STALL_DELAY = 0.001

GIL_ENABLED: bool = getattr(sys, "_is_gil_enabled", lambda: True)()


class TaskQueue(Generic[T]):
    """A FIFO of at most ``limit`` items, shared by one producer and many workers."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._items: deque[tuple[T, float]] = deque()
        self._lock = threading.Lock()
        # Locks of sleeping workers, each held: releasing one wakes its worker.
        self._sleepers: list[threading.Lock] = []
        self._awake = 0
        self._last_take = time.monotonic()
        self._closed = False

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
        """Take the oldest item and when it was queued, sleeping while there is none.

        ``wake_lock`` is the calling worker's own lock (made once per worker). Returns
        None once the queue is closed and empty.
        """
        while True:
            with self._lock:
                if self._items:
                    self._last_take = time.monotonic()
                    return self._items.popleft()
                if self._closed:
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

    def wake_stalled(self, now: float) -> float | None:
        """Wake a sleeper if queued work has waited ``STALL_DELAY`` with nobody taking any.

        Called by the listener; returns when to call again (None: the queue is empty).
        """
        with self._lock:
            if not self._items:
                return None
            due = self._last_take + STALL_DELAY
            if now < due:
                return due
            if self._sleepers:
                self._wake_one()
            self._last_take = now
            return now + STALL_DELAY

    def close(self) -> None:
        """Wake every worker; ``get`` returns None once the queue is empty."""
        with self._lock:
            self._closed = True
            while self._sleepers:
                self._wake_one()

    def _wake_one(self) -> None:
        # The queue lock is held.
        self._sleepers.pop().release()
        self._awake += 1
