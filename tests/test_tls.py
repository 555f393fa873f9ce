"""TLS end to end: real handshakes against a real server on 127.0.0.1 (certificates from
trustme), with http.client, requests, ssl sockets and a memory-BIO client that controls
exactly which bytes go out in which send."""

from __future__ import annotations

import ast
import contextlib
import http.client
import json
import logging
import os
import select
import shutil
import socket
import ssl
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
import trustme

from tests.helpers.apps import hello_app
from tests.helpers.http import read_response, read_until_close
from tests.helpers.live import Live
from tests.helpers.waiting import wait_for
from wsgipool import Config, ConfigError, Server
from wsgipool.http import response as http_response


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    directory = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client@example.com", common_name="client one")
    other_ca = trustme.CA()
    stranger = other_ca.issue_cert("stranger@example.com", common_name="stranger")
    paths = {
        "ca": directory / "ca.pem",
        "ca_key": directory / "ca-key.pem",
        "server": directory / "server.pem",
        "server_cert": directory / "server-cert.pem",
        "server_key": directory / "server-key.pem",
        "client": directory / "client.pem",
        "stranger": directory / "stranger.pem",
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    ca.private_key_pem.write_to_path(str(paths["ca_key"]))
    server.private_key_and_cert_chain_pem.write_to_path(str(paths["server"]))
    server.cert_chain_pems[0].write_to_path(str(paths["server_cert"]))
    server.private_key_pem.write_to_path(str(paths["server_key"]))
    client.private_key_and_cert_chain_pem.write_to_path(str(paths["client"]))
    stranger.private_key_and_cert_chain_pem.write_to_path(str(paths["stranger"]))
    return {name: str(path) for name, path in paths.items()}


def tls_environ_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """Answers with the environ keys TLS adds, as JSON (and reads any body)."""
    body = environ["wsgi.input"].read()
    keys = {
        key: value
        for key, value in environ.items()
        if key.startswith(("SSL_", "HTTPS", "REMOTE_ADDR")) or key == "wsgi.url_scheme"
    }
    keys["body_length"] = len(body)
    data = json.dumps(keys).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


@pytest.fixture
def serve_tls(serve: Callable[..., Live], pki: dict[str, str]) -> Callable[..., Live]:
    def start(app: Any = tls_environ_app, **options: Any) -> Live:
        if "ssl_context" not in options:
            options.setdefault("certfile", pki["server"])
        return serve(app, **options)

    return start


def client_context(pki: dict[str, str], cert: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki["ca"])
    if cert is not None:
        context.load_cert_chain(pki[cert])
    return context


def get_json(live: Live, context: ssl.SSLContext, path: str = "/") -> dict[str, Any]:
    connection = http.client.HTTPSConnection(live.host, live.port, context=context, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        assert response.status == 200
        return json.loads(response.read())  # type: ignore[no-any-return]
    finally:
        connection.close()


class MemoryClient:
    """A TLS client over a raw socket that decides which bytes go out in which send()."""

    def __init__(self, live: Live, context: ssl.SSLContext) -> None:
        self.sock = live.connect()
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname="127.0.0.1")
        self.plaintext = b""

    def handshake(self, *, prefix: bytes = b"", then: tuple[bytes, ...] = ()) -> None:
        """Handshake, sending ``prefix`` before the ClientHello and the records of ``then``
        in the same send() as the final flight."""
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.sock.sendall(prefix + self._outgoing.read())
                prefix = b""
                self._receive()
        for message in then:
            self.tls.write(message)
        self.sock.sendall(self._outgoing.read())

    def outgoing_bytes(self) -> bytes:
        """The records written so far, not yet sent."""
        return self._outgoing.read()

    def trickle_until_closed(self, data: bytes, pause: float) -> bool:
        """Send ``data`` a byte at a time, ``pause`` apart; True once the server closed
        the connection (whatever it said first), False if all of it went out."""
        try:
            for index in range(len(data)):
                self.sock.send(data[index : index + 1])
                readable, _, _ = select.select([self.sock], [], [], pause)
                if readable and not self.sock.recv(65536):
                    return True  # (Whatever came before: tickets, an alert, a 408.)
        except (BrokenPipeError, ConnectionResetError):
            return True
        finally:
            self.sock.close()
        return False

    def _receive(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("server closed")
        self._incoming.write(data)

    def read_until(self, condition: Callable[[bytes], bool]) -> bytes:
        while not condition(self.plaintext):
            try:
                self.plaintext += self.tls.read(65536)
            except ssl.SSLWantReadError:
                self._receive()
        return self.plaintext


# --- serving HTTPS ---------------------------------------------------------------------------


def test_https_keep_alive_with_http_client(
    serve_tls: Callable[..., Live], pki: dict[str, str]
) -> None:
    live = serve_tls()
    connection = http.client.HTTPSConnection(
        "localhost", live.port, context=client_context(pki), timeout=10
    )
    for _ in range(3):
        connection.request("GET", "/")
        response = connection.getresponse()
        environ = json.loads(response.read())
        assert response.status == 200
        assert environ["wsgi.url_scheme"] == "https"
        assert environ["HTTPS"] == "on"
        assert environ["SSL_PROTOCOL"] in ("TLSv1.2", "TLSv1.3")
        assert environ["SSL_CIPHER"]
        assert environ["SSL_CLIENT_VERIFY"] == "NONE"
    # One TLS session served all three: the socket stayed the same.
    assert connection.sock is not None
    connection.close()
    assert live.server.urls == [f"https://127.0.0.1:{live.port}"]


def test_requests_verifies_the_server_and_uploads(
    serve_tls: Callable[..., Live], pki: dict[str, str]
) -> None:
    live = serve_tls()
    body = os.urandom(3 * 1024 * 1024)
    with requests.Session() as session:
        response = session.post(f"https://127.0.0.1:{live.port}/", data=body, verify=pki["ca"])
        assert response.status_code == 200
        assert response.json()["body_length"] == len(body)
        # And a chunked upload, read by the app to its end.
        response = session.post(
            f"https://127.0.0.1:{live.port}/",
            data=iter([body[:1000], body[1000:]]),
            verify=pki["ca"],
        )
        assert response.json()["body_length"] == len(body)


def test_client_sending_its_whole_body_first_gets_the_413_over_tls(
    serve_tls: Callable[..., Live], pki: dict[str, str]
) -> None:
    # The lingering close works over TLS too: close_notify, a half-close, and the
    # ciphertext still coming is dropped unread (docs/hardening.md).
    live = serve_tls(max_body_size=64 * 1024, threads=1)
    connection = http.client.HTTPSConnection(
        "localhost", live.port, context=client_context(pki), timeout=30
    )
    try:
        connection.request("POST", "/", body=b"x" * (16 * 1024 * 1024))
        response = connection.getresponse()
        assert response.status == 413
        assert response.read().startswith(b"413 ")
    finally:
        connection.close()


def test_separate_key_file(serve_tls: Callable[..., Live], pki: dict[str, str]) -> None:
    live = serve_tls(certfile=pki["server_cert"], keyfile=pki["server_key"])
    assert get_json(live, client_context(pki))["HTTPS"] == "on"


def test_file_wrapper_over_tls_sends_the_file_encrypted(
    serve_tls: Callable[..., Live], pki: dict[str, str], tmp_path: Path
) -> None:
    payload = os.urandom(5 * 1024 * 1024 + 17)
    path = tmp_path / "payload.bin"
    path.write_bytes(payload)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](path.open("rb"))

    live = serve_tls(app)
    response = requests.get(f"https://127.0.0.1:{live.port}/", verify=pki["ca"], timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(len(payload))
    assert response.content == payload


def test_large_streamed_response(serve_tls: Callable[..., Live], pki: dict[str, str]) -> None:
    block = os.urandom(1024 * 1024)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        for _ in range(8):
            yield block

    live = serve_tls(app)
    response = requests.get(f"https://127.0.0.1:{live.port}/", verify=pki["ca"], timeout=30)
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert response.content == block * 8


def test_alpn_selects_http_1_1(serve_tls: Callable[..., Live], pki: dict[str, str]) -> None:
    live = serve_tls()
    context = client_context(pki)
    context.set_alpn_protocols(["h2", "http/1.1"])
    with context.wrap_socket(live.connect(), server_hostname="127.0.0.1") as sock:
        assert sock.selected_alpn_protocol() == "http/1.1"
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, _ = read_response(sock)
        assert status == b"HTTP/1.1 200 OK"


def test_tls_1_1_is_refused_and_the_server_keeps_serving(
    serve_tls: Callable[..., Live], pki: dict[str, str]
) -> None:
    live = serve_tls()
    old = client_context(pki)
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # That is the point.
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    try:
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
    except ssl.SSLError:
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    with (
        pytest.raises((ssl.SSLError, ConnectionError)),
        old.wrap_socket(live.connect(), server_hostname="127.0.0.1") as sock,
    ):
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.recv(1)
    assert get_json(live, client_context(pki))["SSL_PROTOCOL"] in ("TLSv1.2", "TLSv1.3")


def test_tls_1_2_is_served(serve_tls: Callable[..., Live], pki: dict[str, str]) -> None:
    live = serve_tls()
    context = client_context(pki)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    assert get_json(live, context)["SSL_PROTOCOL"] == "TLSv1.2"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_sessions_resume(
    serve_tls: Callable[..., Live], pki: dict[str, str], version: ssl.TLSVersion
) -> None:
    """A client's next connection resumes its session (a session ticket): what a proxy's
    new upstream connections do (nginx's proxy_ssl_session_reuse, on by default)."""
    live = serve_tls()
    context = client_context(pki)
    context.maximum_version = version
    session = None
    for resumed in (False, True, True):
        with context.wrap_socket(
            live.connect(), server_hostname="127.0.0.1", session=session
        ) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, body = read_response(sock)  # TLS 1.3: the ticket came before it
            assert status == b"HTTP/1.1 200 OK"
            assert sock.session_reused is resumed
            expected = "Resumed" if resumed else "Initial"
            assert json.loads(body)["SSL_SESSION_RESUMED"] == expected
            session = sock.session


def test_ciphers_option_restricts_tls_1_2(
    serve_tls: Callable[..., Live], pki: dict[str, str]
) -> None:
    live = serve_tls(ciphers="ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256")
    context = client_context(pki)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    assert get_json(live, context)["SSL_CIPHER"] in (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
    )


def test_ready_ssl_context(serve: Callable[..., Live], pki: dict[str, str]) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki["server"])
    live = serve(tls_environ_app, ssl_context=context)
    assert get_json(live, client_context(pki))["wsgi.url_scheme"] == "https"


# --- client certificates ---------------------------------------------------------------------


def test_optional_client_certificate_in_the_environ(
    serve_tls: Callable[..., Live], pki: dict[str, str]
) -> None:
    live = serve_tls(ca_certs=pki["ca"], cert_reqs="optional")
    assert get_json(live, client_context(pki))["SSL_CLIENT_VERIFY"] == "NONE"
    environ = get_json(live, client_context(pki, "client"))
    assert environ["SSL_CLIENT_VERIFY"] == "SUCCESS"
    assert environ["SSL_CLIENT_S_DN_CN"] == "client one"
    assert environ["SSL_CLIENT_S_DN"].startswith("CN=client one,")
    assert environ["SSL_CLIENT_I_DN_O"] == environ["SSL_CLIENT_S_DN_O"]
    assert environ["SSL_CLIENT_SAN_Email_0"] == "client@example.com"
    assert environ["SSL_CLIENT_M_SERIAL"]
    assert environ["SSL_CLIENT_V_END"].endswith("GMT")
    # The PEM in the environ is the certificate the client sent.
    sent = Path(pki["client"]).read_text()
    assert environ["SSL_CLIENT_CERT"].strip().splitlines()[1] in sent


def test_client_certificate_names_reach_the_environ_as_latin1(
    serve_tls: Callable[..., Live], pki: dict[str, str], tmp_path: Path
) -> None:
    """PEP 3333: no environ string has a code point above U+00FF. A name beyond Latin-1
    in the certificate comes as its UTF-8 bytes, one code point each (as mod_wsgi hands
    mod_ssl's on), which the app decodes back."""
    ca = trustme.CA()
    name, organization = "\u5f20\u4e09 J\u00fcrgen", "\u041a\u043b\u044e\u0447"
    client = ca.issue_cert("zhang@example.com", common_name=name, organization_name=organization)
    ca_path, client_path = tmp_path / "ca.pem", tmp_path / "client.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    client.private_key_and_cert_chain_pem.write_to_path(str(client_path))
    live = serve_tls(ca_certs=str(ca_path), cert_reqs="required")
    context = ssl.create_default_context(cafile=pki["ca"])
    context.load_cert_chain(str(client_path))
    environ = get_json(live, context)
    for key, value in environ.items():
        if isinstance(value, str):
            assert max(map(ord, value)) <= 0xFF, (key, value)

    def text(key: str) -> str:
        return str(environ[key]).encode("latin-1").decode("utf-8")

    assert text("SSL_CLIENT_S_DN_CN") == name
    assert text("SSL_CLIENT_S_DN_O") == organization
    assert text("SSL_CLIENT_S_DN").startswith(f"CN={name},")
    assert text("SSL_CLIENT_S_DN").endswith(f",O={organization}")


def test_required_client_certificate(serve_tls: Callable[..., Live], pki: dict[str, str]) -> None:
    live = serve_tls(ca_certs=pki["ca"], cert_reqs="required")
    assert get_json(live, client_context(pki, "client"))["SSL_CLIENT_VERIFY"] == "SUCCESS"
    for context in (client_context(pki), client_context(pki, "stranger")):
        # TLS 1.3 reports the refusal on the first read after the handshake.
        with (
            pytest.raises((ssl.SSLError, ConnectionError)),
            context.wrap_socket(live.connect(), server_hostname="127.0.0.1") as sock,
        ):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            if not sock.recv(1):
                raise ConnectionError("closed")
    assert get_json(live, client_context(pki, "client"))["SSL_CLIENT_VERIFY"] == "SUCCESS"


# --- handshakes that do not happen ---------------------------------------------------------


def test_plain_http_to_the_tls_port_gets_400(serve_tls: Callable[..., Live]) -> None:
    live = serve_tls()
    response = live.raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"https" in response
    assert b"Connection: close" in response


def test_plain_http_head_to_the_tls_port_gets_400_without_content(
    serve_tls: Callable[..., Live],
) -> None:
    live = serve_tls()
    response = live.raw(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"\r\nContent-Length: " in response
    assert response.endswith(b"\r\n\r\n"), f"content sent in a response to HEAD: {response!r}"


def test_plain_http_refusal_is_dated_when_sent(
    serve_tls: Callable[..., Live], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its Date is the time it goes out (RFC 9110 6.6.1), not when the module was imported:
    with the server's clock set to 2100, so says the Date."""
    live = serve_tls()
    monkeypatch.setattr(http_response, "time", SimpleNamespace(time=lambda: 4102444800.0))
    response = live.raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"\r\nDate: Fri, 01 Jan 2100 00:00:00 GMT\r\n" in response


def client_hello(pki: dict[str, str]) -> bytes:
    """The bytes of a real ClientHello."""
    tls = client_context(pki).wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO())
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_stalled_handshakes_hold_no_worker(
    serve_tls: Callable[..., Live], pki: dict[str, str]
) -> None:
    """20 clients that connect and never handshake, and 20 that stop half way through their
    ClientHello, with 2 worker threads: others are served while all 40 still wait."""
    live = serve_tls(threads=2, header_timeout=60)
    hello = client_hello(pki)
    stalled = [live.connect() for _ in range(20)]
    for _ in range(20):
        sock = live.connect()
        sock.sendall(hello[: len(hello) // 2])
        stalled.append(sock)
    for _ in range(4):
        assert get_json(live, client_context(pki))["HTTPS"] == "on"
    for sock in stalled:
        # Still open (not timed out): nobody waited for them.
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recv(1)
        sock.close()


def test_handshake_deadline_closes_silent_clients(serve_tls: Callable[..., Live]) -> None:
    live = serve_tls(header_timeout=0.3)
    with live.connect() as sock:
        sock.sendall(b"\x16\x03\x01")  # The start of a handshake record, then nothing.
        assert read_until_close(sock) == b""
    wait_for(lambda: live.server.connection_count == 0)


def test_garbage_handshake_is_closed(serve_tls: Callable[..., Live], pki: dict[str, str]) -> None:
    live = serve_tls()
    with live.connect() as sock:
        sock.sendall(b"\x16\x03\x01\x00\x05hello" + b"\x00" * 100)
        # OpenSSL answers with an alert record (0x15), or just closes.
        reply = read_until_close(sock)
        assert reply == b"" or reply[:1] == b"\x15"
    assert get_json(live, client_context(pki))["HTTPS"] == "on"


# --- records, buffering and timeouts -------------------------------------------------------


def test_pipelined_records_in_one_segment(
    serve_tls: Callable[..., Live], pki: dict[str, str]
) -> None:
    """Two requests in two TLS records sent in one send() right after the handshake: the
    second waits in OpenSSL's buffer, where the poller cannot see it."""
    live = serve_tls(hello_app)
    client = MemoryClient(live, client_context(pki))
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    client.handshake(then=(request, request))
    data = client.read_until(lambda text: text.count(b"Hello, World!") == 2)
    assert data.count(b"HTTP/1.1 200 OK") == 2
    client.sock.close()


def test_proxy_protocol_header_before_the_handshake(
    serve_tls: Callable[..., Live], pki: dict[str, str]
) -> None:
    """HAProxy's send-proxy with an ssl backend: the PROXY header in clear, then TLS, in the
    same segment."""
    live = serve_tls(proxy_protocol=True)
    client = MemoryClient(live, client_context(pki))
    client.handshake(
        prefix=b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 443\r\n",
        then=(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",),
    )
    data = client.read_until(lambda text: text.endswith(b"}"))
    client.sock.close()
    environ = json.loads(data.partition(b"\r\n\r\n")[2])
    assert environ["REMOTE_ADDR"] == "203.0.113.7"
    assert environ["HTTPS"] == "on"


def test_body_timeout_over_tls(serve_tls: Callable[..., Live], pki: dict[str, str]) -> None:
    live = serve_tls(body_timeout=0.3)
    with client_context(pki).wrap_socket(live.connect(), server_hostname="127.0.0.1") as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        reply = b""
        with contextlib.suppress(ssl.SSLError):
            reply = read_until_close(sock)
        # A 408, or a close; never a hang (the socket's own timeout would fail the test).
        assert reply == b"" or reply.startswith(b"HTTP/1.1 408")
    assert get_json(live, client_context(pki))["HTTPS"] == "on"


def test_many_clients_one_after_another(
    serve_tls: Callable[..., Live], pki: dict[str, str]
) -> None:
    live = serve_tls(threads=2)
    context = client_context(pki)
    for _ in range(30):
        assert get_json(live, context)["HTTPS"] == "on"
    wait_for(lambda: live.server.connection_count == 0)


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"keyfile": "key.pem"}, "keyfile: needs certfile"),
        ({"ca_certs": "ca.pem"}, "ca_certs: needs certfile"),
        ({"cert_reqs": "required"}, "cert_reqs: needs certfile"),
        ({"certfile": "/nonexistent.pem"}, "No such file"),
        ({"certfile": "SERVER", "cert_reqs": "optional"}, "cert_reqs: optional needs ca_certs"),
        ({"certfile": "SERVER", "cert_reqs": "maybe"}, "cert_reqs: must be one of"),
        ({"certfile": "SERVER", "ciphers": "NOPE"}, "ciphers: OpenSSL accepts none"),
        (
            {"certfile": "SERVER", "ca_certs": "/nonexistent", "cert_reqs": "optional"},
            "ca_certs: cannot load",
        ),
        ({"certfile": "SERVER", "ca_certs": "CA"}, "ca_certs: client certificates are never"),
        ({"certfile": "SERVER", "keyfile": "/nonexistent.key"}, "keyfile: cannot load"),
        ({"ssl_context": "yes"}, "ssl_context: an ssl.SSLContext"),
    ],
)
def test_config_errors(pki: dict[str, str], options: dict[str, Any], message: str) -> None:
    resolved = {
        key: {"SERVER": pki["server"], "CA": pki["ca"]}.get(value, value)
        for key, value in options.items()
    }
    with pytest.raises(ConfigError, match=message):
        Config(**resolved)


def test_configuration_does_not_import_tls() -> None:
    """tls depends on config, never the other way round (a deferred import hid a cycle)."""
    import wsgipool.config

    tree = ast.parse(Path(wsgipool.config.__file__).read_text(encoding="utf-8"))
    imported = {
        (node.level, node.module) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    }
    assert (1, "tls") not in imported
    assert (0, "wsgipool.tls") not in imported


def test_a_client_context_is_refused(pki: dict[str, str]) -> None:
    """ssl.create_default_context() makes a client context: it cannot serve, and the first
    connection must not be where that shows."""
    with pytest.raises(ConfigError, match="ssl_context: cannot serve with this context"):
        Config(ssl_context=ssl.create_default_context())


def test_ssl_context_and_certfile_exclude_each_other(pki: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="not both"):
        Config(ssl_context=ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), certfile=pki["server"])


def test_encrypted_key(tmp_path: Path, pki: dict[str, str], serve: Callable[..., Live]) -> None:
    """An encrypted key needs its password; without it the error says so (no prompt)."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(Path(pki["server_key"]).read_bytes(), None)
    encrypted = tmp_path / "encrypted-key.pem"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"s3cret"),
        )
    )
    base = {"certfile": pki["server_cert"], "keyfile": str(encrypted)}
    for password, message in (
        ("", "is encrypted: give its keyfile_password"),
        ("wrong", "wrong keyfile_password"),
    ):
        server = Server(tls_environ_app, bind=["127.0.0.1:0"], **base, keyfile_password=password)
        with pytest.raises(ConfigError, match=message):
            server.start()
        assert server.sockets == []
    live = serve(tls_environ_app, **base, keyfile_password="s3cret")
    assert get_json(live, client_context(pki))["HTTPS"] == "on"


def test_cli_serves_https_and_reports_bad_files(pki: dict[str, str], tmp_path: Path) -> None:
    command = [sys.executable, "-m", "wsgipool", "--chdir", str(Path(__file__).parent / "apps")]
    bad = subprocess.run(
        [*command, "--certfile", str(tmp_path / "missing.pem"), "x:app"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        f"wsgipool: error: --certfile: cannot load {tmp_path / 'missing.pem'}: "
        "No such file or directory"
    ]
    config = Config(certfile=pki["server"], keyfile_password="pw")
    assert config.tls


def test_print_config_hides_the_key_password(pki: dict[str, str]) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "wsgipool",
            "--certfile",
            pki["server"],
            "--print-config",
            "x:app",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "WSGIPOOL_KEYFILE_PASSWORD": "s3cret"},
    )
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout
    assert "keyfile_password = '(hidden)'" in result.stdout


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"certfile": "CA"}, "certfile: cannot load .*no certificate and private key"),
        ({"certfile": "SERVER_CERT", "keyfile": "CA_KEY"}, "certfile: cannot load .*mismatch"),
        (
            {"certfile": "SERVER", "ca_certs": "SERVER_KEY", "cert_reqs": "optional"},
            "ca_certs: cannot load",
        ),
    ],
)
def test_files_that_cannot_be_used_are_refused_at_start(
    pki: dict[str, str], options: dict[str, Any], message: str
) -> None:
    """What a file holds shows when the server reads it, at start: before it binds."""
    names = {"SERVER": "server", "SERVER_CERT": "server_cert", "CA": "ca"}
    names.update({"CA_KEY": "ca_key", "SERVER_KEY": "server_key"})
    resolved = {
        key: pki[names[value]] if value in names else value for key, value in options.items()
    }
    server = Server(tls_environ_app, bind=["127.0.0.1:0"], **resolved)
    with pytest.raises(ConfigError, match=message):
        server.start()
    assert server.sockets == []


def test_certificate_files_are_read_once_per_start(
    pki: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Configuring reads no file; the server reads the certificate once, as it starts."""
    loads = []
    load_cert_chain = ssl.SSLContext.load_cert_chain

    def counting(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        loads.append(args[0])
        load_cert_chain(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", counting)
    server = Server(tls_environ_app, bind=["127.0.0.1:0"], certfile=pki["server"])
    assert loads == []
    with server:
        assert loads == [pki["server"]]
        assert get_json(Live(server), client_context(pki))["HTTPS"] == "on"
    assert loads == [pki["server"]]


def test_cli_reports_an_unusable_certificate_before_serving(
    pki: dict[str, str], tmp_path: Path
) -> None:
    """A certificate read at start (not when configured) still gets one line and status 2,
    from one server process and from the worker supervisor."""
    command = [sys.executable, "-m", "wsgipool", "--chdir", str(Path(__file__).parent / "apps")]
    for processes in ([], ["--workers", "2"]):
        bad = subprocess.run(
            [*command, *processes, "--bind", "127.0.0.1:0", "--certfile", pki["ca"], "goodapp:app"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert bad.returncode == 2, bad.stderr
        assert bad.stderr.strip().splitlines() == [
            f"wsgipool: error: --certfile: cannot load {pki['ca']}: no certificate and "
            "private key in PEM form (a separate key goes in keyfile)"
        ]


def test_server_refuses_to_start_without_binding_on_a_bad_context_file(
    pki: dict[str, str], tmp_path: Path
) -> None:
    """A certificate that disappears between configuration and start: a clear error, and
    nothing left listening."""
    cert = tmp_path / "server.pem"
    cert.write_bytes(Path(pki["server"]).read_bytes())
    server = Server(tls_environ_app, bind=["127.0.0.1:0"], certfile=str(cert))
    cert.unlink()
    with pytest.raises(ConfigError, match="No such file"):
        server.start()
    assert server.sockets == []
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))


# --- found in review: mod_ssl's names, quiet errors, prompt alerts, trickled records ------


def test_distinguished_names_as_mod_ssl_writes_them(
    serve_tls: Callable[..., Live], pki: dict[str, str], tmp_path: Path
) -> None:
    """SSL_CLIENT_S_DN as Apache 2.4 (and `openssl x509 -nameopt RFC2253`) prints it, and
    mod_ssl's per-attribute keys, repeats numbered."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca_key = serialization.load_pem_private_key(Path(pki["ca_key"]).read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate(Path(pki["ca"]).read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Unit A"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Unit B"),
            x509.NameAttribute(NameOID.GIVEN_NAME, "Jörg"),
            x509.NameAttribute(NameOID.SURNAME, "Müller"),
            x509.NameAttribute(NameOID.TITLE, "Dr"),
            x509.NameAttribute(NameOID.EMAIL_ADDRESS, "j@example.com"),
            x509.NameAttribute(NameOID.COMMON_NAME, "a=b, c"),
        ]
    )
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(0xABCDEF)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    path = tmp_path / "client.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    live = serve_tls(ca_certs=pki["ca"], cert_reqs="optional")
    context = client_context(pki)
    context.load_cert_chain(str(path))
    environ = get_json(live, context)

    def text(key: str) -> str:
        """A value beyond ASCII is its UTF-8 bytes, one code point each (PEP 3333)."""
        return str(environ[key]).encode("latin-1").decode("utf-8")

    assert text("SSL_CLIENT_S_DN") == (
        "CN=a=b\\, c,emailAddress=j@example.com,title=Dr,SN=Müller,GN=Jörg,"
        "OU=Unit B,OU=Unit A,O=Example,C=DE"
    )
    assert environ["SSL_CLIENT_S_DN_OU"] == "Unit A"
    assert environ["SSL_CLIENT_S_DN_OU_1"] == "Unit B"
    assert (text("SSL_CLIENT_S_DN_G"), text("SSL_CLIENT_S_DN_S")) == ("Jörg", "Müller")
    assert environ["SSL_CLIENT_S_DN_G"] == "J\u00c3\u00b6rg"
    assert (environ["SSL_CLIENT_S_DN_T"], environ["SSL_CLIENT_S_DN_Email"]) == (
        "Dr",
        "j@example.com",
    )
    assert environ["SSL_CLIENT_S_DN_CN"] == "a=b, c"
    assert environ["SSL_CLIENT_M_SERIAL"] == "ABCDEF"


def test_sni_in_the_environ(serve_tls: Callable[..., Live], pki: dict[str, str]) -> None:
    live = serve_tls()
    connection = http.client.HTTPSConnection(
        "localhost", live.port, context=client_context(pki), timeout=10
    )
    connection.request("GET", "/")
    assert json.loads(connection.getresponse().read())["SSL_TLS_SNI"] == "localhost"
    connection.close()
    # Clients send no SNI for an IP address.
    assert "SSL_TLS_SNI" not in get_json(live, client_context(pki))


def test_a_broken_record_is_a_quiet_close(
    serve_tls: Callable[..., Live], pki: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A record that fails its integrity check closes the connection, logged at DEBUG:
    a client's broken TLS stack must not fill the error log."""
    live = serve_tls()
    client = MemoryClient(live, client_context(pki))
    client.handshake()
    client.tls.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    record = bytearray(client.outgoing_bytes())
    record[-1] ^= 1
    with caplog.at_level(logging.DEBUG, logger="wsgipool.error"):
        client.sock.sendall(bytes(record))
        reply = read_until_close(client.sock)
        client.sock.close()
        # Records only (session tickets, the alert; TLS 1.3 encrypts both), then the close.
        assert reply == b"" or reply[:1] in (b"\x15", b"\x17")
        assert get_json(live, client_context(pki))["HTTPS"] == "on"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert "TLS error" in caplog.text


def test_renegotiation_is_refused_at_once(
    serve_tls: Callable[..., Live], pki: dict[str, str]
) -> None:
    """TLS 1.2 client-initiated renegotiation gets its refusal straight away, not when a
    timeout closes the connection (the client would wait for the server meanwhile)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command")
    live = serve_tls(keepalive_timeout=120, header_timeout=120)
    client = subprocess.Popen(
        [
            *(openssl, "s_client", "-connect", f"127.0.0.1:{live.port}", "-tls1_2"),
            *("-CAfile", pki["ca"], "-crlf"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert client.stdin is not None and client.stdout is not None
    try:
        client.stdin.write(b"GET / HTTP/1.1\nHost: x\n\n")
        client.stdin.flush()
        output = b""
        # Until the response's JSON body has ended (s_client's own report of the
        # handshake, before it, may hold braces too): "R" must go in a line of its own.
        while b"}" not in output.partition(b"HTTP/1.1 200")[2]:
            chunk = client.stdout.read1(65536)
            assert chunk, output
            output += chunk
        client.stdin.write(b"R\n")
        client.stdin.flush()
        # The server's alert makes s_client give up; far before any server timeout.
        client.wait(timeout=30)
    finally:
        client.kill()
        client.wait()
        client.stdin.close()
        client.stdout.close()


def test_a_record_trickled_a_byte_at_a_time_does_not_extend_keep_alive(
    serve_tls: Callable[..., Live], pki: dict[str, str]
) -> None:
    """Bytes that make no request (a TLS record sent a byte at a time) never restart the
    keep-alive timeout: the connection is closed while the record is still arriving."""
    live = serve_tls(keepalive_timeout=0.3, header_timeout=0.3)
    client = MemoryClient(live, client_context(pki))
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    client.handshake(then=(request,))
    client.read_until(lambda text: text.endswith(b"}"))
    client.tls.write(request + b"X-Pad: " + b"p" * 2000 + b"\r\n\r\n")
    assert client.trickle_until_closed(client.outgoing_bytes(), pause=0.05), (
        "the connection outlived a record trickled over its whole length"
    )


def test_a_body_record_trickled_a_byte_at_a_time_times_out(
    serve_tls: Callable[..., Live], pki: dict[str, str]
) -> None:
    """--body-timeout bounds reading a record, not just each wait for a byte of it."""
    live = serve_tls(body_timeout=0.3)
    client = MemoryClient(live, client_context(pki))
    client.handshake(then=(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n",))
    client.tls.write(b"b" * 1000)
    assert client.trickle_until_closed(client.outgoing_bytes(), pause=0.1), (
        "the body read outlived a record trickled over its whole length"
    )


def test_reload_stops_on_a_certificate_its_server_cannot_use(pki: dict[str, str]) -> None:
    """Under --reload the server process reads the certificate; when that first server
    cannot start for its configuration, the reloader stops with status 2 as well (no change
    to a watched file would fix it), and the error is on stderr."""
    command = [sys.executable, "-m", "wsgipool", "--chdir", str(Path(__file__).parent / "apps")]
    bad = subprocess.run(
        [*command, "--reload", "--bind", "127.0.0.1:0", "--certfile", pki["ca"], "goodapp:app"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2, bad.stderr
    assert f"wsgipool: error: --certfile: cannot load {pki['ca']}" in bad.stderr
    assert "reloader: the server could not start; stopping" in bad.stderr
