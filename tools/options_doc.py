"""Write docs/options.md from the real argument parser, so the reference cannot drift.

Run: python tools/options_doc.py  (tests/test_docs.py fails when the file is stale).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wsgipool.cli import build_parser

DOC = Path(__file__).resolve().parent.parent / "docs" / "options.md"

HEADER = """# Options

Generated from `wsgipool --help` by `tools/options_doc.py`; do not edit by hand.
Each option is also a keyword of `wsgipool.serve()`, `wsgipool.Server()` and
`wsgipool.Config()`, with dashes as underscores (`--queue-limit 64` is `queue_limit=64`;
`--bind` is `bind=[...]`). Sizes take K, M or G suffixes (binary multiples).

| option | default | meaning |
|---|---|---|
"""


def render(parser: argparse.ArgumentParser) -> str:
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        if not action.option_strings:
            names = f"`{action.metavar or action.dest}`"
        else:
            metavar = action.metavar or (action.dest.upper() if action.nargs != 0 else "")
            names = ", ".join(
                f"`{option}{' ' + metavar if metavar else ''}`" for option in action.option_strings
            )
        default = action.default
        if default in (None, argparse.SUPPRESS) or action.nargs == 0:
            shown = "" if action.nargs != 0 else "off"
        elif default == "":
            shown = "(none)"
        else:
            shown = f"`{default}`"
        help_text = (action.help or "").replace("%%", "%").replace("|", "\\|")
        if action.choices:
            help_text += " (" + ", ".join(str(choice) for choice in action.choices) + ")"
        rows.append(f"| {names} | {shown} | {help_text} |")
    return HEADER + "\n".join(rows) + "\n"


def main() -> int:
    text = render(build_parser())
    if "--check" in sys.argv:
        return 0 if DOC.read_text() == text else 1
    DOC.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
