"""Moments of a server's life that code outside wsgipool may act on (gunicorn's server
hooks: see ``integrations/gunicorn.py``).

``ProcessHooks`` does nothing at each moment; a subclass overrides what it needs. The
start-up sequence (``launch.run``) and the worker-process supervisor call it; request
hooks, on the hot path, are a separate object the gateway checks for ``None`` once per
request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .http.parser import Request


class RequestHooks(Protocol):
    """Around each request: ``before`` as it reaches the server's gateway (an exception
    fails the request with 500), ``after`` once its response is sent, with what
    ``before`` returned and the status that went out."""

    def before(self, request: Request, environ: dict[str, Any]) -> object: ...

    def after(self, token: object, environ: dict[str, Any], status: str) -> None: ...


class ProcessHooks:
    """What a start-up does at each moment: nothing, unless a subclass says otherwise.
    "Server" moments happen in the process that started (the supervisor, with worker
    processes); "worker" moments in the process that serves requests."""

    request_hooks: RequestHooks | None = None

    def starting(self) -> None:
        """Before anything binds."""

    def ready(self) -> None:
        """The sockets listen (with worker processes: before the first is forked)."""

    def reloading(self) -> None:
        """SIGHUP to the supervisor: a rolling restart begins."""

    def workers_changed(self, new: int, old: int) -> None:
        """SIGTTIN/SIGTTOU changed how many worker processes the supervisor keeps."""

    def before_fork(self) -> object:
        """A worker process is about to be forked; returns what stands for it."""
        return None

    def after_fork(self, worker: object, pid: int) -> None:
        """In the supervisor, once ``worker`` runs as ``pid``."""

    def in_forked_child(self, worker: object) -> None:
        """In the new worker process, first thing."""

    def worker_ready(self) -> None:
        """In the serving process: the application is loaded, no request served yet."""

    def worker_interrupted(self) -> None:
        """In a worker process: SIGINT or SIGQUIT, a quick stop."""

    def worker_aborting(self) -> None:
        """In a worker process: a request is stuck past ``--stuck-recycle`` (gunicorn's
        timeout), so it is being replaced; called after the dump is logged."""

    def worker_exiting(self) -> None:
        """In the serving process, as it exits."""

    def child_exited(self, pid: int) -> None:
        """In the supervisor: worker process ``pid`` has exited and been reaped."""

    def exiting(self) -> None:
        """The server is about to exit."""


NO_HOOKS = ProcessHooks()
