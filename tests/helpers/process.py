"""A command run as a process of its own: the one harness of the tests and the benchmarks.

A ``Process`` runs in a session (so a process group) of its own: stopping it stops all it
started too (a reloader's server, a supervisor's workers). What it writes goes to files,
not pipes: nothing has to drain them, and reading never blocks. Every wait polls against a
deadline and fails at once when the process exits first; a failure says what was awaited
and shows the log.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from tests.helpers.http import probe
from tests.helpers.net import HOST, free_port
from tests.helpers.waiting import DEADLINE, poll_until

# wsgipool logs one line per address it serves.
LISTENING = re.compile(r"listening on (\S+)")
TCP_LISTENING = re.compile(r"listening on https?://(?:[^\s:]+|\[[^\]]+\]):(\d+)")

# What the environment of a test run may hold that would change how a child behaves: a
# reloader's or systemd's sockets, warnings made errors, a Flask application.
LEAKY_VARIABLES = (
    "WSGIPOOL_INHERITED_FDS",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "PYTHONWARNINGS",
    "FLASK_APP",
    "FLASK_DEBUG",
)


def wsgipool_command(*args: str) -> list[str]:
    """``python -m wsgipool ARGS``, with this interpreter."""
    return [sys.executable, "-m", "wsgipool", *args]


def child_env(changes: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """This process's environment for a command under test: without LEAKY_VARIABLES, no
    bytecode written, output unbuffered (each line reaches the file as it is printed) and 100
    columns for help text; then ``changes`` (None removes a variable)."""
    env = {name: value for name, value in os.environ.items() if name not in LEAKY_VARIABLES}
    env.update(PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1", COLUMNS="100")
    for name, value in (changes or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


class ProcessFailed(AssertionError):
    """A process exited before what was awaited, or it did not come in time. ``reason``
    says which; the message adds the log."""

    def __init__(self, reason: str, log: str) -> None:
        super().__init__(f"{reason}; log:\n{log}")
        self.reason = reason


def _die_with_parent() -> None:
    """In the child, before exec: the kernel sends SIGKILL when its parent dies (Linux)."""
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL))


def _open_output(path: Path | None) -> IO[bytes]:
    """A file for a child's output, open for reading too: ``path``, or one with no name.
    It stays open as long as its Process: ``Process.close()`` closes it."""
    return path.open("w+b") if path is not None else tempfile.TemporaryFile()


def _read_all(file: IO[bytes]) -> str:
    # pread leaves the offset the child shares with this file object alone.
    chunks, offset = [], 0
    while data := os.pread(file.fileno(), 1 << 20, offset):
        chunks.append(data)
        offset += len(data)
    return b"".join(chunks).decode(errors="replace")


class Process:
    """``command`` in a session of its own. Its *log* is what it writes to stderr, and to
    stdout too unless ``stdout_apart`` (then ``stdout`` reads that). The log goes to
    ``log_path``, by default to a file with no name. ``die_with_parent``: the kernel kills it
    if this process dies (Linux; it runs code in the child before exec, so the benchmarks use
    it, before they start threads). ``close()`` (or leaving a ``with`` block) ends it."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        cwd: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        pass_fds: Sequence[int] = (),
        log_path: Path | None = None,
        stdout_apart: bool = False,
        die_with_parent: bool = False,
    ) -> None:
        self.command = list(command)
        self.log_path = log_path
        self._log_file = _open_output(log_path)
        self._stdout_file = _open_output(None) if stdout_apart else None
        self._read_to = 0  # how far wait_for has read the log
        try:
            self.popen = subprocess.Popen(
                self.command,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=self._stdout_file or self._log_file,
                stderr=self._log_file,
                pass_fds=tuple(pass_fds),
                start_new_session=True,
                preexec_fn=_die_with_parent if die_with_parent else None,
            )
        except BaseException:
            self._close_files()
            raise
        self.pid = self.popen.pid  # also its process group's id

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- what it wrote ---------------------------------------------------------------------

    @property
    def log(self) -> str:
        return _read_all(self._log_file)

    @property
    def stdout(self) -> str:
        if self._stdout_file is None:
            raise AssertionError("its stdout goes to the log (start it with stdout_apart)")
        return _read_all(self._stdout_file)

    @property
    def output(self) -> str:
        """All it wrote: the log, then stdout when that is apart."""
        return self.log + (self.stdout if self._stdout_file else "")

    def _next_line(self) -> str | None:
        """The next whole line of the log that ``wait_for`` has not looked at yet."""
        line = b""
        while data := os.pread(self._log_file.fileno(), 65536, self._read_to + len(line)):
            end = data.find(b"\n")
            if end >= 0:
                line += data[: end + 1]
                self._read_to += len(line)
                return line.decode(errors="replace")
            line += data
        return None  # no line, or the start of one still being written

    # --- waiting ---------------------------------------------------------------------------

    def wait_until(
        self,
        condition: Callable[[], bool],
        what: str,
        timeout: float = DEADLINE,
        interval: float = 0.01,
    ) -> None:
        """Wait for ``condition``; fail when the process exits first, or after ``timeout``."""

        def met() -> bool:
            exited = self.popen.poll() is not None  # first: what it did before exiting counts
            if condition():
                return True
            if exited:
                raise ProcessFailed(
                    f"exited with status {self.popen.returncode} before {what}", self.log
                )
            return False

        if not poll_until(met, timeout, interval):
            raise ProcessFailed(f"no {what} within {timeout:g}s", self.log)

    def wait_for(self, pattern: re.Pattern[str], timeout: float = DEADLINE) -> re.Match[str]:
        """The first line of the log after those looked at before that matches ``pattern``
        (so that successive calls find successive lines)."""
        found: list[re.Match[str]] = []

        def matched() -> bool:
            while (line := self._next_line()) is not None:
                if match := pattern.search(line):
                    found.append(match)
                    return True
            return False

        self.wait_until(matched, f"line matching {pattern.pattern!r}", timeout)
        return found[0]

    def wait_log(self, text: str, count: int = 1, timeout: float = DEADLINE) -> None:
        """Wait until the whole log holds ``text`` (``count`` times)."""
        times = f" {count} times" if count > 1 else ""
        self.wait_until(lambda: self.log.count(text) >= count, f"{text!r} logged{times}", timeout)

    def listening(self, count: int = 1) -> list[str]:
        """The URLs of the next ``count`` "listening on URL" lines."""
        return [self.wait_for(LISTENING).group(1) for _ in range(count)]

    def listening_port(self) -> int:
        """The port of the next "listening on http(s)://HOST:PORT" line."""
        return int(self.wait_for(TCP_LISTENING).group(1))

    def wait_for_exit_or_listening(self, timeout: float = DEADLINE) -> str | None:
        """For a command that must fail: its log once it has exited; None if it starts
        serving instead."""
        listening = False

        def settled() -> bool:
            nonlocal listening
            exited = self.popen.poll() is not None
            while (line := self._next_line()) is not None:
                if LISTENING.search(line):
                    listening = True
                    return True
            return exited

        if not poll_until(settled, timeout):
            raise ProcessFailed(f"neither exited nor listening within {timeout:g}s", self.log)
        return None if listening else self.log

    def wait_answering(self, port: int, host: str = HOST, timeout: float = DEADLINE) -> int:
        """Wait until ``GET /`` on ``port`` gets an HTTP response; its status code."""
        statuses: list[int] = []

        def answered() -> bool:
            status = probe(port, host)
            if status is not None:
                statuses.append(status)
            return status is not None

        self.wait_until(answered, f"HTTP answer on {host}:{port}", timeout, interval=0.1)
        return statuses[0]

    def children(self) -> set[int]:
        """The pids of its child processes (Linux)."""
        try:
            text = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except OSError:
            return set()
        return {int(part) for part in text.split()}

    def wait_workers(
        self, count: int, *, besides: frozenset[int] | set[int] = frozenset()
    ) -> set[int]:
        """For ``--workers``: wait for exactly ``count`` worker processes, none of them in
        ``besides``, each of which has logged that it listens; their pids."""

        def settled() -> bool:
            pids = self.children()
            log = self.log
            listening = all(f"[{pid}] [INFO] listening on" in log for pid in pids)
            return len(pids) == count and not pids & besides and listening

        self.wait_until(settled, f"{count} workers")
        return self.children()

    # --- signals and the end ---------------------------------------------------------------

    def send(self, signum: int, *, group: bool = False) -> None:
        """``signum`` to the process, or with ``group`` to its whole group (as Ctrl-C)."""
        if group:
            os.killpg(self.pid, signum)
        else:
            self.popen.send_signal(signum)

    def wait(self, timeout: float = DEADLINE) -> int:
        """Its exit status; fail (and end it) if it still runs after ``timeout``."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.end()
            raise ProcessFailed(f"still running after {timeout:g}s", self.log) from None

    def stop(self, signum: int = signal.SIGTERM, *, group: bool = False) -> int:
        """Send ``signum`` (SIGTERM: as a service manager stops it) and return the exit
        status."""
        self.send(signum, group=group)
        return self.wait()

    def end(self, grace: float = 0.0) -> None:
        """End it and all in its group, and reap it: with a ``grace`` period, SIGTERM first
        and up to ``grace`` seconds for the group to exit; then SIGKILL to what is left."""
        if grace > 0 and not self._group_gone():
            self._signal_group(signal.SIGTERM)
            poll_until(self._group_gone, grace, interval=0.05)
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=DEADLINE)

    def close(self, grace: float = 0.0) -> None:
        """``end(grace)``, then close its files: the log cannot be read after this."""
        if self._log_file.closed:
            return
        try:
            self.end(grace)
        finally:
            self._close_files()

    def _group_gone(self) -> bool:
        self.popen.poll()  # reaps the leader: a zombie would still count as a member
        try:
            os.killpg(self.pid, 0)
        except (ProcessLookupError, PermissionError):
            return True
        return False

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def _close_files(self) -> None:
        self._log_file.close()
        if self._stdout_file is not None:
            self._stdout_file.close()


def assert_one_line_error(proc: Process, stderr: str | None) -> str:
    """Exit code 2, exactly one line on stderr, no traceback. Returns that line."""
    assert stderr is not None, f"started serving instead of refusing: {proc.log!r}"
    rc = proc.popen.returncode
    assert rc == 2, f"exit code {rc}; stderr: {stderr!r}"
    assert "Traceback" not in stderr, stderr
    assert stderr.strip(), "nothing on stderr"
    assert stderr.strip().count("\n") == 0, f"more than one line: {stderr!r}"
    assert stderr.startswith("wsgipool: "), stderr
    assert proc.stdout == "", proc.stdout
    return stderr.strip()


def refused(spawn: Callable[..., Process], args: Sequence[str], **kwargs: object) -> str:
    """Start ``args`` with the ``spawn`` fixture and check that it refuses: one line, exit 2."""
    proc = spawn(args, **kwargs)
    stderr = proc.wait_for_exit_or_listening()
    if stderr is None:
        proc.send(signal.SIGKILL)
    return assert_one_line_error(proc, stderr)


def assert_clean_exit(process: Process, status: int) -> None:
    """``status`` (its exit status) is 0, and no traceback was logged."""
    assert status == 0, f"exit status {status}; log: {process.log!r}"
    assert "Traceback" not in process.log, process.log


class Supervisor(Process):
    """``python -m wsgipool app:app --workers N`` on a free port, in ``directory`` (which
    holds app.py). Its environment names two paths there for the application:
    ``TEST_IMPORT_LOG`` and ``TEST_MARKERS`` (tests/test_supervisor.py's APP writes them)."""

    def __init__(self, directory: Path, workers: int, extra: Sequence[str] = ()) -> None:
        self.port = free_port()
        self.directory = directory
        self.imports = directory / "imports.log"
        self.markers = directory / "markers"
        self.markers.mkdir(exist_ok=True)
        command = wsgipool_command(
            "app:app",
            *("--workers", str(workers), "-b", f"127.0.0.1:{self.port}"),
            *("--chdir", str(directory), "--threads", "8", "--graceful-timeout", "10"),
            *extra,
        )
        paths = {"TEST_IMPORT_LOG": str(self.imports), "TEST_MARKERS": str(self.markers)}
        super().__init__(command, env=child_env(paths))
