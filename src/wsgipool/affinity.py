"""Keeping the pool's threads on one CPU while the application mostly waits (``--cpu-affinity``).

Under the GIL one thread runs Python at a time. Worker threads that wait on the
application (a database, a backend) wake at moments of their own, and each must take the
GIL back. Spread over several CPUs, that turns into hand-offs across CPUs: a thread waking
on one CPU while the GIL is held on another sleeps on the GIL's lock and is woken when it
is released, and the holder, back from a system call of a few microseconds, finds the GIL
taken and sleeps in turn. On one CPU a woken thread runs only once the holder blocks for
real. Measured on a 2-core machine (an app sleeping 10 ms, 128 threads, wrk on the same
machine): 7.5 context switches and 12.7 futex calls per request and 185 us of CPU spread
over the CPUs; with the pool's threads on one CPU, 2.5 and 2.9, and about 90 us.

A process kept on one CPU cannot use a second for work done without the GIL (bcrypt,
numpy, compression), so ``AffinityPolicy`` pins only when and while it pays:

- Pin when the pool's own measurements say requests wait far more than they compute
  and many threads do so at once: the task queue's target of awake workers (1 + blocked
  / CPU time of sampled requests, see taskqueue) and the workers awake now both reach
  ``PIN_THREADS``. Hello world or a Flask JSON view (target 1) stay wherever the
  scheduler puts them, and so do a few long transfers (four 100 MiB downloads: their
  kernel copying gains more from a second CPU than so few threads lose to hand-offs).
  Unpin when the target falls below ``UNPIN_TARGET`` or the awake workers below
  ``UNPIN_AWAKE``.
- A pinned process that keeps its CPU busy (``SATURATED`` of it over a check) may be held
  back by the pin. After a back-off it runs unpinned for ``TRIAL``, and stays unpinned if
  it took work at least ``TRIAL_GAIN`` times as fast as while pinned; else it is pinned
  again. Either way the back-off doubles (to ``MAX_BACKOFF``): a lost trial is not run
  again soon, a won one holds the process unpinned that long.
- The CPU: of those the process may use, the one the rest of the machine kept least busy
  over the last check (this process's own time taken out), the worker process's "home"
  CPU (index modulo the CPUs) among near-equals, so worker processes that start together
  spread. A pinned process moves when another CPU's other load is lower by
  ``MOVE_MARGIN`` of a CPU on ``MOVE_CHECKS`` checks running.

While pinned, the pool's threads also run as ``SCHED_BATCH`` (Linux): a thread that wakes
(its sleep over, its socket ready) then waits for the running one to block or use up its
time slice instead of preempting it, which on one CPU would only find the GIL held, sleep
on it and switch back. Measured at 128 threads of the 10 ms app: context switches per request 2.0 to 1.3,
futex calls 2.0 to 0.5. It changes only wake-up preemption, not the threads' share of the
CPU (their nice value stays). A process started under another policy (``chrt``) keeps
it: then only the affinity changes.

The policy is sans-IO (readings in, CPU sets out) for tests with a fake clock;
``CpuAffinity`` reads ``/proc/stat`` and the process's CPU time and applies the sets with
``os.sched_setaffinity`` to each pool thread (Linux). Without that call, without the GIL
(free-threaded CPython: threads run in parallel) or with one CPU there is nothing to do.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .taskqueue import GIL_ENABLED

log = logging.getLogger("wsgipool.error")

# How often the listener reads the CPUs and asks the policy.
CHECK_INTERVAL = 0.5
# Pin when the target of awake workers (requests block PIN_THREADS - 1 times as long as
# they run Python) and the workers awake both reach this; unpin when the target falls
# below UNPIN_TARGET or the awake workers below UNPIN_AWAKE. The gaps keep a load near
# a threshold from flapping. Measured with a 10 ms app, unpinned to pinned: 6.6 to 3.0
# context switches per request at 8 threads, 5.9 to 2.4 at 16.
PIN_THREADS = 8
UNPIN_TARGET = 3
UNPIN_AWAKE = 4
# A pinned process using this share of its CPU may be held back by the pin.
SATURATED = 0.9
# An unpinned trial: how long, and by how much its take rate must beat the pinned one.
TRIAL = 1.0
TRIAL_GAIN = 1.1
# Wait before the first trial after pinning; doubles after each trial, up to the maximum.
FIRST_BACKOFF = 10.0
MAX_BACKOFF = 300.0
# The pinned take rate a trial is compared with: the mean of the last few checks'.
BASE_CHECKS = 4
# Move to another CPU when the rest of the machine keeps it less busy by this share of a
# CPU, MOVE_CHECKS checks running. Choosing, CPUs within NEAR_EQUAL of the least busy
# count as equal (then the home CPU comes first).
MOVE_MARGIN = 0.5
MOVE_CHECKS = 2
NEAR_EQUAL = 0.25

MODES = ("auto", "off")


@dataclass(frozen=True)
class Reading:
    """What ``CpuAffinity`` reads at each check."""

    now: float  # time.monotonic()
    busy: Mapping[int, float]  # seconds each allowed CPU has been busy (since boot)
    process_cpu: float  # seconds of CPU this process has used
    taken: int  # work the pool has taken off its queue so far
    target: int  # the queue's target of awake workers (TaskQueue.target)
    awake: int  # worker threads not asleep waiting for work (TaskQueue.awake)


class AffinityPolicy:
    """Decides, check by check, whether the pool's threads keep to one CPU, and which."""

    def __init__(self, cpus: Sequence[int], home: int = 0) -> None:
        if len(cpus) < 2:
            raise ValueError("an affinity policy needs at least two CPUs to choose from")
        self.cpus = tuple(sorted(cpus))
        self._home = home % len(self.cpus)
        self.pinned: int | None = None  # the CPU, or None: every allowed one
        self._last: Reading | None = None
        self._backoff = FIRST_BACKOFF
        self._next_trial = 0.0  # no trial before then (pinned)
        self._hold_until = 0.0  # no pinning before then (a won trial)
        self._trial_from: Reading | None = None  # the reading a running trial began at
        self._base_rate = 0.0
        self._pinned_rates: deque[float] = deque(maxlen=BASE_CHECKS)
        self._move_votes = 0

    @property
    def on_trial(self) -> bool:
        return self._trial_from is not None

    def update(self, reading: Reading) -> frozenset[int] | None:
        """The CPUs the pool's threads should keep to from now on; None: no change."""
        last, self._last = self._last, reading
        if last is None or reading.now <= last.now:
            return None
        elapsed = reading.now - last.now
        own = max(0.0, reading.process_cpu - last.process_cpu) / elapsed
        other = self._other_load(last, reading, elapsed, own)
        waiting = reading.target >= UNPIN_TARGET and reading.awake >= UNPIN_AWAKE
        if len(other) < 2 or not waiting:
            # Nothing to choose between (CPUs gone offline or out of our cpuset), or the
            # load that made the pin pay has gone: back to every CPU, judged afresh.
            self._trial_from = None
            self._backoff = FIRST_BACKOFF
            self._hold_until = 0.0
            return self._unpin() if self.pinned is not None else None
        if self._trial_from is not None:
            return self._end_trial(reading, other)
        if self.pinned is None:
            many = min(reading.target, reading.awake) >= PIN_THREADS
            if many and reading.now >= self._hold_until:
                self._next_trial = reading.now + self._backoff
                return self._pin(self._choose(other))
            return None
        if self.pinned not in other:
            return self._pin(self._choose(other))  # Its CPU is gone: move at once.
        rate = (reading.taken - last.taken) / elapsed
        base = sum(self._pinned_rates) / len(self._pinned_rates) if self._pinned_rates else 0.0
        if own >= SATURATED and reading.now >= self._next_trial and base > 0.0:
            self._base_rate = base
            self._trial_from = reading
            return self._unpin()
        self._pinned_rates.append(rate)
        best = self._choose(other)
        if other[self.pinned] - other[best] >= MOVE_MARGIN:
            self._move_votes += 1
            if self._move_votes >= MOVE_CHECKS:
                return self._pin(best)
        else:
            self._move_votes = 0
        return None

    def _end_trial(self, reading: Reading, other: Mapping[int, float]) -> frozenset[int] | None:
        start = self._trial_from
        assert start is not None
        if reading.now < start.now + TRIAL:
            return None
        self._trial_from = None
        rate = (reading.taken - start.taken) / (reading.now - start.now)
        self._backoff = min(self._backoff * 2, MAX_BACKOFF)
        if rate >= TRIAL_GAIN * self._base_rate:
            self._hold_until = reading.now + self._backoff
            return None  # Unpinned served more: stay so.
        self._next_trial = reading.now + self._backoff
        return self._pin(self._choose(other))

    def _pin(self, cpu: int) -> frozenset[int]:
        self.pinned = cpu
        self._move_votes = 0
        self._pinned_rates.clear()
        return frozenset((cpu,))

    def _unpin(self) -> frozenset[int]:
        self.pinned = None
        self._move_votes = 0
        return frozenset(self.cpus)

    def _other_load(
        self, last: Reading, reading: Reading, elapsed: float, own: float
    ) -> dict[int, float]:
        """Each CPU's busy share over the check, less this process's own: all of it on the
        pinned CPU; spread evenly when unpinned (where it ran is not known). Only CPUs both
        readings show (and the reader still allows): an absent one is no candidate."""
        present = [cpu for cpu in self.cpus if cpu in reading.busy and cpu in last.busy]
        loads = {}
        for cpu in present:
            busy = (reading.busy[cpu] - last.busy[cpu]) / elapsed
            if self.pinned is None:
                busy -= own / len(present)
            elif cpu == self.pinned:
                busy -= own
            loads[cpu] = max(0.0, busy)
        return loads

    def _choose(self, other: Mapping[int, float]) -> int:
        least = min(other.values())
        count = len(self.cpus)
        for step in range(count):
            cpu = self.cpus[(self._home + step) % count]
            if cpu in other and other[cpu] <= least + NEAR_EQUAL:
                return cpu
        raise AssertionError("unreachable: the least busy CPU is near-equal to itself")


def read_cpu_busy(path: str = "/proc/stat") -> dict[int, float]:
    """Seconds each CPU has been busy since boot: every time but idle and iowait (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    busy = {}
    # Bytes, not text: a decoder is an import, which may fail once --user or a chroot
    # has taken the standard library out of reach.
    with open(path, "rb") as stat:
        for line in stat:
            if not line.startswith(b"cpu") or line.startswith(b"cpu "):
                continue
            name, *fields = line.split()
            ticks = [int(field) for field in fields[:8]]
            # user nice system idle iowait irq softirq steal (guest is within user)
            busy[int(name[3:])] = (sum(ticks) - ticks[3] - ticks[4]) / tick
    return busy


class ThreadPinning:
    """The pool's threads and the CPUs they keep to: each joins on its own thread, and
    ``apply`` moves every one (``os.sched_setaffinity`` takes a thread id on Linux)."""

    def __init__(self, cpus: Sequence[int]) -> None:
        self._all = frozenset(cpus)
        self._current = self._all
        self._threads: set[int] = set()
        self._lock = threading.Lock()  # threads join and leave while apply runs
        # SCHED_BATCH while pinned, for a process that runs under the default policy.
        self._batch = _default_policy()

    @property
    def current(self) -> frozenset[int]:
        with self._lock:
            return self._current

    def join(self) -> None:
        """The calling thread is one of the pool's: keep it to the current CPUs."""
        with self._lock:
            self._threads.add(threading.get_native_id())
            if self._current != self._all:
                self._place(0, self._current, pinned=True)

    def leave(self) -> None:
        with self._lock:
            self._threads.discard(threading.get_native_id())

    def apply(self, cpus: frozenset[int]) -> int:
        """Move the pool's threads to ``cpus`` (``SCHED_BATCH`` unless that is every CPU);
        return how many moved. Back to every CPU, every thread of the process moves: a
        thread the application started from a pinned worker thread inherited the pin."""
        with self._lock:
            self._current = cpus
            pinned = cpus != self._all
            moved = sum(self._place(thread_id, cpus, pinned) for thread_id in self._threads)
            if not pinned:
                # Listed once the pool's own threads are back, so that none they start
                # meanwhile inherits a pin nobody lifts.
                for thread_id in _process_threads():
                    if thread_id not in self._threads:
                        moved += self._place(thread_id, cpus, pinned)
            return moved

    def unpin(self) -> None:
        """Every thread of the process back on every CPU (see ``apply``), if pinned."""
        if self.current != self._all:
            self.apply(self._all)

    def _place(self, thread_id: int, cpus: frozenset[int], pinned: bool) -> bool:
        # The lock is held. SCHED_BATCH only on a thread the pin took; SCHED_OTHER back
        # whatever the CPUs said (a cpuset may have moved under the process).
        placed = _set_affinity(thread_id, cpus)
        if self._batch and (placed or not pinned):
            _set_batch(thread_id, pinned)
        return placed


def _process_threads() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc/self/task")]
    except (OSError, ValueError):
        return []


def _set_affinity(thread_id: int, cpus: frozenset[int]) -> bool:
    try:
        os.sched_setaffinity(thread_id, cpus)
    except OSError as exc:
        # A thread that has just ended (ESRCH), or CPUs taken away by a cgroup meanwhile:
        # it keeps what it had, which is never wrong, only slower.
        log.debug("cpu affinity: thread %d keeps its CPUs: %s", thread_id, exc)
        return False
    return True


def _default_policy() -> bool:
    """Whether the calling thread runs under the default policy (``SCHED_OTHER``), which
    may be switched to ``SCHED_BATCH`` and back without privileges."""
    if not hasattr(os, "SCHED_BATCH"):
        return False
    try:
        return os.sched_getscheduler(0) == os.SCHED_OTHER
    except OSError:
        return False


def _set_batch(thread_id: int, batch: bool) -> None:
    """``SCHED_BATCH`` for a pinned thread; back to ``SCHED_OTHER`` when unpinned, only
    from ``SCHED_BATCH`` (the pin's, or inherited from a pinned thread): a real-time or idle
    policy the application gave a thread of its own stays (``SCHED_BATCH`` does not)."""
    try:
        if batch:
            os.sched_setscheduler(thread_id, os.SCHED_BATCH, os.sched_param(0))
        elif os.sched_getscheduler(thread_id) == os.SCHED_BATCH:
            os.sched_setscheduler(thread_id, os.SCHED_OTHER, os.sched_param(0))
    except OSError as exc:
        # Refused (a seccomp filter) or the thread has just ended: the pin still holds.
        log.debug("cpu affinity: thread %d keeps its scheduling policy: %s", thread_id, exc)


class CpuAffinity:
    """Reads the CPUs at each check, asks the policy, applies its answer (the listener
    calls ``check``; worker threads ``join`` and ``leave`` through ``pinning``)."""

    def __init__(
        self,
        policy: AffinityPolicy,
        pinning: ThreadPinning,
        read_busy: Callable[[], Mapping[int, float]] = read_cpu_busy,
        process_cpu: Callable[[], float] = time.process_time,
    ) -> None:
        self.policy = policy
        self.pinning = pinning
        self._read_busy = read_busy
        self._process_cpu = process_cpu
        self._next_check = 0.0
        self.disabled = False

    def check(self, now: float, taken: int, target: int, awake: int) -> None:
        """Called by the listener at each sweep. Never raises: a fault here turns the
        feature off (threads back on every CPU) rather than stop the listener."""
        if self.disabled or now < self._next_check:
            return
        self._next_check = now + CHECK_INTERVAL
        try:
            self._check(now, taken, target, awake)
        except Exception:
            log.warning("cpu affinity: turned off after an error", exc_info=True)
            self._turn_off()

    def release(self) -> None:
        """The pool stops: its threads, and those the application started from them, go
        back to every CPU and their usual policy (the process may live on). Never raises."""
        with contextlib.suppress(Exception):
            self.pinning.unpin()

    def _turn_off(self) -> None:
        self.disabled = True
        self.release()

    def _check(self, now: float, taken: int, target: int, awake: int) -> None:
        try:
            busy = self._read_busy()
        except (OSError, ValueError) as exc:
            log.debug("cpu affinity: cannot read the CPUs' times: %s", exc)
            return
        # CPUs the process may still use (the main thread is never pinned): a cpuset
        # changed since the start leaves the others out of the choice.
        allowed = os.sched_getaffinity(os.getpid())
        busy = {cpu: seconds for cpu, seconds in busy.items() if cpu in allowed}
        policy = self.policy
        was = policy.pinned
        cpus = policy.update(Reading(now, busy, self._process_cpu(), taken, target, awake))
        if cpus is None:
            return
        if not self.pinning.apply(cpus) and policy.pinned is not None:
            log.warning("cpu affinity: cannot set the threads' CPUs here; turned off")
            self._turn_off()
            return
        if policy.on_trial:
            log.info("cpu affinity: the pool runs on every CPU for %.0f s (a trial)", TRIAL)
        elif policy.pinned is None:
            log.info("cpu affinity: the pool runs on every CPU")
        elif was is None:
            log.info(
                "cpu affinity: the pool keeps to CPU %d (its requests mostly wait)", policy.pinned
            )
        else:
            log.debug("cpu affinity: the pool moves to CPU %d", policy.pinned)


def make_cpu_affinity(mode: str, home: int = 0) -> CpuAffinity | None:
    """The ``--cpu-affinity`` of this process: None for ``off``, or where it cannot help
    (no ``sched_setaffinity``, no GIL, one CPU, no ``/proc/stat``)."""
    if mode == "off" or not GIL_ENABLED or not hasattr(os, "sched_setaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    try:
        read_cpu_busy()
    except (OSError, ValueError):
        return None
    return CpuAffinity(AffinityPolicy(cpus, home), ThreadPinning(cpus))
