"""Run a WSGI app under Werkzeug's threaded development server.

Usage: python werkzeug_serve.py MODULE:ATTR HOST PORT

Werkzeug has no thread-count option: ``threaded=True`` starts one thread per
connection. The per-request access log is silenced so that it is not the
bottleneck (the other servers do not log access by default either).
"""

from __future__ import annotations

import logging
import sys

from _common import load_app
from werkzeug.serving import run_simple


def main(argv: list[str]) -> None:
    if len(argv) != 3:
        raise SystemExit(__doc__)
    target, host, port = argv
    app = load_app(target)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    run_simple(host, int(port), app, threaded=True, use_reloader=False, use_debugger=False)


if __name__ == "__main__":
    main(sys.argv[1:])
