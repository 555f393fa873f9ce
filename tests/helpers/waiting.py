"""Waiting on a condition against a deadline: never a fixed sleep, never a timing assertion."""

from __future__ import annotations

import time
from collections.abc import Callable

# Generous for a loaded 2-core machine: only reached when something is broken.
DEADLINE = 30.0


def poll_until(condition: Callable[[], bool], timeout: float, interval: float = 0.01) -> bool:
    """Poll ``condition`` until it is true (True) or ``timeout`` seconds have passed (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def wait_for(
    condition: Callable[[], bool],
    what: str = "a condition",
    *,
    timeout: float = DEADLINE,
    interval: float = 0.01,
) -> None:
    """Poll ``condition`` until it is true; fail (AssertionError) after ``timeout`` seconds."""
    if not poll_until(condition, timeout, interval):
        raise AssertionError(f"timed out waiting for {what}")
