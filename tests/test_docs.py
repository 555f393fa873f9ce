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
