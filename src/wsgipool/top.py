"""``wsgipool top [--socket PATH]``: a live view of a server, over its control socket.

Every ``--interval`` seconds it asks ``stats`` and ``requests`` (control.py) and draws,
with the standard library's ``curses``: totals (requests/s, in flight, queue length,
queue wait p50 and p99 over the last interval), one line per worker process, and one per
busy thread (state, request line, elapsed, queue wait). ``q`` quits. ``--once`` prints
one frame as plain text, without a terminal (a script, a log).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from .control import Answer, ask_all
from .ctl import CLIENT_TIMEOUT, SOCKET_VARIABLE
from .metrics import Histogram
from .options import parse_seconds
from .supervisors.process import EXIT_USAGE


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


class Unreachable(Exception):
    """The server could not be asked (the message says why)."""


class CannotDraw(Exception):
    """The terminal cannot show the live view (the message says why)."""


class Sample:
    """One look at the server: its ``stats`` and ``requests`` answers, and when."""

    def __init__(self, stats: Answer, requests: Answer, taken: float) -> None:
        self.stats = stats
        self.requests = requests
        self.taken = taken

    @property
    def begun(self) -> int:
        return sum(entry.get("requests", 0) for entry in self.stats["processes"])

    @property
    def queue_wait(self) -> Histogram | None:
        totals = self.stats.get("totals")
        return Histogram(tuple(totals["queue_wait_counts"])) if totals else None


def take_sample(path: str) -> Sample:
    stats, requests = (
        ask_all([path], {"command": command}, CLIENT_TIMEOUT)[0]
        for command in ("stats", "requests")
    )
    for answer in (stats, requests):
        if not answer.get("ok"):
            raise Unreachable(str(answer.get("error")))
    return Sample(stats, requests, time.monotonic())


def frame(sample: Sample, previous: Sample | None, width: int = 120) -> list[str]:
    """The lines of one view: totals since ``previous`` (or since start), processes,
    busy threads."""
    processes = sample.stats["processes"]
    answering = [entry for entry in processes if "error" not in entry]
    in_flight = sum(entry["gauges"]["active_requests"] for entry in answering)
    queued = sum(entry["gauges"]["queue_length"] for entry in answering)
    limit = sum(entry["gauges"]["queue_limit"] for entry in answering)
    rate = "-"
    if previous is not None and sample.taken > previous.taken:
        begun = max(0, sample.begun - previous.begun)
        rate = f"{begun / (sample.taken - previous.taken):.1f}"
    lines = [
        f"requests/s {rate}   in flight {in_flight}   queue {queued}/{limit}   "
        f"queue wait {_queue_wait(sample, previous)}",
        "",
        f"{'WORKER':<7}{'PID':<9}{'THREADS':<9}{'IDLE':<6}{'APP':<6}{'SENDING':<9}"
        f"{'QUEUE':<7}{'REQUESTS':<10}STATE",
    ]
    for entry in processes:
        who = "-" if entry.get("worker") is None else str(entry["worker"])
        if "error" in entry:
            lines.append(f"{who:<7}{entry['pid']:<9}{entry['error']}")
            continue
        gauges = entry["gauges"]
        state = "draining" if entry["draining"] else "serving"
        lines.append(
            f"{who:<7}{entry['pid']:<9}{entry['threads']:<9}{gauges['threads_idle']:<6}"
            f"{gauges['threads_app']:<6}{gauges['threads_sending']:<9}"
            f"{gauges['queue_length']:<7}{entry['requests']:<10}{state}"
        )
    lines += ["", f"{'WORKER':<7}{'THREAD':<22}{'STATE':<9}{'ELAPSED':<10}{'QUEUED':<9}REQUEST"]
    for entry in sample.requests["processes"]:
        who = "-" if entry.get("worker") is None else str(entry["worker"])
        for item in entry.get("requests", []):
            lines.append(
                f"{who:<7}{item['thread'][-21:]:<22}{item['state']:<9}"
                f"{item['elapsed']:<10.3f}{item['queue_wait']:<9.3f}"
                f"{item['request_line']} from {item['client']}"
            )
    return [line[:width] for line in lines]


def _queue_wait(sample: Sample, previous: Sample | None) -> str:
    now = sample.queue_wait
    if now is None:
        return "p50 - p99 -"
    before = previous.queue_wait if previous is not None else None
    if before is not None and len(before.counts) == len(now.counts):
        # Over the interval; totals never go backwards (retired processes are kept).
        now = Histogram(
            tuple(max(0, a - b) for a, b in zip(now.counts, before.counts, strict=True))
        )
    return f"p50 {_ms(now.quantile(0.5))} p99 {_ms(now.quantile(0.99))}"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}ms"


def main(argv: Sequence[str]) -> int:
    parser = _Parser(prog="wsgipool top", description="A live view of a server.")
    parser.add_argument(
        "--socket",
        metavar="PATH",
        default=os.environ.get(SOCKET_VARIABLE, ""),
        help=f"the server's --control-socket (default: ${SOCKET_VARIABLE})",
    )
    parser.add_argument(
        "--interval", metavar="SECONDS", type=parse_seconds, default=1.0, help="between two views"
    )
    parser.add_argument("--once", action="store_true", help="print one view and exit")
    args = parser.parse_args(argv)
    if not args.socket:
        parser.error(f"no control socket: pass --socket PATH or set {SOCKET_VARIABLE}")
    if not 0.1 <= args.interval <= 3600:
        parser.error("--interval: from 0.1 to 3600 seconds")
    if not args.once and not (sys.stdin.isatty() and sys.stdout.isatty()):
        # curses would fail with a traceback of its own.
        parser.error("the live view needs a terminal: --once prints one view as text")
    try:
        if args.once:
            print("\n".join(frame(take_sample(args.socket), None)))
            return 0
        return _live(args.socket, args.interval)
    except (Unreachable, CannotDraw) as exc:
        print(f"wsgipool top: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 0


def _live(path: str, interval: float) -> int:
    import curses  # Only here: the view needs a terminal, --once does not.

    def run(screen: Any) -> int:
        curses.curs_set(0)
        screen.timeout(int(interval * 1000))
        previous: Sample | None = None
        while True:
            sample = take_sample(path)
            height, width = screen.getmaxyx()
            title = f"wsgipool top: {path}  {time.strftime('%H:%M:%S')}  (q quits)"
            screen.erase()
            for row, line in enumerate([title, *frame(sample, previous, width - 1)][:height]):
                screen.addstr(row, 0, line[: width - 1])
            screen.refresh()
            previous = sample
            if screen.getch() in (ord("q"), ord("Q")):
                return 0

    try:
        return int(curses.wrapper(run))
    except curses.error as exc:  # a terminal curses does not know (TERM unset or wrong)
        raise CannotDraw(
            f"cannot draw on this terminal ({exc}): --once prints one view as text"
        ) from None
