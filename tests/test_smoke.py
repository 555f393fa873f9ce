"""The example serves, keeps the connection alive, and stops cleanly."""

from __future__ import annotations

import http.client

from tests.helpers.http import read_response


def test_hello_keep_alive(serve):
    live = serve()
    with live.connect() as sock:
        for _ in range(3):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, body = read_response(sock)
            assert status == b"HTTP/1.1 200 OK"
            assert body == b"Hello, World!"
            assert "connection" not in headers


def test_http_client(serve):
    live = serve()
    conn = http.client.HTTPConnection(live.host, live.port, timeout=10)
    conn.request("GET", "/")
    response = conn.getresponse()
    assert response.status == 200
    assert response.read() == b"Hello, World!"
