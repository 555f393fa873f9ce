"""The task queue: FIFO, bounded, and it wakes only the workers it needs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from conftest import wait_for
from wsgipool import taskqueue
from wsgipool.taskqueue import STALL_DELAY, TaskQueue


class Worker:
    """A thread taking items off the queue into ``taken`` until the queue closes."""

    def __init__(self, tasks: TaskQueue[str], release: threading.Event | None = None):
        self.taken: list[str] = []
        self.release = release
        self.lock = threading.Lock()
        tasks.register_worker()
        self.thread = threading.Thread(target=self.run, args=(tasks,), daemon=True)
        self.thread.start()

    def run(self, tasks: TaskQueue[str]) -> None:
        while (task := tasks.get(self.lock)) is not None:
            self.taken.append(task[0])
            if self.release is not None:
                self.release.wait(10)  # A blocked app: holds its item until released.


def asleep(tasks: TaskQueue[str]) -> int:
    with tasks._lock:
        return len(tasks._sleepers)


def one_worker_blocked(count: int) -> tuple[TaskQueue[str], list[Worker], threading.Event]:
    """A queue with ``count`` workers, one of them woken by a put and now blocked in the
    app (on the returned event), the others asleep."""
    release = threading.Event()
    tasks: TaskQueue[str] = TaskQueue(limit=10)
    workers = [Worker(tasks, release) for _ in range(count)]
    wait_for(lambda: asleep(tasks) == count)
    tasks.put("blocking")
    wait_for(lambda: asleep(tasks) == count - 1)
    return tasks, workers, release


def test_fifo_and_limit():
    tasks: TaskQueue[str] = TaskQueue(limit=2)
    assert tasks.put("a") and tasks.put("b")
    assert not tasks.put("c"), "a full queue refuses"
    assert len(tasks) == 2
    lock = threading.Lock()
    tasks.register_worker()
    first, second = tasks.get(lock), tasks.get(lock)
    assert first is not None and second is not None
    assert (first[0], second[0]) == ("a", "b")
    assert first[1] <= second[1], "each item carries when it was queued"


def test_idle_workers_sleep_and_one_wakes_per_put():
    tasks: TaskQueue[str] = TaskQueue(limit=10)
    workers = [Worker(tasks) for _ in range(4)]
    wait_for(lambda: asleep(tasks) == 4)
    tasks.put("x")
    wait_for(lambda: sum(len(w.taken) for w in workers) == 1)
    wait_for(lambda: asleep(tasks) == 4)
    tasks.close()
    for worker in workers:
        worker.thread.join(5)
        assert not worker.thread.is_alive()


@pytest.mark.skipif(not taskqueue.GIL_ENABLED, reason="without a GIL every put wakes a worker")
def test_busy_worker_is_not_joined_until_the_queue_stalls():
    tasks, workers, release = one_worker_blocked(3)
    tasks.put("waiting-1")
    tasks.put("waiting-2")
    assert asleep(tasks) == 2, "an awake worker exists, so puts wake nobody"
    now = time.monotonic()
    assert tasks.wake_stalled(now) is not None, "not stalled yet: check again later"
    assert asleep(tasks) == 2
    tasks.wake_stalled(now + 2 * STALL_DELAY)
    wait_for(lambda: sum(len(w.taken) for w in workers) == 2)
    assert asleep(tasks) == 1, "one stall wakes one worker"
    tasks.wake_stalled(now + 4 * STALL_DELAY)  # Still stalled: both awake ones are blocked.
    wait_for(lambda: sum(len(w.taken) for w in workers) == 3)
    assert sorted(t for w in workers for t in w.taken) == ["blocking", "waiting-1", "waiting-2"]
    release.set()
    tasks.close()
    for worker in workers:
        worker.thread.join(5)


def test_wake_stalled_on_an_empty_queue_needs_no_check():
    tasks: TaskQueue[str] = TaskQueue(limit=1)
    assert tasks.wake_stalled(time.monotonic()) is None


def test_close_returns_none_once_drained():
    tasks: TaskQueue[str] = TaskQueue(limit=3)
    tasks.put("last")
    tasks.close()
    lock = threading.Lock()
    task = tasks.get(lock)
    assert task is not None and task[0] == "last"
    assert tasks.get(lock) is None


def one_core(clock: list[float]) -> float:
    """A CPU clock for a process that used one whole core: it keeps up with ``clock``."""
    return clock[0]


def two_blocked_workers(
    cpu_used: float,
) -> tuple[TaskQueue[str], list[Worker], list[threading.Event], float]:
    """A queue whose two workers are both awake and blocked in the app, with one more
    item waiting, just after a load check that saw the process use ``cpu_used`` cores."""
    start = time.monotonic()
    cpu = [0.0]
    tasks: TaskQueue[str] = TaskQueue(limit=10, cpu_clock=lambda: cpu[0])
    releases = [threading.Event(), threading.Event()]
    workers = [Worker(tasks, release) for release in releases]
    wait_for(lambda: asleep(tasks) == 2)
    tasks.put("a")
    wait_for(lambda: asleep(tasks) == 1)
    tasks.put("b")
    tasks.wake_stalled(time.monotonic() + 2 * STALL_DELAY)  # The first worker is blocked.
    wait_for(lambda: asleep(tasks) == 0 and len(tasks) == 0)
    tasks.put("c")
    # The listener was busy until now, so this is no stall; it is time for a load check.
    now = start + 2 * taskqueue.LOAD_CHECK
    cpu[0] = cpu_used * (now - start)
    tasks.wake_stalled(now, producer_busy=now - start)
    return tasks, workers, releases, now


@pytest.mark.skipif(not taskqueue.GIL_ENABLED, reason="without a GIL no worker retires")
def test_a_gil_bound_pool_retires_a_surplus_worker():
    tasks, workers, releases, _ = two_blocked_workers(cpu_used=1.0)
    first = workers[0] if workers[0].taken == ["a"] else workers[1]
    releases[workers.index(first)].set()
    wait_for(lambda: asleep(tasks) == 1)
    assert len(tasks) == 1, "the worker went back to sleep though work waits"
    assert first.taken == ["a"]
    for release in releases:
        release.set()
    wait_for(lambda: len(tasks) == 0)
    assert sorted(t for w in workers for t in w.taken) == ["a", "b", "c"]
    tasks.close()
    for worker in workers:
        worker.thread.join(5)


def test_a_pool_blocked_in_io_keeps_its_workers():
    tasks, workers, releases, _ = two_blocked_workers(cpu_used=0.05)
    first = workers[0] if workers[0].taken == ["a"] else workers[1]
    releases[workers.index(first)].set()
    wait_for(lambda: first.taken == ["a", "c"])
    assert tasks.backlog(time.monotonic()) == 0.0, "no pause for a pool that waits on I/O"
    for release in releases:
        release.set()
    tasks.close()
    for worker in workers:
        worker.thread.join(5)


def queue_worked_by_the_test(
    cpu_clock: Callable[[], float], queued: int
) -> tuple[TaskQueue[str], threading.Lock]:
    """A queue measuring ``cpu_clock``, with ``queued`` items and one awake worker: the
    calling test, which takes items with the returned lock."""
    tasks: TaskQueue[str] = TaskQueue(limit=1000, cpu_clock=cpu_clock)
    tasks.register_worker()
    for index in range(queued):
        tasks.put(str(index))
    return tasks, threading.Lock()


@pytest.mark.skipif(not taskqueue.GIL_ENABLED, reason="without a GIL no pool is GIL-bound")
def test_backlog_of_a_gil_bound_pool_is_its_queued_work_at_the_take_rate():
    start = time.monotonic()
    clock = [start]
    tasks, lock = queue_worked_by_the_test(lambda: clock[0] - start, queued=30)
    for _ in range(10):
        tasks.get(lock)
    tasks.wake_stalled(start)  # Work is queued: the load is measured from now.
    clock[0] = start + 2 * taskqueue.LOAD_CHECK
    tasks.wake_stalled(clock[0], producer_busy=clock[0] - start)  # Load check: one core.
    # 10 taken in the first 10 ms (1,000/s) leaves 20 queued: 20 ms of work.
    assert tasks.backlog(start + 0.010) == pytest.approx(0.020, rel=0.01)


def test_time_the_listener_was_busy_is_no_stall():
    tasks, workers, release = one_worker_blocked(2)
    tasks.put("waiting")
    now = time.monotonic() + 2 * STALL_DELAY
    tasks.wake_stalled(now, producer_busy=2 * STALL_DELAY)
    assert asleep(tasks) == 1, "the listener held the GIL: the workers could not take work"
    tasks.wake_stalled(now + 2 * STALL_DELAY)
    wait_for(lambda: asleep(tasks) == 0)
    release.set()
    tasks.close()
    for worker in workers:
        worker.thread.join(5)


@pytest.mark.skipif(not taskqueue.GIL_ENABLED, reason="without a GIL no pool is GIL-bound")
def test_gil_bound_has_a_margin_before_it_ends():
    """Sampled user time is noisy: once GIL-bound, a pool stays so until its CPU use drops
    well below the threshold that made it so."""
    assert taskqueue.GIL_FREE_CPU < 0.3 < taskqueue.GIL_BOUND_CPU < 0.5
    start = time.monotonic()
    cpu = [0.0]
    tasks, lock = queue_worked_by_the_test(lambda: cpu[0], queued=100)
    now = start
    tasks.wake_stalled(now)  # Work is queued: the load is measured from now.

    def load_check(cores: float) -> bool:
        """Let a LOAD_CHECK pass with the process using ``cores``; is it GIL-bound?"""
        nonlocal now
        step = 2 * taskqueue.LOAD_CHECK
        now += step
        cpu[0] += cores * step
        tasks.wake_stalled(now, producer_busy=step)  # No stall: only the load check.
        tasks.get(lock)  # Work is being taken (backlog is 0 while none is).
        return tasks.backlog(now) > 0

    assert not load_check(0.3), "below GIL_BOUND_CPU"
    assert load_check(0.5)
    assert load_check(0.3), "above GIL_FREE_CPU: still GIL-bound"
    assert not load_check(0.1)
    assert not load_check(0.3)


@pytest.mark.skipif(not taskqueue.GIL_ENABLED, reason="without a GIL no pool is GIL-bound")
def test_idle_time_does_not_dilute_the_load():
    start = time.monotonic()
    cpu = [0.0]
    tasks, lock = queue_worked_by_the_test(lambda: cpu[0], queued=0)
    assert tasks.wake_stalled(start) is None  # Nothing queued: nothing measured.
    busy_from = start + 60.0  # A minute idle, then a GIL-bound burst.
    for index in range(50):
        tasks.put(str(index))
    tasks.wake_stalled(busy_from)
    cpu[0] += 0.9 * 2 * taskqueue.LOAD_CHECK
    now = busy_from + 2 * taskqueue.LOAD_CHECK
    tasks.wake_stalled(now, producer_busy=now - busy_from)
    tasks.get(lock)
    assert tasks.backlog(now) > 0, "0.9 cores since work was queued: GIL-bound"


@pytest.mark.skipif(not taskqueue.GIL_ENABLED, reason="without a GIL no pool is GIL-bound")
@pytest.mark.parametrize("takes_during_trial", [0, 10])
def test_a_worker_woken_in_a_gil_bound_pool_stays_only_if_it_helps(takes_during_trial):
    """The test thread is one awake worker, ``worker`` a sleeping one that a stall wakes.
    If the take rate does not rise within TRIAL, the woken worker goes back to sleep."""
    cpu = [0.0]
    tasks: TaskQueue[str] = TaskQueue(limit=1000, cpu_clock=lambda: cpu[0])
    release = threading.Event()
    worker = Worker(tasks, release)
    wait_for(lambda: asleep(tasks) == 1)
    tasks.register_worker()  # The test thread.
    lock = threading.Lock()
    for index in range(100):
        tasks.put(str(index))
    start = time.monotonic()
    tasks.wake_stalled(start)  # Work is queued: the load is measured from now.
    for _ in range(20):
        tasks.get(lock)
    cpu[0] = 1.0 * 0.2  # One core: GIL-bound, at 100 takes/s.
    now = start + 0.2
    tasks.wake_stalled(now, producer_busy=0.2)
    now += 2 * STALL_DELAY
    tasks.wake_stalled(now)  # A stall: the worker wakes, takes one item and blocks.
    wait_for(lambda: len(worker.taken) == 1)
    for _ in range(takes_during_trial):
        tasks.get(lock)
    trial_end = now + 1.1 * taskqueue.TRIAL
    tasks.wake_stalled(trial_end, producer_busy=trial_end - start)  # No stall, the trial ends.
    left = len(tasks)
    release.set()
    if takes_during_trial:
        wait_for(lambda: len(tasks) == 0)  # It raised the rate: it stays and works.
    else:
        wait_for(lambda: asleep(tasks) == 1)
        assert len(tasks) == left, "back to sleep though work waits"
    tasks.close()
    worker.thread.join(5)
