"""``--workers N``: a supervisor process and N worker processes sharing the listening sockets.

The supervisor binds the sockets once, then forks the worker processes; each runs an
ordinary ``Server`` (its own listener thread and pool of worker threads) on the inherited
listening sockets, which it is handed as ``listen_fds``. The kernel hands each new
connection to one of the processes accepting on the shared socket; one that stops
accepting (stopping, recycling, dead) leaves new connections to the others.

The supervisor starts no thread (forking a process that has threads is unsafe) and,
without ``--preload``, never imports the application: each worker process imports it
after the fork, so a rolling restart (SIGHUP) picks up new code. It sleeps in ``select``
on a pipe that ``signal.set_wakeup_fd`` writes to (SIGCHLD included) and on one pipe per
worker process that the process writes to once it listens: no polling loop.

Signals to the supervisor: TERM graceful stop; INT, QUIT quick stop; HUP rolling restart;
TTIN, TTOU one worker process more or fewer; USR1 reopen log files (here and in every
worker process); USR2 passed on to every worker process, each of which logs its in-flight
requests with their stacks. See docs/processes.md and docs/observability.md.

Each worker process has an index, the lowest no living worker process holds: a worker
process started after another exited (a crash, --max-requests) takes its index over. A
worker process that retires itself while its replacement should start at once (a stuck
request, ``--stuck-recycle``) says so on the pipe it reported ready on (``RETIRING``).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import os
import random
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

from ..accesslog import reopen_log_files
from ..config import PROCESS_DEFAULTS, Config, ConfigError
from ..control import (
    FANOUT_TIMEOUT,
    ControlEndpoint,
    Gathering,
    check_worker_sockets,
    totals_of,
    worker_socket,
)
from ..hooks import NO_HOOKS, ProcessHooks
from ..metrics import MetricsStore, Recorder, Snapshot
from ..monitor import SAMPLE_INTERVAL, MonitorEndpoint, Readiness
from ..sdnotify import Notifier, status_text
from ..server import DUMP_SIGNAL, Server, make_tls_context, register_dump_signal
from ..sockets import bind_all, close_listening, remove_socket_files, url_of
from ..threads import WakePipe, handle_signals
from ..watchdog import scan, scan_interval
from ..wsgi import WSGIApp
from .process import drop_privileges, exit_reason, stop_timeout

if TYPE_CHECKING:
    import ssl

log = logging.getLogger("wsgipool.error")

# After a worker process failed to start, the next start waits this long (no fork storm).
BOOT_BACKOFF = 1.0
# INT/QUIT: how long worker processes get to exit before SIGKILL.
QUICK_STOP_TIMEOUT = 5.0
# Longest the supervisor sleeps without a wake-up (a safety net: signals and child exits
# wake it at once), and how often a worker process checks that its supervisor still lives.
IDLE_WAKE = 1.0
# A worker process that cannot load the application exits with this status; one whose
# server cannot start (its access log, its control socket) with the next.
EXIT_BOOT_FAILED = 3
EXIT_START_FAILED = 4
# How the supervisor's log words the statuses a worker process exits with.
EXIT_MEANINGS = {
    EXIT_BOOT_FAILED: "could not load the application",
    EXIT_START_FAILED: "could not start serving",
}

SUPERVISOR_SIGNALS = tuple(
    getattr(signal, name)
    for name in (
        "SIGTERM",
        "SIGINT",
        "SIGQUIT",
        "SIGHUP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGUSR1",
        "SIGUSR2",
        "SIGCHLD",
    )
    if hasattr(signal, name)
)
# What a worker process writes on its ready pipe: it listens; it retires itself now and
# drains (the supervisor starts its replacement at once and SIGKILLs it if it overstays).
READY = b"r"
RETIRING = b"x"


def run_worker_processes(
    config: Config,
    load: Callable[[], WSGIApp],
    app_name: str = "the application",
    hooks: ProcessHooks = NO_HOOKS,
) -> int:
    """Serve with ``config.workers`` worker processes until TERM, INT or QUIT; return the
    exit status (0, or 1 when the first worker processes could not load the application).

    ``load`` imports the application: in each worker process after the fork, or once here
    before forking with ``config.preload``. ``hooks`` are called at each moment of the
    supervisor's and the worker processes' lives. POSIX only (``os.fork``); main thread
    only.
    """
    if not hasattr(os, "fork"):
        raise ConfigError("workers: worker processes need os.fork (POSIX)")
    return WorkerProcessSupervisor(config, load, app_name, hooks).run()


@dataclass(eq=False)
class WorkerProcess:
    """The supervisor's record of one worker process."""

    pid: int
    ready_fd: int  # read end of the pipe the process writes to once it listens; -1: closed
    generation: int
    index: int  # the worker index (see the module docstring; metrics' worker label)
    slot: int | None = None  # its slot of the metrics store (None: none)
    ready: bool = False
    retiring: bool = False  # sent SIGTERM (or SIGQUIT): no longer counted
    # Why it was asked to leave, as wsgipool_worker_restarts_total counts it ("": it is
    # not replaced, as after TTOU or when stopping).
    restart_reason: str = ""
    kill_at: float = 0.0  # SIGKILL when still running then (0: not planned)
    started: float = dataclasses.field(default_factory=time.monotonic)


def metrics_slots(workers: int) -> int:
    """Slots of the metrics store: every process alive at once, a rolling restart's two
    generations included, with room for SIGTTIN."""
    return 2 * workers + 16


class WorkerProcessSupervisor:
    """Forks ``config.workers`` worker processes and keeps that many running (see the
    module's docstring); ``run`` is its life, on the main thread."""

    def __init__(
        self,
        config: Config,
        load: Callable[[], WSGIApp],
        app_name: str,
        hooks: ProcessHooks = NO_HOOKS,
    ) -> None:
        self._config = config
        self._hooks = hooks
        self._load = load
        self._app_name = app_name
        self._app: WSGIApp | None = None
        self._sockets: list[socket.socket] = []
        self._unix_paths: list[str] = []
        self._processes: dict[int, WorkerProcess] = {}
        self._target = config.workers
        self._generation = 0
        self._stopping = ""  # "", "graceful" or "quick"
        self._failed = False
        self._tls_context: ssl.SSLContext | None = None
        self._ever_ready = False
        self._next_spawn = 0.0
        self._signals: collections.deque[int] = collections.deque()
        self._selector = selectors.DefaultSelector()
        self._wake = WakePipe()
        # Metrics and health (--metrics-bind), systemd's notify socket: see _start_monitoring.
        self._store: MetricsStore | None = None
        self._monitor: MonitorEndpoint | None = None
        self._readiness = Readiness(config.ready_max_queue_wait)
        self._notifier: Notifier | None = None
        self._next_status = 0.0
        # --control-socket: served from the loop; see _control_answer.
        self._control: ControlEndpoint | None = None
        self._draining = False  # `wsgipool ctl drain`: no longer listening

    # --- the supervisor's life -----------------------------------------------------------

    def run(self) -> int:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("the worker-process supervisor must run on the main thread")
        if threading.active_count() > 1:
            log.warning(
                "supervisor: %d threads run before forking worker processes; forking them is "
                "unsafe",
                threading.active_count(),
            )
        config = self._config
        restore: Callable[[], None] = lambda: None  # noqa: E731
        try:
            # Made before binding (a certificate that cannot be loaded leaves nothing
            # listening) and forking (every worker process holds the same session ticket keys).
            self._tls_context = make_tls_context(config)
            # "systemd": the sockets systemd passed this process (LISTEN_PID is ours), taken
            # here and LISTEN_FDS unset, so the worker processes inherit them as the others.
            self._sockets, self._unix_paths = bind_all(config)
            if config.preload:
                self._app = self._load()
                log.info("supervisor: preloaded %s", self._app_name)
            self._start_monitoring()
            self._start_control()
            self._hooks.ready()
            restore = self._install_signal_handlers()
            self._selector.register(self._wake.read_fd, selectors.EVENT_READ, None)
            log.info(
                "supervisor: serving %s on %s with %d worker processes of %d threads",
                self._app_name,
                ", ".join(url_of(sock, config.scheme) for sock in self._sockets),
                self._target,
                config.threads,
            )
            return self._loop()
        finally:
            restore()
            self._kill_all()
            self._selector.close()
            close_listening(self._sockets, self._unix_paths)
            self._wake.close()
            self._stop_monitoring()

    def _loop(self) -> int:
        while True:
            now = time.monotonic()
            if not self._stopping and not self._draining:
                self._maintain(now)
            for key, _events in self._selector.select(self._timeout(time.monotonic())):
                if key.data is None:
                    self._wake.drain()
                elif isinstance(key.data, WorkerProcess):
                    self._read_ready(key.data)
            if self._monitor is not None:
                # Answered here, between two turns of the loop: a scrape is a copy of
                # shared memory, never a question to a worker process.
                self._monitor.serve(0.0)
            if self._control is not None:
                self._control.serve(0.0)
            self._reap()
            self._notify_status(time.monotonic())
            while self._signals:
                self._on_signal(self._signals.popleft())
            if self._failed and not self._stopping:
                log.error("supervisor: the worker processes cannot start; stopping")
                self._stop("quick")
            self._kill_overdue(time.monotonic())
            if self._stopping and not self._processes:
                log.info("supervisor: every worker process has exited")
                return 1 if self._failed else 0

    def _timeout(self, now: float) -> float:
        wake = now + IDLE_WAKE
        for process in self._processes.values():
            if process.kill_at:
                wake = min(wake, process.kill_at)
        if not self._stopping and self._next_spawn > now and self._short_of_processes():
            wake = min(wake, self._next_spawn)
        for endpoint in (self._monitor, self._control):
            if endpoint is not None:
                wake = min(wake, endpoint.next_deadline() or wake)
        return max(0.0, wake - now)

    # --- signals -------------------------------------------------------------------------

    def _install_signal_handlers(self) -> Callable[[], None]:
        def on_signal(signum: int, frame: FrameType | None) -> None:
            # Only recorded (threads.handle_signals): the main loop, woken by the wake-up
            # descriptor, acts on it.
            self._signals.append(signum)

        return handle_signals(SUPERVISOR_SIGNALS, on_signal, self._wake)

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGCHLD:
            return  # _reap runs every turn
        if signum == getattr(signal, "SIGUSR2", None):
            # Also while stopping: a drain that hangs is when a dump is wanted most.
            log.info(
                "supervisor: SIGUSR2: asking %d worker process(es) for their in-flight requests",
                len(self._processes),
            )
            for process in self._processes.values():
                self._send(process, signum)
            return
        if signum == signal.SIGTERM:
            if not self._stopping:
                log.info("supervisor: SIGTERM: stopping the worker processes gracefully")
                self._stop("graceful")
        elif signum in (signal.SIGINT, signal.SIGQUIT):
            if self._stopping != "quick":
                log.info("supervisor: %s: stopping now", signal.Signals(signum).name)
                self._stop("quick")
        elif self._stopping:
            return
        elif signum == signal.SIGHUP:
            self._generation += 1
            log.info("supervisor: SIGHUP: starting %d new worker processes", self._target)
            self._hooks.reloading()
            if self._config.certfile:
                # Read the certificate files again: renewed ones take effect.
                try:
                    self._tls_context = make_tls_context(self._config)
                except ConfigError as exc:
                    log.error("supervisor: keeping the current TLS certificate: %s", exc)
        elif signum == signal.SIGTTIN:
            self._target += 1
            log.info("supervisor: SIGTTIN: %d worker processes", self._target)
            self._hooks.workers_changed(self._target, self._target - 1)
        elif signum == signal.SIGTTOU:
            if self._target > 1:
                self._target -= 1
                self._hooks.workers_changed(self._target, self._target + 1)
            log.info("supervisor: SIGTTOU: %d worker processes", self._target)
        elif signum == signal.SIGUSR1:
            count = reopen_log_files()
            log.info(
                "supervisor: SIGUSR1: reopened %d log file(s); telling the worker processes", count
            )
            for process in self._processes.values():
                self._send(process, signal.SIGUSR1)

    def _stop(self, how: str) -> None:
        self._stopping = how
        if self._notifier is not None:
            self._notifier.notify("STOPPING=1", "STATUS=stopping the worker processes")
        # New clients are refused from now on, as in single-process mode, rather than left
        # in our listen queue until we exit. (A rolling restart keeps the sockets.) Each
        # worker process closes its own copy as its drain begins.
        close_listening(self._sockets, self._unix_paths)
        now = time.monotonic()
        if how == "graceful":
            signum, wait = signal.SIGTERM, stop_timeout(self._config)
        else:
            signum, wait = signal.SIGQUIT, QUICK_STOP_TIMEOUT
        for process in self._processes.values():
            self._retire(process, now, signum, wait)

    # --- worker processes ----------------------------------------------------------------

    def _current(self) -> list[WorkerProcess]:
        return [
            process
            for process in self._processes.values()
            if process.generation == self._generation and not process.retiring
        ]

    def _short_of_processes(self) -> bool:
        return len(self._current()) < self._target

    def _maintain(self, now: float) -> None:
        current = self._current()
        while len(current) < self._target and now >= self._next_spawn:
            process = self._spawn()
            if process is None:
                self._next_spawn = now + BOOT_BACKOFF
                return
            current.append(process)
        # TTOU: the oldest go first.
        for process in sorted(current, key=lambda process: process.pid)[
            : max(0, len(current) - self._target)
        ]:
            self._retire(process, now)
        # A rolling restart ends once the new generation listens: then the old one leaves.
        current = self._current()
        if len(current) >= self._target and all(process.ready for process in current):
            for process in list(self._processes.values()):
                if process.generation != self._generation and not process.retiring:
                    self._retire(process, now)
                    process.restart_reason = "reload"

    def _retire(
        self,
        process: WorkerProcess,
        now: float,
        signum: int = signal.SIGTERM,
        wait: float | None = None,
    ) -> None:
        if wait is None:
            wait = stop_timeout(self._config)
        process.retiring = True
        deadline = now + wait
        process.kill_at = min(process.kill_at, deadline) if process.kill_at else deadline
        self._send(process, signum)

    def _send(self, process: WorkerProcess, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signum)

    def _kill_overdue(self, now: float) -> None:
        for process in self._processes.values():
            if process.kill_at and now >= process.kill_at:
                log.warning(
                    "supervisor: worker process %d did not exit in time; killing it", process.pid
                )
                process.kill_at = 0.0
                self._send(process, signal.SIGKILL)

    def _kill_all(self) -> None:
        """Last resort on the way out (an exception in the loop): none of the worker
        processes outlives us."""
        for process in self._processes.values():
            self._send(process, signal.SIGKILL)
        for pid in list(self._processes):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            process = self._processes.pop(pid)
            self._forget(process)
            self._remove_control_socket(process)

    def _read_ready(self, process: WorkerProcess) -> None:
        try:
            data = os.read(process.ready_fd, 64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            if not process.ready:
                process.ready = True
                if not self._ever_ready and self._notifier is not None:
                    self._notifier.notify("READY=1")
                self._ever_ready = True
                log.debug("supervisor: worker process %d is listening", process.pid)
            if RETIRING in data and not process.retiring:
                # It drains itself; counted no more, so _maintain starts its replacement.
                log.warning(
                    "supervisor: worker process %d is retiring itself; starting its replacement",
                    process.pid,
                )
                process.retiring = True
                process.kill_at = time.monotonic() + stop_timeout(self._config)
            return
        self._forget(process)  # End of file: the process has exited (or is exiting).

    def _forget(self, process: WorkerProcess) -> None:
        if process.ready_fd >= 0:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(process.ready_fd)
            os.close(process.ready_fd)
            process.ready_fd = -1

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            process = self._processes.pop(pid, None)
            if process is None:
                continue
            if process.ready_fd >= 0 and not process.ready:
                self._read_ready(process)  # It may have become ready just before exiting.
            self._forget(process)
            self._remove_control_socket(process)
            self._hooks.child_exited(pid)
            code = os.waitstatus_to_exitcode(status)
            self._count_exit(process, code)
            if self._stopping or process.retiring:
                log.info("supervisor: worker process %d has exited", pid)
            elif not process.ready:
                log.error(
                    "supervisor: worker process %d failed to start (it %s)",
                    pid,
                    exit_reason(code, EXIT_MEANINGS),
                )
                self._next_spawn = time.monotonic() + BOOT_BACKOFF
                if not self._ever_ready:
                    self._failed = True
                elif process.generation == self._generation and any(
                    other.generation != self._generation and not other.retiring
                    for other in self._processes.values()
                ):
                    self._abandon_rollover()
            elif code == 0:
                log.info("supervisor: worker process %d retired itself; starting a new one", pid)
            else:
                log.warning(
                    "supervisor: worker process %d %s; starting a new one",
                    pid,
                    exit_reason(code, EXIT_MEANINGS),
                )

    def _abandon_rollover(self) -> None:
        """A worker process of a rolling restart failed to start: keep the old ones."""
        log.error("supervisor: rolling restart failed; the previous worker processes keep serving")
        now = time.monotonic()
        self._generation += 1
        for process in list(self._processes.values()):
            if process.retiring:
                continue
            if process.generation == self._generation - 1:
                self._retire(process, now)  # the new ones
            else:
                process.generation = self._generation

    def _free_index(self) -> int:
        """The lowest worker index no living worker process holds: a replacement started
        after its predecessor exited takes its index (and its metrics ``worker`` label)."""
        taken = {process.index for process in self._processes.values()}
        return next(index for index in range(len(taken) + 1) if index not in taken)

    def _spawn(self) -> WorkerProcess | None:
        index = self._free_index()
        try:
            ready_r, ready_w = os.pipe()
        except OSError as exc:
            log.error("supervisor: cannot start a worker process: %s", exc)
            return None
        slot = self._assign_slot(index)
        worker = self._hooks.before_fork()
        try:
            pid = os.fork()
        except OSError as exc:
            log.error("supervisor: cannot start a worker process: %s", exc)
            os.close(ready_r)
            os.close(ready_w)
            if self._store is not None and slot is not None:
                self._store.retire(slot)
            return None
        if pid == 0:  # The worker process: never returns.
            status = 1
            try:
                os.close(ready_r)
                status = self._become_worker_process(ready_w, index, slot, worker)
            except BaseException:
                with contextlib.suppress(BaseException):
                    log.exception("worker process %d failed", os.getpid())
            finally:
                with contextlib.suppress(BaseException):
                    self._hooks.worker_exiting()
                with contextlib.suppress(BaseException):
                    logging.shutdown()
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(status)
        os.close(ready_w)
        os.set_blocking(ready_r, False)
        self._hooks.after_fork(worker, pid)
        process = WorkerProcess(pid, ready_r, self._generation, index, slot)
        self._processes[pid] = process
        self._selector.register(ready_r, selectors.EVENT_READ, process)
        log.info("supervisor: started worker process %d (worker %d)", pid, index)
        return process

    def _become_worker_process(
        self, ready_w: int, index: int, slot: int | None, worker: object
    ) -> int:
        """In the forked child: drop the supervisor's state, then serve."""
        signal.set_wakeup_fd(-1)
        for signum in SUPERVISOR_SIGNALS:
            # USR1 and USR2 (passed on to every worker process, maybe this new one before
            # it handles them) would end it by default: ignored until it does.
            passed_on = signum in (signal.SIGUSR1, getattr(signal, "SIGUSR2", None))
            signal.signal(signum, signal.SIG_IGN if passed_on else signal.SIG_DFL)
        self._selector.close()
        self._wake.close()
        if self._monitor is not None:
            self._monitor.close_after_fork()
        if self._control is not None:
            self._control.close_after_fork()
        if self._notifier is not None:
            self._notifier.close()
        # This process is its slot's one writer from now on.
        recorder = self._store.recorder(slot) if self._store is not None else None
        for other in self._processes.values():
            if other.ready_fd >= 0:
                os.close(other.ready_fd)
        # This process's Server takes the listening descriptors over.
        fds = [sock.detach() for sock in self._sockets]
        for fd in fds:
            os.set_inheritable(fd, False)  # fd://N: not for the application's subprocesses
        supervisor_pid = os.getppid()
        self._hooks.in_forked_child(worker)
        return _serve_as_worker_process(
            self._config,
            self._app,
            self._load,
            self._app_name,
            ready_w,
            supervisor_pid,
            self._tls_context,
            fds,
            recorder,
            self._hooks,
            index,
        )

    # --- metrics and health --------------------------------------------------------------

    def _start_monitoring(self) -> None:
        """Before any fork: the shared metrics store (with --metrics-bind, for systemd's
        STATUS line, or for the totals of --control-socket's stats) and the monitoring endpoint, served from the loop (no thread here)."""
        self._notifier = Notifier.from_environ()
        address = self._config.metrics_address
        if address is None and self._notifier is None and not self._config.control_socket:
            return
        self._store = MetricsStore(slots=metrics_slots(self._config.workers))
        if address is not None:
            self._monitor = MonitorEndpoint.bind(
                address, self._store.snapshot, self._not_ready, self._config.socket_mode
            )
            self._selector.register(self._monitor.fileno(), selectors.EVENT_READ, self._monitor)
            log.info("supervisor: metrics and health on %s", url_of(self._monitor.sock))

    def _stop_monitoring(self) -> None:
        if self._monitor is not None:
            self._monitor.close()
            self._monitor = None
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._notifier is not None:
            self._notifier.close()
            self._notifier = None
        # The store stays mapped: a snapshot may still be taken (tests, embedding).

    # --- the control socket -------------------------------------------------------------

    def _start_control(self) -> None:
        """Before any fork: the control socket, served from the loop (no thread here)."""
        path = self._config.control_socket
        if not path:
            return
        check_worker_sockets(path)
        self._control = ControlEndpoint.bind(path, self._control_answer)
        self._selector.register(self._control.fileno(), selectors.EVENT_READ, self._control)
        log.info("supervisor: control socket at %s", path)

    def _control_answer(self, request: dict[str, Any]) -> Gathering:
        """Pass ``request`` on to every worker process at once (``workers``: asked for
        their stats, joined to this supervisor's records of them); the endpoint gathers
        their answers from this loop's selector, at most FANOUT_TIMEOUT, never waiting."""
        command = request["command"]
        supervisor: dict[str, Any] = {"pid": os.getpid()}
        if command == "drain":
            self._drain()
            supervisor["draining"] = True
        elif command == "reopen-logs":
            supervisor["reopened"] = reopen_log_files()
        elif command == "threads" and request.get("count") is not None:
            # Worker processes started from now on (replacements, SIGHUP) get as many.
            self._config = dataclasses.replace(self._config, threads=request["count"])
            supervisor["threads"] = request["count"]
        processes = sorted(self._processes.values(), key=lambda process: process.index)
        asked = {**request, "command": "stats" if command == "workers" else command}
        paths = [worker_socket(self._config.control_socket, p.index) for p in processes]

        def combine(answers: list[dict[str, Any]]) -> dict[str, Any]:
            entries = [
                self._control_entry(command, process, answer)
                for process, answer in zip(processes, answers, strict=True)
            ]
            whole: dict[str, Any] = {"ok": True, "processes": entries, "supervisor": supervisor}
            if command == "stats" and self._store is not None:
                whole["totals"] = totals_of(self._store.snapshot(process_stats=False))
            return whole

        return Gathering(paths, asked, FANOUT_TIMEOUT, combine)

    def _control_entry(
        self, command: str, process: WorkerProcess, answer: dict[str, Any]
    ) -> dict[str, Any]:
        """One worker process's line of the answer to ``command``."""
        part = answer["processes"][0] if answer.get("ok") else {"error": answer.get("error")}
        entry: dict[str, Any] = {"pid": process.pid, "worker": process.index}
        if command != "workers":
            entry.update(part)
            return entry
        entry["age"] = round(time.monotonic() - process.started, 3)
        entry["state"] = self._state_of(process)
        entry["requests"] = part.get("requests")
        if "error" in part:
            entry["error"] = part["error"]
        return entry

    def _remove_control_socket(self, process: WorkerProcess) -> None:
        """A reaped worker process's control socket file: it removes it as it stops, but
        not when killed. Its index is free only now, so no successor has bound the path."""
        if self._config.control_socket:
            remove_socket_files([worker_socket(self._config.control_socket, process.index)])

    def _state_of(self, process: WorkerProcess) -> str:
        if process.retiring:
            return "retiring"
        if not process.ready:
            return "starting"
        return "draining" if self._draining else "serving"

    def _drain(self) -> None:
        """``ctl drain``: stop listening (here and, told next, in every worker process),
        start no worker process, until a stop signal."""
        if not self._draining:
            log.info("supervisor: draining: no longer accepting connections")
        self._draining = True
        close_listening(self._sockets, self._unix_paths)

    def _assign_slot(self, index: int) -> int | None:
        if self._store is None:
            return None
        slot = self._store.assign(index)
        if slot is None:
            log.warning(
                "supervisor: no metrics slot free for worker index %d; it records nothing", index
            )
        return slot

    def _count_exit(self, process: WorkerProcess, code: int) -> None:
        """Fold the counts of a reaped worker process into the totals; count it as a
        restart when it is replaced."""
        store = self._store
        if store is None:
            return
        if process.slot is not None:
            store.retire(process.slot)
            process.slot = None
        if process.retiring:
            reason = process.restart_reason
        elif self._stopping:
            reason = ""
        elif not process.ready:
            reason = "boot_failure"
        elif code == 0:
            reason = "max_requests"  # it retired itself
        else:
            reason = "signal" if code < 0 else "crash"
        if reason:
            store.worker_restart(reason)

    def _not_ready(self) -> str | None:
        if self._stopping or self._draining:
            phase = "draining"
        elif not any(process.ready for process in self._current()):
            phase = "starting" if not self._ever_ready else "no worker process is listening"
        else:
            phase = ""
        assert self._store is not None
        return self._readiness.not_ready(phase, self._store.snapshot)

    def _notify_status(self, now: float) -> None:
        """Now and then, tell systemd how busy the worker processes are."""
        if self._notifier is None or self._store is None or now < self._next_status:
            return
        self._next_status = now + SAMPLE_INTERVAL
        self._notifier.status(_status_line(self._store.snapshot(process_stats=False), self._config))


# --- the worker process --------------------------------------------------------------------


class _CountingApp:
    """Calls ``on_limit`` (once) when the ``limit``-th request reaches the application."""

    def __init__(self, app: WSGIApp, limit: int, on_limit: Callable[[], None]) -> None:
        self._app = app
        self._limit = limit
        self._on_limit = on_limit
        self._count = 0
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        with self._lock:
            self._count += 1
            reached = self._count == self._limit
        if reached:
            self._on_limit()
        return self._app(environ, start_response)


def _serve_as_worker_process(
    config: Config,
    app: WSGIApp | None,
    load: Callable[[], WSGIApp],
    app_name: str,
    ready_w: int,
    supervisor_pid: int,
    tls_context: ssl.SSLContext | None,
    listen_fds: list[int],
    recorder: Recorder | None = None,
    hooks: ProcessHooks = NO_HOOKS,
    index: int = 0,
) -> int:
    """A worker process's life: load the app, serve, stop on a signal, a recycle, a stuck
    request (``--stuck-recycle``) or an orphaning. Returns the exit status. ``ready_w``
    is its end of the pipe to the supervisor (READY, RETIRING), open while it lives."""
    wake = WakePipe()
    pending: collections.deque[int] = collections.deque()
    server: Server | None = None

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # Plain stores and a wake-up only (threads.handle_signals); request_stop and
        # request_dump are such.
        if signum == DUMP_SIGNAL:
            if server is not None:
                server.request_dump()
            return
        pending.append(signum)
        if signum == signal.SIGQUIT and server is not None:
            server.request_stop(force=True)  # noticed even while stop() is waiting
        wake.wake()

    signums = [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1]
    handle_signals([*signums, *([DUMP_SIGNAL] if DUMP_SIGNAL else [])], on_signal, wake)
    register_dump_signal()  # after the handler, for the process's life (see dumps.py)
    # Meant for the supervisor; a terminal's hang-up or job control must not stop us.
    for ignored in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(ignored, signal.SIG_IGN)

    # As gunicorn: the worker processes run as --user, the supervisor stays who it is.
    drop_privileges(config)
    if app is None:
        try:
            app = load()
        except Exception as exc:
            log.error("worker process %d: cannot load the application: %s", os.getpid(), exc)
            return EXIT_BOOT_FAILED
    recycle = threading.Event()
    limit = config.max_requests
    if limit:
        limit += random.randint(0, config.max_requests_jitter)

        def on_limit() -> None:
            # Before this request's response goes out, so it says Connection: close.
            assert server is not None
            server.drain()
            recycle.set()
            wake.wake()

        app = _CountingApp(app, limit, on_limit)
    hooks.worker_ready()
    server = Server(
        app,
        # The process options are this supervisor's (max_requests: the counting app above).
        dataclasses.replace(
            config,
            **PROCESS_DEFAULTS,
            control_socket=worker_socket(config.control_socket, index)
            if config.control_socket
            else "",
        ),
        app_name=app_name,
        multiprocess=config.workers > 1,
        tls_context=tls_context,
        listen_fds=listen_fds,
        recorder=recorder,
        request_hooks=hooks.request_hooks,
        worker_index=index,
    )
    try:
        server.start()
    except ConfigError as exc:
        # One line, as at the command line (a file it cannot open, as --user maybe).
        log.error("worker process %d: cannot start serving: %s", os.getpid(), exc)
        return EXIT_START_FAILED
    os.write(ready_w, READY)

    force = False
    stop = ""
    stuck_after = config.stuck_recycle
    wait = min(IDLE_WAKE, scan_interval(stuck_after)) if stuck_after else IDLE_WAKE
    while not stop:
        wake.wait(wait)
        while pending:
            signum = pending.popleft()
            if signum == signal.SIGUSR1:
                reopen_log_files()
            elif signum == signal.SIGQUIT:
                force = True
                stop = "SIGQUIT"
                hooks.worker_interrupted()
            else:
                stop = signal.Signals(signum).name
                if signum == signal.SIGINT:
                    hooks.worker_interrupted()
        if recycle.is_set() and not stop:
            stop = f"served {limit} requests (--max-requests)"
        if stuck_after and not stop and _holds_stuck_request(server, stuck_after):
            stop = _retire_for_stuck_request(server, ready_w, stuck_after)
            hooks.worker_aborting()
        if os.getppid() != supervisor_pid and not stop:
            stop = "the supervisor has gone"
    log.info("worker process %d: stopping: %s", os.getpid(), stop)
    if force:
        server.request_stop(force=True)
    server.stop()
    return 0


def _status_line(snapshot: Snapshot, config: Config) -> str:
    """systemd's STATUS= line: busy threads and queue length over every worker process."""
    processes = sum(reading.processes for reading in snapshot.workers.values())
    busy = sum(reading.gauges.active_requests for reading in snapshot.workers.values())
    queued = sum(reading.gauges.queue_length for reading in snapshot.workers.values())
    return status_text(busy, processes * config.threads, queued, workers=processes)


def _holds_stuck_request(server: Server, stuck_after: float) -> bool:
    """Whether a request of ``server`` made no progress for ``stuck_after`` seconds."""
    return bool(scan(server.scoreboard.read(), time.monotonic(), stuck_after, {}).stuck)


def _retire_for_stuck_request(server: Server, ready_w: int, stuck_after: float) -> str:
    """``--stuck-recycle``: log the dump, have the supervisor start the replacement, stop
    accepting (the other requests finish within the graceful timeout); the reason."""
    server.log_dump()
    with contextlib.suppress(OSError):
        os.write(ready_w, RETIRING)
    server.drain()
    return f"a request made no progress for {stuck_after:g}s (--stuck-recycle)"
