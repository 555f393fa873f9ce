"""The package's import graph: no cycles, and the protocol core imports nothing around it.

Read from the source with ``ast`` (nothing is imported), counting imports inside functions
too: a deferred import hides a cycle from Python, not from a reader. Imports under
``if TYPE_CHECKING:`` are annotations only and do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "wsgipool"
# What the sans-IO core may import from the rest of the package.
HTTP_MAY_IMPORT = {"wsgipool._version"}


def module_name(path: Path) -> str:
    parts = ["wsgipool", *path.relative_to(PACKAGE).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str) -> set[str]:
    """The package's modules that module ``name`` imports."""
    tree = ast.parse(MODULES[name].read_text(), str(MODULES[name]))
    here = name if is_package(name) else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in MODULES)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            if base not in MODULES:
                return
            for alias in node.names:
                # `from . import x`: the submodule x when there is one, else the package.
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in MODULES else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(name)
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_the_graph_is_read():
    # A guard for the reader above: these edges exist in any layout of the package.
    assert "wsgipool.http.parser" in GRAPH["wsgipool.http"]
    assert "wsgipool.config" in GRAPH["wsgipool.server"]


def test_no_import_cycles():
    assert cycles(GRAPH) == []


def test_the_protocol_core_imports_nothing_around_it():
    outside = {
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if name.startswith("wsgipool.http")
        for target in targets
        if not target.startswith("wsgipool.http") and target not in HTTP_MAY_IMPORT
    }
    assert sorted(outside) == []


def test_framework_glue_does_not_import_the_command_line():
    glue = [name for name in GRAPH if name.startswith("wsgipool.integrations")]
    assert glue
    assert sorted(f"{name} imports cli" for name in glue if "wsgipool.cli" in GRAPH[name]) == []


def test_the_tarjan_reader_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_test_modules_share_helpers_not_each_other():
    """Tests, the fuzz target and the benchmarks share tests/helpers/: no test module
    imports another test module or conftest (one copy of each helper, one place)."""
    root = PACKAGE.parent.parent
    offenders = []
    for path in [
        *root.glob("tests/**/*.py"),
        *root.glob("fuzz/*.py"),
        *root.glob("benchmarks/*.py"),
    ]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                last = name.rpartition(".")[2]
                if last == "conftest" or last.startswith("test_"):
                    offenders.append(f"{path.relative_to(root)} imports {name}")
    assert offenders == []
