"""Unit tests for the response side of the sans-IO HTTP/1.1 core (``wsgipool.http.response``).

No sockets: each test hands the protocol functions a status, fields and what the request
said, and reads the bytes that would go on the wire, as ``test_parser.py`` does for requests.
Expectations come from RFC 9110 / RFC 9112 (section numbers in ids and comments).
"""

from __future__ import annotations

import ast
from pathlib import Path

import wsgipool.http

HTTP_PACKAGE = Path(wsgipool.http.__file__).parent


# --------------------------------------------------------------------------------------------
# The protocol core stands alone
# --------------------------------------------------------------------------------------------


def _wsgipool_imports(path: Path) -> list[str]:
    """The wsgipool modules ``path`` (a module of wsgipool.http) imports, as absolute names."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.startswith("wsgipool")]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module and node.module.startswith("wsgipool"):
                    found.append(node.module)
                continue
            base = ["wsgipool", "http"][: 2 - (node.level - 1)]
            module = ".".join([*base, *([node.module] if node.module else [])])
            if node.module:
                found.append(module)
            else:
                found += [f"{module}.{alias.name}" for alias in node.names]
    return found


def test_http_imports_nothing_of_wsgipool_but_itself_and_the_version():
    """The sans-IO core must not pull in the server (``from .. import __version__`` did, by
    way of the package root): only ``wsgipool.http.*`` and ``wsgipool._version``."""
    modules = sorted(HTTP_PACKAGE.glob("*.py"))
    assert modules
    for path in modules:
        for name in _wsgipool_imports(path):
            assert name.startswith("wsgipool.http.") or name in (
                "wsgipool.http",
                "wsgipool._version",
            ), f"{path.name} imports {name}"
