"""The scoreboard, the in-flight dump and the stuck-request watchdog (issue 15, sections 2-3).

Real threads write slots while others read them; the dump and the watchdog's report show
the real frame of a thread held inside a function; the stuck scan runs on a fake clock.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from conftest import wait_for
from wsgipool.dumps import format_in_flight, thread_hex, thread_stack
from wsgipool.scoreboard import InFlight, Scoreboard, Slot, State

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
    assert "0 requests in flight; 1 threads (1 idle)" in dump
