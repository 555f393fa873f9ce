"""systemd's ``Type=notify`` protocol (sd_notify(3)) with the standard library.

Under a service with ``Type=notify``, systemd sets ``NOTIFY_SOCKET`` to an ``AF_UNIX``
datagram socket (a path, or ``@name`` in the abstract namespace) and waits for
``READY=1`` before it counts the service as started; ``STATUS=...`` lines show in
``systemctl status``; ``STOPPING=1`` says a stop has begun. Messages are best effort: a
socket that is gone or full loses the message, never the server.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import MutableMapping


class Notifier:
    """Sends notifications to the socket ``NOTIFY_SOCKET`` named when it was made."""

    def __init__(self, address: str) -> None:
        # "@name": Linux's abstract namespace, a NUL byte first.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._last_status = ""

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] | None = None) -> Notifier | None:
        """The notifier ``NOTIFY_SOCKET`` asks for, or None; the variable is removed, so the
        application's subprocesses (and worker processes) do not notify for us."""
        environ = os.environ if environ is None else environ
        address = environ.pop("NOTIFY_SOCKET", "")
        if not address or not (address.startswith(("/", "@"))):
            return None
        return cls(address)

    def notify(self, *fields: str) -> None:
        """Send ``fields`` (``"READY=1"``, ``"STATUS=..."``) as one message."""
        with contextlib.suppress(OSError):
            self._sock.sendto("\n".join(fields).encode("utf-8", "replace"), self._address)

    def status(self, text: str) -> None:
        """Send ``STATUS=text`` unless it is what was sent last."""
        if text != self._last_status:
            self._last_status = text
            self.notify(f"STATUS={text}")

    def close(self) -> None:
        self._sock.close()


def status_text(busy_threads: int, threads: int, queue_length: int, workers: int = 0) -> str:
    """The STATUS= line: ``4/16 threads busy, 0 queued`` (and the worker processes)."""
    text = f"{busy_threads}/{threads} threads busy, {queue_length} queued"
    return f"{workers} worker processes; {text}" if workers else text
