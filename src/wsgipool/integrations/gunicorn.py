"""gunicorn's configuration file and server hooks, so a gunicorn user switches without
rewriting: ``wsgipool -c gunicorn.conf.py`` (or ``./gunicorn.conf.py``, found as gunicorn
finds it).

The file is Python, executed as gunicorn executes it. Each setting with a wsgipool meaning
becomes the value of a wsgipool option through that option's converter (``options.py``),
as text from any other source does; ``settings.resolve`` places the file below the
command line and the environment, above ``pyproject.toml``. Settings with no wsgipool
meaning are named in one warning. The server hooks (``on_starting``... ``on_exit``) are
called at gunicorn's moments (``hooks.ProcessHooks``) with stand-ins for gunicorn's
arbiter, worker, request and response objects that offer what hooks commonly use.
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import MAX_HEAD_SIZE, Config, ConfigError
from ..hooks import ProcessHooks
from ..options import ENV_PREFIX, convert

if TYPE_CHECKING:
    from ..http.parser import Request

log = logging.getLogger("wsgipool.error")

DEFAULT_FILE = "gunicorn.conf.py"
SOURCE = "gunicorn config"

# gunicorn's setting -> the wsgipool option it is.
FIELDS: Mapping[str, str] = {
    "wsgi_app": "app",
    "bind": "bind",
    "workers": "workers",
    "threads": "threads",
    "backlog": "backlog",
    "keepalive": "keepalive_timeout",
    "timeout": "stuck_recycle",
    "graceful_timeout": "graceful_timeout",
    "max_requests": "max_requests",
    "max_requests_jitter": "max_requests_jitter",
    "preload_app": "preload",
    "forwarded_allow_ips": "forwarded_allow_ips",
    "proxy_protocol": "proxy_protocol",
    "proxy_allow_ips": "proxy_allow_ips",
    "certfile": "certfile",
    "keyfile": "keyfile",
    "ca_certs": "ca_certs",
    "cert_reqs": "cert_reqs",
    "ciphers": "ciphers",
    "accesslog": "access_log",
    "access_log_format": "access_log_format",
    "errorlog": "error_log",
    "capture_output": "capture_output",
    "loglevel": "log_level",
    "umask": "umask",
    "pidfile": "pidfile",
    "user": "user",
    "group": "group",
    "limit_request_line": "max_request_line",
    "limit_request_fields": "max_header_count",
    "limit_request_field_size": "max_header_size",
    "worker_class": "worker_class",
    "sendfile": "sendfile",
    "root_path": "root_path",
}
# Settings the start-up applies itself (they are no Config field).
OWN_SETTINGS = frozenset({"chdir", "raw_env", "logconfig_dict", "reload", "reload_extra_files"})
# The hooks, with gunicorn's arguments.
HOOKS = (
    "on_starting",  # (server)
    "on_reload",  # (server)
    "when_ready",  # (server)
    "pre_fork",  # (server, worker)
    "post_fork",  # (server, worker)
    "post_worker_init",  # (worker)
    "worker_int",  # (worker)
    "worker_abort",  # (worker)
    "pre_request",  # (worker, req)
    "post_request",  # (worker, req, environ, resp)
    "child_exit",  # (server, worker)
    "worker_exit",  # (server, worker)
    "nworkers_changed",  # (server, new_value, old_value)
    "on_exit",  # (server)
)
# Every setting gunicorn knows (23.x and later): a name in the file that is none of these
# is the file's own (an import, a helper), ignored as gunicorn ignores it.
GUNICORN_SETTINGS = frozenset(
    [
        "config",
        "wsgi_app",
        "bind",
        "backlog",
        "workers",
        "worker_class",
        "threads",
        "worker_connections",
        "max_requests",
        "max_requests_jitter",
        "timeout",
        "graceful_timeout",
        "keepalive",
        "limit_request_line",
        "limit_request_fields",
        "limit_request_field_size",
        "reload",
        "reload_engine",
        "reload_extra_files",
        "spew",
        "check_config",
        "print_config",
        "preload_app",
        "sendfile",
        "reuse_port",
        "chdir",
        "daemon",
        "raw_env",
        "pidfile",
        "worker_tmp_dir",
        "user",
        "group",
        "umask",
        "initgroups",
        "tmp_upload_dir",
        "secure_scheme_headers",
        "forwarded_allow_ips",
        "accesslog",
        "disable_redirect_access_to_syslog",
        "access_log_format",
        "errorlog",
        "loglevel",
        "capture_output",
        "logger_class",
        "logconfig",
        "logconfig_dict",
        "logconfig_json",
        "syslog_addr",
        "syslog",
        "syslog_prefix",
        "syslog_facility",
        "enable_stdio_inheritance",
        "statsd_host",
        "dogstatsd_tags",
        "statsd_prefix",
        "enable_backlog_metric",
        "proc_name",
        "default_proc_name",
        "pythonpath",
        "paste",
        "on_starting",
        "on_reload",
        "when_ready",
        "pre_fork",
        "post_fork",
        "post_worker_init",
        "worker_int",
        "worker_abort",
        "pre_exec",
        "pre_request",
        "post_request",
        "child_exit",
        "worker_exit",
        "nworkers_changed",
        "on_exit",
        "ssl_context",
        "proxy_protocol",
        "proxy_allow_ips",
        "protocol",
        "uwsgi_allow_ips",
        "keyfile",
        "certfile",
        "ssl_version",
        "cert_reqs",
        "ca_certs",
        "suppress_ragged_eofs",
        "do_handshake_on_connect",
        "ciphers",
        "http_protocols",
        "raw_paste_global_conf",
        "permit_obsolete_folding",
        "strip_header_spaces",
        "permit_unconventional_http_method",
        "permit_unconventional_http_version",
        "casefold_http_method",
        "forwarder_headers",
        "header_map",
        "root_path",
    ]
)
# gunicorn's worker classes by their full names.
_WORKER_CLASS_PATHS = {
    "gunicorn.workers.gthread.ThreadWorker": "gthread",
    "gunicorn.workers.sync.SyncWorker": "sync",
}
# ssl.CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED.
_CERT_REQS = {0: "none", 1: "optional", 2: "required"}


@dataclass
class GunicornFile:
    """What a gunicorn configuration file says, in wsgipool's terms."""

    path: Path
    # wsgipool option (or "app") -> (how errors name it, its value, converted).
    values: dict[str, tuple[str, Any]] = field(default_factory=dict)
    # For the one warning: settings with no wsgipool meaning, and likely misspellings.
    ignored: list[str] = field(default_factory=list)
    chdir: str = ""
    environment: dict[str, str] = field(default_factory=dict)
    logconfig_dict: dict[str, Any] | None = None
    reload: bool = False
    reload_extra_files: tuple[str, ...] = ()
    hooks: dict[str, Callable[..., Any]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)  # every gunicorn setting set

    @property
    def warning(self) -> str | None:
        """The one warning about what the file sets that wsgipool does not do."""
        if not self.ignored:
            return None
        return (
            f"{self.path}: ignoring what has no wsgipool meaning: {', '.join(self.ignored)} "
            "(see docs/migrating.md)"
        )


# gunicorn's -c python:MODULE: a configuration module found on the import path.
MODULE_PREFIX = "python:"


def find_file(given: str | None, directory: Path) -> Path | None:
    """The file to read: ``given`` (``-c``, relative to ``directory``, or
    ``python:MODULE``, the module's file), else ``directory/gunicorn.conf.py`` when there
    is one, as gunicorn does."""
    if given and given.startswith(MODULE_PREFIX):
        return _module_file(given.removeprefix(MODULE_PREFIX), directory)
    if given:
        path = directory / given
        if not path.is_file():
            raise ConfigError(f"--config {given}: no such file")
        return path
    default = directory / DEFAULT_FILE
    return default if default.is_file() else None


def _module_file(name: str, directory: Path) -> Path:
    """The file of module ``name``, looked for as an import would (``directory`` first, as
    the application is); importing a dotted name's packages runs them, as gunicorn does."""
    flag = f"--config {MODULE_PREFIX}{name}"
    added = str(directory) not in sys.path
    if added:
        sys.path.insert(0, str(directory))
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"{flag}: {exc}") from None
    except Exception as exc:  # a package of the dotted name failed to import
        raise ConfigError(f"{flag}: {type(exc).__name__}: {exc}") from None
    finally:
        if added:
            sys.path.remove(str(directory))
    if spec is None:
        raise ConfigError(f"{flag}: no such module")
    if not spec.origin or not spec.origin.endswith(".py") or not Path(spec.origin).is_file():
        raise ConfigError(f"{flag}: not a Python source file ({spec.origin or 'no file'})")
    return Path(spec.origin)


def read_file(path: Path) -> GunicornFile:
    """Execute the file as gunicorn does and translate its settings."""
    namespace = _execute(path)
    result = GunicornFile(path)
    for name, value in namespace.items():
        if name not in GUNICORN_SETTINGS:
            _note_misspelling(result, name, value)
            continue
        if value is None:  # gunicorn's "not set"
            continue
        result.settings[name] = value
        if name in HOOKS:
            if not callable(value):
                raise ConfigError(f"{path}: {name} must be a function, not {value!r}")
            result.hooks[name] = value
        elif name in FIELDS:
            result.values[FIELDS[name]] = _translate(path, name, value)
        elif name in OWN_SETTINGS:
            _own_setting(result, name, value)
        elif value is not False:  # a feature left off is what wsgipool does anyway
            result.ignored.append(name)
    return result


def _execute(path: Path) -> dict[str, Any]:
    """The file's module namespace, executed as gunicorn does (module ``__config__``).
    An error in it is one ``ConfigError`` line naming the file's line."""
    spec = importlib.util.spec_from_file_location("__config__", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules["__config__"] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        line = _line_in(path, exc)
        raise ConfigError(f"{path}{line}: {type(exc).__name__}: {exc}") from None
    return {name: value for name, value in vars(module).items() if not name.startswith("_")}


def _line_in(path: Path, exc: BaseException) -> str:
    if isinstance(exc, SyntaxError) and exc.lineno:
        return f", line {exc.lineno}"
    frames = [
        frame for frame in traceback.extract_tb(exc.__traceback__) if Path(frame.filename) == path
    ]
    return f", line {frames[-1].lineno}" if frames else ""


def _note_misspelling(result: GunicornFile, name: str, value: Any) -> None:
    """A plain value under a name close to a setting's is likely a typo (``worker = 4``);
    anything else (modules, functions, helpers) is the file's own."""
    if not isinstance(value, (str, int, float, list, tuple)) or not name.islower():
        return
    guess = difflib.get_close_matches(name, GUNICORN_SETTINGS, n=1, cutoff=0.8)
    if guess:
        result.ignored.append(f"{name} (not a gunicorn setting; did you mean {guess[0]}?)")


def _translate(path: Path, name: str, value: Any) -> tuple[str, Any]:
    """``name = value`` as the wsgipool option's value, through its converter."""
    target = FIELDS[name]
    label = f"{path}: {name} = {value!r}"
    text = _as_text(name, value, label)
    if target == "app":
        return label, text
    return label, convert(target, text, label)


def _as_text(name: str, value: Any, label: str) -> Any:
    """What a Python value says, as the text of a wsgipool option; a list of addresses
    stays a list (an address may hold a comma)."""
    if name == "bind":
        return (value,) if isinstance(value, str) else tuple(value)
    if name in ("forwarded_allow_ips", "proxy_allow_ips") and isinstance(value, (list, tuple)):
        return ",".join(value)
    if name == "cert_reqs" and isinstance(value, int) and value in _CERT_REQS:
        return _CERT_REQS[value]
    if name == "umask" and isinstance(value, int) and not isinstance(value, bool):
        return format(value, "03o")  # 0o027 -> "027": the option's octal
    if name == "proxy_protocol" and isinstance(value, str):
        return "false" if value == "off" else "true"  # v1, v2, auto: wsgipool takes either
    if name == "sendfile" and isinstance(value, bool):
        return "on" if value else "off"
    if name == "worker_class" and isinstance(value, str):
        return _WORKER_CLASS_PATHS.get(value, value)
    if name in ("limit_request_line", "limit_request_field_size") and value == 0:
        return str(MAX_HEAD_SIZE)  # gunicorn's "unlimited": wsgipool's largest
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return value
    raise ConfigError(f"{label}: expected a string or a number")


def refused_environment_key(key: str) -> str | None:
    """Why ``key`` may not be set for the application (``-e``, ``raw_env``), or None.
    wsgipool's own variables would change the server too, and not at once but when it
    runs again (``--reload``, SIGHUP): they are options, given as options."""
    if key.startswith(ENV_PREFIX) or key == "GUNICORN_CMD_ARGS":
        return (
            f"{key} configures wsgipool itself: give it as an option, not as the app's environment"
        )
    return None


def _own_setting(result: GunicornFile, name: str, value: Any) -> None:
    label = f"{result.path}: {name} = {value!r}"
    if name == "chdir":
        result.chdir = _require(str, value, label)
    elif name == "raw_env":
        entries = [value] if isinstance(value, str) else list(value)
        for entry in entries:
            key, equals, text = _require(str, entry, label).partition("=")
            if not equals or not key:
                raise ConfigError(f"{label}: expected KEY=VALUE entries")
            problem = refused_environment_key(key)
            if problem:
                raise ConfigError(f"{label}: {problem}")
            result.environment[key] = text
    elif name == "logconfig_dict":
        result.logconfig_dict = _require(dict, value, label) or None
    elif name == "reload":
        result.reload = bool(value)
    elif name == "reload_extra_files":
        result.reload_extra_files = tuple(
            _require(str, item, label) for item in ([value] if isinstance(value, str) else value)
        )


def _require(kind: type, value: Any, label: str) -> Any:
    if not isinstance(value, kind):
        raise ConfigError(f"{label}: expected a {kind.__name__}")
    return value


# --- the hooks ------------------------------------------------------------------------------


class Settings:
    """``server.cfg`` and ``worker.cfg``: each setting under gunicorn's name, as wsgipool
    runs it (``cfg.workers``, ``cfg.bind``, ``cfg.timeout``), else as the file set it."""

    def __init__(self, config: Config, file_settings: Mapping[str, Any]) -> None:
        self.__dict__.update(file_settings)
        for name, target in FIELDS.items():
            if target != "app":
                self.__dict__[name] = getattr(config, target)
        self.__dict__["bind"] = list(config.bind)
        self.__dict__["worker_class_str"] = config.worker_class


class Server:
    """gunicorn's arbiter, as hooks use it."""

    def __init__(self, cfg: Settings, num_workers: int) -> None:
        self.pid = os.getpid()
        self.cfg = cfg
        self.log = log
        self.num_workers = num_workers
        self.WORKERS: dict[int, Worker] = {}


class Worker:
    """gunicorn's worker, as hooks use it: ``age`` counts the worker processes started."""

    def __init__(self, age: int, ppid: int, cfg: Settings) -> None:
        self.age = age
        self.pid: int | None = None
        self.ppid = ppid
        self.cfg = cfg
        self.log = log
        self.alive = True
        self.booted = False
        self.nr = 0  # requests handled


class Req:
    """gunicorn's request, as pre_request and post_request use it."""

    def __init__(self, request: Request, environ: dict[str, Any]) -> None:
        target = request.target
        self.method = request.method
        self.uri = target
        self.path, _, self.query = target.partition("?")
        self.version = request.version
        # gunicorn's: (NAME, value), names upper case.
        self.headers = [(name.upper(), value) for name, value in request.headers]
        self.environ = environ


class Resp:
    """gunicorn's response, as post_request uses it."""

    def __init__(self, status: str) -> None:
        self.status = status
        self.status_code = int(status.split(None, 1)[0]) if status[:1].isdigit() else None


class GunicornHooks(ProcessHooks):
    """The file's hooks, called at gunicorn's moments with gunicorn's arguments. A hook
    that raises is logged and the server goes on, except ``pre_request``, whose error is
    the request's (500), as in gunicorn."""

    def __init__(self, hooks: Mapping[str, Callable[..., Any]], cfg: Settings, workers: int):
        self._hooks = dict(hooks)
        self.cfg = cfg
        self.server = Server(cfg, workers)
        self.worker: Worker | None = None  # this process's, once it serves
        self._age = 0
        if "pre_request" in hooks or "post_request" in hooks:
            self.request_hooks = _RequestHooks(self)

    def _call(self, name: str, *args: Any) -> None:
        hook = self._hooks.get(name)
        if hook is None:
            return
        try:
            hook(*args)
        except Exception:
            log.exception("gunicorn hook %s failed", name)

    def _new_worker(self) -> Worker:
        self._age += 1
        return Worker(self._age, self.server.pid, self.cfg)

    def _serving_worker(self) -> Worker:
        if self.worker is None:  # One process: it is the server and its only worker.
            self.worker = self._new_worker()
            self.worker.pid = os.getpid()
        return self.worker

    def starting(self) -> None:
        self.server.pid = os.getpid()
        self._call("on_starting", self.server)

    def ready(self) -> None:
        self._call("when_ready", self.server)

    def reloading(self) -> None:
        self._call("on_reload", self.server)

    def workers_changed(self, new: int, old: int) -> None:
        self.server.num_workers = new
        self._call("nworkers_changed", self.server, new, old)

    def before_fork(self) -> object:
        worker = self._new_worker()
        self._call("pre_fork", self.server, worker)
        return worker

    def after_fork(self, worker: object, pid: int) -> None:
        assert isinstance(worker, Worker)
        worker.pid = pid
        self.server.WORKERS[pid] = worker

    def in_forked_child(self, worker: object) -> None:
        assert isinstance(worker, Worker)
        worker.pid = os.getpid()
        self.worker = worker
        self.server.WORKERS.clear()
        self._call("post_fork", self.server, worker)

    def worker_ready(self) -> None:
        worker = self._serving_worker()
        worker.booted = True
        self._call("post_worker_init", worker)

    def worker_interrupted(self) -> None:
        worker = self._serving_worker()
        worker.alive = False
        self._call("worker_int", worker)

    def worker_aborting(self) -> None:
        self._call("worker_abort", self._serving_worker())

    def worker_exiting(self) -> None:
        worker = self._serving_worker()
        worker.alive = False
        self._call("worker_exit", self.server, worker)

    def child_exited(self, pid: int) -> None:
        worker = self.server.WORKERS.pop(pid, None)
        if worker is not None:
            worker.alive = False
            self._call("child_exit", self.server, worker)

    def exiting(self) -> None:
        self._call("on_exit", self.server)


class _RequestHooks:
    """pre_request and post_request, for the gateway (``hooks.RequestHooks``)."""

    def __init__(self, owner: GunicornHooks) -> None:
        self._owner = owner
        self._pre = owner._hooks.get("pre_request")
        post = owner._hooks.get("post_request")
        self._post = None if post is None else _four_arguments(post)

    def before(self, request: Request, environ: dict[str, Any]) -> object:
        worker = self._owner._serving_worker()
        worker.nr += 1  # a plain counter for hooks to read; not wsgipool's own count
        req = Req(request, environ)
        req.start = time.monotonic()  # type: ignore[attr-defined]
        if self._pre is not None:
            self._pre(worker, req)
        return req

    def after(self, token: object, environ: dict[str, Any], status: str) -> None:
        if self._post is None:
            return
        try:
            self._post(self._owner._serving_worker(), token, environ, Resp(status))
        except Exception:
            log.exception("gunicorn hook post_request failed")


def _four_arguments(hook: Callable[..., Any]) -> Callable[..., Any]:
    """post_request as gunicorn accepts it: (worker, req), (worker, req, environ) or
    (worker, req, environ, resp)."""
    try:
        count = len(inspect.signature(hook).parameters)
    except (TypeError, ValueError):
        return hook
    if count == 2:
        return lambda worker, req, environ, resp: hook(worker, req)
    if count == 3:
        return lambda worker, req, environ, resp: hook(worker, req, environ)
    return hook


def make_hooks(file: GunicornFile, config: Config) -> GunicornHooks | None:
    """The file's hooks for a server running ``config``; None when it has none."""
    if not file.hooks:
        return None
    return GunicornHooks(file.hooks, Settings(config, file.settings), config.workers)
