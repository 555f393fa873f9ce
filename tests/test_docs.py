"""The docs that are generated from code stay in step with it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_options_reference_is_current():
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "options_doc.py"), "--check"], cwd=ROOT
    )
    assert result.returncode == 0, "docs/options.md is stale: run python tools/options_doc.py"


def test_readme_first_block_has_two_commands():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```\w*\n(.*?)```", readme, re.S)
    assert block is not None
    commands = [line for line in block.group(1).splitlines() if line.strip()]
    assert len(commands) == 2
    assert "examples" in commands[0] and "wsgipool" in commands[0]
    assert commands[1] == "./tools/test.sh"


def test_proxy_configurations_in_the_docs_are_tested():
    """The nginx and HAProxy blocks of docs/deployment.md are marked ``<!-- tested: NAME -->``
    and tests/test_integration_proxies.py runs the proxies with them, loaded by those names.
    This keeps the two in step even where nginx or HAProxy is missing (those tests skip),
    and no other page may carry an untested nginx or HAProxy configuration."""
    docs = (ROOT / "docs" / "deployment.md").read_text()
    tests = (ROOT / "tests" / "test_integration_proxies.py").read_text()
    marked = re.findall(r"<!-- tested: ([\w-]+)[^>]*-->\n```(nginx|haproxy)\n", docs)
    assert {name for name, _ in marked} == {
        "nginx",
        "haproxy-http",
        "haproxy-proxy-v2",
        "haproxy-tls",
        "nginx-tls",
    }
    for name, _language in marked:
        assert re.search(rf'\bsite\(\s*"{name}"', tests), f"no test loads the {name} block"
    for page in sorted((ROOT / "docs").glob("*.md")):
        blocks = re.findall(r"^```(?:nginx|haproxy)$", page.read_text(), re.M)
        expected = len(marked) if page.name == "deployment.md" else 0
        assert len(blocks) == expected, f"{page.name}: an nginx or HAProxy block not tested"


def test_readme_layout_names_every_module():
    """The README's Layout section names every module (a package's ``__init__.py`` aside):
    a newcomer finds each one's job there."""
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout") :]
    layout = layout[: layout.index("\n## ")] if "\n## " in layout else layout
    package = ROOT / "src" / "wsgipool"
    modules = {
        path.name
        for path in package.rglob("*.py")
        if path.name != "__init__.py" or path.parent == package
    }
    assert sorted(name for name in modules if f"`{name}`" not in layout) == []
