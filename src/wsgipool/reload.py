"""Moved: the reloader is ``wsgipool.supervisors.reloader`` now, and the helpers it shares
with the worker-process supervisor are in ``wsgipool.supervisors.process``. This module
keeps the public names it had, for code that imports them from here.
"""

from .supervisors.process import INHERITED_FDS_ENV, KILL_MARGIN, is_reloader_child
from .supervisors.reloader import POLL_ENV, default_command, run_with_reloader

__all__ = [
    "INHERITED_FDS_ENV",
    "KILL_MARGIN",
    "POLL_ENV",
    "default_command",
    "is_reloader_child",
    "run_with_reloader",
]
