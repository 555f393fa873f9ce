"""SIGHUP to a single server process: reload without refusing a connection.

The server stops as on SIGTERM (it stops accepting, finishes the requests in flight),
then the process runs its own command line again (``exec``: same pid, so a service
manager still knows it), handing over the listening sockets the way the reloader hands
them to its server process (``process.environ_with_fds``, ``take_inherited_fds``). In
between, the sockets stay open: new connections wait in the listen backlog and the new
process, with the new code, answers them.

With ``--workers`` the supervisor handles SIGHUP itself (a rolling restart); under
``--reload`` the server process is the reloader's, which restarts it on changes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

from ..config import Config
from ..server import Server
from ..sockets import bind_all, remove_socket_files
from .process import RESTARTED_ENV, environ_with_fds, take_inherited_fds
from .reloader import default_command

log = logging.getLogger("wsgipool.error")


class RestartOnHangup:
    """Owns a single server process's listening sockets across SIGHUP restarts.

    ``bind`` gives the descriptors to serve (the previous process's, or bound now), which
    the ``Server`` takes over; ``installed`` handles SIGHUP meanwhile; after the server
    stopped, ``run_again_if_asked`` replaces this process when SIGHUP asked for it.
    """

    def __init__(
        self, config: Config, command: Sequence[str] | None = None, directory: str | None = None
    ):
        self.config = config
        self.command = list(command) if command is not None else default_command()
        self.directory = directory
        # The Unix socket files of config.binds, whether bound here or by the process this
        # one replaced: the server removes them when it stops for good.
        self.socket_files = [
            os.path.abspath(address.path) for address in config.binds if address.kind == "unix"
        ]
        self._server: Server | None = None
        self._fds: list[int] = []
        # Set in the signal handler (plain stores only): copies of the listening
        # descriptors, made before the server closes its own as its stop begins.
        self._requested = False
        self._kept: list[int] | None = None

    def bind(self) -> list[int]:
        """The listening descriptors to serve: those the process this one replaced handed
        over, or bound now. The server owns them and their Unix socket files
        (``socket_files``): it closes and removes them as its stop begins, unless SIGHUP
        asked to keep them."""
        config = self.config
        sockets, _ = bind_all(config, take_inherited_fds(config.binds))
        self._fds = [sock.detach() for sock in sockets]
        return list(self._fds)

    @contextlib.contextmanager
    def installed(self) -> Any:
        """SIGHUP asks for a restart while the block runs (its default would end the
        process with status 129, mid-request)."""
        previous = signal.signal(signal.SIGHUP, self._on_hangup)
        try:
            yield self
        except BaseException:
            # The server could not start (or stop): no restart, and no file of ours left
            # behind (none is ours before bind: another server's may be at the path).
            self._kept = None
            if self._fds:
                remove_socket_files(self.socket_files)
            raise
        finally:
            signal.signal(signal.SIGHUP, previous)

    def serve(self, server: Server) -> None:
        """``server.serve_forever()``, stopped by SIGHUP too (one that came while the app
        loaded stops it at once)."""
        self._server = server
        if self._requested:
            self._keep_sockets()
            server.request_stop()
        server.serve_forever()

    def _on_hangup(self, signum: int, frame: FrameType | None) -> None:
        # The main thread, between two bytecodes of its own: the server's stop (which
        # closes the descriptors) has not begun unless a stop was requested already.
        self._requested = True
        server = self._server
        if server is not None and not server.stop_requested:
            self._keep_sockets()
            server.request_stop()

    def _keep_sockets(self) -> None:
        if self._kept is None:
            self._kept = [os.dup(fd) for fd in self._fds]
        if self._server is not None:
            self._server.keep_socket_files()

    def run_again_if_asked(self) -> None:
        """After the server stopped: exec the command again with the sockets if SIGHUP
        asked for it (no return)."""
        kept = self._kept
        if kept is None:
            return
        log.info("SIGHUP: in-flight requests finished; starting again with new code")
        for fd in kept:
            os.set_inheritable(fd, True)
        env = environ_with_fds(kept)
        env[RESTARTED_ENV] = "1"
        logging.shutdown()  # Flush what is buffered: exec discards it.
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        if self.directory is not None:
            os.chdir(self.directory)
        os.execve(self.command[0], self.command, env)
