"""The task queue: FIFO, bounded, and it keeps awake the workers the load needs: as many
as requests block, one for a pool that runs Python. The policy is tested with samples the
test reports itself and a clock it moves itself: nothing here depends on how fast the
machine is."""

from __future__ import annotations

import threading
import time

import pytest

from tests.helpers.waiting import wait_for
from wsgipool import taskqueue
from wsgipool.taskqueue import LOAD_CHECK, STALL_DELAY, TRIAL, Load, TaskQueue


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


def reported(blocked: float, cpu: float, requests: int = 10) -> Load:
    """A ``Load`` holding ``requests`` sampled requests, each ``blocked`` seconds blocked
    and ``cpu`` seconds of CPU."""
    load = Load()
    for _ in range(requests):
        load.add(blocked, cpu)
    return load


def sleeping_pool(count: int) -> tuple[TaskQueue[str], list[Worker], threading.Event]:
    """``count`` workers asleep (each blocks on the returned event once it takes an item)."""
    release = threading.Event()
    tasks: TaskQueue[str] = TaskQueue(limit=1000)
    workers = [Worker(tasks, release) for _ in range(count)]
    wait_for(lambda: asleep(tasks) == count)
    return tasks, workers, release


def stop(tasks: TaskQueue[str], workers: list[Worker], release: threading.Event) -> None:
    release.set()
    tasks.close()
    for worker in workers:
        worker.thread.join(5)
        assert not worker.thread.is_alive()


def test_until_samples_arrive_the_target_is_one_worker():
    tasks: TaskQueue[str] = TaskQueue(limit=10)
    assert tasks.target == 0  # No worker yet.
    tasks.register_worker()
    tasks.register_worker()
    assert tasks.target == 1


@pytest.mark.skipif(not taskqueue.GIL_ENABLED, reason="without a GIL every worker may run")
@pytest.mark.parametrize(
    ("blocked", "cpu", "target"),
    [
        (0.010, 0.000080, 126),  # sleeps 10 ms, 80 us of Python: a fast machine
        (0.010, 0.000400, 26),  # the same app on a machine five times slower
        (0.010, 0.000650, 16),  # 0.6 ms of Python around the wait
        (0.0, 0.000015, 1),  # hello world: blocks nowhere
        (0.000004, 0.000015, 1),  # a little I/O: still one
    ],
)
def test_the_target_is_one_plus_blocked_over_cpu(blocked, cpu, target):
    tasks, workers, release = sleeping_pool(200)
    tasks.record(reported(blocked, cpu))
    assert tasks.target == target
    stop(tasks, workers, release)


@pytest.mark.skipif(not taskqueue.GIL_ENABLED, reason="without a GIL every put wakes")
def test_a_burst_on_a_blocking_app_wakes_every_needed_worker_at_once():
    """128 requests arrive for a pool whose app blocks: one wake_stalled call wakes a
    worker for each of them, not one per STALL_DELAY (128 ms)."""
    tasks, workers, release = sleeping_pool(128)
    tasks.record(reported(0.010, 0.000080))  # A target of 126.
    for index in range(128):
        tasks.put(str(index))
    now = time.monotonic()
    tasks.wake_stalled(now)  # No stall yet: this is the target at work.
    with tasks._lock:
        awake = tasks._awake
    assert awake == 126, "woken up to the target in one step"
    wait_for(lambda: sum(len(w.taken) for w in workers) == 126)
    stop(tasks, workers, release)


@pytest.mark.skipif(not taskqueue.GIL_ENABLED, reason="without a GIL no worker retires")
def test_a_pool_that_stops_blocking_keeps_one_worker_awake():
    """Two workers are awake for an app that blocked; once samples show a load that blocks
    nowhere, the one beyond the target sleeps at its next get, though work waits."""
    tasks, workers, release = sleeping_pool(2)
    tasks.record(reported(0.010, 0.000100))
    tasks.put("a")
    tasks.put("b")
    tasks.wake_stalled(time.monotonic())  # Both wake: the target is every worker.
    wait_for(lambda: sorted(t for w in workers for t in w.taken) == ["a", "b"])
    tasks.record(reported(0.0, 0.000020, requests=100_000))  # Now hello world.
    assert tasks.target == 1
    tasks.put("c")
    tasks.put("d")
    release.set()  # Both finish and ask for more: the first to ask sleeps, though work waits.
    wait_for(lambda: len(tasks) == 0 and asleep(tasks) == 2)
    assert sorted(len(worker.taken) for worker in workers) == [1, 3]
    stop(tasks, workers, release)


@pytest.mark.skipif(not taskqueue.GIL_ENABLED, reason="without a GIL no worker retires")
def test_a_blocking_pool_keeps_its_workers():
    tasks, workers, release = sleeping_pool(3)
    tasks.record(reported(0.010, 0.000100))
    for index in range(6):
        tasks.put(str(index))
    tasks.wake_stalled(time.monotonic())
    wait_for(lambda: asleep(tasks) == 0)
    release.set()  # Each takes one more: none sleeps while work waits.
    wait_for(lambda: len(tasks) == 0)
    assert sum(len(w.taken) for w in workers) == 6
    assert tasks.backlog(time.monotonic()) == 0.0, "no pause for a pool that waits on I/O"
    stop(tasks, workers, release)


@pytest.mark.skipif(not taskqueue.GIL_ENABLED, reason="without a GIL every worker may run")
def test_new_behaviour_takes_over_as_samples_age():
    """Samples lose half their weight every LOAD_CHECK: an app that stopped blocking is
    soon one that keeps one worker busy."""
    tasks, workers, release = sleeping_pool(60)
    tasks.record(reported(0.010, 0.000200))
    assert tasks.target == 51
    now = time.monotonic()
    for _ in range(3):
        now += 2 * LOAD_CHECK
        tasks.wake_stalled(now)  # A LOAD_CHECK later: the samples age.
        tasks.record(reported(0.0, 0.000020, requests=1000))  # It no longer blocks.
    assert tasks.target == 1
    stop(tasks, workers, release)


@pytest.mark.skipif(not taskqueue.GIL_ENABLED, reason="without a GIL no pool runs one worker")
def test_backlog_of_a_one_worker_pool_is_its_queued_work_at_the_take_rate():
    start = time.monotonic()
    tasks: TaskQueue[str] = TaskQueue(limit=1000)
    tasks.register_worker()
    lock = threading.Lock()
    for index in range(30):
        tasks.put(str(index))
    tasks.backlog(start)  # Starts the rate window.
    for _ in range(10):
        tasks.get(lock, reported(0.0, 0.00002, requests=1))
    # 10 taken in 10 ms (1,000/s) leaves 20 queued: 20 ms of work.
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


@pytest.mark.skipif(not taskqueue.GIL_ENABLED, reason="without a GIL no worker retires")
@pytest.mark.parametrize("takes_during_trial", [0, 10])
def test_a_worker_woken_beyond_the_target_stays_only_if_it_helps(takes_during_trial):
    """The test thread is the one awake worker of a CPU-bound pool, ``worker`` a sleeping
    one that a stall wakes (a slow request, say). If the take rate does not rise within
    TRIAL, the woken worker goes back to sleep; if it does, it stays."""
    tasks, workers, release = sleeping_pool(1)
    worker = workers[0]
    tasks.register_worker()  # The test thread.
    lock = threading.Lock()
    for index in range(100):
        tasks.put(str(index))
    start = time.monotonic()
    tasks.wake_stalled(start)  # Work is queued: the take rate is measured from now.
    for _ in range(20):
        tasks.get(lock, reported(0.0, 0.00002, requests=1))  # CPU-bound: a target of 1.
    now = start + 2 * LOAD_CHECK
    tasks.wake_stalled(now, producer_busy=2 * LOAD_CHECK)  # 100 takes/s over the check.
    now += 2 * STALL_DELAY
    tasks.wake_stalled(now)  # A stall: the worker wakes, takes one item and blocks.
    wait_for(lambda: len(worker.taken) == 1)
    for _ in range(takes_during_trial):
        tasks.get(lock)
    trial_end = now + 1.1 * TRIAL
    tasks.wake_stalled(trial_end, producer_busy=trial_end - start)  # The trial ends.
    left = len(tasks)
    release.set()
    if takes_during_trial:
        wait_for(lambda: len(tasks) == 0)  # It raised the rate: it stays and works.
    else:
        wait_for(lambda: asleep(tasks) == 1)
        assert len(tasks) == left, "back to sleep though work waits"
    tasks.close()
    worker.thread.join(5)
