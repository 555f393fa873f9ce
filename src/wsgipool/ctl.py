"""``wsgipool ctl [--socket PATH] COMMAND [--json]``: ask a running server (control.py).

Human-readable output by default, the server's JSON answer with ``--json``. Exit codes:
0 answered; 1 some worker process did not answer (each says why); 2 the server could
not be asked (no socket, refused, a bad command): one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from .control import COMMANDS, FANOUT_TIMEOUT, Answer, ask_all
from .options import parse_count
from .scoreboard import printable
from .supervisors.process import EXIT_USAGE

# The supervisor waits FANOUT_TIMEOUT for its worker processes; then its answer travels.
CLIENT_TIMEOUT = FANOUT_TIMEOUT + 5.0
SOCKET_VARIABLE = "WSGIPOOL_CONTROL_SOCKET"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="wsgipool ctl",
        description="Ask a server started with --control-socket PATH.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "command",
        metavar="COMMAND",
        choices=COMMANDS,
        help="stats, requests (in flight), threads (every stack), threads N (resize the "
        "pool of worker threads of every process), workers, drain (stop accepting; a stop "
        "signal ends the process) or reopen-logs",
    )
    parser.add_argument(
        "count",
        metavar="N",
        nargs="?",
        type=parse_count,
        help="with threads: resize every process's pool to N worker threads",
    )
    parser.add_argument(
        "--socket",
        metavar="PATH",
        default=os.environ.get(SOCKET_VARIABLE, ""),
        help=f"the server's --control-socket (default: ${SOCKET_VARIABLE})",
    )
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")
    parser.add_argument(
        "--stacks", action="store_true", help="requests: each with its thread's stack"
    )
    return parser


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.socket:
        parser.error(f"no control socket: pass --socket PATH or set {SOCKET_VARIABLE}")
    if args.stacks and args.command != "requests":
        parser.error("--stacks goes with requests")
    if args.count is not None and args.command != "threads":
        parser.error(f"{args.command} takes no number (threads N resizes the pool)")
    request: dict[str, Any] = {"command": args.command}
    if args.stacks:
        request["stacks"] = True
    if args.count is not None:
        request["count"] = args.count
    answer = ask_all([args.socket], request, CLIENT_TIMEOUT)[0]
    if not answer.get("ok"):
        print(f"wsgipool ctl: error: {answer.get('error')}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        print(render(args.command, answer), end="")
    unanswered = any("error" in entry for entry in answer["processes"])
    return 1 if unanswered else 0


def render(command: str, answer: Answer) -> str:
    """The answer to ``command`` for a person."""
    if command == "workers":
        return _workers(answer["processes"])
    lines = []
    supervisor = answer.get("supervisor")
    if supervisor is not None and command in ("drain", "reopen-logs"):
        lines.append(f"supervisor (pid {supervisor['pid']}): {_done(command, supervisor)}\n")
    if supervisor is not None and "threads" in supervisor:
        lines.append(
            f"supervisor (pid {supervisor['pid']}): worker processes started from now on "
            f"get {supervisor['threads']} threads\n"
        )
    for entry in answer["processes"]:
        if "error" in entry:
            lines.append(f"{_who(entry)}: {entry['error']}\n")
        else:
            lines.append(RENDERERS[command](entry))
    if not answer["processes"]:
        lines.append("no worker process is running\n")
    return "".join(lines)


def _who(entry: dict[str, Any]) -> str:
    if entry.get("worker") is None:
        return f"pid {entry['pid']}"
    return f"worker {entry['worker']} (pid {entry['pid']})"


def _done(command: str, part: dict[str, Any]) -> str:
    if command == "drain":
        return "draining: no longer accepting connections"
    return f"reopened {part['reopened']} log file(s)"


def _stats(entry: dict[str, Any]) -> str:
    gauges = entry["gauges"]
    threads = ", ".join(
        f"{gauges['threads_' + state]} {state}" for state in ("idle", "reading", "app", "sending")
    )
    return (
        f"{_who(entry)}: up {entry['uptime']:.1f}s, {entry['requests']} requests"
        f"{' (draining)' if entry['draining'] else ''}; "
        f"{gauges['active_requests']} in flight, {gauges['stuck_requests']} stuck; "
        f"queue {gauges['queue_length']} of {gauges['queue_limit']}; "
        f"{entry['threads']} threads: {threads}; connections: "
        f"{gauges['connections_active']} active, {gauges['connections_idle']} idle\n"
    )


def _requests(entry: dict[str, Any]) -> str:
    return str(entry["text"])


def _threads(entry: dict[str, Any]) -> str:
    if "resized" in entry:
        before, now = entry["resized"]
        return f"{_who(entry)}: {now} worker threads (were {before})\n"
    lines = [f"{_who(entry)}: {len(entry['threads'])} threads\n"]
    for thread in entry["threads"]:
        lines.append(f"  Thread {printable(thread['name'])} ({thread['thread_id']}):\n")
        stack = thread["stack"] or "(no Python frame)\n"
        lines.extend("    " + line for line in stack.splitlines(keepends=True))
    return "".join(lines)


def _workers(entries: list[dict[str, Any]]) -> str:
    rows = [("WORKER", "PID", "STATE", "AGE", "REQUESTS")]
    for entry in entries:
        requests = entry.get("requests")
        rows.append(
            (
                "-" if entry["worker"] is None else str(entry["worker"]),
                str(entry["pid"]),
                entry["state"],
                f"{entry['age']:.1f}s",
                entry.get("error", "") if requests is None else str(requests),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        + "\n"
        for row in rows
    )


def _drained(entry: dict[str, Any]) -> str:
    return f"{_who(entry)}: {_done('drain', entry)}\n"


def _reopened(entry: dict[str, Any]) -> str:
    return f"{_who(entry)}: {_done('reopen-logs', entry)}\n"


RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "stats": _stats,
    "requests": _requests,
    "threads": _threads,
    "drain": _drained,
    "reopen-logs": _reopened,
}
