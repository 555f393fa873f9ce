"""The access log: off by default, one line per request, gunicorn's atoms."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers.http import build_request
from tests.helpers.live import exchange
from tests.helpers.process import Process
from tests.helpers.waiting import wait_for
from wsgipool import Config, ConfigError
from wsgipool.accesslog import reopen_log_files


def app(environ, start_response):
    if environ["PATH_INFO"] == "/boom":
        raise RuntimeError("boom")
    body = b"hello"
    start_response("201 Created", [("Content-Length", "5"), ("X-Out", "yes")])
    return [body]


def read_lines(path: Path, count: int) -> list[str]:
    wait_for(lambda: path.exists() and len(path.read_text().splitlines()) >= count)
    return path.read_text().splitlines()


def test_combined_format_by_default(serve, tmp_path):
    log = tmp_path / "access.log"
    live = serve(app, access_log=str(log))
    requests.get(
        live.url + "/x?y=1", headers={"User-Agent": "ua/1", "Referer": "http://r/"}, timeout=10
    )
    (line,) = read_lines(log, 1)
    assert line.startswith("127.0.0.1 - - [")
    assert '"GET /x?y=1 HTTP/1.1" 201 5 "http://r/" "ua/1"' in line


def test_custom_atoms(serve, tmp_path):
    log = tmp_path / "access.log"
    fmt = (
        "%(m)s %(U)s %(q)s %(s)s %(B)s %({x-in}i)s %({x-out}o)s %({SERVER_PROTOCOL}e)s %(w)s %(D)s"
    )
    live = serve(app, access_log=str(log), access_log_format=fmt)
    requests.get(live.url + "/p?q=2", headers={"X-In": "abc"}, timeout=10)
    (line,) = read_lines(log, 1)
    method, path, query, status, size, x_in, x_out, protocol, waited, micros = line.split()
    assert (method, path, query, status, size) == ("GET", "/p", "q=2", "201", "5")
    assert (x_in, x_out, protocol) == ("abc", "yes", "HTTP/1.1")
    assert float(waited) >= 0 and int(micros) >= 0


def quoting_app(environ, start_response):
    environ["app.note"] = "set by the app:\u2028\x00"  # not from the wire, escaped all the same
    start_response("200 OK", [("Content-Length", "0"), ("X-Out", 'say "hi" \\o/')])
    return []


def test_request_controlled_values_cannot_forge_lines(serve, tmp_path):
    log = tmp_path / "access.log"
    fmt = '%(U)s %({PATH_INFO}e)s "%(r)s" "%(a)s" %({x-in}i)s "%({x-out}o)s" %({app.note}e)s'
    live = serve(quoting_app, access_log=str(log), access_log_format=fmt)
    sent_and_logged = [
        # (target, User-Agent, X-In) sent; (path, request target, User-Agent, X-In) logged.
        (("/a%0Aforged", "ua", "in"), (r"/a\x0aforged", "/a%0Aforged", "ua", "in")),
        (("/b%0D%0Ax", "ua", "in"), (r"/b\x0d\x0ax", "/b%0D%0Ax", "ua", "in")),
        (("/c%1B[31m", "ua", "in"), (r"/c\x1b[31m", "/c%1B[31m", "ua", "in")),
        (("/d%7F%85%9F", "ua", "in"), (r"/d\x7f\x85\x9f", "/d%7F%85%9F", "ua", "in")),
        (("/e%5C", "ua", "in"), (r"/e\\", "/e%5C", "ua", "in")),
        (
            ('/f"x%22', 'evil" "forged\t\x85', "a\tb"),
            (r"/f\"x\"", r"/f\"x%22", r"evil\" \"forged\x09\x85", r"a\x09b"),
        ),
    ]
    for (target, agent, given), _ in sent_and_logged:
        headers = [("User-Agent", agent), ("X-In", given)]
        assert exchange(live, build_request("GET", target, headers)).status == 200
    count = len(sent_and_logged)
    wait_for(lambda: log.exists() and log.read_text(encoding="utf-8").count("\n") >= count)
    text = log.read_text(encoding="utf-8")
    # splitlines() also ends a line at \x85, \x1c-\x1e or U+2028: none of them may be written.
    assert text.splitlines() == text.split("\n")[:-1]
    assert text.splitlines() == [
        f'{path} {path} "GET {target} HTTP/1.1" "{agent}" {given} "say \\"hi\\" \\\\o/"'
        r" set by the app:\u2028\x00"
        for _, (path, target, agent, given) in sent_and_logged
    ]


def test_application_error_is_logged_as_500(serve, tmp_path):
    log = tmp_path / "access.log"
    live = serve(app, access_log=str(log), access_log_format="%(r)s %(s)s")
    assert requests.get(live.url + "/boom", timeout=10).status_code == 500
    assert read_lines(log, 1) == ["GET /boom HTTP/1.1 500"]


def test_queue_wait_reaches_the_environ(serve):
    seen = []

    def waiting_app(environ, start_response):
        seen.append(environ["wsgipool.queue_wait"])
        start_response("200 OK", [("Content-Length", "0")])
        return []

    live = serve(waiting_app)
    requests.get(live.url, timeout=10)
    assert len(seen) == 1 and isinstance(seen[0], float) and seen[0] >= 0


def test_bad_format_is_a_config_error():
    with pytest.raises(ConfigError, match="access_log_format"):
        Config(access_log_format="%(h)d %(")


def cli_server(spawn: Callable[..., Process], *options: str) -> tuple[Process, str]:
    """``wsgipool goodapp:app`` with ``options``: the process and its URL."""
    apps = Path(__file__).parent / "apps"
    proc = spawn(["goodapp:app", "-b", "127.0.0.1:0", "--chdir", str(apps), *options])
    (url,) = proc.listening()
    return proc, url


def test_cli_access_log_to_stdout(spawn):
    proc, url = cli_server(spawn, "--access-log", "-", "--access-log-format", "%(r)s %(s)s")
    requests.get(url + "/logged", timeout=10)
    proc.wait_until(lambda: "\n" in proc.stdout, "an access log line on stdout")
    assert proc.stdout.splitlines()[0] == "GET /logged HTTP/1.1 200"


def test_log_config_that_leaves_out_the_access_logger_keeps_the_file(spawn, tmp_path):
    # dictConfig disables the loggers it does not name (disable_existing_loggers), among
    # them wsgipool.access: that must not silence --access-log.
    log_config = tmp_path / "logging.json"
    log_config.write_text(
        json.dumps(
            {
                "version": 1,
                "handlers": {"stderr": {"class": "logging.StreamHandler"}},
                "loggers": {"wsgipool.error": {"handlers": ["stderr"], "level": "INFO"}},
            }
        )
    )
    log = tmp_path / "access.log"
    options = ("--log-config", str(log_config), "--access-log", str(log))
    _, url = cli_server(spawn, *options, "--access-log-format", "%(r)s")
    requests.get(url + "/logged", timeout=10)
    assert read_lines(log, 1) == ["GET /logged HTTP/1.1"]


# --- one access log per Server ------------------------------------------------------------


def served_lines(live: Any, paths: list[str]) -> None:
    for path in paths:
        assert requests.get(live.url + path, timeout=10).status_code == 201


def test_two_servers_each_write_their_own_lines(serve, tmp_path):
    one, two = tmp_path / "one.log", tmp_path / "two.log"
    live_one = serve(app, access_log=str(one), access_log_format="one %(U)s")
    live_two = serve(app, access_log=str(two), access_log_format="two %(U)s %(s)s")
    served_lines(live_one, ["/a", "/b"])
    served_lines(live_two, ["/c"])
    served_lines(live_one, ["/d"])
    # stop() waits for the workers, so every line is written when it returns.
    live_one.server.stop()
    live_two.server.stop()
    assert one.read_text().splitlines() == ["one /a", "one /b", "one /d"]
    assert two.read_text().splitlines() == ["two /c 201"]


def test_stopping_one_server_leaves_the_other_logging(serve, tmp_path):
    one, two = tmp_path / "one.log", tmp_path / "two.log"
    live_one = serve(app, access_log=str(one), access_log_format="one %(U)s")
    live_two = serve(app, access_log=str(two), access_log_format="two %(U)s")
    served_lines(live_one, ["/a"])
    served_lines(live_two, ["/b"])
    live_one.server.stop()
    served_lines(live_two, ["/c"])
    live_two.server.stop()
    assert one.read_text().splitlines() == ["one /a"]
    assert two.read_text().splitlines() == ["two /b", "two /c"]


def test_two_servers_on_stdout_each_line_once(serve, capsys):
    live_one = serve(app, access_log="-", access_log_format="one %(U)s")
    live_two = serve(app, access_log="-", access_log_format="two %(U)s")
    served_lines(live_one, ["/a"])
    served_lines(live_two, ["/b"])
    live_one.server.stop()
    live_two.server.stop()
    assert sorted(capsys.readouterr().out.splitlines()) == ["one /a", "two /b"]


def test_reopen_gives_each_server_a_new_file(serve, tmp_path):
    one, two = tmp_path / "one.log", tmp_path / "two.log"
    live_one = serve(app, access_log=str(one), access_log_format="one %(U)s")
    live_two = serve(app, access_log=str(two), access_log_format="two %(U)s")
    served_lines(live_one, ["/before"])
    served_lines(live_two, ["/before"])
    read_lines(one, 1)
    read_lines(two, 1)
    one.rename(tmp_path / "one.log.1")
    two.rename(tmp_path / "two.log.1")
    assert reopen_log_files() >= 2  # what SIGUSR1 does
    served_lines(live_one, ["/after"])
    served_lines(live_two, ["/after"])
    assert read_lines(one, 1) == ["one /after"]
    assert read_lines(two, 1) == ["two /after"]
    live_one.server.stop()
    live_two.server.stop()
    assert (tmp_path / "one.log.1").read_text().splitlines() == ["one /before"]
    assert (tmp_path / "two.log.1").read_text().splitlines() == ["two /before"]


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def access_logger_handler() -> Iterator[Collect]:
    """A handler on ``wsgipool.access``, as a --log-config would add; removed after."""
    logger = logging.getLogger("wsgipool.access")
    handler = Collect()
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def test_handlers_on_the_access_logger_still_get_the_lines(serve, tmp_path, access_logger_handler):
    logger = logging.getLogger("wsgipool.access")
    state = (logger.level, logger.propagate, list(logger.handlers), logger.disabled)
    above = Collect()  # on an ancestor: access lines are not errors, they do not go there
    logging.getLogger("wsgipool").addHandler(above)
    try:
        one, two = tmp_path / "one.log", tmp_path / "two.log"
        live_one = serve(app, access_log=str(one), access_log_format="one %(U)s")
        live_two = serve(app, access_log=str(two), access_log_format="two %(U)s")
        # Starting a server changes nothing process-wide that another server depends on.
        assert (logger.level, logger.propagate, logger.handlers, logger.disabled) == state
        served_lines(live_one, ["/a"])
        served_lines(live_two, ["/b"])
        live_one.server.stop()
        live_two.server.stop()
    finally:
        logging.getLogger("wsgipool").removeHandler(above)
    assert (logger.level, logger.propagate, logger.handlers, logger.disabled) == state
    assert sorted(access_logger_handler.lines) == ["one /a", "two /b"]
    assert above.lines == []
    assert one.read_text().splitlines() == ["one /a"]


def test_usr1_reopens_the_access_log_of_a_single_process(
    spawn: Callable[..., Process], tmp_path: Path
) -> None:
    """SIGUSR1 to one server process (no supervisor) reopens its log files after a rotation,
    as it does under --workers; it used to end the process (the signal's default)."""
    import signal

    access = tmp_path / "access.log"
    proc, url = cli_server(spawn, "--access-log", str(access))
    requests.get(url + "/first", timeout=30)
    wait_for(lambda: access.exists() and "/first" in access.read_text())
    access.rename(tmp_path / "access.log.1")
    proc.send(signal.SIGUSR1)
    proc.wait_log("SIGUSR1: reopened")
    requests.get(url + "/second", timeout=30)
    wait_for(lambda: access.exists() and "/second" in access.read_text())
    assert "/second" not in (tmp_path / "access.log.1").read_text()
    assert proc.stop() == 0
