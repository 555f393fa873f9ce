#!/usr/bin/env python3
"""No-leak stress run: many keep-alive requests and short connections against one server.

Starts ``python -m wsgipool`` (the interpreter running this script, so use the repository's
virtualenv) with a small app from benchmarks/apps on a free 127.0.0.1 port, warms it up and lets
it go idle, then records its resident memory (VmRSS), open file descriptors and threads from
/proc. It then sends --requests keep-alive requests and --connections requests that each open a
connection of their own (``Connection: close``), both with wrk and both bounded by count, waits
for the server to close every connection, records the same figures again and prints a table.

PASS needs RSS growth under 5 %, the same number of open fds and of threads at the end as at the
start, every request answered and no errors. The exit status is 0 on PASS, 1 on FAIL.

Everything is bounded: wrk runs with a duration cap, every wait has a deadline, and --timeout
(default 20 minutes) ends the whole run. The server runs in its own process group, is stopped on
every way out (SIGTERM, then SIGKILL); it and wrk die with this script if it is killed (Linux).

    .venv/bin/python benchmarks/stress.py                       # 1,000,000 + 100,000
    .venv/bin/python benchmarks/stress.py --requests 20000 --connections 2000
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR.parent) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR.parent))  # tests.helpers: the tests' process harness

from tests.helpers.net import free_port  # noqa: E402
from tests.helpers.process import Process, ProcessFailed  # noqa: E402
from tests.helpers.waiting import poll_until  # noqa: E402

APPS_DIR = BENCH_DIR / "apps"
HOST = "127.0.0.1"
RSS_GROWTH_LIMIT = 5.0  # percent

# Counts the responses of one wrk thread and stops that thread at its share of the total, so a
# run sends the number of requests asked for (plus the few that complete in the same event-loop
# pass as the last one). Prints one machine-readable result line.
WRK_SCRIPT = """
local made = 0
function setup(thread)
  made = made + 1
  thread:set("id", made)
end

local quota, seen = 0, 0
function init(args)
  local total, threads = tonumber(args[1]), tonumber(args[2])
  quota = math.floor(total / threads)
  if id <= total % threads then quota = quota + 1 end
  if quota == 0 then wrk.thread:stop() end
end

function response(status, headers, body)
  seen = seen + 1
  if seen >= quota then wrk.thread:stop() end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "STRESS requests=%d connect=%d read=%d write=%d status=%d timeout=%d\\n",
    summary.requests, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


class StressTimeout(Exception):
    """The overall --timeout ran out."""


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise StressTimeout("the overall --timeout ran out")
        return left


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# The server process
# --------------------------------------------------------------------------------------------


@dataclass
class Sample:
    rss_kib: int
    peak_rss_kib: int
    fds: int
    threads: int


def start_server(python: str, app: str, threads: int, port: int, log_path: Path) -> Process:
    """``python -m wsgipool APP`` in a process group of its own that dies with this script
    (Linux), its output in ``log_path``."""
    command = [python, "-m", "wsgipool", "--threads", str(threads)]
    command += ["--bind", f"{HOST}:{port}", "--log-level", "warning", app]
    return Process(command, cwd=APPS_DIR, log_path=log_path, die_with_parent=True)


def sample(server: Process) -> Sample:
    if server.popen.poll() is not None:
        raise RuntimeError(f"the server exited with status {server.popen.returncode}")
    status = Path(f"/proc/{server.pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)

    def kib(name: str) -> int:
        return int(fields[name].split()[0])

    fds = len(os.listdir(f"/proc/{server.pid}/fd"))
    return Sample(kib("VmRSS"), kib("VmHWM"), fds, int(fields["Threads"]))


def log_problems(server: Process) -> list[str]:
    return [
        line for line in server.log.splitlines() if re.search(r"Traceback|ERROR|CRITICAL", line)
    ]


# --------------------------------------------------------------------------------------------
# Load with wrk
# --------------------------------------------------------------------------------------------


@dataclass
class Load:
    label: str
    wanted: int
    done: int = 0
    errors: int = 0
    seconds: float = 0.0
    detail: str = ""
    tcp_opens: int = 0  # connections the kernel saw accepted meanwhile (system-wide)

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0


def passive_opens() -> int:
    """The kernel's count of accepted TCP connections (system-wide, /proc/net/snmp)."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()]
    names, values = (line for line in lines if line[0] == "Tcp:")
    return int(values[names.index("PassiveOpens")])


def wait_for_wrk_threads(proc: subprocess.Popen[str], deadline: Deadline) -> float:
    """Wait until wrk's load threads have stopped at their quota; return when that was.

    wrk's main thread sleeps for the whole -d duration even when every load thread has called
    ``wrk.thread:stop()``. Its SIGINT handler ends that sleep, after which it reports as usual,
    so: watch its thread count drop back to one (the main thread), then send SIGINT.
    """
    status = Path(f"/proc/{proc.pid}/status")
    started = time.monotonic()
    seen_load_threads = False
    while proc.poll() is None:
        deadline.left()
        try:
            found = re.search(r"^Threads:\s*(\d+)", status.read_text(), re.M)
        except OSError:  # wrk has just exited
            break
        if found is None:
            break
        threads = int(found[1])
        seen_load_threads = seen_load_threads or threads > 1
        if threads == 1 and (seen_load_threads or time.monotonic() - started > 5):
            finished = time.monotonic()
            proc.send_signal(signal.SIGINT)
            return finished
        time.sleep(0.02)
    return time.monotonic()


def run_wrk(
    wrk: str,
    script: Path,
    port: int,
    label: str,
    count: int,
    *,
    close: bool,
    wrk_threads: int,
    connections: int,
    deadline: Deadline,
) -> Load:
    """Send ``count`` requests: a few more when responses that complete together pass a
    thread's quota, fewer only if wrk's duration cap ends the run first."""
    load = Load(label, count)
    if count <= 0:
        return load
    threads = max(1, min(wrk_threads, count))
    connections = max(threads, min(connections, count))
    cap = max(1, int(deadline.left() - 15))
    command = [wrk, f"-t{threads}", f"-c{connections}", f"-d{cap}s", "--timeout", "10s"]
    if close:
        command += ["-H", "Connection: close"]
    command += ["-s", str(script), f"http://{HOST}:{port}/", "--", str(count), str(threads)]
    opens = passive_opens()
    started = time.monotonic()
    with Process(command, die_with_parent=True) as proc:
        load.seconds = wait_for_wrk_threads(proc.popen, deadline) - started
        proc.popen.wait(timeout=min(30.0, deadline.left()))
        output = proc.log
    returncode = proc.popen.returncode
    load.tcp_opens = passive_opens() - opens
    match = re.search(
        r"STRESS requests=(\d+) connect=(\d+) read=(\d+) write=(\d+) status=(\d+) timeout=(\d+)",
        output,
    )
    if returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed (exit {returncode}):\n{output[-3000:]}")
    load.done = int(match.group(1))
    connect, read, write, status, timeout = (int(match.group(i)) for i in range(2, 7))
    load.errors = connect + read + write + status + timeout
    load.detail = (
        f"connect {connect}, read {read}, write {write}, non-2xx/3xx {status}, timeout {timeout}"
    )
    return load


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


def settle(server: Process, idle: Sample, deadline: Deadline, seconds: float) -> Sample:
    """Wait for the server to close every connection (fds and threads back to ``idle``)."""

    def closed() -> bool:
        now = sample(server)
        return now.fds <= idle.fds and now.threads <= idle.threads

    poll_until(closed, min(seconds, deadline.left()), interval=0.25)
    time.sleep(1.0)  # anything still closing gets to finish; then sample
    return sample(server)


def percent(start: int, end: int) -> float:
    return (end - start) * 100.0 / start if start else math.inf


def report(
    args: argparse.Namespace, start: Sample, end: Sample, loads: list[Load], checks: list[Check]
) -> str:
    growth = percent(start.rss_kib, end.rss_kib)
    rows = [
        ("", "start", "end", "change"),
        ("RSS (KiB)", f"{start.rss_kib:,}", f"{end.rss_kib:,}", f"{growth:+.2f}%"),
        ("open fds", str(start.fds), str(end.fds), f"{end.fds - start.fds:+d}"),
        ("threads", str(start.threads), str(end.threads), f"{end.threads - start.threads:+d}"),
        ("peak RSS (VmHWM, KiB)", f"{start.peak_rss_kib:,}", f"{end.peak_rss_kib:,}", ""),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        f"wsgipool stress: app {args.app}, --threads {args.threads}; "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "",
    ]
    for row in rows:
        lines.append(
            "  ".join(
                cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
                for i, cell in enumerate(row)
            ).rstrip()
        )
    lines.append("")
    for load in loads:
        lines.append(
            f"{load.label}: {load.done:,} of {load.wanted:,} in {load.seconds:.1f} s "
            f"({load.rate:,.0f}/s), {load.tcp_opens:,} TCP connections accepted, "
            f"errors {load.errors} ({load.detail or 'none'})"
        )
    lines.append("")
    for check in checks:
        lines.append(f"{'PASS' if check.passed else 'FAIL'}  {check.name}: {check.detail}")
    verdict = "PASS" if all(check.passed for check in checks) else "FAIL"
    lines.append(f"RESULT: {verdict}")
    return "\n".join(lines)


def stress(args: argparse.Namespace, deadline: Deadline) -> int:
    wrk = shutil.which(args.wrk) or args.wrk
    if not os.access(wrk, os.X_OK):
        raise SystemExit(f"wrk not found ({args.wrk}); install it (apt-get install wrk)")
    with tempfile.TemporaryDirectory(prefix="wsgipool-stress-") as tmp:
        script = Path(tmp, "count.lua")
        script.write_text(WRK_SCRIPT)
        port = free_port()
        log_path = Path(tmp, "server.log")
        with start_server(args.python, args.app, args.threads, port, log_path) as server:
            try:
                return measure(args, server, wrk, script, port, deadline)
            finally:
                server.end(grace=10)  # SIGTERM to the group; SIGKILL after 10 s
                problems = log_problems(server)
                if problems:
                    log(f"server log ({log_path}):\n" + "\n".join(problems[-20:]))


def measure(
    args: argparse.Namespace,
    server: Process,
    wrk: str,
    script: Path,
    port: int,
    deadline: Deadline,
) -> int:
    log(f"server pid {server.pid} on {HOST}:{port}: waiting for it to answer")
    server.wait_answering(port, HOST, min(30.0, deadline.left()))
    time.sleep(1.0)  # the probe's connection closes
    idle = sample(server)

    def load(label: str, count: int, close: bool) -> Load:
        log(f"{label}: {count:,} requests")
        return run_wrk(
            wrk,
            script,
            port,
            label,
            count,
            close=close,
            wrk_threads=args.wrk_threads,
            connections=args.wrk_connections,
            deadline=deadline,
        )

    # Warm-up: the code paths, the worker threads and the allocator's arenas all get used once.
    load("warm-up keep-alive", args.warmup, close=False)
    load("warm-up short connections", max(1, args.warmup // 10), close=True)
    start = settle(server, idle, deadline, args.settle)
    log(f"start: {start}")

    loads = [
        load("keep-alive requests", args.requests, close=False),
        load("short connections", args.connections, close=True),
    ]
    log("load done: waiting for the server to close every connection")
    end = settle(server, start, deadline, args.settle)
    log(f"end: {end}")

    growth = percent(start.rss_kib, end.rss_kib)
    problems = log_problems(server)
    checks = [
        Check(
            f"RSS growth < {RSS_GROWTH_LIMIT:g}%",
            growth < RSS_GROWTH_LIMIT,
            f"{start.rss_kib:,} -> {end.rss_kib:,} KiB ({growth:+.2f}%)",
        ),
        Check("fds end == fds start", end.fds == start.fds, f"{start.fds} -> {end.fds}"),
        Check(
            "threads end == threads start",
            end.threads == start.threads,
            f"{start.threads} -> {end.threads}",
        ),
        Check(
            "every request answered, no errors",
            all(x.done >= x.wanted and x.errors == 0 for x in loads),
            ", ".join(f"{x.label} {x.done:,}/{x.wanted:,} ({x.errors} errors)" for x in loads),
        ),
        Check("no errors in the server log", not problems, f"{len(problems)} line(s)"),
    ]
    print(report(args, start, end, loads, checks), flush=True)
    return 0 if all(check.passed for check in checks) else 1


@contextlib.contextmanager
def hard_timeout(seconds: float) -> Iterator[None]:
    """SIGALRM (and SIGTERM) become exceptions, so every ``finally`` runs and cleans up."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise StressTimeout(f"stopped by signal {signal.Signals(signum).name}")

    old_alarm = signal.signal(signal.SIGALRM, expire)
    old_term = signal.signal(signal.SIGTERM, expire)
    signal.alarm(max(1, math.ceil(seconds)))
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old_alarm)
        signal.signal(signal.SIGTERM, old_term)


def positive(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--requests", metavar="N", type=positive, default=1_000_000, help="keep-alive requests"
    )
    parser.add_argument(
        "--connections",
        metavar="N",
        type=positive,
        default=100_000,
        help="short connections, one request each",
    )
    parser.add_argument(
        "--threads", metavar="N", type=int, default=16, help="server worker threads"
    )
    parser.add_argument("--app", default="hello:app", help="app from benchmarks/apps")
    parser.add_argument(
        "--warmup", metavar="N", type=positive, default=20_000, help="warm-up requests"
    )
    parser.add_argument("--wrk", default="wrk", help="the wrk binary")
    parser.add_argument("--wrk-threads", metavar="N", type=int, default=2, help="wrk -t")
    parser.add_argument("--wrk-connections", metavar="N", type=int, default=64, help="wrk -c")
    parser.add_argument(
        "--settle",
        metavar="SECONDS",
        type=float,
        default=30.0,
        help="seconds to wait for connections to close",
    )
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=float,
        default=1200.0,
        help="hard limit on the whole run, in seconds",
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs the server")
    args = parser.parse_args(argv)
    if not Path("/proc/self/status").exists():
        raise SystemExit("needs Linux /proc to read the server's RSS, fds and threads")
    deadline = Deadline(args.timeout)
    try:
        with hard_timeout(args.timeout + 30):
            return stress(args, deadline)
    except ProcessFailed as exc:
        print(f"RESULT: FAIL (the server: {exc.reason})", flush=True)
        return 1
    except (StressTimeout, RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"RESULT: FAIL ({exc})", flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
