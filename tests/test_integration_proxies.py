"""A real nginx and a real HAProxy in front of wsgipool, on loopback.

The proxy configurations are not written here: they are the blocks of docs/deployment.md
marked ``<!-- tested: NAME -->``, with only addresses and file paths replaced (``site``).
The harness adds what a distribution's main configuration would (``nginx.conf``'s
``http { }`` around the site, HAProxy's ``global``), and runs the proxies in the
foreground as the current user, with everything they write in the test's tmp_path.

The client connects from 127.0.0.2, so its address differs from the proxies' (127.0.0.1,
which wsgipool trusts by default) and the application can tell whose address it sees.

The proxies' certificate for clients is self-signed (``openssl``); the TLS between a proxy
and wsgipool (``TLS to wsgipool`` in the docs) uses a private CA made with trustme.

Every wait is a poll against a deadline; nothing asserts a duration. Without the nginx,
haproxy or openssl binaries the tests are skipped, except when ``CI`` is set (``.ci/run``
installs them): then they fail.
"""

from __future__ import annotations

import csv
import grp
import hashlib
import http.client
import importlib.util
import json
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.helpers.http import read_until_close
from tests.helpers.live import Live
from tests.helpers.load import LoadThreads
from tests.helpers.net import accepts, free_port
from tests.helpers.process import Process, Supervisor
from tests.helpers.waiting import DEADLINE, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux loopback and /proc"),
]

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "deployment.md"
APP_FILE = Path(__file__).parent / "apps" / "proxied.py"
CLIENT = "127.0.0.2"  # the client's source address: any 127/8 address works on Linux
SIZE = 100 * 1024 * 1024


def _load_app_module() -> Any:
    spec = importlib.util.spec_from_file_location("proxied_app", APP_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


proxied = _load_app_module()


# --- the binaries ------------------------------------------------------------------------


def require(binary: str) -> str:
    """The path of ``binary`` (also in the sbin directories, which a user's PATH may lack);
    skip the test without it, or fail it in CI."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
    found = shutil.which(binary, path=path)
    if found is None:
        message = f"{binary} is not installed (Debian: apt-get install {binary})"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run the integration tests")
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A self-signed certificate for 127.0.0.1: its files, and a PEM with both for HAProxy."""
    openssl = require("openssl")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    options = "-x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2"
    options += " -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1,DNS:localhost"
    subprocess.run(
        [openssl, "req", *options.split(), "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    combined = directory / "haproxy.pem"
    combined.write_text(cert.read_text() + key.read_text())
    return {"cert": cert, "key": key, "combined": combined}


INTERNAL_NAME = "myapp.internal"  # wsgipool's name in its certificate, as in the docs
PROXY_CN = "myapp proxy"  # the common name of the proxies' client certificate


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A private CA (``ca``) for the TLS from a proxy to wsgipool: wsgipool's certificate
    for INTERNAL_NAME (``server_cert``, ``server_key``), the proxies' client certificate
    (``client``: certificate and key, for HAProxy; ``client_cert``, ``client_key``: for
    nginx), and two certificates a proxy must refuse, each with its key: one for
    INTERNAL_NAME from another CA (``another_ca``), one from the CA for another name
    (``another_name``)."""
    directory = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert(INTERNAL_NAME)
    client = ca.issue_cert("proxy.myapp.internal", common_name=PROXY_CN)
    blobs = {
        "ca": ca.cert_pem,
        "server_cert": server.cert_chain_pems[0],
        "server_key": server.private_key_pem,
        "client": client.private_key_and_cert_chain_pem,
        "client_cert": client.cert_chain_pems[0],
        "client_key": client.private_key_pem,
        "another_ca": trustme.CA().issue_cert(INTERNAL_NAME).private_key_and_cert_chain_pem,
        "another_name": ca.issue_cert("other.internal").private_key_and_cert_chain_pem,
    }
    paths = {name: directory / f"{name}.pem" for name in blobs}
    for name, blob in blobs.items():
        blob.write_to_path(str(paths[name]))
    return paths


def tls_options(pki: dict[str, Path], *, mutual: bool) -> dict[str, Any]:
    """wsgipool's Server options for the TLS from a proxy: its certificate, and with
    ``mutual`` the CA the proxy's client certificate must be signed by."""
    options: dict[str, Any] = {
        "certfile": str(pki["server_cert"]),
        "keyfile": str(pki["server_key"]),
    }
    if mutual:
        options.update(ca_certs=str(pki["ca"]), cert_reqs="required")
    return options


@pytest.fixture(scope="module", autouse=True)
def client_address() -> None:
    with socket.socket() as probe:
        try:
            probe.bind((CLIENT, 0))
        except OSError as exc:
            pytest.skip(f"cannot bind {CLIENT} on loopback: {exc}")


# --- configurations: the blocks of docs/deployment.md ------------------------------------


def docs_block(name: str) -> str:
    """The code block of docs/deployment.md that follows ``<!-- tested: NAME ... -->``."""
    pattern = rf"<!-- tested: {re.escape(name)}(?![\w-])[^>]*-->\n```\w*\n(.*?)```"
    match = re.search(pattern, DOCS.read_text(), re.S)
    assert match is not None, f"docs/deployment.md has no block marked 'tested: {name}'"
    return match.group(1)


def site(name: str, replacements: dict[str, str]) -> str:
    """A docs block with its example addresses and paths replaced; each must be there."""
    text = docs_block(name)
    for old, new in replacements.items():
        assert old in text, f"docs/deployment.md's {name} block no longer has {old!r}"
        text = text.replace(old, new)
    return text


# --- running a proxy ---------------------------------------------------------------------


class Proxy(Process):
    """A proxy process (``kind``: nginx or haproxy) listening on ``ports`` (by role: "http",
    "https"), with its files in ``directory``."""

    def __init__(
        self, kind: str, command: list[str], ports: dict[str, int], directory: Path
    ) -> None:
        self.kind = kind
        self.ports = ports
        self.directory = directory
        super().__init__(command, log_path=directory / "output.log")

    @property
    def log(self) -> str:
        """The output, and nginx's error log."""
        error_log = self.directory / "error.log"
        return super().log + (error_log.read_text(errors="replace") if error_log.exists() else "")

    def started(self) -> bool:
        """Whether it exited, or accepts connections on every port."""
        if self.popen.poll() is not None:
            return True
        return all(accepts(port) for port in self.ports.values())

    def check_status(self, server: str = "app1") -> str:
        """HAProxy's last health check result for ``server`` (``L6OK``, ``L4CON``...),
        from ``show stat`` on its stats socket; "" before the first check has ended."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(DEADLINE)
            sock.connect(str(self.directory / "admin.sock"))
            sock.sendall(b"show stat\n")
            text = read_until_close(sock).decode()
        header, *rows = text.lstrip("# ").splitlines()
        for row in csv.DictReader(rows, fieldnames=header.split(",")):
            if row["svname"] == server:
                status = row["check_status"]
                # "INI": no check yet; "* ...": one is running.
                return "" if status.startswith(("INI", "*")) else status
        raise AssertionError(f"HAProxy has no server {server!r}:\n{text}")


def nginx_files(directory: Path, site_text: str) -> tuple[list[str], str]:
    """The command and the nginx.conf: what a distribution's nginx.conf adds around a site,
    with every path in ``directory``."""
    binary = require("nginx")
    user = ""
    if os.geteuid() == 0:  # as root, nginx's workers would otherwise run as "nobody"
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};"
    temp = "\n".join(
        f"    {kind}_temp_path {directory / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (directory / "site.conf").write_text(site_text)
    conf = f"""\
{user}
worker_processes 1;
pid {directory / "nginx.pid"};
error_log {directory / "error.log"} info;
events {{
    worker_connections 512;
}}
http {{
    access_log {directory / "access.log"};
{temp}
    include {directory / "site.conf"};
}}
"""
    command = [binary, "-p", str(directory), "-c", str(directory / "nginx.conf")]
    command += ["-e", str(directory / "error.log"), "-g", "daemon off;"]
    return command, conf


def haproxy_files(directory: Path, site_text: str) -> tuple[list[str], str]:
    """The command and the configuration: a ``global`` section (with the stats socket a
    distribution's has), then the site (``-db``: in the foreground)."""
    binary = require("haproxy")
    stats = f"stats socket {directory / 'admin.sock'} mode 600 level admin"
    conf = f"global\n    maxconn 512\n    {stats}\n\n" + site_text
    return [binary, "-db", "-f", str(directory / "haproxy.cfg")], conf


PROXIES: dict[str, tuple[str, Callable[[Path, str], tuple[list[str], str]]]] = {
    "nginx": ("nginx.conf", nginx_files),
    "haproxy": ("haproxy.cfg", haproxy_files),
}


@pytest.fixture
def start_proxy(tmp_path: Path, processes: list[Process]) -> Callable[..., Proxy]:
    """``start_proxy(kind, render, roles)``: ``render(ports)`` gives the site text for free
    ports by role. A port taken in between (the proxy exits: address in use) is retried."""

    def start(kind: str, render: Callable[[dict[str, int]], str], roles: tuple[str, ...]) -> Proxy:
        conf_name, files = PROXIES[kind]
        for attempt in range(5):
            directory = tmp_path / f"{kind}{len(processes)}-{attempt}"
            directory.mkdir()
            ports = {role: free_port() for role in roles}
            command, conf = files(directory, render(ports))
            (directory / conf_name).write_text(conf)
            proxy = Proxy(kind, command, ports, directory)
            processes.append(proxy)
            wait_for(proxy.started, f"{kind} to listen")
            if proxy.popen.poll() is None:
                return proxy
            if "in use" not in proxy.log:  # "Address already in use": another port, then
                raise AssertionError(f"{kind} did not start:\n{proxy.log}")
        raise AssertionError(f"{kind}: no free ports after 5 attempts")

    return start


def nginx_https(port: int, certificate: dict[str, Path]) -> dict[str, str]:
    """The replacements for an nginx block's ``listen 443 ssl`` and its certificate."""
    return {
        "listen 443 ssl;": f"listen 127.0.0.1:{port} ssl;",
        "/etc/ssl/example.com/fullchain.pem": str(certificate["cert"]),
        "/etc/ssl/example.com/privkey.pem": str(certificate["key"]),
    }


def haproxy_frontend(ports: dict[str, int], certificate: dict[str, Path]) -> dict[str, str]:
    """The replacements for a HAProxy block's ``bind :80`` and ``bind :443 ssl``."""
    return {
        "bind :80": f"bind 127.0.0.1:{ports['http']}",
        "bind :443 ssl crt /etc/haproxy/site.pem": (
            f"bind 127.0.0.1:{ports['https']} ssl crt {certificate['combined']}"
        ),
    }


def nginx_site(upstream: int, static: Path, certificate: dict[str, Path]) -> Callable[..., str]:
    def render(ports: dict[str, int]) -> str:
        return site(
            "nginx",
            {
                "server 127.0.0.1:8000;": f"server 127.0.0.1:{upstream};",
                "listen 80;": f"listen 127.0.0.1:{ports['http']};",
                **nginx_https(ports["https"], certificate),
                "/srv/myapp/static/": f"{static}/",
            },
        )

    return render


def haproxy_http_site(upstream: int, certificate: dict[str, Path]) -> Callable[..., str]:
    def render(ports: dict[str, int]) -> str:
        return site(
            "haproxy-http",
            {
                **haproxy_frontend(ports, certificate),
                "server app1 127.0.0.1:8000": f"server app1 127.0.0.1:{upstream}",
            },
        )

    return render


def nginx_tls_site(
    upstream: int, certificate: dict[str, Path], pki: dict[str, Path]
) -> Callable[..., str]:
    """docs/deployment.md's nginx-tls block: TLS to wsgipool at ``upstream``."""

    def render(ports: dict[str, int]) -> str:
        return site(
            "nginx-tls",
            {
                "server 10.0.0.20:8443;": f"server 127.0.0.1:{upstream};",
                **nginx_https(ports["https"], certificate),
                "/etc/nginx/internal-ca.pem": str(pki["ca"]),
                "/etc/nginx/proxy-client.crt": str(pki["client_cert"]),
                "/etc/nginx/proxy-client.key": str(pki["client_key"]),
            },
        )

    return render


def haproxy_tls_site(
    upstream: int, certificate: dict[str, Path], pki: dict[str, Path]
) -> Callable[..., str]:
    """docs/deployment.md's haproxy-tls block: TLS and PROXY v2 to wsgipool at ``upstream``."""

    def render(ports: dict[str, int]) -> str:
        return site(
            "haproxy-tls",
            {
                **haproxy_frontend(ports, certificate),
                "server app1 10.0.0.20:8443": f"server app1 127.0.0.1:{upstream}",
                "/etc/haproxy/internal-ca.pem": str(pki["ca"]),
                "/etc/haproxy/proxy-client.pem": str(pki["client"]),
            },
        )

    return render


# By proxy: the docs block with TLS to wsgipool, and the roles of its ports.
TLS_SITES = {
    "nginx": (nginx_tls_site, ("https",)),
    "haproxy": (haproxy_tls_site, ("http", "https")),
}


def haproxy_proxy_v2_site(upstream: int) -> Callable[..., str]:
    def render(ports: dict[str, int]) -> str:
        return site(
            "haproxy-proxy-v2",
            {
                "bind :80": f"bind 127.0.0.1:{ports['http']}",
                "server app1 127.0.0.1:8000": f"server app1 127.0.0.1:{upstream}",
            },
        )

    return render


@pytest.fixture
def static(tmp_path: Path) -> Path:
    directory = tmp_path / "static"
    directory.mkdir()
    (directory / "hello.txt").write_text("from nginx\n")
    return directory


@pytest.fixture
def app_server(serve: Callable[..., Live]) -> Callable[..., Live]:
    """wsgipool in this process serving tests/apps/proxied.py, with Server options."""

    def start(**options: Any) -> Live:
        options.setdefault("threads", 8)
        return serve(proxied.app, **options)

    return start


# --- the client --------------------------------------------------------------------------


@dataclass
class Client:
    """http.client connections from CLIENT to 127.0.0.1, optionally over TLS."""

    port: int
    tls: ssl.SSLContext | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def connection(self) -> http.client.HTTPConnection:
        source = (CLIENT, 0)
        if self.tls is not None:
            return http.client.HTTPSConnection(
                "127.0.0.1", self.port, timeout=DEADLINE, context=self.tls, source_address=source
            )
        return http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=DEADLINE, source_address=source
        )

    def request(
        self,
        method: str,
        path: str,
        conn: http.client.HTTPConnection | None = None,
        body: bytes | None = None,
    ) -> tuple[http.client.HTTPResponse, bytes]:
        """A request and its response, read whole (on a new connection, closed after,
        unless ``conn`` is given)."""
        own = conn is None
        conn = conn or self.connection()
        try:
            conn.request(method, path, body=body, headers=self.headers)
            response = conn.getresponse()
            return response, response.read()
        finally:
            if own:
                conn.close()

    def json(
        self,
        method: str,
        path: str,
        conn: http.client.HTTPConnection | None = None,
        body: bytes | None = None,
    ) -> dict[str, Any]:
        """A request that must get a 200 with JSON."""
        response, data = self.request(method, path, conn, body)
        assert response.status == 200, (response.status, data[:300])
        result: dict[str, Any] = json.loads(data)
        return result

    def info(self, conn: http.client.HTTPConnection | None = None) -> dict[str, Any]:
        return self.json("GET", "/info", conn)


def tls_context(certificate: dict[str, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate["cert"]))


FORGED = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https", "Host": "example.com"}


def assert_client_seen(info: dict[str, Any], scheme: str) -> None:
    """What a trusted proxy's forwarded headers must give the application: the client's
    address (not the proxy's, not the forged one) and the scheme the client used."""
    assert info["remote_addr"] == CLIENT, info
    assert info["scheme"] == scheme, info
    assert info["host"] == "example.com", info
    assert info["peer"].startswith("127.0.0.1:"), info  # the proxy's connection
    assert info["x_forwarded_for"].replace(" ", "").endswith(f"203.0.113.9,{CLIENT}"), info


def infos_on_one_connection(client: Client, count: int = 2) -> list[dict[str, Any]]:
    """``count`` /info requests on one connection to a proxy that sends a PROXY header to
    wsgipool. Each must show the client's address and source port (only the header can
    tell wsgipool the port) as both the address and the peer: the client is no trusted
    proxy, so its forwarded headers change nothing."""
    conn = client.connection()
    try:
        conn.connect()
        assert conn.sock is not None
        source_port = conn.sock.getsockname()[1]
        infos = [client.info(conn) for _ in range(count)]
    finally:
        conn.close()
    for info in infos:
        assert (info["remote_addr"], info["remote_port"]) == (CLIENT, str(source_port)), info
        assert info["peer"] == f"{CLIENT}:{source_port}", info
    return infos


# --- the tests ---------------------------------------------------------------------------


def test_nginx_forwards_client_and_scheme(
    app_server: Callable[..., Live],
    start_proxy: Callable[..., Proxy],
    certificate: dict[str, Path],
    static: Path,
) -> None:
    live = app_server()
    nginx = start_proxy("nginx", nginx_site(live.port or 0, static, certificate), ("http", "https"))
    plain = Client(nginx.ports["http"], headers=FORGED)
    assert_client_seen(plain.info(), "http")  # nginx overwrote the forged X-Forwarded-Proto
    secure = Client(nginx.ports["https"], tls=tls_context(certificate), headers=FORGED)
    assert_client_seen(secure.info(), "https")

    conn = plain.connection()
    conn.request("GET", "/static/hello.txt")
    response = conn.getresponse()
    assert (response.status, response.read()) == (200, b"from nginx\n")
    conn.close()


def test_untrusted_peer_cannot_forge_forwarded_headers(app_server: Callable[..., Live]) -> None:
    # The default --forwarded-allow-ips (127.0.0.1,::1) does not include the client.
    live = app_server()
    info = Client(live.port or 0, headers=FORGED).info()
    assert info["remote_addr"] == CLIENT and info["scheme"] == "http", info
    assert info["peer"] == f"{CLIENT}:{info['remote_port']}", info
    assert info["x_forwarded_for"] == "203.0.113.9", info  # there, but not applied


def test_nginx_reuses_upstream_connections(
    app_server: Callable[..., Live],
    start_proxy: Callable[..., Proxy],
    certificate: dict[str, Path],
    static: Path,
) -> None:
    live = app_server()
    nginx = start_proxy("nginx", nginx_site(live.port or 0, static, certificate), ("http", "https"))
    client = Client(nginx.ports["http"])
    # Each request on a new client connection; upstream, nginx's keep-alive pool is used.
    peers = [client.info()["peer"] for _ in range(30)]
    # One worker process, sequential requests: one connection, unless a pause on a
    # loaded machine outlasted the 4 s keepalive_timeout.
    assert len(set(peers)) <= 3, peers


def test_haproxy_forwards_client_and_scheme(
    app_server: Callable[..., Live],
    start_proxy: Callable[..., Proxy],
    certificate: dict[str, Path],
) -> None:
    live = app_server()
    haproxy = start_proxy(
        "haproxy", haproxy_http_site(live.port or 0, certificate), ("http", "https")
    )
    assert_client_seen(Client(haproxy.ports["http"], headers=FORGED).info(), "http")
    secure = Client(haproxy.ports["https"], tls=tls_context(certificate), headers=FORGED)
    assert_client_seen(secure.info(), "https")


def test_haproxy_proxy_protocol_v2(
    app_server: Callable[..., Live], start_proxy: Callable[..., Proxy]
) -> None:
    live = app_server(proxy_protocol=True)
    haproxy = start_proxy("haproxy", haproxy_proxy_v2_site(live.port or 0), ("http",))
    for info in infos_on_one_connection(Client(haproxy.ports["http"], headers=FORGED)):
        # The PROXY header named the client; the client is not trusted with X-Forwarded-*.
        assert info["scheme"] == "http", info
    # A failed health check (they send a PROXY header with the LOCAL command) says DOWN.
    assert "DOWN" not in haproxy.log, haproxy.log


def first_check(haproxy: Proxy) -> str:
    """The result of HAProxy's first health check of app1, once it has ended."""
    wait_for(lambda: haproxy.check_status() != "", "HAProxy's first health check")
    return haproxy.check_status()


def assert_tls_from_proxy(info: dict[str, Any], *, mutual: bool) -> None:
    """The request came over TLS from the proxy, which presented its client certificate
    when wsgipool required one (``mutual``), and sent none otherwise."""
    assert info["scheme"] == "https" and info["tls"]["HTTPS"] == "on", info
    assert info["tls"]["SSL_PROTOCOL"] in ("TLSv1.2", "TLSv1.3"), info
    if mutual:
        assert info["tls"]["SSL_CLIENT_VERIFY"] == "SUCCESS", info
        assert info["tls"]["SSL_CLIENT_S_DN_CN"] == PROXY_CN, info
    else:
        assert info["tls"]["SSL_CLIENT_VERIFY"] == "NONE", info


@pytest.mark.parametrize("mutual", [False, True], ids=["server-certificate", "mutual-tls"])
def test_haproxy_tls_and_proxy_protocol_to_wsgipool(
    mutual: bool,
    app_server: Callable[..., Live],
    start_proxy: Callable[..., Proxy],
    certificate: dict[str, Path],
    pki: dict[str, Path],
) -> None:
    live = app_server(proxy_protocol=True, **tls_options(pki, mutual=mutual))
    haproxy = start_proxy(
        "haproxy", haproxy_tls_site(live.port or 0, certificate, pki), ("http", "https")
    )
    client = Client(haproxy.ports["https"], tls=tls_context(certificate), headers=FORGED)
    for info in infos_on_one_connection(client):
        assert_tls_from_proxy(info, mutual=mutual)
        assert info["host"] == "example.com" and info["x_forwarded_for"] == "203.0.113.9", info
    # Port 80 only redirects, so wsgipool never serves a client that used plain HTTP.
    response, _ = Client(haproxy.ports["http"], headers=FORGED).request("GET", "/info")
    assert (response.status, response.getheader("Location")) == (302, "https://example.com/info")
    # The health checks (PROXY LOCAL, a handshake, with the client certificate when
    # wsgipool asks for it, and GET /healthz) pass.
    assert first_check(haproxy) == "L7OK", haproxy.log


@pytest.mark.parametrize("mutual", [False, True], ids=["server-certificate", "mutual-tls"])
def test_nginx_tls_to_wsgipool_reuses_connections(
    mutual: bool,
    app_server: Callable[..., Live],
    start_proxy: Callable[..., Proxy],
    certificate: dict[str, Path],
    pki: dict[str, Path],
) -> None:
    live = app_server(**tls_options(pki, mutual=mutual))
    nginx = start_proxy("nginx", nginx_tls_site(live.port or 0, certificate, pki), ("https",))
    client = Client(nginx.ports["https"], tls=tls_context(certificate), headers=FORGED)
    infos = [client.info() for _ in range(10)]  # each on a new client connection
    for info in infos:
        assert_client_seen(info, "https")
        assert_tls_from_proxy(info, mutual=mutual)
    # As in test_nginx_reuses_upstream_connections: one connection, but for a long pause.
    assert len({info["peer"] for info in infos}) <= 3, infos


def failing_tls_proxy(
    kind: str,
    live: Live,
    start_proxy: Callable[..., Proxy],
    certificate: dict[str, Path],
    pki: dict[str, Path],
) -> Proxy:
    """The docs' TLS configuration for ``kind`` (with the certificates of ``pki``) in front
    of ``live``, where the TLS between them must fail: a request gets nginx's 502, or
    HAProxy's 503 once its health check has marked the server down (its 502 when the
    request raced ahead of the first check: with TLS 1.3 HAProxy's side of the handshake
    ends before wsgipool refuses its certificate, so it sends the request and gets the
    refusal)."""
    render, roles = TLS_SITES[kind]
    proxy = start_proxy(kind, render(live.port or 0, certificate, pki), roles)
    response, body = Client(proxy.ports["https"], tls=tls_context(certificate)).request(
        "GET", "/info"
    )
    assert response.status in {"nginx": (502,), "haproxy": (502, 503)}[kind], body
    return proxy


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
@pytest.mark.parametrize("wrong", ["another_ca", "another_name"])
def test_proxy_refuses_a_wsgipool_certificate_it_cannot_verify(
    kind: str,
    wrong: str,
    app_server: Callable[..., Live],
    start_proxy: Callable[..., Proxy],
    certificate: dict[str, Path],
    pki: dict[str, Path],
) -> None:
    """The docs' configurations check the chain and the name: a certificate from another
    CA, or from the CA for another name than myapp.internal, fails the handshake."""
    live = app_server(certfile=str(pki[wrong]), proxy_protocol=kind == "haproxy")
    proxy = failing_tls_proxy(kind, live, start_proxy, certificate, pki)
    if kind == "nginx":
        reason = "verify error" if wrong == "another_ca" else f'does not match "{INTERNAL_NAME}"'
        wait_for(lambda: f"upstream SSL certificate {reason}" in proxy.log, "nginx's log line")


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_wsgipool_refuses_a_proxy_certificate_of_another_ca(
    kind: str,
    app_server: Callable[..., Live],
    start_proxy: Callable[..., Proxy],
    certificate: dict[str, Path],
    pki: dict[str, Path],
) -> None:
    """With --cert-reqs required, a proxy whose client certificate is not signed by the CA
    of --ca-certs gets no request through, and HAProxy's HTTP health check fails (a TCP
    check would pass: with TLS 1.3 the client's handshake ends before the refusal)."""
    stranger = pki["another_ca"]  # certificate and key in one file: nginx reads either
    swapped = {**pki, "client": stranger, "client_cert": stranger, "client_key": stranger}
    live = app_server(proxy_protocol=kind == "haproxy", **tls_options(pki, mutual=True))
    proxy = failing_tls_proxy(kind, live, start_proxy, certificate, swapped)
    if kind == "haproxy":
        assert first_check(proxy) not in ("L6OK", "L7OK"), proxy.log


@cache
def payload_sha256() -> str:
    digest = hashlib.sha256()
    for chunk in proxied.payload(SIZE):
        digest.update(chunk)
    return digest.hexdigest()


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_100_mb_upload_and_download(
    kind: str,
    app_server: Callable[..., Live],
    start_proxy: Callable[..., Proxy],
    certificate: dict[str, Path],
    static: Path,
) -> None:
    live = app_server()
    port = live.port or 0
    if kind == "nginx":
        proxy = start_proxy("nginx", nginx_site(port, static, certificate), ("http", "https"))
    else:
        proxy = start_proxy("haproxy", haproxy_http_site(port, certificate), ("http", "https"))
    conn = Client(proxy.ports["http"]).connection()
    try:
        # Upload: http.client sends an iterable body piece by piece.
        conn.request(
            "POST",
            "/upload",
            body=proxied.payload(SIZE),
            headers={"Content-Length": str(SIZE), "Content-Type": "application/octet-stream"},
        )
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, (response.status, body[:500])
        result = json.loads(body)
        assert (result["length"], result["sha256"]) == (SIZE, payload_sha256())

        # Download: the application yields 1 MiB chunks; read and hash as they come.
        conn.request("GET", f"/download?size={SIZE}")
        response = conn.getresponse()
        assert response.status == 200
        digest, length = hashlib.sha256(), 0
        while data := response.read(1 << 20):
            digest.update(data)
            length += len(data)
        assert (length, digest.hexdigest()) == (SIZE, payload_sha256())
    finally:
        conn.close()


class Load(LoadThreads):
    """Client threads looping requests (GET /info, or a small POST /upload) through a
    proxy, each on a kept-alive connection to it, until stopped. A request fails unless it
    gets a complete 200."""

    def __init__(self, client: Client, method: str, threads: int = 4) -> None:
        super().__init__(threads)
        self.client = client
        self.method = method
        self.pids: list[int] = []  # in the order the responses came

    def _run(self) -> None:
        conn = self.client.connection()
        while not self.stop_event.is_set():
            try:
                if self.method == "GET":
                    pid = self.client.info(conn)["pid"]
                else:
                    pid = self.client.json("POST", "/upload", conn, b"x" * 100)["pid"]
            except (OSError, http.client.HTTPException, AssertionError, ValueError) as exc:
                with self.lock:
                    self.failures.append(repr(exc))
                conn.close()
                conn = self.client.connection()
                continue
            with self.lock:
                self.ok += 1
                self.pids.append(pid)
        conn.close()


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_rolling_restart_behind_nginx(
    method: str,
    tmp_path: Path,
    processes: list[Process],
    start_proxy: Callable[..., Proxy],
    certificate: dict[str, Path],
    static: Path,
) -> None:
    directory = tmp_path / "project"
    directory.mkdir()
    shutil.copy(APP_FILE, directory / "app.py")
    server = Supervisor(directory, 2, ())
    processes.append(server)
    old = server.wait_workers(2)
    nginx = start_proxy("nginx", nginx_site(server.port, static, certificate), ("http", "https"))
    with Load(Client(nginx.ports["http"]), method) as load:
        load.wait_ok(100)
        server.send(signal.SIGHUP)
        new = server.wait_workers(2, besides=old)  # the old ones have exited
        settled = len(load.pids) + len(load.threads)  # a response each may be unrecorded
        load.wait_ok(100)
    assert load.failures == [], f"{load.failures}\n{nginx.log}\nwsgipool:\n{server.log}"
    assert set(load.pids[settled:]) <= new and set(load.pids[:settled]) & old
    # The keep-alive race: nginx logs the reset, then retries on another connection.
    retried = nginx.log.count("while reading response header from upstream")
    print(f"{load.ok} requests; upstream connections reset and retried: {retried}")
