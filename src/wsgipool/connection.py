"""One client connection: its socket, its receive buffer and who owns it right now.

Ownership moves, never shared: the listener owns a connection while it is *watched* (idle or
waiting for the rest of a head); a worker owns it from the moment it is taken off the queue
until it hands it back or closes it. Only the owner reads, writes or closes the socket.
"""

from __future__ import annotations

import contextlib
import enum
import ipaddress
import math
import os
import select
import socket
import struct
import sys
import time
from dataclasses import dataclass
from typing import Any

from .http.parser import HeadScanner, Limits

RECV_SIZE = 65536

# Linux and the BSDs: a recv() on a blocking socket that may not wait.
MSG_DONTWAIT: int = getattr(socket, "MSG_DONTWAIT", 0)


# Up to this many bytes, the pieces of a response are joined and sent with one send();
# above it they go out with sendmsg() so a large body is never copied.
JOIN_LIMIT = 64 * 1024
# The longest wait one poll() call takes, in milliseconds (a C int).
MAX_POLL_MS = 2**31 - 1
# Largest piece handed to one sendfile() call.
SENDFILE_BLOCK = 1 << 24
# Piece of a file read and sent where sendfile() is not used (TLS, a peer on this host).
COPY_BLOCK = 256 * 1024


class ClientDisconnected(ConnectionError):
    """The peer went away (or stopped reading) while a request was being served."""


@dataclass(frozen=True)
class TransferLimits:
    """How long a client may keep a worker waiting on it (``--body-timeout``,
    ``--min-body-rate``, ``--send-timeout``, ``--min-send-rate``; see ``Budget``)."""

    body_timeout: float = 30.0
    min_body_rate: int = 500
    send_timeout: float = 30.0
    min_send_rate: int = 500


DEFAULT_TRANSFER = TransferLimits()


class Budget:
    """The waits one transfer (a request body, a response) may still make on its client.

    Each wait lasts at most ``timeout``. With a ``min_rate`` (bytes per second) the waits
    of the whole transfer together are bounded too: by ``timeout`` plus one second per
    ``min_rate`` bytes moved, as Apache's mod_reqtimeout ``MinRate`` extends its timeout.
    A client that moves a byte just before each timeout would otherwise hold a worker for
    ever. Only waiting on the client counts: the application's own time between reads or
    writes (a stream that yields an event a minute) costs nothing.
    """

    __slots__ = ("min_rate", "moved", "timeout", "waited")

    def __init__(self, timeout: float, min_rate: int = 0) -> None:
        self.timeout = timeout
        self.min_rate = min_rate
        self.moved = 0  # bytes moved so far
        self.waited = 0.0  # seconds spent waiting on the client so far

    def start(self) -> None:
        """A new transfer begins."""
        self.moved = 0
        self.waited = 0.0

    def allowance(self) -> float:
        """How long the next wait may last; zero or less: no more waiting."""
        if not self.min_rate:
            return self.timeout
        return min(self.timeout, self.timeout + self.moved / self.min_rate - self.waited)

    def describe(self) -> str:
        """Why the transfer ran out of time, for a log line or exception."""
        # The floor cut the last wait short when the waits reached what the bytes moved
        # allow; else that wait ran its whole timeout (however long the waits before it).
        if self.min_rate and self.waited >= self.timeout + self.moved / self.min_rate:
            return (
                f"below the minimum rate: {self.moved} bytes in {self.waited:.1f}s of waiting "
                f"(at least {self.min_rate} bytes/s after the first {self.timeout:g}s)"
            )
        return f"nothing moved within {self.timeout:g}s"


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

    __slots__ = (
        "_poll",
        "accepted_at",
        "buffer",
        "closed",
        "deadline",
        "fd",
        "gateway_state",
        "handshake_pending",
        "head_started",
        "idle_since",
        "linger_until",
        "local",
        "peer",
        "proxy_header_expected",
        "queued_at",
        "receiving",
        "requests",
        "scanner",
        "sending",
        "sock",
    )

    def __init__(
        self,
        sock: socket.socket,
        peer: Any,
        local: Any,
        limits: Limits,
        transfer: TransferLimits = DEFAULT_TRANSFER,
    ) -> None:
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
        # Non-zero once the connection lingers (see ``Listener.linger``): when the
        # listener stops dropping what the client still sends and closes it anyway.
        self.linger_until = 0.0
        self.closed = False
        # What the gateway (wsgi.py) keeps from one request to the next: it alone reads
        # and writes this.
        self.gateway_state: Any = None
        # --proxy-protocol: a PROXY header must come before the first request.
        self.proxy_header_expected = False
        # TLS: the handshake must complete before the first request.
        self.handshake_pending = False
        # What the request bodies and responses of a worker's current turn on the
        # connection may still wait on the client; the worker starts both at each turn.
        self.receiving = Budget(transfer.body_timeout, transfer.min_body_rate)
        self.sending = Budget(transfer.send_timeout, transfer.min_send_rate)
        # Made on the first wait for the client: most connections never wait.
        self._poll: Any = None

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
        data = self.recv_raw_nowait()
        if data is None:
            return -1
        self.buffer += data
        return len(data)

    def recv_raw_nowait(self) -> bytes | None:
        """The socket's bytes that have arrived, without waiting: None when none have,
        ``b""`` on EOF (or a broken connection)."""
        try:
            return self.sock.recv(RECV_SIZE, MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return b""

    def recv_wait(self) -> int:
        """Append the next bytes, waiting as long as the receiving budget allows.

        Returns the number of bytes read, 0 on EOF. Raises ``TimeoutError`` when the peer
        sent too little in time and ``ClientDisconnected`` when the connection broke.
        """
        data = self.recv_raw_wait()
        self.buffer += data
        return len(data)

    def recv_raw_wait(self) -> bytes:
        """The socket's next bytes (``b""`` on EOF), waiting within the receiving budget."""
        budget = self.receiving
        while True:
            try:
                data = self.sock.recv(RECV_SIZE, MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                if not self._wait(select.POLLIN, budget):
                    raise TimeoutError(f"request body too slow: {budget.describe()}") from None
                continue
            except OSError as exc:
                raise ClientDisconnected(str(exc)) from exc
            budget.moved += len(data)
            return data

    def sendall(self, data: bytes) -> None:
        """Send all of ``data``, waiting for the client within the sending budget."""
        try:
            sent = self.sock.send(data, MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            raise ClientDisconnected(str(exc)) from exc
        self.sending.moved += sent
        if sent < len(data):
            self._send_rest([memoryview(data)[sent:]])

    def send_parts(self, parts: list[bytes]) -> None:
        """Send byte strings back to back: one ``send`` when small, ``sendmsg`` (no copy)
        when large."""
        if sum(map(len, parts)) <= JOIN_LIMIT:
            self.sendall(b"".join(parts))
            return
        self._send_rest([memoryview(part) for part in parts if part])

    def _send_rest(self, views: list[memoryview]) -> None:
        budget = self.sending
        sock = self.sock
        while views:
            try:
                sent = sock.sendmsg(views, (), MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                self._wait_to_send()
                continue
            except OSError as exc:
                raise ClientDisconnected(str(exc)) from exc
            budget.moved += sent
            while views and sent >= len(views[0]):
                sent -= len(views[0])
                views.pop(0)
            if sent:
                views[0] = views[0][sent:]

    def sendfile(self, in_fd: int, offset: int, count: int, mode: str = "on") -> int:
        """Send up to ``count`` bytes of the file ``in_fd`` from ``offset``, within the
        sending budget; return how many went (fewer when the file is shorter than it was).

        ``mode`` is ``--sendfile``: ``on`` uses ``sendfile()``, ``off`` reads the file and
        sends it in blocks, ``auto`` is ``on`` except to a TCP peer on this host (a proxy in
        front, a benchmark): over loopback, sendfile() measured about half as fast as
        copying in 256 KiB blocks (2.4 against 4.1 GB/s to a reader taking 8 KiB at a
        time), as the receiving side copies the data anyway. Unix sockets and remote peers
        keep sendfile(), which saves the copy and the CPU.
        """
        if mode == "off" or (mode == "auto" and is_loopback_peer(self.sock)):
            return self._copy_file(in_fd, offset, count)
        out_fd = self.fd
        remaining = count
        # Non-blocking for the copy, so a client that stops reading makes the call return
        # and the wait is the budget's, not the kernel's send timeout restarted per call.
        os.set_blocking(out_fd, False)
        try:
            while remaining > 0:
                try:
                    sent = os.sendfile(out_fd, in_fd, offset, min(remaining, SENDFILE_BLOCK))
                except (BlockingIOError, InterruptedError):
                    self._wait_to_send()
                    continue
                except OSError as exc:
                    raise ClientDisconnected(str(exc)) from exc
                if sent == 0:
                    break
                self.sending.moved += sent
                offset += sent
                remaining -= sent
        finally:
            with contextlib.suppress(OSError):
                os.set_blocking(out_fd, True)
        return count - remaining

    def _copy_file(self, in_fd: int, offset: int, count: int) -> int:
        """``sendfile`` without sendfile(): read the file and send it in blocks."""
        remaining = count
        while remaining > 0:
            data = os.pread(in_fd, min(remaining, COPY_BLOCK), offset)
            if not data:
                break  # The file is shorter than it was.
            self.sendall(data)
            offset += len(data)
            remaining -= len(data)
        return count - remaining

    def _wait_to_send(self) -> None:
        budget = self.sending
        if not self._wait(select.POLLOUT, budget):
            raise ClientDisconnected(f"client stopped reading: {budget.describe()}")

    def _wait(self, events: int, budget: Budget) -> bool:
        """Wait until the socket is ready for ``events``, as long as ``budget`` allows;
        False when it ran out first."""
        poll = self._poll
        if poll is None:
            poll = self._poll = select.poll()
            poll.register(self.fd, events)
        else:
            poll.modify(self.fd, events)
        allowed = budget.allowance()
        if allowed <= 0:
            return False
        give_up_at = time.monotonic() + allowed
        while True:
            started = time.monotonic()
            # poll() takes at most INT_MAX milliseconds (24.8 days): longer waits loop.
            timeout_ms = math.ceil((give_up_at - started) * 1000)
            ready = poll.poll(min(max(timeout_ms, 0), MAX_POLL_MS))
            now = time.monotonic()
            budget.waited += now - started
            if ready:
                return True
            if now >= give_up_at:
                return False

    def send_nowait(self, data: bytes) -> None:
        """Send what the socket takes at once, ignoring errors: a last word (503, 408) from
        the listener thread, which must not wait on a client."""
        with contextlib.suppress(OSError):
            self.sock.send(data, MSG_DONTWAIT)

    def half_close(self) -> None:
        """Send the end of the output (a FIN) but keep reading: the first step of a
        lingering close (``Listener.linger``)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def drop_input(self, reads: int) -> bool:
        """Read and drop what has arrived, at most ``reads`` times ``RECV_SIZE`` bytes,
        without waiting; False once the peer has closed (or the connection broke)."""
        for _ in range(reads):
            data = self.recv_raw_nowait()
            if data is None:
                return True
            if not data:
                return False
        return True

    def close(self, *, reset: bool = False) -> None:
        """Close the socket once. With ``reset``, end with a TCP reset instead of an
        orderly close, so a client reading a body delimited by the close can tell it was
        cut short."""
        if self.closed:
            return
        self.closed = True
        sock = self.sock
        try:
            if reset:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        finally:
            sock.close()


def is_loopback_peer(sock: socket.socket) -> bool:
    """Whether ``sock`` is a TCP connection from this host (127.0.0.0/8, ::1, or those
    IPv4 addresses mapped into IPv6)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        address = ipaddress.ip_address(sock.getpeername()[0])
    except (OSError, ValueError):
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def timeval(seconds: float) -> bytes:
    """A ``struct timeval`` for SO_RCVTIMEO/SO_SNDTIMEO: ``seconds`` to the nearest microsecond.

    Raises ``ValueError`` for what the kernel would not read as "wait this long": a zero
    timeval means *no* timeout, so a value that rounds to zero (below half a microsecond)
    is refused, as are NaN, infinities and values too large for the struct.
    """
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(
            f"a socket timeout must be a finite number of seconds > 0, not {seconds!r}"
        )
    # Whole microseconds first: (seconds - whole) * 1e6 in floats truncates 1.000001 to 1.0.
    micro = round(seconds * 1_000_000)
    if micro == 0:
        raise ValueError(
            f"a socket timeout of {seconds!r} s is below a microsecond: the kernel would "
            "read it as no timeout at all"
        )
    whole, fraction = divmod(micro, 1_000_000)
    try:
        return struct.pack("ll", whole, fraction)
    except struct.error:
        raise ValueError(f"a socket timeout of {seconds!r} s is too large") from None


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
