"""The documented path of the drop-in entry points, which live in ``integrations/``:
``run_simple`` (``integrations/werkzeug.py``) and ``paste_server_runner``
(``integrations/paste.py``)."""

from __future__ import annotations

from .integrations.paste import options_from_strings, paste_server_runner
from .integrations.werkzeug import run_simple

__all__ = ["options_from_strings", "paste_server_runner", "run_simple"]
