"""The task queue: FIFO, bounded, and it wakes only the workers it needs."""

from __future__ import annotations

import threading
import time

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
    release = threading.Event()
    tasks: TaskQueue[str] = TaskQueue(limit=10)
    workers = [Worker(tasks, release) for _ in range(3)]
    wait_for(lambda: asleep(tasks) == 3)
    tasks.put("blocking")
    wait_for(lambda: asleep(tasks) == 2)  # One worker woke and is now blocked in the "app".
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
