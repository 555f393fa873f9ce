"""wsgipool: a strict, fast, multithreaded HTTP/1.1 WSGI server.

One listener thread accepts connections and watches idle ones; ready connections wait on a
bounded queue; a pool of worker threads parses each request, runs the WSGI application and
streams its response.
"""

from __future__ import annotations

from ._version import __version__
from .config import Config, ConfigError
from .integrations.werkzeug import run_simple
from .launch import serve
from .server import Server

__all__ = ["Config", "ConfigError", "Server", "__version__", "run_simple", "serve"]
