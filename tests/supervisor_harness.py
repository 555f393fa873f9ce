"""What tests/test_supervisor.py and tests/test_integration_proxies.py share: waiting on a
condition against a deadline, a free loopback port, and ``python -m wsgipool --workers N``
run as a process group (``Supervisor``). A helper module, not a test module: pytest does
not collect it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

DEADLINE = 30.0  # only reached when something is broken


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def eventually(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Supervisor:
    """``python -m wsgipool app:app --workers N`` in its own process group, in ``directory``
    (which holds ``app.py``). Its environment names two paths there for the application:
    ``TEST_IMPORT_LOG`` and ``TEST_MARKERS`` (tests/test_supervisor.py's APP writes them)."""

    def __init__(self, directory: Path, workers: int, extra: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.directory = directory
        self.imports = directory / "imports.log"
        self.markers = directory / "markers"
        self.markers.mkdir(exist_ok=True)
        self.log_path = directory / "server.log"
        env = dict(os.environ)
        env.pop("WSGIPOOL_INHERITED_FDS", None)
        env["TEST_IMPORT_LOG"] = str(self.imports)
        env["TEST_MARKERS"] = str(self.markers)
        command = [
            sys.executable,
            "-m",
            "wsgipool",
            "app:app",
            "--workers",
            str(workers),
            "-b",
            f"127.0.0.1:{self.port}",
            "--chdir",
            str(directory),
            "--threads",
            "8",
            "--graceful-timeout",
            "10",
            *extra,
        ]
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def workers(self) -> set[int]:
        pid = self.popen.pid
        try:
            text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        except OSError:
            return set()
        return {int(part) for part in text.split()}

    def wait_workers(
        self, count: int, *, besides: frozenset[int] | set[int] = frozenset()
    ) -> set[int]:
        """Wait for exactly ``count`` workers, none of them in ``besides``, all serving."""

        def settled() -> bool:
            pids = self.workers()
            if self.popen.poll() is not None:
                raise AssertionError(f"the supervisor exited; log:\n{self.log}")
            return len(pids) == count and not pids & besides and self.listening(pids)

        try:
            eventually(settled, f"{count} workers")
        except AssertionError:
            raise AssertionError(f"never {count} workers; log:\n{self.log}") from None
        return self.workers()

    def listening(self, pids: set[int]) -> bool:
        log = self.log
        return all(f"[{pid}] [INFO] listening on" in log for pid in pids)

    def signal(self, signum: int) -> None:
        os.kill(self.popen.pid, signum)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=DEADLINE)
