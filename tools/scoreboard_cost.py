"""What the scoreboard costs a request: the writes one request makes, timed with timeit.

    PYTHONPATH=src python tools/scoreboard_cost.py

A request is: begin (with the allowlist empty, and with one allowlisted header), the move
to sending, one body read and one send (each a progress update), done. The figure is the
best of several runs (the thread's CPU time), minus the cost of an empty function call, in
nanoseconds.
"""

from __future__ import annotations

import time
import timeit
from collections.abc import Callable

from wsgipool.scoreboard import Scoreboard, State

HEADERS = [("host", "example.com"), ("user-agent", "wrk"), ("accept", "*/*")]
NUMBER = 100_000
REPEAT = 7


def request_writes(board: Scoreboard, clocks_given: bool) -> Callable[[], None]:
    slot = board.claim()
    peer = ("127.0.0.1", 54321)

    def one_request() -> None:
        if clocks_given:  # The caller passes the times it took anyway (environ, access log).
            request = slot.begin(
                "GET", "/hello", peer, queue_wait=0.0001, headers=HEADERS, started=1.0,
                started_wall=2.0,
            )  # fmt: skip
        else:
            request = slot.begin("GET", "/hello", peer, queue_wait=0.0001, headers=HEADERS)
        request.received(0)
        slot.enter(State.SENDING)
        request.sent(13)
        slot.done()

    return one_request


def best(function: Callable[[], None]) -> float:
    # The thread's CPU time, not the wall clock: on a shared machine, time spent waiting
    # for a core is not the code's cost.
    timer = timeit.Timer(function, timer=time.thread_time)
    return min(timer.repeat(number=NUMBER, repeat=REPEAT)) / NUMBER


def main() -> None:
    empty = best(lambda: None)
    cases = {
        "no allowlist, clocks read here": request_writes(Scoreboard(), False),
        "no allowlist, clocks given": request_writes(Scoreboard(), True),
        "allowlist user-agent, clocks read here": request_writes(Scoreboard(["user-agent"]), False),
    }
    for label, function in cases.items():
        cost = best(function) - empty
        print(f"{cost * 1e9:7.0f} ns per request  ({label})")
    slot = Scoreboard().claim()
    request = slot.begin("GET", "/", None)
    update = best(lambda: request.sent(4096)) - empty
    store = best(lambda: setattr(request, "progress", time.monotonic())) - empty
    print(f"{update * 1e9:7.0f} ns per progress update (sent())")
    print(f"{store * 1e9:7.0f} ns per bare progress store with a clock read")


if __name__ == "__main__":
    main()
