"""Shared fixtures: real servers on 127.0.0.1 port 0 (or a Unix socket), in this process
(``serve``) or as processes of their own (``spawn``). What they are built from, and every
other shared helper, is in ``tests.helpers``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.apps import hello_app
from tests.helpers.live import Live
from tests.helpers.process import Process, child_env, wsgipool_command
from wsgipool import Server


@pytest.fixture(autouse=True)
def wsgipool_log_level() -> Iterator[None]:
    """The start-up sequence sets the ``wsgipool`` loggers' level, as a command should: a
    test that runs a front end in this process must not leave it set for the next."""
    logger = logging.getLogger("wsgipool")
    level = logger.level
    yield
    logger.setLevel(level)


@pytest.fixture
def serve() -> Iterator[Callable[..., Live]]:
    """``serve(app, **options)`` starts a server on 127.0.0.1:0 and stops it after the test."""
    servers: list[Server] = []

    def start(app: Any = hello_app, **options: Any) -> Live:
        options.setdefault("bind", ("127.0.0.1:0",))
        options.setdefault("threads", 4)
        server = Server(app, **options)
        server.start()
        servers.append(server)
        return Live(server)

    yield start
    for server in servers:
        server.stop(timeout=5)


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    """The processes a test started: each ends, with its whole group, after the test.
    ``spawn`` adds to it, and so may a test module's own fixtures."""
    started: list[Process] = []
    yield started
    for process in started:
        process.close()


@pytest.fixture
def spawn(processes: list[Process], tmp_path: Path) -> Callable[..., Process]:
    """``spawn(args)`` runs ``python -m wsgipool ARGS``, ``spawn(command=[...])`` any command:
    in ``tmp_path`` (or ``cwd``), with ``child_env(env)``, ended after the test. Its stdout is
    kept apart from the log (stderr) unless ``stdout_apart=False``; more options go to
    ``Process``."""

    def start(
        args: Sequence[str] = (),
        *,
        command: Sequence[str] | None = None,
        cwd: Path | str | None = None,
        env: Mapping[str, str | None] | None = None,
        stdout_apart: bool = True,
        **options: Any,
    ) -> Process:
        process = Process(
            command if command is not None else wsgipool_command(*args),
            cwd=cwd if cwd is not None else tmp_path,
            env=child_env(env),
            stdout_apart=stdout_apart,
            **options,
        )
        processes.append(process)
        return process

    return start
