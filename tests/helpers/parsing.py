"""The sans-IO parser driven the way the worker loop drives it (``drive``), and what every
parse must respect (``check_request_invariants``): shared by the parser's unit, property and
corpus tests and by the fuzz target (fuzz/fuzz_parser.py), so they all run one piece of code."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from wsgipool.http import (
    ChunkedBody,
    FixedLengthBody,
    HeadScanner,
    Limits,
    ProtocolError,
    Request,
    parse_head,
)

LIMITS = Limits()
# The statuses a ProtocolError may carry: anything else is a bug.
PROTOCOL_STATUSES = {400, 414, 417, 431, 501, 505}
TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
TOKEN = re.compile(f"[{re.escape(TCHARS)}]+")


@dataclass
class Outcome:
    """What a byte stream turned into: requests (in order), then how the stream ended."""

    requests: list[Request] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)  # one per request whose body finished
    status: int | None = None  # ProtocolError status, if one was raised
    incomplete: bool = False  # the parser was waiting for more bytes at the end

    @property
    def end(self) -> str:
        if self.status is not None:
            return str(self.status)
        return "incomplete" if self.incomplete else "ok"

    def summary(self) -> tuple[object, ...]:
        heads = tuple((r.method, r.target, r.version) for r in self.requests)
        return heads, tuple(self.bodies), self.end


def drive(pieces: Iterable[bytes], limits: Limits = LIMITS, read_limit: int = 65536) -> Outcome:
    """Feed ``pieces`` (TCP segments) through the protocol core like the worker loop does.

    After a ProtocolError nothing further is parsed. Any other exception propagates: that is
    a bug in the parser.
    """
    outcome = Outcome()
    buf = bytearray()
    scanner = HeadScanner(limits)
    decoder: ChunkedBody | FixedLengthBody | None = None
    body = bytearray()
    try:
        for piece in pieces:
            buf += piece
            while True:
                if decoder is None:
                    if not buf:
                        break
                    end = scanner.find(buf)
                    if end < 0:
                        break
                    head_bytes = bytes(buf[:end])
                    del buf[:end]
                    request = parse_head(head_bytes, limits)
                    outcome.requests.append(request)
                    body = bytearray()
                    if request.chunked:
                        decoder = ChunkedBody(limits)
                    elif request.content_length:
                        decoder = FixedLengthBody(request.content_length)
                    else:
                        outcome.bodies.append(b"")
                    continue
                data = decoder.read(buf, read_limit)
                if data is None:
                    break
                assert len(data) <= read_limit
                if data == b"":
                    outcome.bodies.append(bytes(body))
                    decoder = None
                else:
                    body += data
    except ProtocolError as exc:
        outcome.status = exc.status
        return outcome
    outcome.incomplete = decoder is not None or bool(buf)
    return outcome


def check_request_invariants(outcome: Outcome) -> None:
    for request in outcome.requests:
        assert TOKEN.fullmatch(request.method)
        assert request.version in ("HTTP/1.0", "HTTP/1.1")
        assert request.http11 is (request.version == "HTTP/1.1")
        assert not (request.chunked and request.content_length is not None)
        if request.chunked:
            assert request.http11
        if not request.http11:
            assert not request.expect_continue
        else:
            assert request.host is not None
        assert all(0x21 <= ord(c) <= 0x7E for c in request.target)
        assert "#" not in request.target
        for name, value in request.headers:
            assert TOKEN.fullmatch(name) and name == name.lower()
            assert value == value.strip(" \t")
            assert not any(c in value for c in "\r\n\x00")
