"""Listening sockets from bind addresses: TCP (IPv4/IPv6), Unix and inherited descriptors."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from collections.abc import MutableMapping, Sequence

from .config import BindAddress, Config, ConfigError


class BindError(ConfigError):
    """An address could not be bound (in use, not permitted, unknown host...)."""


# systemd socket activation (sd_listen_fds(3)): the first passed descriptor is 3.
SD_LISTEN_FDS_START = 3


def bind_socket(address: BindAddress, backlog: int, mode: int | None = None) -> socket.socket:
    """Create, bind and listen on ``address``; raise ``BindError`` with a clear message.

    ``mode``: the file mode of a Unix socket this binds (None: as the umask leaves it).
    """
    try:
        if address.kind == "fd":
            sock = socket.socket(fileno=address.fd)
        elif address.kind == "unix":
            sock = _bind_unix(address.path, mode)
        elif address.kind == "systemd":
            # Whoever binds (Server.start, the --reload and --workers supervisors) expands
            # it first (expand_binds): it stands for one or several sockets.
            raise BindError("bind systemd: expand it to its descriptors first (expand_binds)")
        else:
            sock = _bind_tcp(address.host, address.port)
        sock.listen(backlog)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise BindError(f"cannot listen on {address}: {reason}") from None
    return sock


def bind_all(
    config: Config, fds: Sequence[int] | None = None
) -> tuple[list[socket.socket], list[str]]:
    """Listen on every address of ``config.binds`` (``systemd`` expanded to the sockets
    systemd passed this process), or on ``fds``: listening descriptors a supervisor
    handed over. Returns the sockets and the absolute paths of the Unix socket files
    bound, for ``close_listening``. On an error, closes what it bound and raises."""
    if fds is not None:
        addresses = [BindAddress("fd", fd=fd) for fd in fds]
    else:
        addresses = expand_binds(config.binds)
    sockets: list[socket.socket] = []
    unix_paths: list[str] = []
    try:
        for address in addresses:
            sockets.append(bind_socket(address, config.backlog, config.socket_mode))
            if address.kind == "unix":
                unix_paths.append(os.path.abspath(address.path))
    except BaseException:
        close_listening(sockets, unix_paths)
        raise
    return sockets, unix_paths


def remove_socket_files(paths: list[str]) -> None:
    """Remove the Unix socket files a server bound, as it stops listening on them (from
    then on a successor may bind the paths). Empties ``paths``: a later call, on the way
    out, must not remove a successor's file. A path that holds no socket is left alone:
    a file of the user's that stood in the way of a bind is no server's to remove."""
    while paths:
        path = paths.pop()
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)


def close_listening(sockets: list[socket.socket], unix_paths: list[str]) -> None:
    """Stop listening as a stop begins, so new clients are refused at once instead of
    waiting in a listen queue no one accepts from (until it is closed on them): close
    ``sockets`` and remove their ``unix_paths`` files. Closing again does nothing."""
    remove_socket_files(unix_paths)
    for sock in sockets:
        sock.close()


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
            # listener can queue it for a worker thread at once instead of polling it first.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 1)
        sock.bind(sockaddr)
    except OSError:
        sock.close()
        raise
    return sock


def _bind_unix(path: str, mode: int | None = None) -> socket.socket:
    # A stale socket file from a previous run would make bind() fail, so remove it; but
    # only a socket file, and only when nothing listens on it any more.
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.stat(path).st_mode) and not _unix_socket_in_use(path):
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        if mode is not None:
            # Before listen(): until then a connect() is refused, so no client gets in
            # under the umask's mode.
            os.chmod(path, mode)
    except OSError:
        sock.close()
        raise
    return sock


def systemd_fds(environ: MutableMapping[str, str] | None = None) -> list[int]:
    """The listening descriptors systemd passed this process (socket activation), consumed.

    ``LISTEN_FDS=N`` with ``LISTEN_PID`` equal to this process's id means descriptors
    3 .. 3+N-1 are ours. The variables (and ``LISTEN_FDNAMES``) are removed, so processes
    this one starts do not take them for theirs, and the descriptors are made
    non-inheritable. Raises ``BindError`` when they are missing or meant for another process.
    """
    env = os.environ if environ is None else environ
    count_text = env.get("LISTEN_FDS", "")
    pid_text = env.get("LISTEN_PID", "")
    for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        env.pop(name, None)
    if not count_text:
        raise BindError("bind systemd: LISTEN_FDS is not set (not started by a systemd socket)")
    if not count_text.isdigit() or int(count_text) < 1:
        raise BindError(f"bind systemd: LISTEN_FDS={count_text!r}: expected a count >= 1")
    if pid_text != str(os.getpid()):
        raise BindError(
            f"bind systemd: LISTEN_PID={pid_text!r} is not this process ({os.getpid()})"
        )
    fds = list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count_text)))
    for fd in fds:
        try:
            os.set_inheritable(fd, False)
        except OSError as exc:
            raise BindError(f"bind systemd: descriptor {fd}: {exc.strerror}") from None
    return fds


def expand_binds(
    binds: Sequence[BindAddress], environ: MutableMapping[str, str] | None = None
) -> list[BindAddress]:
    """``binds`` with a ``systemd`` address replaced by one ``fd`` address per socket
    systemd passed (see ``systemd_fds``); the others as they are."""
    if all(address.kind != "systemd" for address in binds):
        return list(binds)
    expanded: list[BindAddress] = []
    for address in binds:
        if address.kind != "systemd":
            expanded.append(address)
            continue
        expanded.extend(BindAddress("fd", fd=fd) for fd in systemd_fds(environ))
    fds = [address.fd for address in expanded if address.kind == "fd"]
    if len(set(fds)) != len(fds):
        # fd://N next to systemd is fine, but not for one of systemd's own descriptors.
        raise BindError("bind: the same descriptor is named twice (systemd and fd://N?)")
    return expanded


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


def url_of(sock: socket.socket, scheme: str = "http") -> str:
    """The URL-ish name of a bound socket, for logs: ``http://127.0.0.1:8000``."""
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{name}"
    host, port = name[0], name[1]
    if sock.family == socket.AF_INET6:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"
