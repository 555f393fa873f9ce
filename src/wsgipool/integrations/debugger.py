"""Werkzeug's interactive debugger in front of an application, and the bind check it needs.

The debugger shows a traceback page for an unhandled exception and, with ``evalex``, a Python
console in every frame of it: whoever can reach the server can run code as the server's
user. It is therefore only allowed on local addresses (127.0.0.0/8, ::1, ``localhost``,
``unix:`` sockets) unless remote access is asked for explicitly.
"""

from __future__ import annotations

import ipaddress
import logging
import socket

from ..config import BindAddress, Config, ConfigError
from ..wsgi import WSGIApp

log = logging.getLogger("wsgipool.error")

DANGER = "the debugger runs arbitrary Python code for anyone who can reach it"


def wrap_debugger(app: WSGIApp, evalex: bool = True) -> WSGIApp:
    """``app`` behind ``werkzeug.debug.DebuggedApplication``; logs the console's PIN."""
    try:
        from werkzeug.debug import DebuggedApplication
    except ImportError:
        raise ConfigError(
            "the debugger is werkzeug's, and werkzeug is not installed: "
            "pip install werkzeug (Flask brings it)"
        ) from None
    debugged = DebuggedApplication(app, evalex=evalex)  # type: ignore[arg-type]
    if evalex:
        pin = debugged.pin
        if pin is None:
            log.warning("debugger active, console PIN disabled: %s", DANGER)
        else:
            log.warning("debugger active (console PIN: %s)", pin)
    else:
        log.warning("debugger active (tracebacks only, no console)")
    return debugged


def is_local(address: BindAddress) -> bool:
    """Whether only this machine can reach ``address``."""
    if address.kind == "unix":
        return True
    if address.kind == "fd":
        return _fd_is_local(address.fd)
    return _host_is_loopback(address.host)


def check_debug_bind(
    config: Config, allow_remote: bool, *, override: str = "--debug-allow-remote"
) -> None:
    """Refuse (``ConfigError``) to run the debugger on a non-local address, unless
    ``allow_remote``, in which case log a warning. ``override`` names the way to allow it."""
    remote = [str(address) for address in config.binds if not is_local(address)]
    if not remote:
        return
    where = ", ".join(remote)
    if allow_remote:
        log.warning("debugger reachable from other machines on %s: %s", where, DANGER)
        return
    raise ConfigError(
        f"debugger: refusing to listen on {where}: {DANGER}. Bind 127.0.0.1, ::1, localhost "
        f"or a unix: socket, or use {override} if everyone who can reach it is trusted"
    )


def _host_is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:  # Another host name: it may resolve to anything.
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _fd_is_local(fd: int) -> bool:
    """An inherited socket is local when it is a Unix socket or bound to a loopback address."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return False
    try:
        if sock.family == socket.AF_UNIX:
            return True
        return _host_is_loopback(sock.getsockname()[0])
    except OSError:
        return False
    finally:
        sock.detach()  # The descriptor stays open for the server.
