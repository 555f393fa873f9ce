"""Listening sockets from bind addresses: TCP (IPv4/IPv6), Unix and inherited descriptors."""

from __future__ import annotations

import contextlib
import os
import socket
import stat

from .config import BindAddress, ConfigError


class BindError(ConfigError):
    """An address could not be bound (in use, not permitted, unknown host...)."""


def bind_socket(address: BindAddress, backlog: int) -> socket.socket:
    """Create, bind and listen on ``address``; raise ``BindError`` with a clear message."""
    try:
        if address.kind == "fd":
            sock = socket.socket(fileno=address.fd)
        elif address.kind == "unix":
            sock = _bind_unix(address.path)
        else:
            sock = _bind_tcp(address.host, address.port)
        sock.listen(backlog)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise BindError(f"cannot listen on {address}: {reason}") from None
    return sock


def _bind_tcp(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OSError(exc.errno, f"unknown host {host!r}") from None
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # "[::]:8000" means IPv6 only; bind 0.0.0.0 too for both.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if hasattr(socket, "TCP_DEFER_ACCEPT"):
            # Linux: accept() returns a connection once its first bytes are in, so the
            # listener can queue it for a worker at once instead of polling it first.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 1)
        sock.bind(sockaddr)
    except OSError:
        sock.close()
        raise
    return sock


def _bind_unix(path: str) -> socket.socket:
    # A stale socket file from a previous run would make bind() fail, so remove it; but
    # only a socket file, and only when nothing listens on it any more.
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.stat(path).st_mode) and not _unix_socket_in_use(path):
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
    except OSError:
        sock.close()
        raise
    return sock


def _unix_socket_in_use(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def defers_accept(sock: socket.socket) -> bool:
    """Whether accept() on ``sock`` waits for the client's first bytes (TCP_DEFER_ACCEPT)."""
    if sock.family == socket.AF_UNIX or not hasattr(socket, "TCP_DEFER_ACCEPT"):
        return False
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT) > 0
    except OSError:
        return False


def describe(sock: socket.socket) -> str:
    """The URL-ish name of a bound socket, for logs: ``http://127.0.0.1:8000``."""
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{name}"
    host, port = name[0], name[1]
    if sock.family == socket.AF_INET6:
        host = f"[{host}]"
    return f"http://{host}:{port}"
