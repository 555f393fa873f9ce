"""Options from the command line, the environment and pyproject.toml, in that order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
        ({"WSGIPOOL_THREADS": "0"}, None, "--threads"),
        ({}, "[tool.wsgipool]\nthreadz = 3\n", "unknown [tool.wsgipool] key(s): threadz"),
        ({}, "[tool.wsgipool]\nthreads = \n", "pyproject.toml"),
    ],
    ids=[
        "env-not-a-number",
        "env-not-a-boolean",
        "env-out-of-range",
        "file-unknown-key",
        "file-bad-toml",
    ],
)
def test_bad_settings_are_one_line_and_exit_2(tmp_path, env, pyproject, message):
    if pyproject is not None:
        (tmp_path / "pyproject.toml").write_text(pyproject)
    result = run(["goodapp:app", "--print-config"], tmp_path, env)
    assert result.returncode == 2, result.stdout
    assert message in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr


def test_no_app_anywhere_is_an_error(tmp_path):
    result = run([], tmp_path)
    assert result.returncode == 2
    assert (
        result.stderr.strip() == "wsgipool: error: no application: name one as APP (e.g. myapp:app)"
    )


def test_log_config_file_is_applied(tmp_path):
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
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wsgipool",
            "goodapp:app",
            "--chdir",
            str(APPS),
            "-b",
            "127.0.0.1:0",
            "--log-config",
            str(path),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert line.startswith("CUSTOM INFO wsgipool"), line
    finally:
        proc.terminate()
        proc.wait(10)


def test_bad_log_config_is_a_clear_error(tmp_path):
    path = tmp_path / "logging.json"
    path.write_text("{not json")
    result = run(["goodapp:app", "--chdir", str(APPS), "--log-config", str(path)], tmp_path)
    assert result.returncode == 2
    assert "--log-config" in result.stderr and "Traceback" not in result.stderr
