"""The request-smuggling corpus (``tests/corpus/*.txt``; the format is described in
tests/test_smuggling_corpus.py): read into ``Case`` objects for its test and for the fuzz
target's seeds."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
KEYS = {"send", "expect", "requests", "targets", "hosts", "body"}
ENDS = {"ok", "incomplete", "400", "414", "417", "431", "501", "505"}
ESCAPE = re.compile(rb"\\(?:x([0-9A-Fa-f]{2})|([rnt\\]))")
SIMPLE_ESCAPES = {b"r": b"\r", b"n": b"\n", b"t": b"\t", b"\\": b"\\"}


def unescape(text: str, where: str) -> bytes:
    raw = text.encode("ascii")
    stray = ESCAPE.sub(b"", raw)
    assert b"\\" not in stray, f"{where}: unknown escape in {text!r}"

    def replace(match: re.Match[bytes]) -> bytes:
        if match.group(1):
            return bytes([int(match.group(1), 16)])
        return SIMPLE_ESCAPES[match.group(2)]

    return ESCAPE.sub(replace, raw)


@dataclass
class Case:
    name: str
    where: str
    sends: list[bytes] = field(default_factory=list)
    expect: str = ""
    requests: int = -1
    targets: list[str] | None = None
    hosts: list[str | None] | None = None
    bodies: list[bytes] | None = None


def load_corpus() -> list[Case]:
    cases: list[Case] = []
    for path in sorted(CORPUS.glob("*.txt")):
        current: Case | None = None
        for number, line in enumerate(path.read_text("ascii").splitlines(), 1):
            where = f"{path.name}:{number}"
            assert line == line.rstrip(), f"{where}: trailing whitespace (use \\x20)"
            assert all(" " <= c <= "~" for c in line), f"{where}: raw control or non-ASCII"
            if not line or line.startswith("#"):
                continue
            header = re.fullmatch(r"\[([a-z0-9][a-z0-9.-]*)\]", line)
            if header:
                current = Case(header.group(1), where)
                cases.append(current)
                continue
            entry = re.fullmatch(r"([a-z]+) =(?: (.*))?", line)
            assert entry and entry.group(1) in KEYS, f"{where}: cannot read {line!r}"
            assert current is not None, f"{where}: entry before the first [case]"
            key, value = entry.group(1), entry.group(2) or ""
            if key == "send":
                current.sends.append(unescape(value, where))
            elif key == "expect":
                assert value in ENDS, f"{where}: unknown expect {value!r}"
                current.expect = value
            elif key == "requests":
                current.requests = int(value)
            elif key == "targets":
                current.targets = value.split()
            elif key == "hosts":
                current.hosts = [None if h == "-" else h for h in value.split()]
            else:
                current.bodies = [*(current.bodies or []), unescape(value, where)]
    names = [case.name for case in cases]
    duplicates = {name for name in names if names.count(name) > 1}
    assert not duplicates, f"duplicate case names: {sorted(duplicates)}"
    for case in cases:
        assert case.sends and case.expect and case.requests >= 0, f"{case.where}: incomplete"
    return cases
