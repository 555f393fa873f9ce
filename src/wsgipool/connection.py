"""One client connection: its socket, its receive buffer and who owns it right now.

Ownership moves, never shared: the listener owns a connection while it is *watched* (idle or
waiting for the rest of a head); a worker owns it from the moment it is taken off the queue
until it hands it back or closes it. Only the owner reads, writes or closes the socket.
"""

from __future__ import annotations

import contextlib
import enum
import socket
import struct
import sys
import time
from typing import Any

from .http.parser import HeadScanner, Limits

RECV_SIZE = 65536

# Linux and the BSDs: a recv() on a blocking socket that may not wait.
MSG_DONTWAIT: int = getattr(socket, "MSG_DONTWAIT", 0)


# Up to this many bytes, the pieces of a response are joined and sent with one send();
# above it they go out with sendmsg() so a large body is never copied.
JOIN_LIMIT = 64 * 1024


class ClientDisconnected(ConnectionError):
    """The peer went away (or stopped reading) while a request was being served."""


class Handshake(enum.Enum):
    """Where a worker's step of a connection's TLS handshake left it (see ``tls``)."""

    DONE = "done"
    WAITING = "waiting"  # The client's next bytes have not arrived: back to the listener.
    NOT_TLS = "not TLS"  # The client spoke plain HTTP (or anything else) to the TLS port.
    FAILED = "failed"  # Refused or broken handshake, or the client left: close.


class Connection:
    """A client socket with the bytes received but not yet consumed.

    ``tls.TLSConnection`` overrides the reading and writing methods; the listener and the
    workers call only these, never the socket's own, for anything that carries data.
    """

    # Whether a file may go out with sendfile() (not through TLS, which encrypts in Python).
    sendfile_ok = True

    __slots__ = (
        "accepted_at",
        "buffer",
        "closed",
        "deadline",
        "environ_base",
        "fd",
        "forwarded_trusted",
        "handshake_pending",
        "head_started",
        "idle_since",
        "local",
        "peer",
        "proxy_header_expected",
        "queued_at",
        "requests",
        "scanner",
        "sock",
    )

    def __init__(self, sock: socket.socket, peer: Any, local: Any, limits: Limits) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        # The address of the listening socket it came in on (a tuple, or a Unix path).
        self.local = local
        self.buffer = bytearray()
        self.scanner = HeadScanner(limits)
        # Non-zero while the listener watches the connection: when to close it if nothing
        # arrives. Zero while a worker owns it.
        self.deadline = 0.0
        # When the current request head began arriving (0: none has); past the header
        # timeout such a connection earns a 408 rather than a silent close.
        self.head_started = 0.0
        # When the listener last queued the connection for a worker (time.monotonic()).
        self.queued_at = 0.0
        self.accepted_at = time.monotonic()
        # When the last response ended (or the accept): the keep-alive timeout runs from
        # here, so bytes that make no request (TLS records trickled a byte at a time, key
        # updates) never extend it.
        self.idle_since = self.accepted_at
        # Requests parsed so far: until the first, the header timeout bounds idleness.
        self.requests = 0
        self.closed = False
        # The per-connection part of the WSGI environ, built on the first request.
        self.environ_base: dict[str, Any] | None = None
        # Whether the peer may set forwarded headers (decided with environ_base).
        self.forwarded_trusted = False
        # --proxy-protocol: a PROXY header must come before the first request.
        self.proxy_header_expected = False
        # TLS: the handshake must complete before the first request.
        self.handshake_pending = False

    def handshake(self) -> Handshake:
        """Advance a TLS handshake (see ``TLSConnection``); a plain connection has none."""
        return Handshake.DONE

    def tls_environ(self) -> dict[str, str] | None:
        """The environ keys a TLS connection adds (``HTTPS``, ``SSL_*``); None when plain."""
        return None

    def has_pending_input(self) -> bool:
        """Whether input waits beyond ``buffer`` where the poller cannot see it."""
        return False

    def recv_available(self) -> int:
        """Append whatever has arrived without waiting; return bytes read, 0 on EOF, -1 if none."""
        try:
            data = self.sock.recv(RECV_SIZE, MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return -1
        except OSError:
            return 0
        self.buffer += data
        return len(data)

    def recv_wait(self) -> int:
        """Append the next bytes, waiting up to the socket's receive timeout.

        Returns the number of bytes read, 0 on EOF. Raises ``TimeoutError`` when the peer
        sent nothing in time and ``ClientDisconnected`` when the connection broke.
        """
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, TimeoutError) as exc:
            raise TimeoutError("client sent nothing within the body timeout") from exc
        except OSError as exc:
            raise ClientDisconnected(str(exc)) from exc
        self.buffer += data
        return len(data)

    def sendall(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise ClientDisconnected(str(exc)) from exc

    def send_parts(self, parts: list[bytes]) -> None:
        """Send byte strings back to back: one ``send`` when small, ``sendmsg`` (no copy)
        when large."""
        if sum(map(len, parts)) <= JOIN_LIMIT:
            self.sendall(b"".join(parts))
            return
        views = [memoryview(part) for part in parts if part]
        try:
            while views:
                sent = self.sock.sendmsg(views)
                while views and sent >= len(views[0]):
                    sent -= len(views[0])
                    views.pop(0)
                if sent:
                    views[0] = views[0][sent:]
        except OSError as exc:
            raise ClientDisconnected(str(exc)) from exc

    def send_nowait(self, data: bytes) -> None:
        """Send what the socket takes at once, ignoring errors: a last word (503, 408) from
        the listener thread, which must not wait on a client."""
        with contextlib.suppress(OSError):
            self.sock.send(data, MSG_DONTWAIT)

    def close(self, *, linger: bool = False) -> None:
        """Close the socket once. With ``linger``, half-close first and drop what the peer
        already sent, so a final error response is not destroyed by a TCP reset."""
        if self.closed:
            return
        self.closed = True
        sock = self.sock
        try:
            if linger:
                sock.shutdown(socket.SHUT_WR)
                for _ in range(16):
                    if not sock.recv(RECV_SIZE, MSG_DONTWAIT):
                        break
        except OSError:
            pass
        finally:
            sock.close()


def timeval(seconds: float) -> bytes:
    """A ``struct timeval`` for SO_RCVTIMEO/SO_SNDTIMEO."""
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1_000_000))


def set_socket_options(
    sock: socket.socket, tcp: bool, recv_timeout: bytes, send_timeout: bytes
) -> None:
    """TCP_NODELAY (for TCP) and kernel I/O timeouts (``timeval`` values) on ``sock``.

    A Python-level ``settimeout()`` makes every recv and send call poll() first: one extra
    system call per operation on the hot path. Kernel timeouts (SO_RCVTIMEO, SO_SNDTIMEO)
    cost nothing until they fire; then the call fails with EAGAIN.
    """
    if tcp:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, recv_timeout)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, send_timeout)


# Linux copies these options from a listening TCP socket to the sockets it accepts, so
# they can be set once on the listener rather than three system calls per connection.
TCP_OPTIONS_INHERITED = sys.platform.startswith("linux")
