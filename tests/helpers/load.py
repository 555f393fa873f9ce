"""Traffic for tests that change a server under load: client threads that loop requests
until stopped, counting what was answered and what failed."""

from __future__ import annotations

import threading

from tests.helpers.waiting import DEADLINE, wait_for


class LoadThreads:
    """``clients`` threads that each run ``_run`` (a subclass's loop of requests, until
    ``stop_event`` is set) while the ``with`` block lasts. ``_run`` counts each request
    answered in ``ok`` and tells each that failed in ``failures``, holding ``lock``."""

    def __init__(self, clients: int) -> None:
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self) -> LoadThreads:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(DEADLINE)

    def wait_ok(self, count: int) -> None:
        """Wait for ``count`` more answered requests, or for a failure."""
        target = self.ok + count
        wait_for(lambda: self.ok >= target or bool(self.failures), f"{count} more requests")

    def _run(self) -> None:
        raise NotImplementedError
