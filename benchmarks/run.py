#!/usr/bin/env python3
"""Side-by-side benchmarks: wsgipool against other threaded WSGI servers.

Run ``python3 benchmarks/run.py --help`` for the options and see
docs/benchmarks.md for what each scenario measures and how to read the
numbers.

This script uses the standard library only and runs with any Python >= 3.10.
It creates (or updates) a virtualenv holding the peer servers and an editable
install of wsgipool, installs ``wrk`` if it is missing, then for every
scenario starts each server in turn on 127.0.0.1, loads it with wrk and stops
it again. Every step has a deadline, and no server outlives the script: they
run in their own process groups, which are terminated on any exit path
(normal end, exception, Ctrl-C, SIGTERM), and they get SIGKILL from the
kernel should this script itself be killed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

# --------------------------------------------------------------------------
# Paths and fixed parameters
# --------------------------------------------------------------------------

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # tests.helpers: the tests' process harness

# Standard library only, like this script.
from tests.helpers.net import free_port  # noqa: E402
from tests.helpers.process import Process, ProcessFailed  # noqa: E402

APPS_DIR = BENCH_DIR / "apps"
WRK_DIR = BENCH_DIR / "wrk"
LAUNCHERS_DIR = BENCH_DIR / "launchers"
REQUIREMENTS = BENCH_DIR / "requirements.txt"
DEFAULT_VENV = REPO_ROOT / ".bench-venv"

HOST = "127.0.0.1"
MIB = 1 << 20
BIG_FILE_SIZE = 100 * MIB
FILE_ENV_VAR = "WSGIPOOL_BENCH_FILE"

# Limits raised on peers whose defaults would otherwise cap a scenario (see
# docs/benchmarks.md, "Server settings"): enough connections for scenario 8,
# and an idle timeout that outlasts its measurement.
MAX_CONNECTIONS = 12_000
IDLE_TIMEOUT_S = 300

START_DEADLINE_S = 30.0  # server must answer within this
STOP_DEADLINE_S = 5.0  # SIGTERM grace period before SIGKILL
WRK_MARGIN_S = 30.0  # wrk gets duration + this before it is killed
INSTALL_TIMEOUT_S = 900.0


def log(message: str) -> None:
    """Progress goes to stderr so that stdout holds the tables only."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One row of the scenario table; everything a run needs to know."""

    key: str  # "1", "2a", ... (selectable by key or by its number)
    number: int
    title: str
    app: str  # MODULE:ATTR inside benchmarks/apps
    connections: int
    threads: int | None = None  # None: the --threads option
    headers: tuple[str, ...] = ()
    lua: str | None = None  # wrk script in benchmarks/wrk
    wrk_timeout_s: int = 5
    needs_big_file: bool = False
    sleep_s: float = 0.0  # app sleep per request: report % of the ideal rate
    bytes_per_request: int = 0  # body size: report MiB/s
    kind: Literal["load", "memory"] = "load"


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("1", 1, "hello world, keep-alive", "hello:app", connections=50),
    Scenario("2a", 2, "hello world, keep-alive, 200 connections", "hello:app", connections=200),
    Scenario("2b", 2, "hello world, keep-alive, 1000 connections", "hello:app", connections=1000),
    Scenario(
        "3",
        3,
        "hello world, new connection per request",
        "hello:app",
        connections=50,
        headers=("Connection: close",),
    ),
    Scenario("4", 4, "Flask jsonify endpoint", "flask_json:app", connections=50),
    # A blocking app over the range of pool sizes users run: connections = 2 x threads.
    Scenario(
        "5a", 5, "app sleeps 10 ms", "sleep10ms:app", connections=64, threads=32, sleep_s=0.010
    ),
    Scenario(
        "5b", 5, "app sleeps 10 ms", "sleep10ms:app", connections=128, threads=64, sleep_s=0.010
    ),
    Scenario(
        "5c", 5, "app sleeps 10 ms", "sleep10ms:app", connections=256, threads=128, sleep_s=0.010
    ),
    Scenario(
        "5d",
        5,
        "app with 0.6 ms of Python around a 10 ms sleep",
        "mixed:app",
        connections=64,
        threads=32,
    ),
    Scenario("6a", 6, "1 MiB response", "big_response:app", connections=16, bytes_per_request=MIB),
    Scenario(
        "6b",
        6,
        "100 MiB file via wsgi.file_wrapper",
        "file_wrapper:app",
        connections=4,
        wrk_timeout_s=60,
        needs_big_file=True,
        bytes_per_request=BIG_FILE_SIZE,
    ),
    Scenario(
        "7",
        7,
        "1 MiB request bodies POSTed and read",
        "upload:app",
        connections=16,
        lua="post_1mib.lua",
        wrk_timeout_s=10,
        bytes_per_request=MIB,
    ),
    Scenario(
        "8",
        8,
        "memory: idle, and with idle keep-alive connections under scenario-1 load",
        "hello:app",
        connections=50,
        kind="memory",
    ),
)


def select_scenarios(spec: str) -> list[Scenario]:
    """``"1,3,6b"`` -> scenarios; a bare number selects all its variants."""
    if spec == "all":
        return list(SCENARIOS)
    wanted = [part.strip() for part in spec.split(",") if part.strip()]
    chosen: list[Scenario] = []
    for part in wanted:
        matches = [s for s in SCENARIOS if s.key == part or str(s.number) == part]
        if not matches:
            keys = ", ".join(s.key for s in SCENARIOS)
            raise SystemExit(f"unknown scenario {part!r} (known: {keys})")
        chosen.extend(s for s in matches if s not in chosen)
    return chosen


# --------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Venv:
    path: Path

    @property
    def python(self) -> str:
        return str(self.path / "bin" / "python")

    def bin(self, name: str) -> str:
        return str(self.path / "bin" / name)


CommandBuilder = Callable[[Venv, str, int, int], list[str]]


def _wsgipool(venv: Venv, app: str, port: int, threads: int) -> list[str]:
    return [
        venv.bin("wsgipool"),
        app,
        "--bind",
        f"{HOST}:{port}",
        "--threads",
        str(threads),
        "--keepalive-timeout",
        str(IDLE_TIMEOUT_S),
        "--chdir",
        str(APPS_DIR),
    ]


def _waitress(venv: Venv, app: str, port: int, threads: int) -> list[str]:
    return [
        venv.bin("waitress-serve"),
        f"--listen={HOST}:{port}",
        f"--threads={threads}",
        f"--connection-limit={MAX_CONNECTIONS}",
        f"--channel-timeout={IDLE_TIMEOUT_S}",
        "--asyncore-use-poll",  # select() cannot watch fds >= 1024
        app,
    ]


def _cheroot(venv: Venv, app: str, port: int, threads: int) -> list[str]:
    # A launcher, because the cheroot CLI cannot raise keep_alive_conn_limit.
    return [
        venv.python,
        str(LAUNCHERS_DIR / "cheroot_serve.py"),
        app,
        HOST,
        str(port),
        str(threads),
        str(MAX_CONNECTIONS),
        str(IDLE_TIMEOUT_S),
    ]


def _gunicorn(venv: Venv, app: str, port: int, threads: int) -> list[str]:
    return [
        venv.bin("gunicorn"),
        "--worker-class",
        "gthread",
        "--workers",
        "1",
        "--threads",
        str(threads),
        "--bind",
        f"{HOST}:{port}",
        "--worker-connections",
        str(MAX_CONNECTIONS),
        "--keep-alive",
        str(IDLE_TIMEOUT_S),
        app,
    ]


def _werkzeug(venv: Venv, app: str, port: int, threads: int) -> list[str]:
    del threads  # thread per connection; it has no pool size to set
    return [venv.python, str(LAUNCHERS_DIR / "werkzeug_serve.py"), app, HOST, str(port)]


def _granian(venv: Venv, app: str, port: int, threads: int) -> list[str]:
    return [
        venv.bin("granian"),
        "--interface",
        "wsgi",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
        "--blocking-threads",
        str(threads),
        "--backpressure",  # default: 1024 connections in flight, idle ones included
        str(MAX_CONNECTIONS),
        app,
    ]


@dataclass(frozen=True)
class ServerSpec:
    name: str
    distribution: str  # for the version shown in the report
    module: str  # must import in the venv for the server to be available
    command: CommandBuilder
    note: str = ""


SUBJECT = "wsgipool"
SERVERS: tuple[ServerSpec, ...] = (
    ServerSpec(SUBJECT, "wsgipool", "wsgipool.cli", _wsgipool),
    ServerSpec("waitress", "waitress", "waitress", _waitress),
    ServerSpec("cheroot", "cheroot", "cheroot", _cheroot, "cheroot.wsgi.Server via a launcher"),
    ServerSpec("gunicorn", "gunicorn", "gunicorn", _gunicorn, "gthread, 1 worker"),
    ServerSpec(
        "werkzeug", "werkzeug", "werkzeug", _werkzeug, "run_simple threaded: thread per connection"
    ),
    ServerSpec("granian", "granian", "granian", _granian, "wsgi, 1 worker"),
)


def select_servers(spec: str) -> list[ServerSpec]:
    if spec == "all":
        return list(SERVERS)
    by_name = {s.name: s for s in SERVERS}
    chosen: list[ServerSpec] = []
    for name in (part.strip() for part in spec.split(",")):
        if not name:
            continue
        if name not in by_name:
            raise SystemExit(f"unknown server {name!r} (known: {', '.join(by_name)})")
        if by_name[name] not in chosen:
            chosen.append(by_name[name])
    return chosen


# --------------------------------------------------------------------------
# Environment: virtualenv, wrk, file limits
# --------------------------------------------------------------------------


def _run_logged(cmd: Sequence[str], log_path: Path, timeout: float) -> bool:
    """Run an install command, appending its output to ``log_path``."""
    with log_path.open("ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        try:
            subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, check=True)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            out.write(f"!! {exc}\n".encode())
            return False
    return True


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    return "\n".join("    | " + line for line in text.rstrip().splitlines()[-lines:])


def subject_problem(venv: Venv) -> str | None:
    """Why the venv cannot run wsgipool from *this* checkout, or None if it can."""
    probe = (
        "import pathlib, wsgipool, wsgipool.cli; print(pathlib.Path(wsgipool.__file__).resolve())"
    )
    try:
        result = subprocess.run(
            [venv.python, "-c", probe], capture_output=True, text=True, timeout=60, check=False
        )
    except (subprocess.TimeoutExpired, OSError) as exc:
        return f"import check failed: {exc}"
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        return "`import wsgipool.cli` fails: " + (
            lines[-1] if lines else f"status {result.returncode}"
        )
    if not Path(result.stdout.strip()).is_relative_to((REPO_ROOT / "src").resolve()):
        return f"wsgipool is imported from {result.stdout.strip()}, not from {REPO_ROOT}"
    if not Path(venv.bin("wsgipool")).exists():
        return "the `wsgipool` console script is missing"
    return None


def ensure_venv(path: Path, base_python: str, install: bool) -> Venv:
    venv = Venv(path)
    if not Path(venv.python).exists():
        log(f"creating virtualenv {path} with {base_python}")
        try:
            subprocess.run([base_python, "-m", "venv", str(path)], check=True, timeout=300)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            raise SystemExit(f"cannot create the virtualenv {path}: {exc}") from exc
    if not install:
        return venv

    stamp = path / "bench-requirements.sha256"
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text().strip() != wanted:
        install_log = path / "bench-install-peers.log"
        install_log.unlink(missing_ok=True)
        log(f"installing peer servers from {REQUIREMENTS.name} (log: {install_log})")
        pip = [venv.python, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        if _run_logged([*pip, "-r", str(REQUIREMENTS)], install_log, INSTALL_TIMEOUT_S):
            stamp.write_text(wanted + "\n")
        else:
            log(
                "WARNING: installing the peers failed; missing ones will be skipped:\n"
                + _tail(install_log)
            )
    if subject_problem(venv) is not None:
        install_log = path / "bench-install-wsgipool.log"
        install_log.unlink(missing_ok=True)
        log(f"installing wsgipool (editable) from {REPO_ROOT} (log: {install_log})")
        pip = [venv.python, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        if not _run_logged([*pip, "-e", str(REPO_ROOT)], install_log, INSTALL_TIMEOUT_S):
            log(
                "WARNING: `pip install -e` of wsgipool failed; it will be skipped:\n"
                + _tail(install_log)
            )
        elif problem := subject_problem(venv):
            log(f"WARNING: wsgipool installed but unusable ({problem}); it will be skipped")
    return venv


def server_versions(venv: Venv, servers: Sequence[ServerSpec]) -> dict[str, str | None]:
    """Version of each server importable in the venv, None for the others."""
    probe = """
import importlib, importlib.metadata, json, sys
out = {}
for name, module, dist in json.loads(sys.argv[1]):
    try:
        importlib.import_module(module)
        out[name] = importlib.metadata.version(dist)
    except Exception:
        out[name] = None
print(json.dumps(out))
"""
    arg = json.dumps([[s.name, s.module, s.distribution] for s in servers])
    try:
        result = subprocess.run(
            [venv.python, "-c", probe, arg], capture_output=True, text=True, timeout=120, check=True
        )
        versions: dict[str, str | None] = json.loads(result.stdout)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError, ValueError):
        return {s.name: None for s in servers}
    if versions.get(SUBJECT) and not Path(venv.bin("wsgipool")).exists():
        versions[SUBJECT] = None
    return versions


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit("wrk is not installed; install it (e.g. `sudo apt-get install wrk`)")
    apt_log = Path(tempfile.gettempdir()) / "wsgipool-bench-apt.log"
    apt_log.unlink(missing_ok=True)
    log(f"installing wrk with apt-get (log: {apt_log})")
    install = ["apt-get", "install", "-y", "wrk"]
    if not _run_logged(install, apt_log, INSTALL_TIMEOUT_S):
        _run_logged(["apt-get", "update"], apt_log, INSTALL_TIMEOUT_S)
        _run_logged(install, apt_log, INSTALL_TIMEOUT_S)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("could not install wrk:\n" + _tail(apt_log))
    return found


def raise_nofile_limit(needed: int) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (inherited by servers and wrk)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < needed:
        log(f"WARNING: open-file limit is {soft}, scenario 8 wants about {needed}")
    return soft


# --------------------------------------------------------------------------
# Server processes
# --------------------------------------------------------------------------


class ServerStartError(Exception):
    pass


# Every server running, for the emergency stop in main() (a signal may come at any time).
_RUNNING: set[Process] = set()


def stop_all_servers() -> None:
    for server in list(_RUNNING):
        stop_server(server)


def stop_server(server: Process) -> None:
    """SIGTERM to its process group, SIGKILL to what is left after STOP_DEADLINE_S."""
    try:
        server.close(grace=STOP_DEADLINE_S)
    finally:
        _RUNNING.discard(server)


def group_rss_kib(pgid: int) -> int:
    """Sum of VmRSS over every process of the group (master + workers)."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
            # Fields after the parenthesised command name: state ppid pgrp ...
            pgrp = int(stat[stat.rindex(b")") + 2 :].split()[2])
            if pgrp != pgid:
                continue
            with open(f"/proc/{entry.name}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except (OSError, ValueError, IndexError):
            continue
    return total


class RssSampler:
    """Background sampling of a process group's RSS; keeps the maximum."""

    def __init__(self, pgid: int, interval_s: float = 0.25) -> None:
        self.pgid = pgid
        self.interval_s = interval_s
        self.max_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.max_kib = max(self.max_kib, group_rss_kib(self.pgid))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# --------------------------------------------------------------------------
# wrk
# --------------------------------------------------------------------------


@dataclass
class WrkResult:
    requests_per_s: float
    requests: int
    p50_ms: float | None
    p99_ms: float | None
    non_2xx: int
    socket_errors: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())


_TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def parse_wrk(output: str) -> WrkResult:
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    if rps is None:
        raise ValueError("no Requests/sec line in wrk output")
    count = re.search(r"^\s*(\d+) requests in ", output, re.M)

    def percentile(p: int) -> float | None:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.M)
        return float(m.group(1)) * _TIME_UNITS_MS[m.group(2)] if m else None

    sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    socket_errors = (
        dict(zip(("connect", "read", "write", "timeout"), map(int, sock.groups()), strict=True))
        if sock
        else {}
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return WrkResult(
        requests_per_s=float(rps.group(1)),
        requests=int(count.group(1)) if count else 0,
        p50_ms=percentile(50),
        p99_ms=percentile(99),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=socket_errors,
    )


@dataclass(frozen=True)
class WrkRunner:
    wrk: str

    def run(self, scenario: Scenario, port: int, duration_s: float) -> WrkResult:
        cmd = [
            self.wrk,
            "-t1",
            f"-c{scenario.connections}",
            f"-d{duration_s:g}s",
            f"--timeout={scenario.wrk_timeout_s}s",
            "--latency",
        ]
        for header in scenario.headers:
            cmd += ["-H", header]
        if scenario.lua:
            cmd += ["-s", str(WRK_DIR / scenario.lua)]
        cmd.append(f"http://{HOST}:{port}/")
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=duration_s + WRK_MARGIN_S, check=False
        )
        try:
            return parse_wrk(proc.stdout)
        except ValueError as exc:
            raise RuntimeError(
                f"wrk failed (status {proc.returncode}): {proc.stderr.strip() or proc.stdout}"
            ) from exc


# --------------------------------------------------------------------------
# Idle keep-alive connections (scenario 8)
# --------------------------------------------------------------------------


@dataclass
class _Opening:
    sock: socket.socket
    started: float
    connected: bool = False
    buffer: bytes = b""


class IdleConnections:
    """Open many keep-alive connections, one request each, then leave them idle.

    Everything happens in this process with non-blocking sockets, a bounded
    number of connections in flight and an overall deadline.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.sockets: list[socket.socket] = []
        self.failures: dict[str, int] = {}
        self._request = f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()

    def _fail(self, reason: str, sock: socket.socket) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1
        sock.close()

    @staticmethod
    def _response_complete(buffer: bytes) -> bool | None:
        """True: complete keep-alive response; None: incomplete; False: closing."""
        head, sep, body = buffer.partition(b"\r\n\r\n")
        if not sep:
            return None
        headers = head.decode("latin-1").lower()
        if re.search(r"^connection:\s*close", headers, re.M):
            return False
        m = re.search(r"^content-length:\s*(\d+)", headers, re.M)
        if m is None:
            return False  # hello:app always sets it; anything else is unexpected
        return True if len(body) >= int(m.group(1)) else None

    def open(
        self, target: int, deadline_s: float, window: int = 256, per_conn_timeout_s: float = 15.0
    ) -> None:
        selector = selectors.DefaultSelector()
        pending: dict[socket.socket, _Opening] = {}
        launched = 0
        deadline = time.monotonic() + deadline_s
        last_progress = time.monotonic()
        try:
            while (launched < target or pending) and time.monotonic() < deadline:
                if time.monotonic() - last_progress > per_conn_timeout_s:
                    break  # the server has stopped taking connections
                while launched < target and len(pending) < window:
                    launched += 1
                    try:
                        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    except OSError:  # EMFILE and friends: stop launching
                        self.failures["socket"] = self.failures.get("socket", 0) + (
                            target - launched + 1
                        )
                        launched = target
                        break
                    sock.setblocking(False)
                    sock.connect_ex((HOST, self.port))
                    pending[sock] = _Opening(sock, time.monotonic())
                    selector.register(sock, selectors.EVENT_WRITE)
                for key, _ in selector.select(timeout=0.1):
                    if self._advance(selector, pending, pending[key.fileobj]):  # type: ignore[index]
                        last_progress = time.monotonic()
                now = time.monotonic()
                for state in [s for s in pending.values() if now - s.started > per_conn_timeout_s]:
                    selector.unregister(state.sock)
                    del pending[state.sock]
                    self._fail("timeout", state.sock)
        finally:
            for state in pending.values():
                self._fail("deadline", state.sock)
            selector.close()

    def _advance(
        self,
        selector: selectors.BaseSelector,
        pending: dict[socket.socket, _Opening],
        state: _Opening,
    ) -> bool:
        """Move one connection forward; True once its response is complete."""
        sock = state.sock

        def drop(reason: str) -> None:
            selector.unregister(sock)
            del pending[sock]
            self._fail(reason, sock)

        try:
            if not state.connected:
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    drop("connect")
                    return False
                state.connected = True
                sock.send(self._request)  # tiny: fits in an empty send buffer
                selector.modify(sock, selectors.EVENT_READ)
                return False
            data = sock.recv(65536)
        except BlockingIOError:
            return False
        except OSError:
            drop("io")
            return False
        if not data:
            drop("closed")
            return False
        state.buffer += data
        complete = self._response_complete(state.buffer)
        if complete is None:
            return False
        if complete is False:
            drop("not-keep-alive")
            return False
        selector.unregister(sock)
        del pending[sock]
        self.sockets.append(sock)
        return True

    def count_open(self) -> int:
        """Connections the server has neither closed nor written to since."""
        alive = 0
        for sock in self.sockets:
            try:
                data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                alive += 1
                continue
            except OSError:
                continue
            if data:  # e.g. a 408 before closing: counts as not held
                continue
        return alive

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()


# --------------------------------------------------------------------------
# Running scenarios
# --------------------------------------------------------------------------


@dataclass
class Settings:
    duration_s: float
    warmup_s: float
    repeat: int
    threads: int
    idle_connections: int
    venv: Venv
    wrk: WrkRunner
    work_dir: Path
    big_file: Path | None = None


@dataclass
class MemoryResult:
    rss_idle_kib: int
    rss_load_kib: int
    rss_idle_conns_kib: int
    rss_idle_conns_load_kib: int
    conns_target: int
    conns_opened: int
    conns_held: int
    open_failures: dict[str, int]
    base: WrkResult
    with_idle: WrkResult


@dataclass
class RunOutcome:
    """One measured run of one server, or why it failed."""

    load: WrkResult | None = None
    memory: MemoryResult | None = None
    error: str | None = None


def scenario_threads(scenario: Scenario, settings: Settings) -> int:
    return scenario.threads or settings.threads


@contextlib.contextmanager
def running_server(
    server: ServerSpec, scenario: Scenario, settings: Settings, label: str
) -> Iterator[tuple[Process, int]]:
    """Start ``server`` with the scenario's app; always stop it afterwards."""
    port = free_port()
    threads = scenario_threads(scenario, settings)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(APPS_DIR), env.get("PYTHONPATH", "")) if p)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if settings.big_file is not None:
        env[FILE_ENV_VAR] = str(settings.big_file)
    cmd = server.command(settings.venv, scenario.app, port, threads)
    log_path = settings.work_dir / f"{label}.log"
    # die_with_parent: the server dies with this script, even if it is SIGKILLed (Linux).
    proc = Process(cmd, cwd=APPS_DIR, env=env, log_path=log_path, die_with_parent=True)
    _RUNNING.add(proc)
    try:
        started = time.monotonic()
        try:
            status = proc.wait_answering(port, HOST, START_DEADLINE_S)
        except ProcessFailed as exc:
            raise ServerStartError(
                f"{server.name} failed to start: {exc.reason}\n  command: {' '.join(cmd)}\n"
                f"  output (tail of {log_path}):\n{_tail(log_path)}"
            ) from None
        if not 200 <= status < 300:
            log(f"    readiness probe got status {status}")
        took = time.monotonic() - started
        log(f"    ready on port {port} after {took:.1f}s (pid {proc.pid})")
        yield proc, port
    finally:
        stop_server(proc)


def _warm_up(scenario: Scenario, settings: Settings, port: int) -> None:
    if settings.warmup_s > 0:
        settings.wrk.run(scenario, port, settings.warmup_s)


def run_load(scenario: Scenario, server: ServerSpec, settings: Settings, label: str) -> RunOutcome:
    with running_server(server, scenario, settings, label) as (_, port):
        _warm_up(scenario, settings, port)
        result = settings.wrk.run(scenario, port, settings.duration_s)
    return RunOutcome(load=result)


def run_memory(
    scenario: Scenario, server: ServerSpec, settings: Settings, label: str
) -> RunOutcome:
    with running_server(server, scenario, settings, label) as (proc, port):
        _warm_up(scenario, settings, port)
        time.sleep(0.5)
        rss_idle = group_rss_kib(proc.pid)
        with RssSampler(proc.pid) as sampler:
            base = settings.wrk.run(scenario, port, settings.duration_s)
        rss_load = sampler.max_kib

        idle = IdleConnections(port)
        try:
            target = settings.idle_connections
            log(f"    opening {target} idle keep-alive connections")
            started = time.monotonic()
            idle.open(target, deadline_s=max(60.0, target / 50))
            opened = len(idle.sockets)
            log(
                f"    {opened}/{target} open after {time.monotonic() - started:.1f}s"
                + (f" (failures: {idle.failures})" if idle.failures else "")
            )
            time.sleep(0.5)
            rss_conns = group_rss_kib(proc.pid)
            with RssSampler(proc.pid) as sampler:
                with_idle = settings.wrk.run(scenario, port, settings.duration_s)
            rss_conns_load = max(sampler.max_kib, rss_conns)
            held = idle.count_open()
        finally:
            idle.close()
    return RunOutcome(
        memory=MemoryResult(
            rss_idle_kib=rss_idle,
            rss_load_kib=rss_load,
            rss_idle_conns_kib=rss_conns,
            rss_idle_conns_load_kib=rss_conns_load,
            conns_target=target,
            conns_opened=opened,
            conns_held=held,
            open_failures=idle.failures,
            base=base,
            with_idle=with_idle,
        )
    )


def run_once(scenario: Scenario, server: ServerSpec, settings: Settings, label: str) -> RunOutcome:
    runner = run_memory if scenario.kind == "memory" else run_load
    try:
        return runner(scenario, server, settings, label)
    except ServerStartError as exc:
        log(f"    FAILED: {exc}")
        return RunOutcome(error=str(exc).splitlines()[0])
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        log(f"    FAILED: {server.name}: {exc}")
        return RunOutcome(error=f"{type(exc).__name__}: {exc}".splitlines()[0])


# --------------------------------------------------------------------------
# Summaries and tables
# --------------------------------------------------------------------------


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


@dataclass
class Summary:
    """Medians over the successful runs of one server in one scenario."""

    server: str
    runs: int
    ok: int
    error: str | None
    metrics: dict[str, float | None]
    open_failures: dict[str, int] = field(default_factory=dict)  # scenario 8, last run


def summarize(server: str, outcomes: Sequence[RunOutcome]) -> Summary:
    loads = [o.load for o in outcomes if o.load is not None]
    mems = [o.memory for o in outcomes if o.memory is not None]
    errors = [o.error for o in outcomes if o.error is not None]
    metrics: dict[str, float | None] = {}
    if loads:
        metrics = {
            "rps": _median([r.requests_per_s for r in loads]),
            "p50_ms": _median([r.p50_ms for r in loads]),
            "p99_ms": _median([r.p99_ms for r in loads]),
            "errors": _median([float(r.errors) for r in loads]),
        }
    elif mems:
        metrics = {
            "rss_idle_kib": _median([float(m.rss_idle_kib) for m in mems]),
            "rss_load_kib": _median([float(m.rss_load_kib) for m in mems]),
            "rss_idle_conns_kib": _median([float(m.rss_idle_conns_kib) for m in mems]),
            "rss_idle_conns_load_kib": _median([float(m.rss_idle_conns_load_kib) for m in mems]),
            "conns_opened": _median([float(m.conns_opened) for m in mems]),
            "conns_held": _median([float(m.conns_held) for m in mems]),
            "rps": _median([m.base.requests_per_s for m in mems]),
            "rps_idle_conns": _median([m.with_idle.requests_per_s for m in mems]),
            "errors": _median([float(m.base.errors) for m in mems]),
            "errors_idle_conns": _median([float(m.with_idle.errors) for m in mems]),
        }
    return Summary(
        server=server,
        runs=len(outcomes),
        ok=len(loads) + len(mems),
        error=errors[-1] if errors else None,
        metrics=metrics,
        open_failures=mems[-1].open_failures if mems else {},
    )


def fmt_rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"


def fmt_mib(kib: float | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f} MiB"


def fmt_ratio(subject: float | None, peer: float | None) -> str:
    if subject is None or peer is None or peer == 0:
        return "n/a"
    return f"{subject / peer:.2f}x"


def fmt_count(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def render_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int = 1
) -> str:
    """Plain-text table: the first ``text_columns`` left-aligned, numbers right."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = (
            c.ljust(w) if i < text_columns else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        return "  ".join(padded).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def scenario_heading(scenario: Scenario, settings: Settings) -> str:
    threads = scenario_threads(scenario, settings)
    extra = f", {settings.idle_connections:,} idle conns" if scenario.kind == "memory" else ""
    runs = (
        f"{settings.duration_s:g}s x {settings.repeat}"
        if settings.repeat > 1
        else (f"{settings.duration_s:g}s")
    )
    return (
        f"Scenario {scenario.key}: {scenario.title} "
        f"({scenario.connections} conns, {threads} threads{extra}, {runs})"
    )


def _status_cell(summary: Summary) -> str | None:
    """Text for a server that produced no numbers (or only some)."""
    if summary.ok == 0:
        return f"FAILED: {summary.error}" if summary.error else "FAILED"
    if summary.ok < summary.runs:
        return f"{summary.ok}/{summary.runs} runs ok; last error: {summary.error}"
    return None


def load_table(scenario: Scenario, settings: Settings, summaries: Sequence[Summary]) -> str:
    subject = next((s for s in summaries if s.server == SUBJECT and s.ok), None)
    subject_rps = subject.metrics.get("rps") if subject else None
    headers = ["server", "req/s", "p50", "p99", "errors", f"{SUBJECT}/peer req/s"]
    threads = scenario_threads(scenario, settings)
    ideal = threads / scenario.sleep_s if scenario.sleep_s else None
    if ideal:
        headers.append(f"% of ideal {ideal:,.0f}")
    if scenario.bytes_per_request:
        headers.append("MiB/s")
    rows: list[list[str]] = []
    notes: list[str] = []
    for s in summaries:
        rps = s.metrics.get("rps")
        row = [
            s.server,
            fmt_rate(rps),
            fmt_ms(s.metrics.get("p50_ms")),
            fmt_ms(s.metrics.get("p99_ms")),
            fmt_count(s.metrics.get("errors")),
            "-" if s.server == SUBJECT else fmt_ratio(subject_rps, rps),
        ]
        if ideal:
            row.append("-" if rps is None else f"{100 * rps / ideal:.0f}%")
        if scenario.bytes_per_request:
            row.append("-" if rps is None else f"{rps * scenario.bytes_per_request / MIB:,.0f}")
        rows.append(row)
        status = _status_cell(s)
        if status:
            notes.append(f"  {s.server}: {status}")
    return render_table(headers, rows) + ("\n" + "\n".join(notes) if notes else "")


def memory_table(settings: Settings, summaries: Sequence[Summary]) -> str:
    subject = next((s for s in summaries if s.server == SUBJECT and s.ok), None)
    n = (
        f"{settings.idle_connections // 1000}k"
        if settings.idle_connections >= 1000
        else str(settings.idle_connections)
    )
    headers = [
        "server",
        "RSS idle",
        "RSS load",
        f"RSS +{n} idle",
        f"RSS +{n} idle+load",
        "conns held",
        "req/s",
        f"req/s +{n} idle",
        "with/without",
        f"{SUBJECT}/peer RSS +{n}",
    ]

    def rss_ratio(peer: Summary) -> str:
        # Only meaningful when both sides really held all the connections.
        if peer.server == SUBJECT:
            return "-"
        if subject is None or not all(
            (x.metrics.get("conns_held") or 0) >= settings.idle_connections for x in (subject, peer)
        ):
            return "n/a"
        return fmt_ratio(
            subject.metrics.get("rss_idle_conns_load_kib"),
            peer.metrics.get("rss_idle_conns_load_kib"),
        )

    rows: list[list[str]] = []
    notes: list[str] = []
    for s in summaries:
        m = s.metrics
        opened, held = m.get("conns_opened"), m.get("conns_held")
        held_cell = "-" if held is None else f"{held:,.0f}/{settings.idle_connections:,}"
        rows.append(
            [
                s.server,
                fmt_mib(m.get("rss_idle_kib")),
                fmt_mib(m.get("rss_load_kib")),
                fmt_mib(m.get("rss_idle_conns_kib")),
                fmt_mib(m.get("rss_idle_conns_load_kib")),
                held_cell,
                fmt_rate(m.get("rps")),
                fmt_rate(m.get("rps_idle_conns")),
                fmt_ratio(m.get("rps_idle_conns"), m.get("rps")),
                rss_ratio(s),
            ]
        )
        status = _status_cell(s)
        if status:
            notes.append(f"  {s.server}: {status}")
        elif held is not None and held < settings.idle_connections:
            why = ", ".join(f"{k}: {v:,}" for k, v in s.open_failures.items())
            notes.append(
                f"  {s.server}: could not hold {settings.idle_connections:,} idle connections"
                f" (opened {opened:,.0f}, still open after the load: {held:,.0f}"
                + (f"; failed to open: {why})" if why else ")")
            )
    return render_table(headers, rows) + ("\n" + "\n".join(notes) if notes else "")


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def make_big_file(directory: Path) -> Path:
    path = directory / "100MiB.bin"
    block = os.urandom(MIB)
    with path.open("wb") as f:
        for _ in range(BIG_FILE_SIZE // MIB):
            f.write(block)
    return path


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark wsgipool side by side with other WSGI servers (see "
        "docs/benchmarks.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--servers",
        default="all",
        help="comma-separated: " + ",".join(s.name for s in SERVERS),
    )
    parser.add_argument(
        "--scenarios",
        default="all",
        help="comma-separated numbers or keys: " + ",".join(s.key for s in SCENARIOS),
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of unmeasured load")
    parser.add_argument("--repeat", type=int, default=1, help="runs per server; medians shown")
    parser.add_argument("--threads", type=int, default=16, help="worker threads per server")
    parser.add_argument(
        "--idle-connections", type=int, default=10_000, help="idle connections in scenario 8"
    )
    parser.add_argument("--json", type=Path, help="also write all results to this file")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="virtualenv to use")
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter for creating the virtualenv"
    )
    parser.add_argument(
        "--no-install", action="store_true", help="use the virtualenv as it is (no pip)"
    )
    parser.add_argument("--list", action="store_true", help="list scenarios and servers, exit")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0 or args.repeat < 1 or args.threads < 1:
        parser.error("--duration > 0, --warmup >= 0, --repeat >= 1 and --threads >= 1 please")
    return args


def list_everything() -> None:
    rows = [
        [s.key, s.title, s.app, str(s.connections), str(s.threads or "--threads")]
        for s in SCENARIOS
    ]
    print(render_table(["key", "scenario", "app", "conns", "threads"], rows, text_columns=3))
    print()
    print(render_table(["server", "note"], [[s.name, s.note] for s in SERVERS], text_columns=2))


def _install_signal_handlers() -> None:
    """Turn SIGTERM/SIGHUP into SystemExit and make sure Ctrl-C raises
    KeyboardInterrupt (even if SIGINT was ignored when we started), so that
    the ``finally`` in main() always stops the servers."""

    def to_exit(signum: int, _frame: object) -> None:
        log(f"received {signal.Signals(signum).name}, stopping")
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, to_exit)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def run_suite(args: argparse.Namespace) -> int:
    scenarios = select_scenarios(args.scenarios)
    servers = select_servers(args.servers)
    raise_nofile_limit(args.idle_connections + 2_000)
    wrk = ensure_wrk()
    venv = ensure_venv(args.venv.resolve(), args.python, install=not args.no_install)
    versions = server_versions(venv, servers)
    for name, version in versions.items():
        log(f"{name}: {version or 'NOT AVAILABLE (skipped)'}")
    available = [s for s in servers if versions.get(s.name)]
    if not available:
        raise SystemExit("no server is available in the virtualenv")

    commit = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout.strip()
    wrk_version = subprocess.run(
        [wrk, "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout.splitlines()
    report: dict[str, Any] = {
        "meta": {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "commit": commit or "unknown",
            "host": platform.node(),
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "runner_python": sys.version.split()[0],
            "venv_python": subprocess.run(
                [venv.python, "-c", "import sys; print(sys.version.split()[0])"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            ).stdout.strip(),
            "wrk": wrk_version[0] if wrk_version else "?",
            "versions": versions,
            "settings": {
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "repeat": args.repeat,
                "threads": args.threads,
                "idle_connections": args.idle_connections,
            },
        },
        "scenarios": [],
    }

    meta = report["meta"]
    listed = ", ".join(f"{name} {version}" for name, version in versions.items() if version)
    print(
        f"# {meta['started']}, commit {meta['commit']}, {meta['cpus']} CPUs, "
        f"Python {meta['venv_python']}, {meta['wrk'].split(' Copyright')[0]}\n"
        f"# {listed}\n"
        f"# duration {args.duration:g}s, warmup {args.warmup:g}s, repeat {args.repeat}, "
        f"threads {args.threads}",
        flush=True,
    )

    with tempfile.TemporaryDirectory(prefix="wsgipool-bench-") as tmp:
        settings = Settings(
            duration_s=args.duration,
            warmup_s=args.warmup,
            repeat=args.repeat,
            threads=args.threads,
            idle_connections=args.idle_connections,
            venv=venv,
            wrk=WrkRunner(wrk),
            work_dir=Path(tmp),
        )
        if any(s.needs_big_file for s in scenarios):
            log(f"creating the {BIG_FILE_SIZE // MIB} MiB file in {tmp}")
            settings.big_file = make_big_file(Path(tmp))

        total = len(scenarios) * args.repeat * len(available)
        step = 0
        for scenario in scenarios:
            outcomes: dict[str, list[RunOutcome]] = {s.name: [] for s in available}
            for rep in range(1, args.repeat + 1):
                # Servers interleave within each repetition so that drift in
                # the machine's speed hits all of them alike.
                for server in available:
                    step += 1
                    log(
                        f"[{step}/{total}] scenario {scenario.key} · {server.name}"
                        f" · run {rep}/{args.repeat}"
                    )
                    label = f"s{scenario.key}-{server.name}-{rep}"
                    outcomes[server.name].append(run_once(scenario, server, settings, label))
            summaries = [summarize(name, runs) for name, runs in outcomes.items()]
            skipped = [s.name for s in servers if s not in available]
            table = (
                memory_table(settings, summaries)
                if scenario.kind == "memory"
                else load_table(scenario, settings, summaries)
            )
            print(f"\n{scenario_heading(scenario, settings)}\n{table}", flush=True)
            if skipped:
                print(f"  not available: {', '.join(skipped)}", flush=True)
            report["scenarios"].append(
                {
                    "scenario": asdict(scenario),
                    "threads": scenario_threads(scenario, settings),
                    "servers": {
                        name: {
                            "summary": asdict(summarize(name, runs)),
                            "runs": [asdict(o) for o in runs],
                        }
                        for name, runs in outcomes.items()
                    },
                    "not_available": skipped,
                }
            )
            if args.json:
                args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        log(f"results written to {args.json}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        list_everything()
        return 0
    _install_signal_handlers()
    try:
        return run_suite(args)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        stop_all_servers()


if __name__ == "__main__":
    sys.exit(main())
