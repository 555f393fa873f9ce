"""Process helpers the reloader and the worker-process supervisor share: handing listening
sockets to a child process, stopping a child (SIGTERM, then SIGKILL after a deadline),
saying how a child ended, reopening log files; and what a production process sets up
around them: its pid file, its output captured into the error log, the user and group it
runs as.

The self-pipe (``threads.WakePipe``) and the installing and restoring of signal handlers
(``threads.handle_signals``) live in threads.py: a single-process ``Server`` uses them
too, and it imports nothing from this package.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence

from ..config import BindAddress, Config, ConfigError, group_id, user_id
from ..worker import STOP_MARGIN

log = logging.getLogger("wsgipool.error")

# A command whose configuration cannot be used exits with this status (as argparse does).
EXIT_USAGE = 2
INHERITED_FDS_ENV = "WSGIPOOL_INHERITED_FDS"  # "3,4": listening sockets handed to a child
# Set with INHERITED_FDS_ENV when a single server process runs its command again on SIGHUP
# (launch.py): the sockets are its own, not a reloader's.
RESTARTED_ENV = "WSGIPOOL_RESTARTED"
# How long a server process gets to stop on SIGTERM beyond the graceful timeout before
# SIGKILL (under --reload and --workers): its own STOP_MARGIN for its threads, then time
# to exit. Derived, so the server always exits by itself first.
KILL_MARGIN = STOP_MARGIN + 4.0


def stop_timeout(config: Config) -> float:
    """How long a server process asked to stop (SIGTERM) has before SIGKILL."""
    return config.graceful_timeout + KILL_MARGIN


# --- listening sockets handed to a child ---------------------------------------------------


def environ_with_fds(fds: Sequence[int]) -> dict[str, str]:
    """This process's environment, plus ``INHERITED_FDS_ENV`` naming ``fds``: for a child
    started with them (``pass_fds``) that runs a new program."""
    env = dict(os.environ)
    env[INHERITED_FDS_ENV] = ",".join(str(fd) for fd in fds)
    return env


def is_reloader_child() -> bool:
    """Whether this process is a server started by the reloader."""
    return bool(os.environ.get(INHERITED_FDS_ENV)) and not os.environ.get(RESTARTED_ENV)


def take_inherited_fds(binds: Sequence[BindAddress]) -> list[int] | None:
    """The listening descriptors the reloader handed this process, in bind order (None
    when there are none), for the bind addresses ``binds``. A ``systemd`` one, which the
    reloader expanded to one or more descriptors, may stand for several. The variable is
    consumed: processes this one starts do not see it, and a second call returns None."""
    text = os.environ.get(INHERITED_FDS_ENV)
    if not text:
        return None
    try:
        fds = [int(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(
            f"{INHERITED_FDS_ENV}={text!r}: expected descriptor numbers, such as 3,4"
        ) from None
    count = len(binds)
    systemd = any(address.kind == "systemd" for address in binds)
    if len(fds) < count if systemd else len(fds) != count:
        raise ConfigError(
            f"{INHERITED_FDS_ENV}={text!r}: {len(fds)} descriptor(s) for {count} bind "
            "address(es); the supervisor and the server must have the same --bind list"
        )
    for fd in fds:
        try:
            # Not passed on to the application's own subprocesses.
            os.set_inheritable(fd, False)
        except OSError as exc:
            raise ConfigError(f"{INHERITED_FDS_ENV}: descriptor {fd}: {exc.strerror}") from None
    del os.environ[INHERITED_FDS_ENV]
    os.environ.pop(RESTARTED_ENV, None)
    return fds


# --- children ----------------------------------------------------------------------------


def stop_child(child: subprocess.Popen[bytes], timeout: float, forced: Callable[[], bool]) -> bool:
    """Send ``child`` SIGTERM and wait for it to exit: up to ``timeout`` seconds, or until
    ``forced()`` (a second Ctrl-C) says to stop now; then SIGKILL. Returns False when it
    was killed because the timeout passed."""
    if child.poll() is not None:
        return True
    with contextlib.suppress(ProcessLookupError):
        child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    in_time = True
    while not forced():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            in_time = False
            break
        try:
            # Short waits: forced() is checked again soon.
            child.wait(timeout=min(0.1, remaining))
            return True
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):
        child.kill()
    child.wait()
    return in_time


def exit_reason(returncode: int, meanings: Mapping[int, str] | None = None) -> str:
    """How a child process ended, for logs ("was killed by SIGKILL", "exited with status
    1"); ``meanings`` words the statuses a caller gave a meaning to."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return f"was killed by {name}"
    if meanings and returncode in meanings:
        return meanings[returncode]
    return f"exited with status {returncode}"


# --- the process around the server ---------------------------------------------------------


class PidFile:
    """``--pidfile``: this process's id in ``path`` from now on, removed by ``remove``
    (unless another process has written its own there since)."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)  # A later chdir must not move it.
        self.pid = os.getpid()
        running = _running_pid_in(self.path)
        if running is not None and running != self.pid:
            # Taking the file over would lose the running server's pid, and this process
            # would remove it as it exits (at once, if its address is taken).
            raise ConfigError(
                f"pidfile: {path} holds pid {running}, a running process: is the server "
                "running already? (If that process is something else, remove the file.)"
            )
        try:
            with open(self.path, "w", encoding="ascii") as file:
                file.write(f"{self.pid}\n")
        except OSError as exc:
            raise ConfigError(f"pidfile: cannot write {path}: {exc.strerror}") from None

    def remove(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            with open(self.path, encoding="ascii") as file:
                if int(file.read().strip() or 0) != self.pid:
                    return
            os.unlink(self.path)


def _running_pid_in(path: str) -> int | None:
    """The pid ``path`` holds if a process with it runs, else None (no file, no pid: a
    stale file is taken over)."""
    try:
        with open(path, encoding="ascii") as file:
            pid = int(file.read().strip())
    except (OSError, ValueError):
        return None
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # another user's process: running
        return pid
    except (OSError, OverflowError):  # a pid too large for the kernel: no such process
        return None
    return pid


def capture_output(error_log: str) -> None:
    """``--capture-output``: the process's stdout and stderr (descriptors 1 and 2, so C
    code and child processes too) go to the error log file."""
    try:
        fd = os.open(error_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConfigError(f"error_log: cannot open {error_log}: {exc.strerror}") from None
    for stream, target in ((sys.stdout, 1), (sys.stderr, 2)):
        with contextlib.suppress(Exception):
            stream.flush()
        os.dup2(fd, target)
    os.close(fd)


def drop_privileges(config: Config) -> None:
    """``--user`` and ``--group``: run as them from now on (after binding, before loading
    the application). The group defaults to the user's; supplementary groups are reduced
    to it, so none of root's stays."""
    uid, gid = user_id(config.user), group_id(config.group)
    if uid is None and gid is None:
        return
    if gid is None and uid is not None:
        import pwd

        with contextlib.suppress(KeyError):
            gid = pwd.getpwuid(uid).pw_gid
    try:
        if gid is not None and (gid != os.getgid() or os.geteuid() == 0):
            if os.geteuid() == 0:
                os.setgroups([gid])
            os.setgid(gid)
        if uid is not None and uid != os.getuid():
            os.setuid(uid)
    except OSError as exc:
        who = f"user {config.user}" if config.user else f"group {config.group}"
        raise ConfigError(f"cannot run as {who}: {exc.strerror} (it needs root)") from None
