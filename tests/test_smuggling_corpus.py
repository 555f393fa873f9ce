"""Request-smuggling regression corpus, run through the sans-IO parser.

Each ``tests/corpus/*.txt`` file holds cases in this format::

    # comment (anywhere)
    [case-name]
    send = <bytes>        one or more; each is one TCP segment, concatenated in order
    expect = <end>        400 / 414 / 417 / 431 / 501 / 505: the ProtocolError that ends the
                          stream; ok: the stream ends on a message boundary; incomplete: the
                          parser is waiting for more bytes
    requests = <n>        how many request heads were parsed before the stream ended
    targets = /a /b       optional: their request-targets, in order
    hosts = a b           optional: their Request.host values ("-" for None)
    body = <bytes>        optional, repeated: the decoded body of each finished request

``<bytes>`` is printable ASCII with escapes ``\\r \\n \\t \\\\ \\xHH``; a line may not end in
whitespace (write ``\\x20``), so no editor can silently change a case. Every case is fed three
ways (as segmented in the file, whole, one byte at a time) and must give the same outcome.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from test_parser import Outcome, drive

CORPUS = Path(__file__).parent / "corpus"
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


CASES = load_corpus()


def test_corpus_is_not_empty():
    assert len(CASES) >= 100


def check(case: Case, outcome: Outcome, how: str) -> None:
    label = f"{case.name} ({how}, {case.where})"
    assert outcome.end == case.expect, f"{label}: ended {outcome.end}, expected {case.expect}"
    assert len(outcome.requests) == case.requests, f"{label}: {outcome.requests}"
    if case.targets is not None:
        assert [r.target for r in outcome.requests] == case.targets, label
    if case.hosts is not None:
        assert [r.host for r in outcome.requests] == case.hosts, label
    if case.bodies is not None:
        assert outcome.bodies == case.bodies, label


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_corpus(case):
    data = b"".join(case.sends)
    feeds = {
        "as-segmented": case.sends,
        "whole": [data],
        "bytewise": [bytes([b]) for b in data],
    }
    for how, pieces in feeds.items():
        check(case, drive(pieces), how)
