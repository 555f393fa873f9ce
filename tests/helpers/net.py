"""Loopback ports: a free one, and whether one takes connections."""

from __future__ import annotations

import socket

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """A port nothing listens on now (for a command that needs a port number up front)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def accepts(port: int, host: str = HOST) -> bool:
    """Whether a new connection to ``port`` is accepted (even into a listen queue)."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def refuses(port: int, host: str = HOST) -> bool:
    """Whether a new connection to ``port`` is refused (rather than accepted, even into a
    listen queue no one will accept from)."""
    try:
        socket.create_connection((host, port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        pass
    return False
