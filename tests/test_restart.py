"""SIGHUP to a single server process (supervisors/restart.py): the request in flight
completes, the port keeps answering, and the new code is served, by the same process."""

from __future__ import annotations

import signal
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.http import get_text as get
from tests.helpers.process import Process
from tests.helpers.waiting import DEADLINE

# /slow says it started (a file), then waits for the test's "release" file.
APP = """
import os
import time

VERSION = "{version}"


def app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        open("started", "w").close()
        while not os.path.exists("release"):
            time.sleep(0.01)
    body = VERSION.encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"""

SERVE_SCRIPT = """
import app
from wsgipool import serve

serve(app.app, host="127.0.0.1", port=0)
"""


class InThread:
    """``get`` on a thread of its own; ``result()`` waits for its answer."""

    def __init__(self, port: int, path: str = "/") -> None:
        self.answer: tuple[int, str] | None = None
        self._thread = threading.Thread(target=self._run, args=(port, path), daemon=True)
        self._thread.start()

    def _run(self, port: int, path: str) -> None:
        self.answer = get(port, path)

    def result(self) -> tuple[int, str] | None:
        self._thread.join(DEADLINE)
        return self.answer


def write_app(directory: Path, version: str) -> None:
    (directory / "app.py").write_text(textwrap.dedent(APP).format(version=version))


@pytest.mark.parametrize("front_end", ["cli", "serve"])
def test_sighup_reloads_without_losing_a_request(
    spawn: Callable[..., Process], tmp_path: Path, front_end: str
) -> None:
    write_app(tmp_path, "v1")
    if front_end == "cli":
        proc = spawn(["app:app", "-b", "127.0.0.1:0"])
    else:
        (tmp_path / "serve_app.py").write_text(textwrap.dedent(SERVE_SCRIPT))
        proc = spawn(command=[sys.executable, "serve_app.py"])
    port = proc.listening_port()
    assert get(port) == (200, "v1")
    in_flight = InThread(port, "/slow")
    proc.wait_until(lambda: (tmp_path / "started").exists(), "the slow request's start")
    write_app(tmp_path, "v2")
    proc.send(signal.SIGHUP)
    proc.wait_log("shutting down: finishing in-flight requests")
    # While the old code finishes, a new connection waits in the backlog: not refused.
    waiting = InThread(port)
    (tmp_path / "release").touch()
    assert in_flight.result() == (200, "v1")
    # (The old process may have accepted it just before it stopped accepting.)
    assert waiting.result() in ((200, "v1"), (200, "v2"))
    # The same process (exec), listening on the same socket, serving the new code.
    proc.wait_log("SIGHUP: in-flight requests finished; starting again with new code")
    assert proc.listening()[0].endswith(f":{port}")
    assert proc.popen.poll() is None
    assert get(port) == (200, "v2")
    # And it stops as before, having served everything.
    assert proc.stop() == 0
    assert "Traceback" not in proc.log


def test_sighup_keeps_a_unix_socket_file(spawn: Callable[..., Process], tmp_path: Path) -> None:
    write_app(tmp_path, "v1")
    path = tmp_path / "app.sock"
    proc = spawn(
        ["app:app", "-b", f"unix:{path}", "--chdir", str(tmp_path)],
        cwd=tmp_path.parent,
    )
    proc.listening()
    proc.send(signal.SIGHUP)
    proc.wait_log("starting again with new code")
    assert proc.listening() == [f"unix:{path}"]
    assert path.exists()
    assert proc.stop() == 0
    # Removed when the process ends for good.
    assert not path.exists()
