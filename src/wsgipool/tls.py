"""TLS: the server's ``ssl.SSLContext``, and connections that encrypt through memory BIOs.

A TLS connection keeps its plain, blocking socket (with the kernel timeouts every
connection has) and runs OpenSSL over a pair of ``ssl.MemoryBIO`` buffers, so every system
call stays the one a plain connection makes: ``recv``/``send`` with ``MSG_DONTWAIT``, and
waits in ``poll()`` within the transfer's budget (connection.py).
(An ``SSLSocket`` in blocking mode retries for ever when a kernel timeout fires, and one
in timeout mode waits in poll() on every call.) It also lets bytes already read off the
socket, such as those after a PROXY protocol header, be handed to OpenSSL.

The handshake runs on a worker, a step at a time: when the client's next flight has not
arrived, the connection goes back to the listener like an idle one, so a client that never
completes its handshake holds no thread, and the header timeout closes it.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import time
from typing import TYPE_CHECKING, Any

from .config import Config, ConfigError, require_file
from .connection import (
    DEFAULT_TRANSFER,
    RECV_SIZE,
    ClientDisconnected,
    Connection,
    Handshake,
    TransferLimits,
)
from .http.parser import opens_head_request
from .http.response import error_response

if TYPE_CHECKING:
    import socket

    from .http.parser import Limits

CERT_REQS = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}
# The content type of a TLS handshake record: the first byte a TLS client sends.
HANDSHAKE_RECORD = 0x16
log = logging.getLogger("wsgipool.error")

# Why a plain HTTP request to the TLS port gets 400 (the response itself is made when it is
# sent: its Date must be the time it goes out, RFC 9110 6.6.1, not the time of the import).
PLAIN_HTTP_REFUSED = "plain HTTP sent to an HTTPS port: use https://"
# Above this, response data is encrypted and sent in pieces, so the ciphertext of a large
# body is never held in memory all at once.
WRITE_BLOCK = 256 * 1024


def build_context(config: Config) -> ssl.SSLContext:
    """The server context for ``config``: TLS 1.2 or later, ALPN ``http/1.1``.

    This is where the certificate, key and CA files are read: once per start, before
    anything listens (``Server.start``; the worker supervisor before it forks, and again on
    SIGHUP). Raises ``ConfigError`` naming the option whose file is missing or unusable.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # No client-initiated renegotiation (a cheap way to make a server do expensive work),
    # and the server's cipher order wins.
    context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    # Asked again here (Config did): a file can go between configuration and start.
    require_file("certfile", config.certfile)
    require_file("keyfile", config.keyfile)
    asked = []

    def password() -> str:
        # Never OpenSSL's prompt on the terminal: a server has no one to answer it.
        asked.append(True)
        if not config.keyfile_password:
            raise ConfigError(
                f"keyfile: {config.keyfile or config.certfile} is encrypted: "
                "give its keyfile_password"
            )
        return config.keyfile_password

    try:
        context.load_cert_chain(config.certfile, config.keyfile or None, password=password)
    except (OSError, ssl.SSLError) as exc:
        reason = "wrong keyfile_password?" if asked else _reason(exc)
        raise ConfigError(
            f"certfile: cannot load {config.certfile}"
            + (f" with {config.keyfile}" if config.keyfile else "")
            + f": {reason}"
        ) from None
    if config.ca_certs:
        try:
            context.load_verify_locations(cafile=config.ca_certs)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"ca_certs: cannot load {config.ca_certs}: {_reason(exc)}") from None
    context.verify_mode = CERT_REQS[config.cert_reqs]
    if config.ciphers:
        context.set_ciphers(config.ciphers)  # Config made sure OpenSSL takes them.
    context.set_alpn_protocols(["http/1.1"])
    context.sni_callback = _remember_server_name
    return context


def _remember_server_name(tls: Any, server_name: str | None, context: ssl.SSLContext) -> None:
    """Keep the name the client asked for (SNI), for ``SSL_TLS_SNI`` in the environ."""
    tls.wsgipool_server_name = server_name


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        # OpenSSL's reason code ("KEY_VALUES_MISMATCH") says more than the message.
        if exc.reason:
            return str(exc.reason).replace("_", " ").lower()
        if "PEM lib" in str(exc):
            return "no certificate and private key in PEM form (a separate key goes in keyfile)"
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


class TLSConnection(Connection):
    """A connection whose bytes pass through OpenSSL; ``buffer`` holds the plaintext."""

    __slots__ = (
        "_close_notify_sent",
        "_hello_seen",
        "_incoming",
        "_outgoing",
        "_tls",
        "handshaken",
    )

    def __init__(
        self,
        sock: socket.socket,
        peer: Any,
        local: Any,
        limits: Limits,
        transfer: TransferLimits = DEFAULT_TRANSFER,
        *,
        context: ssl.SSLContext,
    ) -> None:
        super().__init__(sock, peer, local, limits, transfer)
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self.handshake_pending = True
        self.handshaken = False
        self._hello_seen = False
        self._close_notify_sent = False

    # --- the handshake ---------------------------------------------------------------------

    def handshake(self) -> Handshake:
        """Advance the handshake with whatever has arrived, without waiting for more."""
        while True:
            if self.buffer:
                # Raw bytes read so far (by the step before, or with a PROXY header).
                if not self._hello_seen:
                    if self.buffer[0] != HANDSHAKE_RECORD:
                        # Most likely plain HTTP: say so in plain text, as nginx does.
                        with contextlib.suppress(ClientDisconnected):
                            refusal = error_response(
                                400,
                                PLAIN_HTTP_REFUSED,
                                head_only=opens_head_request(self.buffer),
                            )
                            Connection.sendall(self, refusal)
                        return Handshake.NOT_TLS
                    self._hello_seen = True
                self._incoming.write(bytes(self.buffer))
                self.buffer.clear()
            try:
                self._tls.do_handshake()
            except ssl.SSLWantReadError:
                try:
                    self._flush()
                except ClientDisconnected:
                    return Handshake.FAILED
                received = Connection.recv_available(self)
                if received < 0:
                    return Handshake.WAITING
                if received == 0:
                    return Handshake.FAILED
                continue
            except (ssl.SSLError, OSError):
                # Let the client see the alert OpenSSL wrote, if it is still there.
                self._flush_quietly()
                return Handshake.FAILED
            try:
                self._flush()
            except ClientDisconnected:
                return Handshake.FAILED
            self.handshake_pending = False
            self.handshaken = True
            return Handshake.DONE

    # --- reading and writing plaintext ---------------------------------------------------

    def recv_available(self) -> int:
        if not self.handshaken:
            return Connection.recv_available(self)
        return self._read(wait=False)

    def recv_wait(self) -> int:
        return self._read(wait=True)

    def _read(self, *, wait: bool) -> int:
        """Decrypt the next record into ``buffer``, reading the socket as needed.

        Like ``Connection``'s: the plaintext byte count, 0 on EOF, -1 (without ``wait``)
        when no whole record has arrived. A broken TLS stream counts as EOF there; with
        ``wait`` (a body read) it raises ``ClientDisconnected``, which the gateway expects.
        """
        # A record trickled a byte at a time makes many short waits; the whole read of one
        # record must still end within about one body timeout.
        give_up_at = time.monotonic() + self.receiving.timeout if wait else 0.0
        while True:
            try:
                data = self._tls.read(RECV_SIZE)
            except ssl.SSLWantReadError:
                if wait and time.monotonic() > give_up_at:
                    raise TimeoutError("client sent a record too slowly") from None
                # OpenSSL may have something to say first (an alert refusing a
                # renegotiation, a key update): the client may be waiting for it.
                if self._outgoing.pending and not self._flush_while_reading(wait):
                    return 0
                received = self._receive_raw(wait)
                if received <= 0:
                    return received
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return 0  # close_notify, or the peer closed without one.
            except ssl.SSLError as exc:
                self._flush_quietly()  # The alert, if OpenSSL wrote one.
                if wait:
                    raise ClientDisconnected(f"TLS error: {exc}") from exc
                log.debug("closing %s: TLS error: %s", self.peer, exc)
                return 0
            if self._outgoing.pending and not self._flush_while_reading(wait):
                return 0
            self.buffer += data
            return len(data)

    def _flush_while_reading(self, wait: bool) -> bool:
        """Send what reading made OpenSSL write; False when the client has gone (which a
        read without ``wait`` reports as EOF)."""
        try:
            self._flush()
        except ClientDisconnected:
            if wait:
                raise
            return False
        return True

    def _receive_raw(self, wait: bool) -> int:
        """Move the socket's next bytes into OpenSSL: their count, 0 on EOF, -1 when none
        had arrived (only without ``wait``)."""
        data = self.recv_raw_wait() if wait else self.recv_raw_nowait()
        if data is None:
            return -1
        if data:
            self._incoming.write(data)
        return len(data)

    def has_pending_input(self) -> bool:
        # Whole records may wait in OpenSSL's buffer with nothing left in the kernel's,
        # where the poller would never see them.
        return self._incoming.pending > 0 or self._tls.pending() > 0

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            for start in range(0, len(view), WRITE_BLOCK):
                self._tls.write(view[start : start + WRITE_BLOCK])
                self._flush()
        except ssl.SSLError as exc:
            raise ClientDisconnected(f"TLS error: {exc}") from exc

    def send_parts(self, parts: list[bytes]) -> None:
        # Joined when small: one record and one send for a head and its body.
        if sum(len(part) for part in parts) <= WRITE_BLOCK:
            self.sendall(b"".join(parts))
            return
        for part in parts:
            if part:
                self.sendall(part)

    def sendfile(self, in_fd: int, offset: int, count: int, mode: str = "on") -> int:
        # Never sendfile(): it would bypass the encryption. Read, encrypt, send in blocks.
        return self._copy_file(in_fd, offset, count)

    def send_nowait(self, data: bytes) -> None:
        if not self.handshaken:
            return  # Plain text would mean nothing to a TLS client.
        try:
            self._tls.write(data)
        except ssl.SSLError:
            return
        self._flush_quietly()

    def half_close(self) -> None:
        # The ciphertext the client still sends is dropped unread (``drop_input`` reads
        # the socket, not OpenSSL): after close_notify nothing it says can matter.
        self._send_close_notify()
        super().half_close()

    def close(self, *, reset: bool = False) -> None:
        if not reset:
            self._send_close_notify()
        super().close(reset=reset)

    def _send_close_notify(self) -> None:
        """Tell the client, once, that the response ended here, not by a cut (a response
        cut short, ``reset``, gets none). unwrap() then waits for the client's
        close_notify; no need to."""
        if self.handshaken and not self.closed and not self._close_notify_sent:
            self._close_notify_sent = True
            with contextlib.suppress(ssl.SSLError):
                self._tls.unwrap()
            self._flush_quietly()

    def _flush(self) -> None:
        """Send what OpenSSL has encrypted."""
        pending = self._outgoing.read()
        if pending:
            Connection.sendall(self, pending)

    def _flush_quietly(self) -> None:
        pending = self._outgoing.read()
        if pending:
            Connection.send_nowait(self, pending)

    # --- the environ ---------------------------------------------------------------------

    def tls_environ(self) -> dict[str, str]:
        return tls_environ(self._tls)


# getpeercert() spells attributes out (OpenSSL's long names); a DN string uses OpenSSL's
# short names, as `openssl x509 -nameopt RFC2253` and mod_ssl print it.
_OPENSSL_SHORT_NAMES = {
    "commonName": "CN",
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "streetAddress": "street",
    "domainComponent": "DC",
    "userId": "UID",
    "givenName": "GN",
    "surname": "SN",
}
# The attributes mod_ssl gives a variable of their own (SSL_CLIENT_S_DN_CN...), by the
# suffix it uses; a repeated attribute's later values get _1, _2...
_MOD_SSL_DN_KEYS = {
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "commonName": "CN",
    "title": "T",
    "initials": "I",
    "givenName": "G",
    "surname": "S",
    "description": "D",
    "x500UniqueIdentifier": "UID",
    "emailAddress": "Email",
}


def tls_environ(tls: ssl.SSLObject) -> dict[str, str]:
    """The environ keys mod_ssl sets (``HTTPS``, ``SSL_PROTOCOL``, ``SSL_CLIENT_S_DN``...)
    for a connection whose handshake is done.

    PEP 3333 allows no code point above U+00FF in the environ: a certificate's names beyond
    Latin-1 (``CN=\u5f20\u4e09``) come as their UTF-8 bytes, one code point each, as
    mod_wsgi hands mod_ssl's on; ``value.encode("latin-1").decode("utf-8")`` reads them.
    """
    return {key: _latin1_bytes(value) for key, value in _tls_keys(tls).items()}


def _latin1_bytes(value: str) -> str:
    """``value``'s UTF-8 bytes as a WSGI string (one code point per byte)."""
    return value if value.isascii() else value.encode("utf-8").decode("latin-1")


def _tls_keys(tls: ssl.SSLObject) -> dict[str, str]:
    environ = {"wsgi.url_scheme": "https", "HTTPS": "on"}
    protocol = tls.version()
    if protocol:
        environ["SSL_PROTOCOL"] = protocol
    environ["SSL_SESSION_RESUMED"] = "Resumed" if tls.session_reused else "Initial"
    server_name = getattr(tls, "wsgipool_server_name", None)
    if server_name:
        environ["SSL_TLS_SNI"] = server_name
    cipher = tls.cipher()
    if cipher:
        environ["SSL_CIPHER"] = cipher[0]
        environ["SSL_CIPHER_USEKEYSIZE"] = str(cipher[2])
    der = tls.getpeercert(binary_form=True)
    if not der:
        environ["SSL_CLIENT_VERIFY"] = "NONE"
        return environ
    # The handshake fails on a certificate that does not verify: this one did.
    environ["SSL_CLIENT_VERIFY"] = "SUCCESS"
    environ["SSL_CLIENT_CERT"] = ssl.DER_cert_to_PEM_cert(der)
    details: dict[str, Any] = tls.getpeercert() or {}
    for prefix, key in (("SSL_CLIENT_S_DN", "subject"), ("SSL_CLIENT_I_DN", "issuer")):
        name = details.get(key, ())
        environ[prefix] = _rfc2253(name)
        seen: dict[str, int] = {}
        for rdn in name:
            for attribute, value in rdn:
                suffix = _MOD_SSL_DN_KEYS.get(attribute)
                if suffix is None:
                    continue
                count = seen.get(suffix, 0)
                seen[suffix] = count + 1
                environ[f"{prefix}_{suffix}" + (f"_{count}" if count else "")] = value
    if "serialNumber" in details:
        environ["SSL_CLIENT_M_SERIAL"] = details["serialNumber"]
    if "version" in details:
        environ["SSL_CLIENT_M_VERSION"] = str(details["version"])
    if "notBefore" in details:
        environ["SSL_CLIENT_V_START"] = details["notBefore"]
    if "notAfter" in details:
        environ["SSL_CLIENT_V_END"] = details["notAfter"]
    counters: dict[str, int] = {}
    for kind, value in details.get("subjectAltName", ()):
        label = {"DNS": "DNS", "email": "Email"}.get(kind)  # mod_ssl's two
        if label is not None:
            index = counters.get(label, 0)
            counters[label] = index + 1
            environ[f"SSL_CLIENT_SAN_{label}_{index}"] = value
    return environ


def _rfc2253(name: tuple[tuple[tuple[str, str], ...], ...]) -> str:
    """A distinguished name as RFC 2253 writes it (and mod_ssl reports it): most specific
    first, ``CN=client,O=Example,C=DE``."""
    rdns = []
    for rdn in reversed(name):
        rdns.append(
            "+".join(
                f"{_OPENSSL_SHORT_NAMES.get(attribute, attribute)}={_escape_dn_value(value)}"
                for attribute, value in rdn
            )
        )
    return ",".join(rdns)


def _escape_dn_value(value: str) -> str:
    # RFC 2253 section 2.4 (OpenSSL leaves "=" alone too).
    escaped = "".join("\\" + char if char in ',+"\\<>;' else char for char in value)
    if escaped.startswith(("#", " ")):
        escaped = "\\" + escaped
    if escaped.endswith(" ") and not escaped.endswith("\\ "):
        escaped = escaped[:-1] + "\\ "
    return escaped
