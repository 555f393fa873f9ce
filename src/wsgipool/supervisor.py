"""Moved: the worker-process supervisor (``--workers``) is ``wsgipool.supervisors.workers``
now, and ``reopen_log_files`` is in ``wsgipool.accesslog``. This module keeps the
public names it had, for code that imports them from here.
"""

from .accesslog import reopen_log_files
from .supervisors.workers import run_worker_processes

run_supervisor = run_worker_processes  # its name before the move

__all__ = ["reopen_log_files", "run_supervisor"]
