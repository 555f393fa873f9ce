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

import pytest

from tests.helpers.corpus import Case, load_corpus
from tests.helpers.parsing import Outcome, drive

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
