"""Run a WSGI app under cheroot with a fixed pool and raised connection limits.

Usage: python cheroot_serve.py MODULE:ATTR HOST PORT THREADS MAX_CONNECTIONS IDLE_TIMEOUT

The ``cheroot`` command line cannot set ``keep_alive_conn_limit``, whose
default (10) makes cheroot answer ``Connection: close`` as soon as more than
ten keep-alive connections are waiting, nor its listen backlog (5). Both are
raised here, in line with the connection limits raised on the other peers
(see docs/benchmarks.md, "Server settings").
"""

from __future__ import annotations

import sys

from _common import load_app
from cheroot.wsgi import Server

LISTEN_BACKLOG = 1024


def main(argv: list[str]) -> None:
    if len(argv) != 6:
        raise SystemExit(__doc__)
    target, host, port, threads, max_connections, idle_timeout = argv
    server = Server(
        (host, int(port)),
        load_app(target),
        numthreads=int(threads),
        max=int(threads),
        request_queue_size=LISTEN_BACKLOG,
        timeout=int(idle_timeout),
    )
    server.keep_alive_conn_limit = int(max_connections)
    server.safe_start()


if __name__ == "__main__":
    main(sys.argv[1:])
