"""``Server`` ties the parts together: sockets, listener thread, worker-thread pool and
gateway. One process; the supervisors (``wsgipool.supervisors``) run several."""

from __future__ import annotations

import logging
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .accesslog import AccessLog, reopen_log_files
from .affinity import make_cpu_affinity
from .config import Config, ConfigError
from .connection import Connection
from .control import ControlEndpoint, ProcessControl
from .dumps import format_in_flight, register_fault_dump
from .hooks import RequestHooks
from .listener import Listener
from .metrics import Gauges, MetricsStore, Recorder, Snapshot
from .monitor import MonitorEndpoint, Readiness, Ticker
from .scoreboard import Scoreboard, State
from .sdnotify import Notifier, status_text
from .sockets import bind_all, close_listening, remove_socket_files, url_of
from .taskqueue import TaskQueue
from .threads import WakePipe, handle_signals
from .watchdog import Watchdog
from .worker import STOP_MARGIN, ConnectionHandler, WorkerPool
from .wsgi import Gateway, WSGIApp

if TYPE_CHECKING:
    import ssl

log = logging.getLogger("wsgipool.error")

# A forced stop (a second Ctrl-C, request_stop(force=True)) waits this long for the
# worker threads.
FORCED_STOP_WAIT = 0.1


class Server:
    """A WSGI server you can start, embed and stop.

    ``Server(app, threads=32, bind=["127.0.0.1:0"])`` takes the options of ``Config`` (or a
    ready ``config=``). ``start()`` returns once every address is listening; ``stop()``
    drains in-flight requests; ``serve_forever()`` does both around SIGINT/SIGTERM.

    The other keywords are for the front ends and the supervisors: ``app_name``, how logs
    name the app (default: its module and name); ``modes``, development modes the banner
    names ("reloading on changes"); ``multiprocess``, ``wsgi.multiprocess`` (a worker
    process); ``tls_context``, the context to serve TLS with (default: made at ``start()``
    from the config, see ``make_tls_context``); ``listen_fds``, listening descriptors a
    supervisor process handed over, served instead of binding the config's addresses;
    ``recorder``, where a worker process records its metrics (its slot of the supervisor's
    store: the supervisor serves ``--metrics-bind``; without it, a server with
    ``metrics_bind`` keeps and serves its own);
    ``socket_files``, the Unix socket files among them this server removes as it stops;
    ``request_hooks``, called around each request (gunicorn's pre_request, post_request).
    """

    def __init__(
        self,
        app: WSGIApp,
        config: Config | None = None,
        *,
        app_name: str | None = None,
        modes: Sequence[str] = (),
        multiprocess: bool = False,
        tls_context: ssl.SSLContext | None = None,
        listen_fds: Sequence[int] | None = None,
        recorder: Recorder | None = None,
        socket_files: Sequence[str] = (),
        request_hooks: RequestHooks | None = None,
        worker_index: int | None = None,
        **options: Any,
    ) -> None:
        if config is not None and options:
            raise TypeError("pass either config= or keyword options, not both")
        self.app = app
        self.app_name = app_name or (
            f"{getattr(app, '__module__', '?')}:{getattr(app, '__qualname__', type(app).__name__)}"
        )
        self.modes = tuple(modes)
        self.multiprocess = multiprocess
        # A worker process's supervisor makes one for all of them, so a session ticket one
        # issued resumes on another.
        self.tls_context = tls_context
        self._listen_fds = None if listen_fds is None else list(listen_fds)
        self.request_hooks = request_hooks
        self.config = config if config is not None else Config.from_options(**options)
        if self.config.process_options():
            raise ConfigError(
                f"{', '.join(self.config.process_options())}: options of the whole process, "
                "which a Server (running inside your program) leaves to it: use serve() or "
                "the wsgipool command for worker processes, the umask and logging"
            )
        self.sockets: list[socket.socket] = []
        self._unix_paths: list[str] = []
        self._socket_files = list(socket_files)
        self._keep_socket_files = False  # keep_socket_files()
        self._addresses: list[Any] = []
        self._urls: list[str] = []
        self._listener: Listener | None = None
        self._pool: WorkerPool | None = None
        # Stop requests: plain flags a signal handler may set, then a byte in _wake for
        # serve_forever (see request_stop).
        self._stop_requested = False
        self._force_stop = False
        self._reopen_requested = False  # SIGUSR1: reopen log files
        self._interrupted_twice = False
        self._wake = WakePipe()
        self._access_log: AccessLog | None = None
        self._stopped = False
        # Metrics and health: see _start_monitoring.
        self._recorder = recorder
        self._recording_for_supervisor = recorder is not None
        self._store: MetricsStore | None = None
        self._monitor: MonitorEndpoint | None = None
        self._readiness = Readiness(self.config.ready_max_queue_wait)
        self._notifier: Notifier | None = None
        self._tickers: list[Ticker] = []
        self._control: ControlEndpoint | None = None  # --control-socket
        self._tasks: TaskQueue[Connection] | None = None
        self._gateway: Gateway | None = None
        self._listening = False
        self.worker_index = worker_index
        # What every worker thread is doing, and the thread that watches it and writes
        # dumps (made now: a signal handler installed before start() may ask for a dump).
        self.scoreboard = Scoreboard(self.config.dump_header_names)
        self._watchdog = Watchdog(
            self.scoreboard, self.config.stuck_threshold, on_dump=self.log_dump
        )

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Bind, start the pool and the listener; return once listening. A Server starts
        once (``RuntimeError`` after that, as for a thread): make a new one to serve again."""
        if self._listener is not None or self._stopped:
            # A second pool on new sockets would leave the first serving, unstoppable; and
            # stop() does nothing a second time.
            raise RuntimeError(
                f"this Server has {'stopped' if self._stopped else 'started'} already: a "
                "Server starts once; make a new one to serve again"
            )
        config = self.config
        tls_context = self.tls_context if self.tls_context is not None else make_tls_context(config)
        if config.access_log:
            try:
                self._access_log = AccessLog(config.access_log_format, config.access_log)
            except OSError as exc:
                raise ConfigError(
                    f"access_log: cannot open {config.access_log}: {exc.strerror}"
                ) from None
        try:
            # Under --reload or --workers, the supervisor process holds the sockets and hands
            # them over as listen_fds (systemd's among them: "systemd" may stand for
            # several); it also unlinks Unix socket files, so they are not in _unix_paths.
            self.sockets, self._unix_paths = bind_all(config, self._listen_fds)
            self._unix_paths += self._socket_files
        except Exception:
            self._close_access_log()
            raise
        try:
            self._start_monitoring()
            self._start_control()
        except Exception:
            self._stop_monitoring()
            self._close_sockets()
            self._close_access_log()
            raise
        recorder = self._recorder
        draining = threading.Event()
        gateway = Gateway(
            self.app,
            config,
            multiprocess=self.multiprocess,
            draining=draining,
            access_log=self._access_log,
            recorder=recorder,
            request_hooks=self.request_hooks,
            worker_index=self.worker_index or 0,
        )
        tasks: TaskQueue[Connection] = TaskQueue(config.queue_limit)
        affinity = make_cpu_affinity(config.cpu_affinity, home=self.worker_index or 0)
        pool = WorkerPool(
            config.threads,
            tasks,
            scoreboard=self.scoreboard,
            pinning=affinity.pinning if affinity is not None else None,
        )
        on_shed = recorder.rejected if recorder is not None else None
        listener = Listener(
            self.sockets, config, tasks, draining, tls_context, on_shed, affinity=affinity
        )
        self._tasks, self._gateway = tasks, gateway
        try:
            pool.start(ConnectionHandler(gateway, listener))
            listener.start()
        except RuntimeError as exc:  # "can't start new thread": memory or process limits
            pool.stop(timeout=0.0)
            self._close_sockets()
            self._close_access_log()
            self._stop_monitoring()
            raise ConfigError(
                f"threads: cannot start {config.threads} threads here ({exc}); lower "
                "--threads, or raise the limits on threads and memory (ulimit -u, ulimit -v)"
            ) from None
        self._pool, self._listener = pool, listener
        self._watchdog.start()
        if self._control is not None:
            self._control.start()
        # Remembered now: they stay readable after stop() closed the sockets.
        self._addresses = [sock.getsockname() for sock in self.sockets]
        self._urls = [url_of(sock, config.scheme) for sock in self.sockets]
        log.info(
            "wsgipool %s serving %s with %d threads (queue limit %d)%s",
            __version__,
            self.app_name,
            config.threads,
            config.queue_limit,
            "".join(f"; {mode}" for mode in self.modes),
        )
        for url in self.urls:
            log.info("listening on %s", url)
        self._listening = True
        if self._monitor is not None:
            log.info("metrics and health on %s", self.metrics_url)
        if self._recording_for_supervisor or self._notifier is not None:
            self._tickers.append(Ticker(self._sample, "wsgipool-sampler"))

    def stop(self, timeout: float | None = None) -> bool:
        """Stop accepting, let in-flight requests finish (up to ``timeout``, by default the
        graceful timeout), close the rest. True when every connection finished in time."""
        if self._stopped:
            return True
        self._stopped = True
        listener, pool = self._listener, self._pool
        if listener is None or pool is None:
            self._close_sockets()
            return True
        if timeout is None:
            timeout = self.config.graceful_timeout
        listener.drain()
        # The listener closes the listening sockets now; their files go with them (a
        # successor may bind the paths during the drain).
        if not self._keep_socket_files:
            remove_socket_files(self._unix_paths)
        deadline = time.monotonic() + timeout
        clean = False
        while not self._force_stop:
            remaining = deadline - time.monotonic()
            # Short waits, so a second Ctrl-C (which sets _force_stop) is noticed quickly.
            if listener.wait_idle(min(0.2, max(0.0, remaining))):
                clean = True
                break
            if remaining <= 0:
                break
        if self._interrupted_twice:
            log.warning("second interrupt: stopping now")
        if not clean:
            log.warning(
                "graceful timeout: closing %d connection(s) still open", listener.connection_count()
            )
        # Shuts the busy connections down: a worker thread blocked on its socket leaves at once.
        listener.stop()
        # One still inside the application cannot be interrupted: a daemon thread, it is
        # left behind after STOP_MARGIN (or at once when forced).
        pool.stop(timeout=FORCED_STOP_WAIT if self._force_stop else STOP_MARGIN)
        if self._recorder is not None:
            # A worker thread left inside the application has counted requests too.
            self._recorder.flush_all()
        self._watchdog.stop()
        self._close_sockets()
        self._close_access_log()
        self._stop_monitoring()
        return clean

    def serve_forever(self) -> None:
        """Start, then block until SIGINT or SIGTERM (or ``request_stop``), then stop."""
        # Handlers first: a signal that lands as "listening" is logged is a clean stop too.
        restore = self._install_signal_handlers()
        if not self.multiprocess and not self._listener:
            # systemd's Type=notify (a worker process leaves it to its supervisor).
            self._notifier = Notifier.from_environ()
        try:
            if not self._listener:
                self.start()
            if self._notifier is not None:
                self._notifier.notify("READY=1", f"STATUS={self._status()}")
            # Woken at once by request_stop and by a signal, even one that lands just
            # before the thread blocks (the signal wake-up descriptor is the same pipe).
            while not self._stop_requested:
                self._wake.wait()
                if self._reopen_requested:
                    self._reopen_requested = False
                    log.info("SIGUSR1: reopened %d log file(s)", reopen_log_files())
            log.info("shutting down: finishing in-flight requests")
            if self._notifier is not None:
                self._notifier.notify("STOPPING=1", "STATUS=finishing in-flight requests")
            self.stop()
        finally:
            restore()
            if self._notifier is not None:
                self._notifier.close()

    def drain(self) -> None:
        """Stop accepting now and close idle connections; responses from now on carry
        ``Connection: close``. Safe from any thread (not from a signal handler); ``stop()``
        then waits for what is in flight."""
        if self._listener is not None:
            self._listener.drain()

    def request_stop(self, force: bool = False) -> None:
        """Ask ``serve_forever`` to stop; safe from any thread or a signal handler (plain
        stores and a non-blocking write: no lock). ``force``: do not wait for in-flight
        requests (as a second Ctrl-C does); ``stop()`` notices it while it waits."""
        if force:
            self._force_stop = True
        self._stop_requested = True  # before the wake-up: the waiter checks it after one
        self._wake.wake()

    def keep_socket_files(self) -> None:
        """Leave the Unix socket files in place when stopping: a successor serves the same
        sockets. Safe from a signal handler (one store)."""
        self._keep_socket_files = True

    @property
    def stop_requested(self) -> bool:
        """Whether a stop was asked for (a signal, ``request_stop``): until then the
        listening sockets are open."""
        return self._stop_requested

    def request_dump(self) -> None:
        """Ask for a dump of the in-flight requests with their stacks, logged by the
        watchdog's thread (``log_dump``). Safe from a signal handler: it stores a number
        and writes a byte."""
        self._watchdog.request_dump()

    def dump_in_flight(self) -> str:
        """The in-flight requests, each with its thread's stack, redacted (see dumps.py)."""
        return format_in_flight(
            self.scoreboard, process_label="wsgipool", worker_index=self.worker_index
        )

    def log_dump(self) -> None:
        """Log ``dump_in_flight`` to the error log, as a WARNING (it shows at every level
        but error): an operator asked for it, or a worker process is being recycled."""
        log.warning("in-flight requests: %s", self.dump_in_flight().rstrip("\n"))

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- introspection -------------------------------------------------------------------

    @property
    def addresses(self) -> list[Any]:
        """What each listening socket is bound to: ``(host, port)`` tuples or Unix paths."""
        return list(self._addresses)

    @property
    def urls(self) -> list[str]:
        return list(self._urls)

    @property
    def metrics_url(self) -> str | None:
        """Where this server serves its metrics and health (``metrics_bind``), or None."""
        return url_of(self._monitor.sock) if self._monitor is not None else None

    @property
    def threads(self) -> int:
        """How many worker threads the pool has (``resize_threads`` changes it)."""
        return self._pool.size if self._pool else self.config.threads

    def resize_threads(self, threads: int) -> None:
        """Grow the pool of worker threads to ``threads`` now, or shrink it: the surplus
        leave as they finish their connection. From one thread at a time; after
        ``start``. ``RuntimeError`` if a thread cannot be started (the pool keeps those
        that could)."""
        if self._pool is None:
            raise RuntimeError("the server has not started")
        self._pool.resize(threads)

    @property
    def connection_count(self) -> int:
        return self._listener.connection_count() if self._listener else 0

    @property
    def alive_workers(self) -> int:
        """How many worker threads are alive."""
        return self._pool.alive() if self._pool else 0

    # --- metrics and health --------------------------------------------------------------

    def _start_monitoring(self) -> None:
        """With ``metrics_bind`` (and no supervisor's recorder), keep metrics in a store of
        this process's own and serve them; readiness says "starting" until listening. With
        systemd's notify socket, count busy threads for its STATUS line; with
        ``control_socket``, keep the totals ``ctl stats`` and ``top`` show."""
        address = self.config.metrics_address
        wanted = address is not None or self._notifier is not None or self.config.control_socket
        if self._recorder is not None or not wanted:
            return
        self._store = store = MetricsStore()
        self._recorder = store.recorder(store.assign(0))
        if address is not None:
            self._monitor = MonitorEndpoint.bind(
                address, self._scrape, self._not_ready, self.config.socket_mode
            )
            self._monitor.start()

    def _start_control(self) -> None:
        """With ``control_socket``: bind it (served from ``start`` on, on its own thread)."""
        if not self.config.control_socket:
            return
        control = ProcessControl(
            self.scoreboard,
            self.worker_index,
            self._gauges,
            self.drain,
            lambda: self._listener is not None and self._listener.draining,
            lambda: self.threads,
            self.resize_threads,
            self._totals if self._store is not None else None,
        )
        self._control = ControlEndpoint.bind(self.config.control_socket, control.answer)

    @property
    def control_socket(self) -> str | None:
        """The path of this server's control socket, or None."""
        return self.config.control_socket if self._control is not None else None

    def _stop_monitoring(self) -> None:
        for ticker in self._tickers:
            ticker.stop()
        self._tickers.clear()
        if self._monitor is not None:
            self._monitor.close()
            self._monitor = None
        if self._control is not None:
            self._control.close()
            self._control = None

    def _gauges(self) -> Gauges:
        """What this process is doing now, read from the scoreboard (no lock the worker
        threads hold) and the queue."""
        tasks, listener = self._tasks, self._listener
        if tasks is None or listener is None:
            return Gauges(queue_limit=self.config.queue_limit, threads_idle=self.config.threads)
        now = time.monotonic()
        views = self.scoreboard.read()
        states = Counter(view.state for view in views)
        threshold = self.config.stuck_threshold
        stuck = sum(
            1
            for view in views
            if threshold > 0 and view.request is not None and now - view.last_progress > threshold
        )
        active, idle = listener.connection_states()
        return Gauges(
            active_requests=sum(1 for view in views if view.request is not None),
            queue_length=len(tasks),
            queue_limit=self.config.queue_limit,
            stuck_requests=stuck,
            threads_idle=states[State.IDLE],
            threads_reading=states[State.READING] + states[State.QUEUED],
            threads_app=states[State.APP],
            threads_sending=states[State.SENDING],
            connections_active=active,
            connections_idle=idle,
            queue_oldest_wait_us=int(tasks.oldest_wait(now) * 1e6),
        )

    def _sample(self) -> None:
        """The sampler thread's turn: publish the counts and gauges, tell systemd how busy
        we are."""
        if self._recorder is not None:
            self._recorder.flush_all()
            self._recorder.publish(self._gauges())
        if self._notifier is not None:
            self._notifier.status(self._status())

    def _status(self) -> str:
        gauges = self._gauges()
        return status_text(gauges.active_requests, self.threads, gauges.queue_length)

    def _scrape(self) -> Snapshot:
        """The metrics now, gauges sampled for this scrape (single process)."""
        assert self._store is not None and self._recorder is not None
        self._recorder.flush_all()
        self._recorder.publish(self._gauges())
        return self._store.snapshot()

    def _totals(self) -> Snapshot:
        assert self._store is not None and self._recorder is not None
        self._recorder.flush_all()
        return self._store.snapshot(process_stats=False)

    def _not_ready(self) -> str | None:
        if self._stopped or (self._listener is not None and self._listener.draining):
            phase = "draining"
        elif not self._listening:
            phase = "starting"
        else:
            phase = ""
        return self._readiness.not_ready(phase, self._scrape)

    # --- internals -----------------------------------------------------------------------

    def _install_signal_handlers(self) -> Callable[[], None]:
        reopen = getattr(signal, "SIGUSR1", None)

        def on_signal(signum: int, frame: FrameType | None) -> None:
            # Plain stores and a wake-up only (threads.handle_signals): serve_forever logs,
            # stops, reopens; the watchdog's thread writes a dump.
            if signum == reopen:
                self._reopen_requested = True
                self._wake.wake()
                return
            if signum == DUMP_SIGNAL:
                self.request_dump()
                return
            second = signum == signal.SIGINT and self._stop_requested
            if second:
                self._interrupted_twice = True
            self.request_stop(force=second)

        signums: list[int] = [signal.SIGINT, signal.SIGTERM]
        signums += [number for number in (reopen, DUMP_SIGNAL) if number]
        restore = handle_signals(signums, on_signal, self._wake)
        unregister = register_dump_signal()

        def undo() -> None:
            unregister()  # faulthandler first: it puts back the handler it chained to
            restore()

        return undo

    def _close_access_log(self) -> None:
        if self._access_log is not None:
            self._access_log.close()
            self._access_log = None

    def _close_sockets(self) -> None:
        # With the socket files this server created (not those of inherited sockets).
        close_listening(self.sockets, [] if self._keep_socket_files else self._unix_paths)


# The signal that dumps the in-flight requests (0 where there is none: Windows).
DUMP_SIGNAL: int = getattr(signal, "SIGUSR2", 0)


def register_dump_signal() -> Callable[[], None]:
    """After the Python handler for DUMP_SIGNAL is installed (on the main thread): have
    faulthandler write every thread's stack to stderr on it too, from C, for a process
    wedged in C code (see dumps.py). Returns the undo; does nothing off the main thread or
    when stderr is no file (a captured stream)."""
    if not DUMP_SIGNAL or threading.current_thread() is not threading.main_thread():
        return lambda: None
    try:
        return register_fault_dump(sys.stderr, DUMP_SIGNAL)
    except (OSError, ValueError, AttributeError, RuntimeError) as exc:
        log.debug("no faulthandler dump on SIGUSR2: %s", exc)
        return lambda: None


def make_tls_context(config: Config) -> ssl.SSLContext | None:
    """The TLS context ``config`` asks for: its ``ssl_context`` if given, else one made from
    its certificate files, read now (a restart picks up a renewed certificate); None
    without TLS."""
    if config.ssl_context is not None:
        return config.ssl_context  # type: ignore[no-any-return]
    if not config.certfile:
        return None
    from .tls import build_context  # Only with TLS: ssl costs an import.

    return build_context(config)
