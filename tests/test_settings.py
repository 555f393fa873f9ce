"""Options from the command line, the environment and pyproject.toml, in that order."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from wsgipool.options import env_name, flag_name

APPS = Path(__file__).parent / "apps"


def run(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("WSGIPOOL_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "wsgipool", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def settings_of(output: str) -> dict[str, tuple[str, str]]:
    result = {}
    for line in output.splitlines():
        name, _, rest = line.partition(" = ")
        value, _, source = rest.partition("  # ")
        result[name] = (value, source)
    return result


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "demo"\n\n[tool.wsgipool]\napp = "goodapp:app"\nthreads = 7\n'
        'queue-limit = 11\nmax_body_size = "2M"\nbind = ["127.0.0.1:9001", "unix:/tmp/d.sock"]\n'
    )
    return tmp_path


def test_defaults_and_sources(tmp_path):
    result = run(["goodapp:app", "--print-config"], tmp_path)
    assert result.returncode == 0, result.stderr
    values = settings_of(result.stdout)
    assert values["app"] == ("'goodapp:app'", "command line")
    assert values["threads"] == ("16", "default")
    assert values["bind"] == ("('127.0.0.1:8000',)", "default")


def test_pyproject_values(project):
    values = settings_of(run(["--print-config"], project).stdout)
    assert values["app"] == ("'goodapp:app'", "pyproject.toml")
    assert values["threads"] == ("7", "pyproject.toml")
    assert values["queue_limit"] == ("11", "pyproject.toml")
    assert values["max_body_size"] == (str(2 * 1024**2), "pyproject.toml")
    assert values["bind"][0] == "('127.0.0.1:9001', 'unix:/tmp/d.sock')"


def test_command_line_beats_environment_beats_file(project):
    env = {
        "WSGIPOOL_THREADS": "9",
        "WSGIPOOL_QUEUE_LIMIT": "12",
        "WSGIPOOL_EXPOSE_TRACEBACKS": "yes",
    }
    values = settings_of(run(["--print-config", "--threads", "3"], project, env).stdout)
    assert values["threads"] == ("3", "command line")
    assert values["queue_limit"] == ("12", "environment WSGIPOOL_QUEUE_LIMIT")
    assert values["expose_tracebacks"] == ("True", "environment WSGIPOOL_EXPOSE_TRACEBACKS")
    assert values["max_body_size"][1] == "pyproject.toml"


def test_environment_bind_list(tmp_path):
    env = {"WSGIPOOL_BIND": "127.0.0.1:1, unix:/tmp/e.sock"}
    values = settings_of(run(["x:app", "--print-config"], tmp_path, env).stdout)
    assert values["bind"] == ("('127.0.0.1:1', 'unix:/tmp/e.sock')", "environment WSGIPOOL_BIND")


@pytest.mark.parametrize(
    ("env", "pyproject", "message"),
    [
        ({"WSGIPOOL_THREADS": "many"}, None, "WSGIPOOL_THREADS='many'"),
        ({"WSGIPOOL_EXPOSE_TRACEBACKS": "maybe"}, None, "WSGIPOOL_EXPOSE_TRACEBACKS"),
        ({"WSGIPOOL_THREADS": "0"}, None, "WSGIPOOL_THREADS='0': must be a whole number"),
        ({}, "[tool.wsgipool]\nthreadz = 3\n", "unknown [tool.wsgipool] key: threadz"),
        ({}, "[tool.wsgipool]\nthreads = \n", "pyproject.toml"),
        # Sizes: every size option, from the environment and from the file.
        ({"WSGIPOOL_MAX_BODY_SIZE": "10X"}, None, "WSGIPOOL_MAX_BODY_SIZE='10X': invalid size"),
        ({"WSGIPOOL_MAX_REQUEST_LINE": "1.5K"}, None, "WSGIPOOL_MAX_REQUEST_LINE='1.5K'"),
        ({"WSGIPOOL_MAX_HEADER_SIZE": "\u0661\u0660K"}, None, "WSGIPOOL_MAX_HEADER_SIZE="),
        ({}, '[tool.wsgipool]\nmax-body-size = "10X"\n', "max-body-size = '10X': invalid size"),
        (
            {"WSGIPOOL_MAX_BODY_SIZE": "99999999999999999999G"},
            None,
            "WSGIPOOL_MAX_BODY_SIZE='99999999999999999999G': must be a whole number from 0 to",
        ),
        ({"WSGIPOOL_MAX_BODY_SIZE": "9" * 5000}, None, "is too large"),
        # Whole numbers: ASCII digits only, on every path.
        ({"WSGIPOOL_THREADS": "1_000"}, None, "WSGIPOOL_THREADS='1_000': expected a whole"),
        (
            {"WSGIPOOL_THREADS": "\u0661\u0662"},
            None,
            "WSGIPOOL_THREADS='\u0661\u0662': expected a whole",
        ),
        ({"WSGIPOOL_THREADS": "+5"}, None, "WSGIPOOL_THREADS='+5': expected a whole"),
        ({}, '[tool.wsgipool]\nthreads = "1_000"\n', "threads = '1_000': expected a whole"),
        # Out of range: the variable or the file's key, not a flag.
        ({"WSGIPOOL_BACKLOG": "99999999999"}, None, "WSGIPOOL_BACKLOG='99999999999': must be"),
        ({"WSGIPOOL_WORKERS": "100000"}, None, "WSGIPOOL_WORKERS='100000': must be"),
        ({}, "[tool.wsgipool]\nqueue-limit = 0\n", "pyproject.toml: queue-limit = 0: must be"),
        ({"WSGIPOOL_BIND": "nonsense:port"}, None, "WSGIPOOL_BIND='nonsense:port': bind"),
        # Seconds: plain decimal numbers, and a microsecond at least.
        ({"WSGIPOOL_BODY_TIMEOUT": "nan"}, None, "WSGIPOOL_BODY_TIMEOUT='nan': expected"),
        ({"WSGIPOOL_SEND_TIMEOUT": "inf"}, None, "WSGIPOOL_SEND_TIMEOUT='inf': expected"),
        ({"WSGIPOOL_HEADER_TIMEOUT": "1_0"}, None, "WSGIPOOL_HEADER_TIMEOUT='1_0': expected"),
        ({"WSGIPOOL_QUEUE_TIMEOUT": "1e999"}, None, "WSGIPOOL_QUEUE_TIMEOUT='1e999'"),
        ({"WSGIPOOL_BODY_TIMEOUT": "1e-7"}, None, "WSGIPOOL_BODY_TIMEOUT='1e-7': must be"),
        ({}, "[tool.wsgipool]\nsend-timeout = 1e-7\n", "send-timeout = 1e-07: must be"),
        # Unknown names, and one option set twice.
        (
            {"WSGIPOOL_THREDS": "8"},
            None,
            "unknown environment variable: WSGIPOOL_THREDS (did you mean WSGIPOOL_THREADS?)",
        ),
        ({"WSGIPOOL_CHDIR": "/tmp"}, None, "unknown environment variable: WSGIPOOL_CHDIR"),
        (
            {},
            "[tool.wsgipool]\nqueue-limt = 3\n",
            "unknown [tool.wsgipool] key: queue-limt (did you mean queue_limit?)",
        ),
        ({}, "[tool.wsgipool]\nqueue-limit = 3\nqueue_limit = 4\n", "sets queue_limit twice"),
        # An object only Python can pass is no option here, as in a Paste ini file.
        ({"WSGIPOOL_SSL_CONTEXT": "x"}, None, "unknown environment variable: WSGIPOOL_SSL_"),
        ({}, '[tool.wsgipool]\nssl_context = "x"\n', "unknown [tool.wsgipool] key: ssl_context"),
    ],
    ids=[
        "env-not-a-number",
        "env-not-a-boolean",
        "env-out-of-range",
        "file-unknown-key",
        "file-bad-toml",
        "env-bad-body-size",
        "env-bad-request-line",
        "env-non-ascii-header-size",
        "file-bad-size",
        "env-size-overflow",
        "env-size-too-many-digits",
        "env-underscore-number",
        "env-arabic-indic-number",
        "env-plus-sign",
        "file-underscore-number-string",
        "env-huge-backlog",
        "env-too-many-workers",
        "file-out-of-range",
        "env-bad-bind",
        "env-nan-seconds",
        "env-inf-seconds",
        "env-underscore-seconds",
        "env-seconds-overflow",
        "env-below-a-microsecond",
        "file-below-a-microsecond",
        "env-unknown-variable",
        "env-not-an-option",
        "file-unknown-key-guess",
        "file-key-twice",
        "env-python-only",
        "file-python-only",
    ],
)
def test_bad_settings_are_one_line_and_exit_2(tmp_path, env, pyproject, message):
    if pyproject is not None:
        (tmp_path / "pyproject.toml").write_text(pyproject, encoding="utf-8")
    result = run(["goodapp:app", "--print-config"], tmp_path, env)
    assert result.returncode == 2, result.stdout
    assert message in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "--" not in result.stderr, "an error from the environment or file names a flag"


def from_source(source: str, field: str, text: str, directory: Path) -> subprocess.CompletedProcess:
    """``wsgipool goodapp:app --print-config`` with ``field`` set to ``text`` by ``source``."""
    args = ["goodapp:app", "--print-config"]
    env = {}
    if source == "command line":
        args += [flag_name(field), text]
    elif source == "environment":
        env[env_name(field)] = text
    else:
        (directory / "pyproject.toml").write_text(f"[tool.wsgipool]\n{field} = {text!r}\n")
    return run(args, directory, env)


SOURCES = ("command line", "environment", "pyproject.toml")
# Text that no command-line flag takes as it is: a boolean word (a flag has none), and a
# list of addresses (-b takes one each).
LIST_OR_WORD = ("expose_tracebacks", "preload", "proxy_protocol", "bind")


def each_source(cases: list[tuple[str, str, str]]) -> list[Any]:
    return [
        pytest.param(source, *case, id=f"{source}-{case[0]}-{case[1]}")
        for case in cases
        for source in SOURCES
        if not (source == "command line" and case[0] in LIST_OR_WORD)
    ]


@pytest.mark.parametrize(
    ("source", "field", "text", "value"),
    each_source(
        [
            ("threads", "8", "8"),
            ("max_body_size", "10M", str(10 * 1024**2)),
            ("keepalive_timeout", "2.5", "2.5"),
            ("expose_tracebacks", "y", "True"),
            ("preload", "Off", "False"),
            ("proxy_protocol", "t", "True"),
            ("log_level", "DEBUG", "'debug'"),
            ("bind", "127.0.0.1:1, 127.0.0.1:2", "('127.0.0.1:1', '127.0.0.1:2')"),
            ("bind", "127.0.0.1:1 unix:/tmp/a.sock", "('127.0.0.1:1', 'unix:/tmp/a.sock')"),
        ]
    ),
)
def test_every_source_reads_text_alike(tmp_path, source, field, text, value):
    result = from_source(source, field, text, tmp_path)
    assert result.returncode == 0, result.stderr
    printed, printed_source = settings_of(result.stdout)[field]
    assert printed == value
    assert printed_source.startswith(source)  # "environment WSGIPOOL_..." for the environment


@pytest.mark.parametrize(
    ("source", "field", "text", "message"),
    each_source(
        [
            ("threads", "many", "expected a whole number such as 16, not 'many'"),
            ("poller", "kqueue", "expected one of auto, epoll, selectors, not 'kqueue'"),
            ("log_level", "loud", "expected one of debug, info, warning, error, critical"),
            ("expose_tracebacks", "maybe", "expected true or false (or yes/no, on/off, 1/0)"),
        ]
    ),
)
def test_every_source_refuses_text_alike(tmp_path, source, field, text, message):
    result = from_source(source, field, text, tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_a_value_from_the_file_is_named_with_the_file(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.wsgipool]\nthreads = 0\n")
    result = run(["goodapp:app", "--print-config"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"wsgipool: error: {tmp_path / 'pyproject.toml'}: threads = 0")


@pytest.mark.parametrize(
    "variable", ["WSGIPOOL_RELOAD_POLL", "WSGIPOOL_INHERITED_FDS", "WSGIPOOL_BENCH_FILE"]
)
def test_variables_that_are_not_options_are_allowed(tmp_path, variable):
    result = run(["goodapp:app", "--print-config"], tmp_path, {variable: ""})
    assert result.returncode == 0, result.stderr


def test_reload_poll_takes_the_boolean_words_only(tmp_path):
    """WSGIPOOL_RELOAD_POLL is read with the words of every boolean option: another word
    is one clear error, not a yes."""
    args = ["goodapp:app", "--chdir", str(APPS), "-b", "127.0.0.1:0", "--reload"]
    result = run(args, tmp_path, {"WSGIPOOL_RELOAD_POLL": "maybe"})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "wsgipool: error: WSGIPOOL_RELOAD_POLL='maybe': expected true or false "
        "(or yes/no, on/off, 1/0), not 'maybe'"
    )


def test_printed_config_reads_back(tmp_path):
    """What --print-config shows, set again through the environment, is the same config:
    small durations print as 1e-06, which the converters must take."""
    env = {
        "WSGIPOOL_BODY_TIMEOUT": "0.000001",
        "WSGIPOOL_SEND_TIMEOUT": "0.00025",
        "WSGIPOOL_HEADER_TIMEOUT": "1.000001",
        "WSGIPOOL_QUEUE_TIMEOUT": "31536000",
        "WSGIPOOL_MAX_BODY_SIZE": "1024G",
        "WSGIPOOL_THREADS": " 4096 ",
    }
    first = settings_of(run(["goodapp:app", "--print-config"], tmp_path, env).stdout)
    again = {variable: first[variable[len("WSGIPOOL_") :].lower()][0] for variable in env}
    assert again["WSGIPOOL_BODY_TIMEOUT"] == "1e-06"
    second = settings_of(run(["goodapp:app", "--print-config"], tmp_path, again).stdout)
    assert {name: value for name, (value, _) in second.items()} == {
        name: value for name, (value, _) in first.items()
    }


def test_no_app_anywhere_is_an_error(tmp_path):
    result = run([], tmp_path)
    assert result.returncode == 2
    assert (
        result.stderr.strip() == "wsgipool: error: no application: name one as APP (e.g. myapp:app)"
    )


def test_log_config_file_is_applied(spawn, tmp_path):
    config = {
        "version": 1,
        "formatters": {"plain": {"format": "CUSTOM %(levelname)s %(message)s"}},
        "handlers": {
            "err": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {"wsgipool": {"handlers": ["err"], "level": "INFO", "propagate": False}},
    }
    path = tmp_path / "logging.json"
    path.write_text(json.dumps(config))
    proc = spawn(
        ["goodapp:app", "--chdir", str(APPS), "-b", "127.0.0.1:0", "--log-config", str(path)]
    )
    first_line = proc.wait_for(re.compile(".*")).group()
    assert first_line.startswith("CUSTOM INFO wsgipool"), first_line


def test_bad_log_config_is_a_clear_error(tmp_path):
    path = tmp_path / "logging.json"
    path.write_text("{not json")
    result = run(["goodapp:app", "--chdir", str(APPS), "--log-config", str(path)], tmp_path)
    assert result.returncode == 2
    assert "--log-config" in result.stderr and "Traceback" not in result.stderr


def test_an_ini_log_config_says_what_is_read(tmp_path):
    """gunicorn's --log-config takes an ini file: the error says this one takes JSON or
    TOML, not only where JSON parsing stopped."""
    path = tmp_path / "logging.conf"
    path.write_text("[loggers]\nkeys=root\n")
    result = run(["goodapp:app", "--chdir", str(APPS), "--log-config", str(path)], tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        f"wsgipool: error: --log-config {path}: not JSON (Expecting value: line 1 column 2 "
        "(char 1)): give a logging.config.dictConfig file in JSON, or in TOML named *.toml "
        "(ini files are not read)\n"
    )


@pytest.mark.parametrize("value", ["5", '["goodapp:app"]', "true"])
def test_an_app_that_is_not_text_is_one_line(tmp_path, value):
    """TOML may give ``app`` a number or a list: refused as any bad value, naming it."""
    (tmp_path / "pyproject.toml").write_text(f"[tool.wsgipool]\napp = {value}\n")
    for args in ([], ["--print-config"]):
        result = run(args, tmp_path)
        assert result.returncode == 2, result.stdout
        assert "pyproject.toml: app = " in result.stderr
        assert "expected text such as 'myapp:app'" in result.stderr
        assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
