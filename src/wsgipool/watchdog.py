"""The stuck-request watchdog: one thread per process scanning the scoreboard.

A request that makes no progress (no body bytes read or sent) for longer than the
threshold is reported once, as a WARNING with its request line, client, times and its
thread's stack; when it finishes, one more line gives its total time. A streaming
response or a long upload that keeps moving is never reported. A threshold of 0 disables
it.

The decision is ``scan``, a pure function of the views, the time and what was reported
before, tested with a fake clock and no threads; ``Watchdog`` is the thin thread around
it. The same thread serves dump requests (``request_dump``), which a signal handler may
make: see ``dumps`` for how that and faulthandler share SIGUSR2.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

from .dumps import describe, indent, thread_frames, thread_stack
from .scoreboard import InFlight, Scoreboard, SlotView, format_client
from .threads import WakePipe, start_thread

log = logging.getLogger("wsgipool.error")

# The longest pause between two scans: a stuck request is reported at most this late.
MAX_SCAN_INTERVAL = 1.0
# The shortest, for tiny thresholds (tests): a scan costs a read of every slot.
MIN_SCAN_INTERVAL = 0.01


def scan_interval(threshold: float) -> float:
    """How often to scan: a quarter of the threshold, within the bounds above."""
    return min(MAX_SCAN_INTERVAL, max(MIN_SCAN_INTERVAL, threshold / 4))


class Scan(NamedTuple):
    """What one scan found."""

    stuck: list[SlotView]  # to report now: no progress for longer than the threshold
    finished: list[tuple[InFlight, SlotView]]  # reported before, no longer in flight
    reported: dict[InFlight, SlotView]  # reported and still in flight: the next scan's input


def scan(
    views: Iterable[SlotView],
    now: float,
    threshold: float,
    reported: Mapping[InFlight, SlotView],
) -> Scan:
    """Which requests became stuck, and which reported ones finished, at ``now``.

    ``reported`` maps each request reported before to the view it was reported with
    (requests are told apart by identity: a mapping that holds a record keeps it alive).
    A request is stuck when ``now`` is more than ``threshold`` past its last progress (its
    start until body bytes move); it is reported once, however long it stays stuck.
    ``threshold`` <= 0 finds nothing stuck.
    """
    busy = [view for view in views if view.request is not None]
    current = {view.request for view in busy}
    finished = [(request, view) for request, view in reported.items() if request not in current]
    still = {request: view for request, view in reported.items() if request in current}
    stuck = []
    if threshold > 0:
        for view in busy:
            assert view.request is not None
            if view.request not in still and now - view.last_progress > threshold:
                stuck.append(view)
    return Scan(stuck, finished, still)


class StuckRequest(NamedTuple):
    view: SlotView
    now: float  # monotonic, when it was found
    stack: str | None  # its thread's stack then; None if the thread has no frame


class FinishedRequest(NamedTuple):
    request: InFlight
    view: SlotView  # as it was reported
    total: float  # seconds from its start to its end (or to when it was missed)


def log_stuck(stuck: StuckRequest) -> None:
    """The default report: one WARNING with the request and its thread's stack."""
    view = stuck.view
    assert view.request is not None
    stack = (
        f"\n    Stack of {view.thread_name} (most recent call last):\n{indent(stuck.stack)}"
        if stuck.stack
        else ""
    )
    log.warning("stuck request: %s%s", describe(view, stuck.now), stack.rstrip("\n"))


def log_finished(finished: FinishedRequest) -> None:
    """The default line for a reported request that finished: its total time."""
    request = finished.request
    log.warning(
        "stuck request finished after %.3fs: %s from %s on %s",
        finished.total,
        request.request_line,
        format_client(request.client),
        finished.view.thread_name,
    )


class Watchdog:
    """One thread that scans ``scoreboard`` every ``scan_interval(threshold)`` seconds and
    serves dump requests.

    ``on_stuck`` gets a ``StuckRequest`` once per stuck request, ``on_finished_after_stuck``
    a ``FinishedRequest`` when such a request ends (both log by default); ``on_dump`` is
    called on the watchdog's thread after each ``request_dump``. ``clock`` is the monotonic
    clock the scoreboard's times come from. With ``threshold`` 0 it only serves dumps, and
    without ``on_dump`` either, ``start`` starts nothing.
    """

    def __init__(
        self,
        scoreboard: Scoreboard,
        threshold: float,
        on_stuck: Callable[[StuckRequest], None] = log_stuck,
        on_finished_after_stuck: Callable[[FinishedRequest], None] = log_finished,
        clock: Callable[[], float] = time.monotonic,
        *,
        on_dump: Callable[[], None] | None = None,
        name: str = "wsgipool-watchdog",
    ) -> None:
        if not threshold >= 0:  # also refuses NaN
            raise ValueError(f"stuck threshold must be 0 (off) or more seconds, not {threshold}")
        self.scoreboard = scoreboard
        self.threshold = threshold
        self.interval = scan_interval(threshold)
        self._on_stuck = on_stuck
        self._on_finished = on_finished_after_stuck
        self._on_dump = on_dump
        self._clock = clock
        self._name = name
        self._reported: dict[InFlight, SlotView] = {}  # the watchdog thread's only
        self._wake = WakePipe()
        # Written by request_dump (a signal handler on the main thread) only, read by the
        # watchdog thread, which counts what it served in _dumps_served: no shared
        # read-modify-write, and a request made while a dump runs gets a dump of its own.
        self._dumps_requested = 0
        self._dumps_served = 0
        self._stopping = False  # written by stop() only
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.threshold == 0 and self._on_dump is None:
            return
        self._thread = start_thread(self._run, self._name)

    def request_dump(self) -> None:
        """Ask the watchdog's thread for a dump. Safe in a signal handler: it stores an int
        and writes a byte, nothing else. Two callers racing may merge into one dump."""
        self._dumps_requested += 1
        self._wake.wake()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and wait up to ``timeout`` seconds for it."""
        # The pipe stays open (until the watchdog is collected): a signal handler may
        # still call request_dump, and a closed descriptor's number may be reused.
        self._stopping = True
        self._wake.wake()
        if self._thread is not None:
            self._thread.join(timeout)

    def check(self) -> None:
        """One scan at the clock's time: report what became stuck, and what finished."""
        now = self._clock()
        found = scan(self.scoreboard.read(), now, self.threshold, self._reported)
        self._reported = found.reported
        for request, view in found.finished:
            end = request.finished or now  # 0: its slot went away before it ended
            self._call(self._on_finished, FinishedRequest(request, view, end - request.started))
        if found.stuck:
            self._report(found.stuck, now)

    def _report(self, stuck: list[SlotView], now: float) -> None:
        frames = thread_frames()
        for view in stuck:
            request = view.request
            assert request is not None
            stack = thread_stack(view.ident, frames)
            if request.finished:
                continue  # It ended after the scan read it: the stack would be another's.
            self._reported[request] = view
            self._call(self._on_stuck, StuckRequest(view, now, stack))

    def _run(self) -> None:
        next_scan = self._clock() + self.interval
        while not self._stopping:
            if self._dumps_served != self._dumps_requested and self._on_dump is not None:
                self._dumps_served = self._dumps_requested
                self._call(self._on_dump)
            timeout = None
            if self.threshold > 0:
                now = self._clock()
                if now >= next_scan:
                    self._call(self.check)
                    next_scan = now + self.interval
                timeout = max(0.0, next_scan - self._clock())
            self._wake.wait(timeout)

    @staticmethod
    def _call(callback: Callable[..., None], *args: object) -> None:
        # The watchdog outlives whatever a callback raises: it logs and goes on.
        try:
            callback(*args)
        except Exception:
            log.exception(
                "the stuck-request watchdog's %s failed", getattr(callback, "__name__", callback)
            )
