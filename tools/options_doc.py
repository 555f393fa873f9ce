"""Write docs/options.md from the real argument parser, so the reference cannot drift.

Run: python tools/options_doc.py  (tests/test_docs.py fails when the file is stale).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from wsgipool.cli import build_parser
from wsgipool.config import MAX_SECONDS, MIN_SECONDS, Config
from wsgipool.options import BY_FIELD, env_name

DOC = Path(__file__).resolve().parent.parent / "docs" / "options.md"

HEADER = f"""# CLI reference

Generated from the argument parser of the `wsgipool` command (the one `wsgipool --help`
prints) by `tools/options_doc.py`; do not edit by hand: `tests/test_docs.py` fails when
this page no longer matches the parser. `wsgipool --version` prints the version.

Sizes take K, M or G suffixes (binary multiples: `10M` is 10,485,760 bytes); durations
are seconds, fractions allowed (`2.5`), from {MIN_SECONDS:f} (a microsecond: the kernel
counts socket timeouts in whole ones) to {MAX_SECONDS} (a year). Numbers are written in
ASCII digits: `1_000`, `+5`, `nan` or `inf` are refused. Options with a largest value say
it (see [Configuration and logging](configuration.md#limits) for why).
"""

SERVER_OPTIONS = """
## Server options

Each of these can also be set in the environment (the name under the option), or
under `[tool.wsgipool]` in `pyproject.toml` with the option's name (`queue-limit = 64` or
`queue_limit = 64`); the command line wins over the environment, which wins over the file
(see [Configuration and logging](configuration.md)). Each is also a keyword of
`wsgipool.serve()`, `wsgipool.Server()` and `wsgipool.Config()`, with dashes as
underscores: `--queue-limit 64` is `queue_limit=64`, `--bind` is `bind=[...]`.

<div class="options" markdown>

| option<br>environment | default | meaning |
|---|---|---|
"""

COMMAND_LINE_OPTIONS = """
</div>

## The application, logging and development

Command line only, except `APP` (see its row).

<div class="options" markdown>

| option | default | meaning |
|---|---|---|
"""

# What the help text names: other options, access log atoms, environment variables.
_CODE = re.compile(r"(?<![\w`-])--[a-z][a-z-]*|%\([^)]*\)s|\bWSGIPOOL_[A-Z_]+\b")
_DEFAULT = re.compile(r"\s*\(default: (.*)\)$")


def _code(text: str) -> str:
    return f"`{text}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _names(action: argparse.Action) -> str:
    if not action.option_strings:
        return _code(str(action.metavar or action.dest))
    metavar = action.metavar or (action.dest.upper() if action.nargs != 0 else "")
    return ", ".join(
        _code(f"{option} {metavar}" if metavar else option) for option in action.option_strings
    )


def _row(action: argparse.Action) -> tuple[bool, str]:
    """Whether ``action`` sets a server option, and its table row."""
    server_option = action.dest in BY_FIELD
    help_text = (action.help or "").replace("%%", "%")
    # The default, as --help shows it: at the end of the help text, in parentheses.
    said = _DEFAULT.search(help_text)
    default = said.group(1) if said else ""
    if said:
        help_text = help_text[: said.start()]
    help_text = _CODE.sub(lambda match: _code(match.group(0)), help_text)
    if action.nargs == 0:
        shown = "off"  # A flag.
    elif server_option and getattr(Config(), action.dest) != "":
        shown = _code(default)  # The value Config has, as --help shows it.
    else:
        shown = _CODE.sub(lambda match: _code(match.group(0)), default)  # Said in words.
    if action.choices:
        help_text += "; one of " + ", ".join(_code(str(choice)) for choice in action.choices)
    names = _names(action)
    if server_option:
        names += "<br>" + _code(env_name(action.dest))
    cells = [names, shown, help_text]
    return server_option, "| " + " | ".join(_cell(cell) for cell in cells) + " |"


def render(parser: argparse.ArgumentParser) -> str:
    server_rows: list[str] = []
    other_rows: list[str] = []
    for action in parser._actions:
        # Hidden ones too: other servers' spellings (docs/migrating.md).
        if action.help == argparse.SUPPRESS or isinstance(
            action, (argparse._HelpAction, argparse._VersionAction)
        ):
            continue
        server_option, row = _row(action)
        (server_rows if server_option else other_rows).append(row)
    return (
        HEADER
        + SERVER_OPTIONS
        + "\n".join(server_rows)
        + "\n"
        + COMMAND_LINE_OPTIONS
        + "\n".join(other_rows)
        + "\n\n</div>\n"
    )


def main() -> int:
    text = render(build_parser())
    if "--check" in sys.argv:
        return 0 if DOC.read_text() == text else 1
    DOC.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
