"""Real clients against a live wsgipool: requests, http.client, WebTest (the same checks in
process and through the server), a Flask app and a plain werkzeug app."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import threading
from urllib.parse import parse_qs

import pytest
import requests

from tests.helpers.apps import validated

pytestmark = [
    pytest.mark.filterwarnings("error"),
    # WebOb (under WebTest) still imports the deprecated cgi module on Python 3.11/3.12.
    pytest.mark.filterwarnings("ignore:'cgi' is deprecated:DeprecationWarning"),
]


# --- a small plain WSGI app shared by the client tests -----------------------------------------


class RecordingApp:
    """Routes: /hello, /echo (form or raw body back), /json, /upload (digest of the body),
    /stream (chunked), /cookie/set, /cookie/get; records each request's connection."""

    def __init__(self) -> None:
        self.peers: list[str] = []
        self.environs: list[dict] = []
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        with self.lock:
            self.peers.append(environ.get("REMOTE_PORT", ""))
            self.environs.append({k: v for k, v in environ.items() if "." not in k})
        path = environ["PATH_INFO"]
        method = environ["REQUEST_METHOD"]
        stream = environ["wsgi.input"]

        def respond(body: bytes, content_type="text/plain", status="200 OK", extra=()):
            start_response(
                status,
                [("Content-Type", content_type), ("Content-Length", str(len(body))), *extra],
            )
            return [] if method == "HEAD" else [body]  # as frameworks do

        if path == "/hello":
            name = parse_qs(environ["QUERY_STRING"]).get("name", ["World"])[0]
            return respond(f"Hello, {name}".encode(), extra=[("X-App", "recording")])
        if path == "/echo":
            body = read_all(stream)
            if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
                form = parse_qs(body.decode("latin-1"))
                body = json.dumps({k: v[0] for k, v in sorted(form.items())}).encode()
                return respond(body, "application/json")
            return respond(f"{method} ".encode() + body)
        if path == "/json":
            payload = json.loads(read_all(stream) or b"null")
            return respond(json.dumps({"received": payload}).encode(), "application/json")
        if path == "/upload":
            body = read_all(stream)
            info = {
                "size": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
                "content_length": environ.get("CONTENT_LENGTH"),
                "transfer_encoding": environ.get("HTTP_TRANSFER_ENCODING"),
            }
            return respond(json.dumps(info).encode(), "application/json")
        if path == "/stream":
            count = int(parse_qs(environ["QUERY_STRING"]).get("n", ["10"])[0])
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return (bytes([i % 256]) * 1000 for i in range(count))
        if path == "/cookie/set":
            return respond(b"set", extra=[("Set-Cookie", "flavour=oatmeal; Path=/")])
        if path == "/cookie/get":
            return respond(environ.get("HTTP_COOKIE", "").encode())
        if path == "/status":
            code = parse_qs(environ["QUERY_STRING"])["code"][0]
            reasons = {"404": "Not Found", "418": "I'm a teapot", "500": "Internal Server Error"}
            return respond(b"status page", status=f"{code} {reasons[code]}")
        return respond(b"no such page", status="404 Not Found")


def read_all(stream) -> bytes:
    parts = []
    while data := stream.read(65536):
        parts.append(data)
    return b"".join(parts)


# --- requests ---------------------------------------------------------------------------------


def test_requests_session_keeps_one_connection(serve):
    app = RecordingApp()
    live = serve(validated(app))
    with requests.Session() as session:
        for name in ("a", "b", "c"):
            response = session.get(f"{live.url}/hello", params={"name": name}, timeout=10)
            assert response.status_code == 200
            assert response.text == f"Hello, {name}"
            assert response.headers["X-App"] == "recording"
        response = session.post(f"{live.url}/echo", data=b"raw bytes", timeout=10)
        assert response.text == "POST raw bytes"
    assert len(set(app.peers)) == 1, "the session's requests did not share one connection"


def test_requests_streaming_upload_is_chunked(serve):
    app = RecordingApp()
    live = serve(validated(app))
    pieces = [os.urandom(1000 + i) for i in range(50)]

    def generate():
        yield from pieces

    response = requests.post(f"{live.url}/upload", data=generate(), timeout=10)
    assert response.status_code == 200
    info = response.json()
    body = b"".join(pieces)
    assert info == {
        "size": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
        "content_length": None,
        "transfer_encoding": "chunked",
    }


def test_requests_large_upload_and_streamed_download(serve):
    live = serve(validated(RecordingApp()))
    body = os.urandom(2 * 1024 * 1024)
    with requests.Session() as session:
        info = session.put(f"{live.url}/upload", data=body, timeout=10).json()
        assert info["size"] == len(body)
        assert info["sha256"] == hashlib.sha256(body).hexdigest()
        assert info["content_length"] == str(len(body))
        with session.get(f"{live.url}/stream?n=300", stream=True, timeout=10) as response:
            assert response.headers["Transfer-Encoding"] == "chunked"
            received = b"".join(response.iter_content(chunk_size=4096))
        assert received == b"".join(bytes([i % 256]) * 1000 for i in range(300))
        # The connection survives a fully read streamed response.
        assert session.get(f"{live.url}/hello", timeout=10).text == "Hello, World"


def test_requests_form_json_and_errors(serve):
    live = serve(validated(RecordingApp()))
    with requests.Session() as session:
        form = session.post(f"{live.url}/echo", data={"a": "1", "b": "two words"}, timeout=10)
        assert form.json() == {"a": "1", "b": "two words"}
        sent = {"x": [1, 2, 3], "y": "\u00e9\u20ac"}
        assert session.post(f"{live.url}/json", json=sent, timeout=10).json() == {"received": sent}
        missing = session.get(f"{live.url}/missing", timeout=10)
        assert missing.status_code == 404
        assert missing.text == "no such page"
        assert session.head(f"{live.url}/hello", timeout=10).headers["Content-Length"] == "12"


# --- http.client ------------------------------------------------------------------------------


def test_http_client_keep_alive_methods_and_chunked_upload(serve):
    app = RecordingApp()
    live = serve(validated(app))
    conn = http.client.HTTPConnection(live.host, live.port, timeout=10)
    try:
        conn.request("GET", "/hello?name=http.client")
        response = conn.getresponse()
        assert response.status == 200
        assert response.read() == b"Hello, http.client"
        assert not response.will_close

        conn.request("HEAD", "/hello")
        response = conn.getresponse()
        assert response.getheader("Content-Length") == "12"
        assert response.read() == b""

        conn.request("POST", "/echo", body=b"payload", headers={"Content-Type": "text/plain"})
        assert conn.getresponse().read() == b"POST payload"

        conn.request("POST", "/upload", body=iter([b"ab", b"cd", b"ef"]), encode_chunked=True)
        info = json.loads(conn.getresponse().read())
        assert info["size"] == 6
        assert info["transfer_encoding"] == "chunked"

        conn.request("GET", "/stream?n=5")
        response = conn.getresponse()
        assert response.chunked
        assert len(response.read()) == 5000

        conn.request("GET", "/hello", headers={"Connection": "close"})
        response = conn.getresponse()
        assert response.read() == b"Hello, World"
        assert response.will_close
    finally:
        conn.close()
    assert len(set(app.peers)) == 1


# --- WebTest: the same checks in process and through the server ---------------------------------


@pytest.fixture(params=["in-process", "live"])
def webtest_app(request, serve):
    import webtest

    app = RecordingApp()
    if request.param == "in-process":
        testapp = webtest.TestApp(app)
    else:
        pytest.importorskip("wsgiproxy", reason="TestApp(url) needs WSGIProxy2")
        live = serve(validated(app))
        testapp = webtest.TestApp(live.url)
    testapp.recording = app
    testapp.mode = request.param
    yield testapp
    # Every check really reached the app, through the server in live mode.
    assert app.environs
    if request.param == "live":
        assert all(env["REMOTE_ADDR"] == "127.0.0.1" for env in app.environs)
        assert all(env["SERVER_SOFTWARE"].startswith("wsgipool") for env in app.environs)


def test_webtest_get(webtest_app):
    response = webtest_app.get("/hello", params={"name": "WebTest"})
    assert response.status_int == 200
    assert response.text == "Hello, WebTest"
    assert response.content_type == "text/plain"
    assert response.headers["X-App"] == "recording"
    if webtest_app.mode == "live":
        assert response.headers["Server"].startswith("wsgipool")
        assert "Date" in response.headers


def test_webtest_form_post(webtest_app):
    response = webtest_app.post("/echo", {"a": "1", "b": "two words"})
    assert response.json == {"a": "1", "b": "two words"}


def test_webtest_json(webtest_app):
    response = webtest_app.post_json("/json", {"x": [1, 2], "s": "\u00e9"})
    assert response.json == {"received": {"x": [1, 2], "s": "\u00e9"}}


def test_webtest_put_and_delete(webtest_app):
    assert webtest_app.put("/echo", b"new content", content_type="text/plain").text == (
        "PUT new content"
    )
    assert webtest_app.delete("/echo").text == "DELETE "


def test_webtest_error_statuses(webtest_app):
    assert webtest_app.get("/nowhere", status=404).text == "no such page"
    assert webtest_app.get("/status?code=418", status=418).status == "418 I'm a teapot"
    assert webtest_app.get("/status?code=500", expect_errors=True).status_int == 500


def test_webtest_streamed_response(webtest_app):
    response = webtest_app.get("/stream?n=20")
    assert response.body == b"".join(bytes([i]) * 1000 for i in range(20))


def test_webtest_head(webtest_app):
    response = webtest_app.head("/hello")
    assert response.status_int == 200
    assert response.body == b""
    assert response.headers["Content-Length"] == "12"


# --- Flask ------------------------------------------------------------------------------------


def make_flask_app():
    from flask import Flask, Response, jsonify, request, stream_with_context

    app = Flask("wsgipool_e2e")

    @app.get("/hello/<name>")
    def hello(name):
        return f"Hello, {name}!"

    @app.post("/json")
    def json_view():
        data = request.get_json()
        return jsonify(total=sum(data["numbers"]), echo=data)

    @app.post("/form")
    def form_view():
        return jsonify(dict(sorted(request.form.items())))

    @app.post("/upload")
    def upload():
        uploaded = request.files["document"]
        content = uploaded.read()
        return jsonify(
            filename=uploaded.filename,
            size=len(content),
            sha256=hashlib.sha256(content).hexdigest(),
            note=request.form.get("note"),
        )

    @app.post("/raw")
    def raw():
        body = request.get_data()
        return jsonify(size=len(body), sha256=hashlib.sha256(body).hexdigest())

    @app.get("/stream")
    def stream():
        count = int(request.args.get("n", "5"))

        @stream_with_context
        def generate():
            # request is still usable here thanks to stream_with_context
            for index in range(count):
                yield f"{request.args.get('prefix', 'line')} {index}\n"

        return Response(generate(), mimetype="text/plain")

    @app.get("/where")
    def where():
        return jsonify(url=request.url, script_root=request.script_root, path=request.path)

    return app


# Flask and werkzeug read the body with read() and no size (fine with wsgi.input_terminated),
# which wsgiref.validate refuses: apps that read a body run without the validator.


def test_flask_app_end_to_end(serve):
    live = serve(make_flask_app())
    base = live.url
    with requests.Session() as session:
        response = session.get(f"{base}/hello/caf\u00e9", timeout=10)
        assert response.status_code == 200
        assert response.text == "Hello, caf\u00e9!"

        payload = {"numbers": [1, 2, 3.5], "label": "\u20ac"}
        response = session.post(f"{base}/json", json=payload, timeout=10)
        assert response.json() == {"total": 6.5, "echo": payload}

        response = session.post(f"{base}/form", data={"b": "2", "a": "one & two"}, timeout=10)
        assert response.json() == {"a": "one & two", "b": "2"}

        document = os.urandom(200_000)
        response = session.post(
            f"{base}/upload",
            files={"document": ("report.bin", document, "application/octet-stream")},
            data={"note": "attached"},
            timeout=10,
        )
        assert response.json() == {
            "filename": "report.bin",
            "size": len(document),
            "sha256": hashlib.sha256(document).hexdigest(),
            "note": "attached",
        }

        chunks = [os.urandom(3000) for _ in range(10)]
        response = session.post(f"{base}/raw", data=iter(chunks), timeout=10)
        assert response.json() == {
            "size": 30000,
            "sha256": hashlib.sha256(b"".join(chunks)).hexdigest(),
        }

        with session.get(f"{base}/stream?n=4&prefix=row", stream=True, timeout=10) as response:
            assert response.headers["Transfer-Encoding"] == "chunked"
            lines = list(response.iter_lines())
        assert lines == [b"row 0", b"row 1", b"row 2", b"row 3"]

        assert session.get(f"{base}/nope", timeout=10).status_code == 404
        where = session.get(f"{base}/where?x=1", timeout=10).json()
        assert where == {"url": f"{base}/where?x=1", "script_root": "", "path": "/where"}


def test_flask_app_under_a_root_path(serve):
    live = serve(validated(make_flask_app()), root_path="/app")  # GET only: validated
    response = requests.get(f"{live.url}/app/where?x=1", timeout=10)
    assert response.json() == {
        "url": f"{live.url}/app/where?x=1",
        "script_root": "/app",
        "path": "/where",
    }


# --- plain werkzeug -----------------------------------------------------------------------------


def request_info(request) -> dict:
    """What werkzeug derives from an environ: the URL pieces first of all."""
    return {
        "url": request.url,
        "base_url": request.base_url,
        "host_url": request.host_url,
        "root_url": request.root_url,
        "script_root": request.script_root,
        "path": request.path,
        "full_path": request.full_path,
        "args": request.args.to_dict(flat=False),
        "method": request.method,
        "scheme": request.scheme,
        "host": request.host,
    }


def make_werkzeug_app():
    from werkzeug.wrappers import Request, Response

    @Request.application
    def app(request: Request) -> Response:
        if request.path == "/echo":
            return Response(request.get_data(), mimetype="application/octet-stream")
        info = request_info(request)
        info["remote_addr"] = request.remote_addr
        info["user_agent"] = request.user_agent.string
        return Response(json.dumps(info), mimetype="application/json")

    return app


def werkzeug_expectation(base_url: str, path: str, query: str) -> dict:
    """The same request built by werkzeug's own test tools, in process."""
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    environ = EnvironBuilder(path=path, query_string=query, base_url=base_url).get_environ()
    return request_info(Request(environ))


@pytest.mark.parametrize(
    ("path", "query"),
    [("/caf%C3%A9/x", "a=1&a=2&b=%20"), ("/", ""), ("/a%20b/%E2%82%AC", "q=%E2%82%AC")],
)
def test_werkzeug_request_matches_werkzeugs_own_environ(serve, path, query):
    live = serve(validated(make_werkzeug_app()))
    target = path + ("?" + query if query else "")
    info = requests.get(live.url + target, headers={"User-Agent": "e2e/1"}, timeout=10).json()
    assert info.pop("remote_addr") == "127.0.0.1"
    assert info.pop("user_agent") == "e2e/1"
    assert info == werkzeug_expectation(live.url + "/", path, query)
    assert info["host"] == f"127.0.0.1:{live.port}"


def test_werkzeug_request_under_a_root_path(serve):
    live = serve(validated(make_werkzeug_app()), root_path="/mount", url_scheme="https")
    info = requests.get(f"{live.url}/mount/p/q?z=9", timeout=10).json()
    del info["remote_addr"], info["user_agent"]
    base = f"https://127.0.0.1:{live.port}/mount/"
    assert info == werkzeug_expectation(base, "/p/q", "z=9")
    assert info["url"] == f"https://127.0.0.1:{live.port}/mount/p/q?z=9"
    assert info["script_root"] == "/mount"
    assert info["path"] == "/p/q"


def test_werkzeug_echo_body_with_both_framings(serve):
    live = serve(make_werkzeug_app())
    body = os.urandom(100_000)
    with requests.Session() as session:
        assert session.post(f"{live.url}/echo", data=body, timeout=10).content == body
        pieces = [body[i : i + 7000] for i in range(0, len(body), 7000)]
        assert session.post(f"{live.url}/echo", data=iter(pieces), timeout=10).content == body
