"""``--reload``: restart the server process when the application's source changes.

The *reloader*, a supervisor process, binds the listening sockets once and keeps them
open until it stops. It runs the server as a child process (the same command line again),
hands it the sockets by descriptor number in ``WSGIPOOL_INHERITED_FDS`` (the front end in
the child reads them: ``process.take_inherited_fds``), and watches the source files. On a
change it stops the child gracefully and starts a new one. Connections that arrive while
no child runs wait in the kernel's listen backlog: none is refused. When the reloader
stops, it closes the sockets first: new clients are refused while the child finishes its
requests.

The reloader never imports the application, so an application that fails to import (a
syntax error half-way through an edit) only makes the child exit; the reloader logs that
and starts a new child at the next change.

Files are watched with ``watchfiles`` when it is installed (``pip install wsgipool[reload]``),
otherwise by polling modification times. ``WSGIPOOL_RELOAD_POLL=1`` forces polling.
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType

from ..config import Config, ConfigError
from ..options import env_flag
from ..sockets import bind_all, close_listening, url_of
from ..threads import WakePipe, handle_signals, start_thread
from .process import EXIT_USAGE, environ_with_fds, exit_reason, stop_child, stop_timeout

log = logging.getLogger("wsgipool.error")

POLL_ENV = "WSGIPOOL_RELOAD_POLL"  # "1": poll even when watchfiles is installed
# Directories never watched: version control, caches, virtual environments.
IGNORED_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        "__pycache__",
        ".venv",
        "venv",
        "node_modules",
        ".tox",
        ".nox",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".hypothesis",
        ".idea",
    }
)
# File names never watched: editor lock and backup files.
IGNORED_NAMES = (".#*", "*~", "*.sw?")


def run_with_reloader(
    config: Config,
    *,
    reload_dirs: Sequence[str] = (),
    include: Sequence[str] = ("*.py",),
    exclude: Sequence[str] = (),
    extra_files: Sequence[str] = (),
    interval: float = 1.0,
    argv: Sequence[str] | None = None,
    cwd: str | None = None,
) -> int:
    """Supervise a server process that restarts when watched files change.

    Binds ``config.binds`` once (``systemd``: takes the sockets systemd passed this
    process, and unsets ``LISTEN_FDS``) and runs ``argv`` (default: this process's own
    command line, from ``sys.orig_argv``), in ``cwd`` (default: here), as a child with the
    sockets passed and
    ``process.INHERITED_FDS_ENV`` set. Watches ``reload_dirs`` (default: the current
    directory) for files whose name or path relative to the watched directory matches an ``include``
    glob and no ``exclude`` glob; a glob with a ``/`` is also matched against the absolute
    path (``*/migrations/*``), and an exclude glob matching a directory's name or relative
    path skips everything in it (``tests``, ``docs/build``). Also watches
    ``extra_files``; with ``watchfiles`` if importable, else by polling every ``interval``
    seconds. On a change: SIGTERM to the child, SIGKILL if it has not exited within the
    graceful timeout (plus a margin), and a new child. A child that exits with an error
    is logged, and started again at the next change. SIGINT or SIGTERM stop the child and
    return 0, as does a child that exits on its own with status 0.
    """
    roots = [os.path.abspath(directory) for directory in (reload_dirs or [os.getcwd()])]
    for root in roots:
        if not os.path.isdir(root):
            raise ConfigError(f"reload directory {root}: no such directory")
    command = list(argv) if argv is not None else default_command()
    # systemd's sockets are this process's (LISTEN_PID): the child gets them as fds.
    sockets, unix_paths = bind_all(config)
    try:
        watched = _FileFilter(roots, include, exclude, extra_files)
        reloader = Reloader(command, sockets, unix_paths, stop_timeout(config), cwd)
        watcher = _make_watcher(watched, interval, reloader.notify_change)
        log.info(
            "reloader: holding %s; watching %s for %s (%s)",
            ", ".join(url_of(sock, config.scheme) for sock in sockets),
            ", ".join(roots),
            ", ".join(include) or "nothing",
            watcher.kind,
        )
        return reloader.run(watcher)
    finally:
        close_listening(sockets, unix_paths)


def default_command() -> list[str]:
    """This process's command line, to run it again: the interpreter with its options
    (``-X dev``, ``-W``...) and ``-m module`` or the script, then the arguments."""
    original = list(getattr(sys, "orig_argv", None) or [])
    if not original:
        return [sys.executable, *sys.argv]
    # The absolute interpreter path: the original may be a name found through PATH.
    return [sys.executable or original[0], *original[1:]]


# --- what is watched -------------------------------------------------------------------


class _FileFilter:
    """Which paths are watched: under a root, matching the globs, or an extra file."""

    def __init__(
        self,
        roots: Sequence[str],
        include: Sequence[str],
        exclude: Sequence[str],
        extra_files: Sequence[str],
    ) -> None:
        self.roots = list(roots)
        # Paths reported by the OS may have symlinks resolved (macOS: /tmp is /private/tmp).
        self._prefixes = sorted(
            {*roots, *(os.path.realpath(root) for root in roots)},
            key=len,
            reverse=True,
        )
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        self.extra_files = frozenset(os.path.abspath(path) for path in extra_files)
        self._extra_real = frozenset(os.path.realpath(path) for path in extra_files)

    def extra_dirs(self) -> list[str]:
        """Directories that hold extra files and are not under a root."""
        dirs = {os.path.dirname(path) for path in self.extra_files}
        return sorted(path for path in dirs if self._relative(path) is None and os.path.isdir(path))

    def _relative(self, path: str) -> str | None:
        for prefix in self._prefixes:
            if path == prefix:
                return ""
            if path.startswith(prefix.rstrip(os.sep) + os.sep):
                return path[len(prefix.rstrip(os.sep)) + 1 :]
        return None

    def __call__(self, path: str, *, check_dirs: bool = True) -> bool:
        """Whether ``path`` is watched. ``check_dirs=False``: its directories are known
        not to be skipped (the polling walk has checked them already)."""
        if path in self.extra_files or path in self._extra_real:
            return True
        relative = self._relative(path)
        if not relative:
            return False
        name = os.path.basename(path)
        if any(fnmatch.fnmatchcase(name, glob) for glob in IGNORED_NAMES):
            return False
        if check_dirs:
            directory = os.path.dirname(path)
            while self._relative(directory):
                if self.skip_dir(directory):
                    return False
                directory = os.path.dirname(directory)
        if any(_match(glob, path, relative, name) for glob in self.exclude):
            return False
        return any(_match(glob, path, relative, name) for glob in self.include)

    def skip_dir(self, path: str) -> bool:
        """Whether the polling walk may skip directory ``path`` (and all below it)."""
        relative = self._relative(path)
        name = os.path.basename(path)
        if name in IGNORED_DIRS:
            return True
        return any(_match(glob, path, relative or name, name) for glob in self.exclude)


def _match(glob: str, path: str, *texts: str) -> bool:
    """Whether ``glob`` matches one of ``texts`` (names, relative paths) or, when it has a
    ``/`` (``*/migrations/*``), the absolute ``path``: ``*test*`` must not exclude all of
    ``/home/me/test-project``."""
    if "/" in glob and fnmatch.fnmatchcase(path, glob):
        return True
    return any(fnmatch.fnmatchcase(text, glob) for text in texts)


class _Watcher:
    """Reports changed files to ``on_change`` from a thread of its own; this base class
    polls modification times every ``interval`` seconds."""

    def __init__(
        self, files: _FileFilter, interval: float, on_change: Callable[[list[str]], None]
    ) -> None:
        self.kind = f"polling every {interval:g}s"
        self._files = files
        self._interval = interval
        self._on_change = on_change
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        # Signals blocked: they are the main thread's (threads.PROCESS_SIGNALS).
        self._thread = start_thread(self._run, "wsgipool-reload")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)

    def _run(self) -> None:
        try:
            self._watch()
        except Exception:
            if self._stop.is_set():
                return
            log.warning("reloader: %s failed; polling instead", self.kind, exc_info=True)
            self.kind = f"polling every {self._interval:g}s"
            self._poll()

    def _watch(self) -> None:
        self._poll()

    def _poll(self) -> None:
        before = self._snapshot()
        while not self._stop.wait(self._interval):
            after = self._snapshot()
            changed = sorted(
                path for path in before.keys() | after.keys() if before.get(path) != after.get(path)
            )
            before = after
            if changed:
                self._on_change(changed)

    def _snapshot(self) -> dict[str, tuple[int, int, int, int]]:
        files = self._files
        found: dict[str, tuple[int, int, int, int]] = {}

        def add(path: str) -> None:
            try:
                st = os.stat(path)
            except OSError:  # Gone between listing and stat: it counts as removed.
                return
            # ctime too: it changes on every write, even one that restores the mtime.
            found[path] = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)

        for root in files.roots:
            for directory, dirnames, filenames in os.walk(root):
                dirnames[:] = [
                    name for name in dirnames if not files.skip_dir(os.path.join(directory, name))
                ]
                for name in filenames:
                    path = os.path.join(directory, name)
                    if files(path, check_dirs=False):
                        add(path)
        for path in files.extra_files:
            add(path)
        return found


class _WatchfilesWatcher(_Watcher):
    def __init__(
        self, files: _FileFilter, interval: float, on_change: Callable[[list[str]], None]
    ) -> None:
        super().__init__(files, interval, on_change)
        self.kind = "watchfiles"

    def _watch(self) -> None:
        import watchfiles

        # Its "N changes detected" lines would repeat ours.
        library_log = logging.getLogger("watchfiles")
        if library_log.level == logging.NOTSET:
            library_log.setLevel(logging.WARNING)
        files = self._files
        paths = [*files.roots, *files.extra_dirs()]
        for changes in watchfiles.watch(
            *paths,
            watch_filter=lambda _change, path: files(path),
            stop_event=self._stop,
            raise_interrupt=False,
        ):
            self._on_change(sorted({path for _change, path in changes}))


def _make_watcher(
    files: _FileFilter, interval: float, on_change: Callable[[list[str]], None]
) -> _Watcher:
    forced = env_flag(POLL_ENV)
    if not forced:
        try:
            import watchfiles  # noqa: F401
        except ImportError:
            log.debug("reloader: watchfiles is not installed; polling")
        else:
            return _WatchfilesWatcher(files, interval, on_change)
    return _Watcher(files, interval, on_change)


# --- the reloader ----------------------------------------------------------------------


class Reloader:
    """Runs one server process at a time, a child, and starts a new one when the watcher
    reports a change. Its main loop sleeps on a pipe that signals, the watcher and
    child-exit waiters write a byte to."""

    def __init__(
        self,
        command: list[str],
        sockets: list[socket.socket],
        unix_paths: list[str],
        kill_after: float,
        cwd: str | None = None,
    ):
        self._command = command
        self._cwd = cwd
        self._sockets = sockets
        self._unix_paths = unix_paths
        self._kill_after = kill_after
        self._child: subprocess.Popen[bytes] | None = None
        self._changes: list[str] = []
        # Guards _changes and _closed; never taken by a signal handler.
        self._lock = threading.Lock()
        self._closed = False
        self._stopping = False
        self._force = False
        self._pipe = WakePipe()

    # --- called from other threads and signal handlers ---

    def _wake_from_thread(self) -> None:
        # Under the lock: once the pipe is closed, its descriptor numbers may be reused.
        # (Signal handlers wake it without: they are uninstalled before it closes.)
        with self._lock:
            if not self._closed:
                self._pipe.wake()

    def notify_change(self, paths: list[str]) -> None:
        with self._lock:
            self._changes.extend(paths)
        self._wake_from_thread()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Plain stores and a wake-up only (threads.handle_signals).
        if self._stopping:
            self._force = True
        self._stopping = True
        self._pipe.wake()

    # --- the main loop ---

    def run(self, watcher: _Watcher) -> int:
        restore = handle_signals((signal.SIGINT, signal.SIGTERM), self._on_signal, self._pipe)
        try:
            watcher.start()
            self._start_child()
            first = self._child
            while not self._stopping:
                self._pipe.wait()
                if self._stopping:
                    break
                changed = self._take_changes()
                if changed:
                    more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
                    log.info("reloader: %s changed%s; restarting", changed[0], more)
                    _forget_bytecode(changed)
                    self._stop_child()
                    if self._stopping:
                        break
                    self._start_child()
                    continue
                child = self._child
                if child is not None and child.poll() is not None:
                    self._child = None
                    if child.returncode == 0:
                        log.info("reloader: the server exited; stopping")
                        return 0
                    if child is first and child.returncode == EXIT_USAGE:
                        # Its configuration cannot be used (it said why): no change to a
                        # watched file will fix that, so stop as the command would.
                        log.error("reloader: the server could not start; stopping")
                        return EXIT_USAGE
                    log.error(
                        "reloader: the server %s; restarting when a watched file changes",
                        exit_reason(child.returncode),
                    )
            log.info("reloader: stopping")
            return 0
        finally:
            # Refused from now on, rather than queued for a child that is stopping.
            close_listening(self._sockets, self._unix_paths)
            self._stop_child()
            watcher.stop()
            restore()
            with self._lock:
                self._closed = True
                self._pipe.close()

    def _take_changes(self) -> list[str]:
        with self._lock:
            changed, self._changes = self._changes, []
        return changed

    def _start_child(self) -> None:
        fds = [sock.fileno() for sock in self._sockets]
        env = environ_with_fds(fds)
        # Changes seen until now (while the last child stopped) are in what the new child
        # imports: no restart for them after this one, but no stale bytecode either.
        _forget_bytecode(self._take_changes())
        try:
            child = subprocess.Popen(self._command, pass_fds=fds, env=env, cwd=self._cwd)
        except OSError as exc:
            log.error(
                "reloader: cannot start %s: %s; retrying when a watched file changes",
                self._command[0],
                exc.strerror or exc,
            )
            return
        self._child = child

        def wait() -> None:
            child.wait()
            self._wake_from_thread()

        start_thread(wait, "wsgipool-reload-child")

    def _stop_child(self) -> None:
        child, self._child = self._child, None
        # A second Ctrl-C (which sets _force) kills it at once.
        if child is not None and not stop_child(child, self._kill_after, lambda: self._force):
            log.warning("reloader: the server did not stop in time; killing it")


def _forget_bytecode(paths: Sequence[str]) -> None:
    """Remove the cached bytecode of changed modules. Python reuses a ``.pyc`` whose
    recorded source mtime (in whole seconds) and size still match, so an edit in the same
    second as the last import that keeps the size (``v1`` to ``v2``) would be missed."""
    for path in paths:
        if path.endswith(".py"):
            with contextlib.suppress(OSError, ValueError, NotImplementedError):
                os.unlink(importlib.util.cache_from_source(path))
