"""Dumps of the in-flight requests, each joined to its thread's Python stack; and the
``faulthandler`` dump registered in advance, for an interpreter wedged in C code.

Redaction: a dump shows what the scoreboard holds (the path without its query string,
allowlisted headers only) and stacks as file, line, function and source line, never a
local variable's value.

How the two dumps share one signal (SIGUSR2)
--------------------------------------------
1. The main thread installs the Python-level handler first (``threads.handle_signals``).
   Like every handler there it only stores a plain value and wakes a thread: it calls
   ``Watchdog.request_dump``, which bumps a counter and writes to the watchdog's
   ``WakePipe``; no lock, no log line, no formatting in the handler.
2. Then ``register_fault_dump(stream, SIGUSR2)`` registers faulthandler on the same
   signal with ``chain=True``. On SIGUSR2 the kernel now runs faulthandler's C handler
   first: it writes every thread's Python stack straight to the stream's descriptor,
   async-signal-safe, needing neither the GIL nor any lock, so it works while a thread
   holds the GIL forever in C code or the interpreter is otherwise wedged. Then it re-raises
   the signal to the handler it replaced, CPython's own, which flags the Python handler
   and writes the wake-up descriptor.
3. The Python handler runs on the main thread at its next bytecode; the watchdog thread
   wakes, formats ``format_in_flight`` (each in-flight request with its stack) and logs it.

A healthy process thus writes both: faulthandler's raw block ("Thread 0x... (most recent
call first)", one per thread, no request details) and, right after, the request dump,
whose blocks give each thread's ident in the same hex form so the two can be matched. A
wedged process writes only the first, and the missing request dump is the diagnosis.

The order matters, and so does what comes after:

- Register after the Python handler is installed: ``signal.signal`` for that signal
  replaces faulthandler's C handler silently (faulthandler is not told), so anything that
  installs a handler for it later must register again afterwards.
- Undo in reverse: the function ``register_fault_dump`` returns unregisters faulthandler,
  which puts back the handler it chained to; then restore the Python handlers.
- faulthandler writes to a file descriptor, bypassing logging: when the error log is
  reopened (log rotation), register again with the new stream. Its lines can land in the
  middle of a line another thread is writing to the same stream; give it a file of its
  own when that matters.
- Each process registers its own: under ``--workers`` the supervisor passes SIGUSR2 on to
  every worker, and each worker's dump names its pid and worker index.

wsgipool's threads block SIGUSR2 (``threads.PROCESS_SIGNALS``), so it reaches the main
thread or a thread the application started; either way faulthandler dumps all threads,
and CPython runs Python handlers on the main thread only.

Considered and left: a second signal for faulthandler alone (clean logs, but an operator
must know to send it exactly when in trouble, and the supervisor must pass on both);
``faulthandler.dump_traceback_later`` re-armed by the watchdog as a dead man's switch
(automatic, but it is a single process-wide timer that test runners and others also set).
"""

from __future__ import annotations

import datetime
import faulthandler
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from types import FrameType
from typing import TextIO

from .scoreboard import Scoreboard, SlotView, State, format_client, in_flight, printable


def thread_frames() -> dict[int, FrameType]:
    """Every thread's current frame, by ident. Keep the result briefly: a frame holds its
    locals alive."""
    return sys._current_frames()


def thread_stack(ident: int, frames: Mapping[int, FrameType] | None = None) -> str | None:
    """The Python stack of thread ``ident``, oldest call first, as ``traceback`` formats
    it (file, line, function, source line; no locals); None when it has no frame."""
    frame = (thread_frames() if frames is None else frames).get(ident)
    if frame is None:
        return None
    return "".join(traceback.format_stack(frame))


def thread_hex(ident: int) -> str:
    """A thread's ident as faulthandler writes it (``0x`` and one digit per pointer nibble)."""
    return f"0x{ident:0{_POINTER_DIGITS}x}"


_POINTER_DIGITS = 16 if sys.maxsize > 2**32 else 8


def describe(view: SlotView, now: float) -> str:
    """One line for a request in flight: request line, client, thread, state and times."""
    request = view.request
    assert request is not None
    parts = [
        f"elapsed {now - request.started:.3f}s",
        f"no progress for {now - view.last_progress:.3f}s",
        f"queue wait {request.queue_wait:.3f}s",
        f"in {view.bytes_in} B",
        f"out {view.bytes_out} B",
    ]
    if request.request_id:
        parts.append(f"request id {printable(request.request_id)}")
    return (
        f"{request.request_line} from {format_client(request.client)} "
        f"[{view.state.value}] on {view.thread_name} (thread {thread_hex(view.ident)}): "
        + ", ".join(parts)
    )


def indent(text: str, prefix: str = "    ") -> str:
    return "".join(prefix + line for line in text.splitlines(keepends=True))


def format_request(view: SlotView, now: float, stack: str | None) -> str:
    """One request's block: its line, its allowlisted headers, its thread's stack."""
    assert view.request is not None
    lines = [describe(view, now) + "\n"]
    for name, value in view.request.headers:
        lines.append(f"    header {printable(name)}: {printable(value)}\n")
    if stack is None:
        lines.append("    (the thread has no Python frame: it has exited)\n")
    else:
        lines.append(f"    Stack of {view.thread_name} (most recent call last):\n")
        lines.append(indent(stack, "    "))
    return "".join(lines)


def format_in_flight(
    scoreboard: Scoreboard,
    *,
    process_label: str,
    worker_index: int | None,
    now: float | None = None,
    wall_now: float | None = None,
) -> str:
    """The dump: a header naming the process (pid, worker index, wall-clock time, threads
    by state), then one block per in-flight request, oldest first, with its stack.

    ``now`` is monotonic and ``wall_now`` a wall-clock time, both defaulting to the clocks.
    Reads the scoreboard and the frames without a lock; call it from a thread, never from
    a signal handler.
    """
    views = scoreboard.read()
    frames = thread_frames()
    now = time.monotonic() if now is None else now
    wall_now = time.time() if wall_now is None else wall_now
    busy = in_flight(views)
    blocks = [_header(process_label, worker_index, wall_now, views, len(busy))]
    blocks.extend(format_request(view, now, thread_stack(view.ident, frames)) for view in busy)
    return "".join(blocks)


def _header(
    process_label: str, worker_index: int | None, wall_now: float, views: list[SlotView], busy: int
) -> str:
    where = f"{process_label} pid {os.getpid()}"
    if worker_index is not None:
        where += f" worker {worker_index}"
    when = datetime.datetime.fromtimestamp(wall_now).astimezone().isoformat(timespec="milliseconds")
    counts = {state: 0 for state in State}
    for view in views:
        counts[view.state] += 1
    states = ", ".join(f"{count} {state.value}" for state, count in counts.items() if count)
    requests, threads = _count(busy, "request"), _count(len(views), "thread")
    return f"{where} at {when}: {requests} in flight; {threads} ({states or 'none'})\n"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def register_fault_dump(
    file: TextIO | int, signum: int | None = None, *, chain: bool = True
) -> Callable[[], None]:
    """Have faulthandler write every thread's stack to ``file`` when ``signum`` (default
    SIGUSR2) arrives, from C, even with the interpreter wedged; return the undo.

    Call it after the Python handler for ``signum`` is installed, and again after anything
    installs one later or after ``file`` is reopened (see the module docstring). ``file``
    must stay open while registered. Where signals cannot be registered (Windows) this does
    nothing.
    """
    if signum is None:
        signum = getattr(signal, "SIGUSR2", 0)
    if not signum or not hasattr(faulthandler, "register"):
        return _nothing
    faulthandler.register(signum, file=file, all_threads=True, chain=chain)

    def undo() -> None:
        faulthandler.unregister(signum)

    return undo


def _nothing() -> None:
    pass
