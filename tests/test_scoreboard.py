"""The scoreboard, the in-flight dump and the stuck-request watchdog (issue 15, sections 2-3).

Real threads write slots while others read them; the dump and the watchdog's report show
the real frame of a thread held inside a function; the stuck scan runs on a fake clock.
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.helpers.waiting import wait_for
from wsgipool.dumps import format_in_flight, register_fault_dump, thread_hex, thread_stack
from wsgipool.scoreboard import InFlight, Scoreboard, Slot, State, Timings
from wsgipool.threads import WakePipe, handle_signals
from wsgipool.watchdog import FinishedRequest, StuckRequest, Watchdog, scan

# Values that must never reach a dump or a log line. Each is assembled at run time, so
# no source line a stack shows can contain it.
QUERY_SECRET = "".join(["query", "-", "secret"])
AUTH_SECRET = "".join(["Bearer ", "auth", "-", "secret"])
LOCAL_SECRET = "".join(["local", "-", "secret"])


def held_in_app(release: threading.Event, parts: list[str]) -> None:
    """Stands for an application call that waits: its frame must show in dumps."""
    credentials = "".join(parts)  # a local whose value must never be dumped
    release.wait(30)
    del credentials


class Worker:
    """A real thread that claims a slot, begins one request and waits in ``held_in_app``."""

    def __init__(self, board: Scoreboard, **begin: Any) -> None:
        self.board = board
        self.begin = {
            "method": "GET",
            "path": f"/orders/7?token={QUERY_SECRET}",
            "client": ("10.0.0.5", 4321),
            "queue_wait": 0.25,
            "request_id": "req-42",
            "headers": [("authorization", AUTH_SECRET), ("user-agent", "agent-007")],
            **begin,
        }
        self.release = threading.Event()
        self.slot: Slot | None = None
        self.request: InFlight | None = None
        self.thread = threading.Thread(target=self._run, name="scoreboard-test-worker")

    def _run(self) -> None:
        slot = self.slot = self.board.claim()
        self.request = slot.begin(**self.begin)
        held_in_app(self.release, [LOCAL_SECRET])
        slot.done()

    def __enter__(self) -> Worker:
        self.thread.start()
        ident = self.thread.ident
        assert ident is not None
        wait_for(lambda: "held_in_app" in (thread_stack(ident) or ""))
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(10)
        assert not self.thread.is_alive()


# --- slots: writes and reads --------------------------------------------------------------


def test_begin_keeps_the_path_without_query_and_only_allowlisted_headers() -> None:
    slot = Scoreboard(header_allowlist=["User-Agent"]).claim()
    request = slot.begin(
        "GET",
        f"/search?q={QUERY_SECRET}",
        ("127.0.0.1", 5000),
        headers=[("authorization", AUTH_SECRET), ("user-agent", "curl/8"), ("cookie", "a=b")],
    )
    assert request.path == "/search"
    assert request.headers == (("user-agent", "curl/8"),)
    view = slot.view()
    assert (view.state, view.request) == (State.APP, request)
    assert view.thread_name == threading.current_thread().name
    assert view.ident == threading.get_ident()


def test_no_allowlist_keeps_no_header() -> None:
    request = Scoreboard().claim().begin("GET", "/", None, headers=[("user-agent", "x")])
    assert request.headers == ()


def test_a_slot_moves_through_its_states_and_counts_bytes() -> None:
    board = Scoreboard()
    slot = board.claim()
    assert [view.state for view in board.read()] == [State.IDLE]
    slot.reading()
    assert board.read()[0].state is State.READING
    request = slot.begin("POST", "/upload", ("::1", 80, 0, 0), started=5.0, started_wall=6.0)
    assert (request.started, request.started_wall, request.progress) == (5.0, 6.0, 5.0)
    request.received(100)
    slot.enter(State.SENDING)
    request.sent(7)
    view = board.read()[0]
    assert (view.state, view.bytes_in, view.bytes_out) == (State.SENDING, 100, 7)
    assert view.last_progress > 5.0
    slot.done(now=9.0)
    assert request.finished == 9.0
    assert (board.read()[0].state, board.read()[0].request) == (State.IDLE, None)
    second = slot.begin("GET", "/", None)
    assert (request.number, second.number) == (1, 2)


def test_release_drops_the_slot() -> None:
    board = Scoreboard()
    first, second = board.claim(), board.claim()
    board.release(first)
    assert board.slots == (second,)


def test_a_reader_sees_what_another_thread_wrote() -> None:
    board = Scoreboard()
    with Worker(board) as worker:
        [view] = board.read()
        assert view.state is State.APP
        assert view.thread_name == "scoreboard-test-worker"
        assert view.ident == worker.thread.ident
        assert view.request is worker.request
        assert view.request.path == "/orders/7"
    wait_for(lambda: board.read()[0].state is State.IDLE)


def test_readers_never_see_a_mixed_up_request() -> None:
    """One thread writes requests whose fields all derive from their number as fast as it
    can; two threads read meanwhile. Every view must hold one request's fields together."""
    board = Scoreboard()
    stop = threading.Event()
    written = [0]
    reads = [0, 0]
    errors: list[str] = []

    def write() -> None:
        slot = board.claim()
        while not stop.is_set():
            number = slot.requests + 1
            request = slot.begin("GET", f"/r{number}", None, request_id=str(number))
            request.received(number)
            slot.enter(State.SENDING)
            request.sent(number)
            slot.done()
            written[0] = number

    def read(index: int) -> None:
        while not stop.is_set():
            for view in board.read():
                request = view.request
                if request is None:
                    if view.state not in (State.IDLE, State.READING):
                        errors.append(f"{view.state} without a request")
                    continue
                number = request.number
                if (request.path, request.request_id) != (f"/r{number}", str(number)):
                    errors.append(f"request {number}: {request.path} {request.request_id}")
                if view.state not in (State.APP, State.SENDING):
                    errors.append(f"request {number} in {view.state}")
                if view.bytes_in not in (0, number) or view.bytes_out not in (0, number):
                    errors.append(f"request {number}: {view.bytes_in}/{view.bytes_out} B")
            reads[index] += 1

    threads = [threading.Thread(target=write)]
    threads += [threading.Thread(target=read, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: written[0] >= 20_000 and min(reads) >= 20_000, timeout=60)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert errors == []


# --- the dump -----------------------------------------------------------------------------


def test_the_dump_joins_the_request_to_the_real_frame_of_its_thread() -> None:
    board = Scoreboard(header_allowlist=["user-agent"])
    idle = board.claim()  # this thread's slot, idle: counted, not dumped
    assert idle.view().state is State.IDLE
    with Worker(board) as worker:
        dump = format_in_flight(board, process_label="wsgipool", worker_index=3)
    header, *rest = dump.splitlines()
    assert f"wsgipool pid {os.getpid()} worker 3 at " in header
    assert "1 request in flight; 2 threads (1 idle, 1 app)" in header
    assert rest[0].startswith("GET /orders/7 from 10.0.0.5:4321 [app] on scoreboard-test-worker")
    assert f"(thread {thread_hex(worker.thread.ident or 0)})" in rest[0]
    assert "queue wait 0.250s" in rest[0]
    assert "request id req-42" in rest[0]
    assert "    header user-agent: agent-007" in rest
    assert "    Stack of scoreboard-test-worker (most recent call last):" in rest
    # The innermost frames: held_in_app, at the line where it waits.
    assert ", in held_in_app" in dump
    assert "release.wait(30)" in dump
    assert dump.index(", in _run") < dump.index(", in held_in_app")


def test_the_dump_is_redacted() -> None:
    board = Scoreboard(header_allowlist=["user-agent"])
    with Worker(board):
        dump = format_in_flight(board, process_label="wsgipool", worker_index=None)
    assert "agent-007" in dump  # allowlisted
    for secret in (QUERY_SECRET, "token=", AUTH_SECRET, "authorization", LOCAL_SECRET):
        assert secret not in dump


def test_the_dump_escapes_control_characters() -> None:
    board = Scoreboard(header_allowlist=["x-note"])
    slot = board.claim()
    slot.begin("GET", "/a\x1b[31m\nforged", "peer\r\n", headers=[("x-note", "v\x00")])
    dump = format_in_flight(board, process_label="wsgipool", worker_index=None)
    assert "GET /a\\x1b[31m\\x0aforged from peer\\x0d\\x0a [app]" in dump
    assert "header x-note: v\\x00" in dump
    assert "\x1b" not in dump


def test_an_idle_process_dumps_its_header_only() -> None:
    board = Scoreboard()
    board.claim()
    dump = format_in_flight(board, process_label="wsgipool", worker_index=None)
    assert dump.count("\n") == 1
    assert "0 requests in flight; 1 thread (1 idle)" in dump


# --- the stuck scan, on a fake clock --------------------------------------------------------


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def watched(threshold: float = 60.0) -> tuple[Slot, Watchdog, FakeClock, list[Any]]:
    """A slot on this thread, a watchdog on a fake clock that records its reports."""
    board = Scoreboard()
    slot = board.claim()
    clock = FakeClock()
    events: list[Any] = []
    dog = Watchdog(board, threshold, events.append, events.append, clock)
    return slot, dog, clock, events


def test_scan_finds_a_request_stuck_past_the_threshold_once() -> None:
    board = Scoreboard()
    request = board.claim().begin("GET", "/slow", None, started=100.0)
    views = board.read()
    assert scan(views, 160.0, 60.0, {}).stuck == []  # not past it yet
    found = scan(views, 160.5, 60.0, {})
    assert [view.request for view in found.stuck] == [request]
    assert list(found.reported) == []  # the caller records what it reported
    again = scan(board.read(), 170.0, 60.0, {request: found.stuck[0]})
    assert again.stuck == []
    assert again.finished == []
    assert list(again.reported) == [request]


def test_scan_never_reports_a_request_that_keeps_moving() -> None:
    board = Scoreboard()
    slot = board.claim()
    request = slot.begin("GET", "/stream", None, started=0.0)
    reported: dict[InFlight, Any] = {}
    for second in range(0, 1000, 30):
        request.progress = float(second)  # what sent() stores, on the fake clock
        found = scan(board.read(), second + 59.0, 60.0, reported)
        assert found.stuck == []


def test_progress_restarts_the_count() -> None:
    board = Scoreboard()
    request = board.claim().begin("POST", "/upload", None, started=100.0)
    request.progress = 150.0
    assert scan(board.read(), 200.0, 60.0, {}).stuck == []
    assert len(scan(board.read(), 210.5, 60.0, {}).stuck) == 1


def test_scan_with_threshold_zero_finds_nothing() -> None:
    board = Scoreboard()
    board.claim().begin("GET", "/", None, started=0.0)
    assert scan(board.read(), 1e9, 0.0, {}).stuck == []


def test_the_watchdog_reports_once_then_the_total_time() -> None:
    slot, dog, clock, events = watched()
    request = slot.begin("GET", "/slow", ("10.0.0.9", 1234), started=clock.now)
    clock.now += 61
    dog.check()
    [stuck] = events
    assert isinstance(stuck, StuckRequest)
    assert stuck.view.request is request
    assert stuck.now == clock.now
    assert ", in test_the_watchdog_reports_once_then_the_total_time" in (stuck.stack or "")
    clock.now += 100
    request.progress = clock.now  # moving again: still not reported a second time
    clock.now += 100
    dog.check()
    assert len(events) == 1
    slot.done(now=clock.now + 5)
    clock.now += 10
    dog.check()
    finished = events[1]
    assert isinstance(finished, FinishedRequest)
    assert finished.request is request
    assert finished.total == 266.0
    dog.check()
    assert len(events) == 2  # the finished line is given once


def test_a_new_request_on_the_slot_starts_afresh() -> None:
    slot, dog, clock, events = watched()
    slot.begin("GET", "/slow", None, started=clock.now)
    clock.now += 61
    dog.check()
    slot.done(now=clock.now)
    fresh = slot.begin("GET", "/next", None, started=clock.now)
    clock.now += 1
    dog.check()
    assert [type(event) for event in events] == [StuckRequest, FinishedRequest]
    clock.now += 60
    dog.check()
    assert events[2].view.request is fresh


def test_a_request_whose_slot_went_away_counts_until_it_was_missed() -> None:
    board = Scoreboard()
    slot = board.claim()
    clock = FakeClock()
    events: list[Any] = []
    dog = Watchdog(board, 60.0, events.append, events.append, clock)
    slot.begin("GET", "/slow", None, started=clock.now)
    clock.now += 61
    dog.check()
    board.release(slot)
    clock.now += 9
    dog.check()
    assert events[1].total == 70.0


def test_a_failing_callback_does_not_stop_the_watchdog(caplog: pytest.LogCaptureFixture) -> None:
    board = Scoreboard()
    clock = FakeClock()

    def broken(stuck: StuckRequest) -> None:
        raise RuntimeError("broken callback")

    finished: list[FinishedRequest] = []
    dog = Watchdog(board, 60.0, broken, finished.append, clock)
    slot = board.claim()
    slot.begin("GET", "/", None, started=clock.now)
    clock.now += 61
    with caplog.at_level(logging.ERROR, logger="wsgipool.error"):
        dog.check()
    assert "broken callback" in caplog.text
    slot.done(now=clock.now)
    dog.check()
    assert len(finished) == 1


def test_a_negative_or_nan_threshold_is_refused() -> None:
    for threshold in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="stuck threshold"):
            Watchdog(Scoreboard(), threshold)


# --- the watchdog's thread ------------------------------------------------------------------


@contextmanager
def running(dog: Watchdog) -> Iterator[Watchdog]:
    dog.start()
    try:
        yield dog
    finally:
        dog.stop(timeout=10)
    assert not any(thread.name == "wsgipool-watchdog" for thread in threading.enumerate())


def test_the_watchdog_thread_logs_a_stuck_request_with_its_stack(
    caplog: pytest.LogCaptureFixture,
) -> None:
    board = Scoreboard()
    with (
        caplog.at_level(logging.WARNING, logger="wsgipool.error"),
        running(Watchdog(board, threshold=0.05)),
        Worker(board) as worker,
    ):
        wait_for(lambda: "stuck request: " in caplog.text)
        worker.release.set()
        wait_for(lambda: "stuck request finished after " in caplog.text)
    stuck, finished = (r.getMessage() for r in caplog.records if "stuck request" in r.message)
    assert stuck.startswith(
        "stuck request: GET /orders/7 from 10.0.0.5:4321 [app] on scoreboard-test-worker"
    )
    assert "Stack of scoreboard-test-worker (most recent call last):" in stuck
    assert ", in held_in_app" in stuck
    assert "finished after " in finished
    assert finished.endswith("s: GET /orders/7 from 10.0.0.5:4321 on scoreboard-test-worker")
    for secret in (QUERY_SECRET, AUTH_SECRET, LOCAL_SECRET):
        assert secret not in caplog.text


def test_threshold_zero_starts_no_thread() -> None:
    dog = Watchdog(Scoreboard(), threshold=0)
    dog.start()
    assert not any(thread.name == "wsgipool-watchdog" for thread in threading.enumerate())
    dog.stop()


def test_sigusr2_gives_faulthandler_s_dump_then_the_request_dump() -> None:
    """The design in dumps.py, end to end: the Python handler only asks the watchdog's
    thread for the dump; faulthandler, registered after it on the same signal, writes its
    own all-threads dump first and chains to it."""
    board = Scoreboard()
    dumps: list[str] = []

    def dump() -> None:
        dumps.append(format_in_flight(board, process_label="wsgipool", worker_index=0))

    dog = Watchdog(board, threshold=0, on_dump=dump)
    main_wake = WakePipe()

    def on_signal(signum: int, frame: object) -> None:
        dog.request_dump()

    with running(dog), Worker(board) as worker, tempfile.TemporaryFile("w+") as raw:
        restore = handle_signals([signal.SIGUSR2], on_signal, main_wake)
        undo = register_fault_dump(raw, signal.SIGUSR2)
        try:
            os.kill(os.getpid(), signal.SIGUSR2)
            wait_for(lambda: len(dumps) == 1)
        finally:
            undo()
            restore()
        raw.seek(0)
        faulthandler_text = raw.read()
        ident = worker.thread.ident
    assert ident is not None
    # faulthandler names each thread as the dump does, so the two can be matched.
    assert f"Thread {thread_hex(ident)} (most recent call first):" in faulthandler_text
    assert " in held_in_app\n" in faulthandler_text
    assert f"(thread {thread_hex(ident)})" in dumps[0]
    assert ", in held_in_app" in dumps[0]
    main_wake.close()


def test_timings_split_a_request_into_read_queue_app_and_send() -> None:
    slot = Scoreboard().claim()
    request = slot.begin("GET", "/", None, queue_wait=0.5, started=10.0, head_started=9.75)
    assert slot.view().state is State.APP
    assert request.timings(now=11.0) == Timings(0.25, 0.5, 0.5, 0.0, 1.0)  # app runs on
    slot.sending(12.0)
    assert slot.view().state is State.SENDING
    slot.done(now=15.0)
    assert request.timings() == Timings(0.25, 0.5, 1.5, 3.0, 5.0)


def test_a_head_that_came_whole_took_no_time_to_read() -> None:
    request = Scoreboard().claim().begin("GET", "/", None, started=10.0)
    assert request.timings(now=10.0).read == 0.0
