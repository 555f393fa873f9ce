"""Coverage-guided fuzz target for the sans-IO HTTP/1.1 parser (atheris, i.e. libFuzzer).

Every input is a byte stream a client might send on one connection, plus two option bytes that
choose how it is cut into TCP segments, which limits apply and how much a body read may take.
The stream goes through ``drive()`` from ``tests/helpers/parsing.py``, the same loop the unit tests
use to play the worker (HeadScanner.find -> parse_head -> FixedLengthBody / ChunkedBody ->
next pipelined head), so the fuzzer and the tests exercise one piece of code.

A finding is any exception other than ``ProtocolError`` (drive() lets everything else escape),
a ``ProtocolError`` whose status is not one the parser defines, a parsed ``Request`` that breaks
an invariant (``check_request``), or a stream whose framing depends on where it was cut.

Input layout (``encode_input`` builds one)::

    byte 0   bit 0      limits: 0 = Limits(), 1 = SMALL_LIMITS
             bits 1-2   segmentation: 0 whole, 1 one byte per segment,
                        2 segments of (byte 1 + 1) bytes, 3 up to 16 cuts drawn from byte 1
             bits 3-7   read limit: READ_LIMITS[bits 3-7]
    byte 1   parameter of the segmentation
    rest     the stream

Run (see docs/fuzzing.md)::

    python fuzz/fuzz_parser.py -max_total_time=600 fuzz/work fuzz/corpus   # fuzz
    python fuzz/fuzz_parser.py crash-<sha1>                                # replay a finding
    python fuzz/fuzz_parser.py --make-corpus                               # rebuild the seeds
"""

from __future__ import annotations

import gc
import hashlib
import itertools
import random
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FUZZ_DIR = Path(__file__).resolve().parent
ROOT = FUZZ_DIR.parent
CORPUS_DIR = FUZZ_DIR / "corpus"
DICTIONARY = FUZZ_DIR / "http.dict"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for tests.helpers, when run as a script

from tests.helpers.corpus import load_corpus  # noqa: E402
from tests.helpers.parsing import (  # noqa: E402
    LIMITS,
    PROTOCOL_STATUSES,
    Outcome,
    check_request_invariants,
    drive,
)

from wsgipool.http import Limits, Request, _abnf  # noqa: E402

SMALL_LIMITS = Limits(
    max_request_line=32, max_header_size=128, max_header_count=4, max_chunk_line=16
)
# Index 0 is the server's own read size; the rest make body reads stop at awkward places.
READ_LIMITS = (65536, *range(1, 17), 31, 32, 33, 63, 64, 65, 127, 128, 255, 256, 1000, 4095, 4096)
READ_LIMITS += (8192, 16384)
assert len(READ_LIMITS) == 32
SEGMENTATIONS = ("whole", "bytewise", "stride", "random")
MAX_RANDOM_CUTS = 16
# What the fuzzer measures coverage of (wsgipool.http.response is not reached from here).
PARSER_MODULES = ("wsgipool.http.parser", "wsgipool.http.errors", "wsgipool.http._abnf")


def decode_input(data: bytes) -> tuple[Limits, str, int, int, bytes]:
    """Split a fuzzer input into (limits, segmentation, parameter, read limit, stream)."""
    options = data[0] if data else 0
    parameter = data[1] if len(data) > 1 else 0
    limits = SMALL_LIMITS if options & 1 else LIMITS
    segmentation = SEGMENTATIONS[(options >> 1) & 3]
    return limits, segmentation, parameter, READ_LIMITS[options >> 3], data[2:]


def encode_input(
    stream: bytes,
    *,
    small: bool = False,
    segmentation: str = "whole",
    parameter: int = 0,
    read_limit_index: int = 0,
) -> bytes:
    """The fuzzer input that ``decode_input`` turns back into these choices."""
    options = int(small) | SEGMENTATIONS.index(segmentation) << 1 | read_limit_index << 3
    return bytes([options, parameter]) + stream


def segment(stream: bytes, segmentation: str, parameter: int) -> list[bytes]:
    """Cut ``stream`` into the TCP segments the parser is fed."""
    if segmentation == "whole" or not stream:
        return [stream]
    if segmentation == "bytewise":
        return [stream[i : i + 1] for i in range(len(stream))]
    if segmentation == "stride":
        size = parameter + 1
        return [stream[i : i + size] for i in range(0, len(stream), size)]
    rng = random.Random(parameter)
    cuts = {rng.randrange(len(stream) + 1) for _ in range(rng.randrange(MAX_RANDOM_CUTS + 1))}
    points = [0, *sorted(cuts), len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(points)]


def check_request(request: Request) -> None:
    """Invariants of every parsed request, beyond those the property tests check."""
    for name in ("method", "target", "version", "path", "query"):
        value = getattr(request, name)
        assert isinstance(value, str), (name, value)
        assert all(ord(c) < 256 for c in value), (name, value)
    assert request.content_length is None or request.content_length >= 0, request.content_length
    assert not (request.chunked and request.content_length is not None), request
    assert request.has_body == (request.chunked or bool(request.content_length)), request
    assert repr(request).startswith("<Request "), request
    for name, value in request.headers:
        assert all(ord(c) < 256 for c in name + value), (name, value)


def framing(outcome: Outcome) -> tuple[object, ...]:
    """What must not depend on segmentation: requests, bodies, and whether the stream failed."""
    heads, bodies, end = outcome.summary()
    return heads, bodies, "error" if end not in ("ok", "incomplete") else end


def fuzz_one_input(data: bytes) -> None:
    """The fuzz target: raises (a finding) or returns (the input was handled)."""
    limits, segmentation, parameter, read_limit, stream = decode_input(data)
    outcome = drive(segment(stream, segmentation, parameter), limits, read_limit)
    if outcome.status is not None:
        assert outcome.status in PROTOCOL_STATUSES, outcome.status
    check_request_invariants(outcome)
    for request in outcome.requests:
        check_request(request)
    if segmentation != "whole":
        whole = drive([stream], limits, read_limit)
        assert framing(outcome) == framing(whole), (framing(outcome), framing(whole))


# --------------------------------------------------------------------------------------------
# Seed corpus: the smuggling corpus cases (tests/corpus/*.txt), reduced by coverage
# --------------------------------------------------------------------------------------------


def seed_candidates() -> dict[str, bytes]:
    """One fuzzer input per tests/corpus case, with options cycling through the choices."""
    seeds: dict[str, bytes] = {}
    for index, case in enumerate(load_corpus()):
        stream = b"".join(case.sends)
        seeds[case.name] = encode_input(
            stream,
            segmentation=SEGMENTATIONS[index % 4],
            parameter=index % 7,
            read_limit_index=index % len(READ_LIMITS),
        )
    return seeds


def make_corpus(out_dir: Path = CORPUS_DIR) -> int:
    """Rewrite ``out_dir`` with the seeds that add coverage (libFuzzer -merge=1)."""
    candidates = seed_candidates()
    by_digest = {hashlib.sha1(data).hexdigest(): name for name, data in candidates.items()}
    with tempfile.TemporaryDirectory() as tmp:
        every, kept = Path(tmp, "every"), Path(tmp, "kept")
        every.mkdir()
        kept.mkdir()
        for name, data in candidates.items():
            (every / name).write_bytes(data)
        command = [sys.executable, __file__, "-merge=1", "-use_counters=0", str(kept), str(every)]
        subprocess.run(command, check=True, timeout=300, capture_output=True)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.mkdir()
        for path in sorted(kept.iterdir()):
            name = by_digest[path.name]
            (out_dir / name).write_bytes(candidates[name])
    count = len(list(out_dir.iterdir()))
    print(f"{count} of {len(candidates)} seeds add coverage; written to {out_dir}")
    return count


def instrument_parser(atheris: Any) -> int:
    """Add coverage and comparison tracing to every function of the parser modules.

    Done after import (rather than with ``atheris.instrument_imports``) so that the test helpers
    and their dependencies load normally. The grammar's compiled patterns are compiled again
    through atheris's RegEx hook, which hands the fuzzer strings that match them; the proxies it
    returns delegate every call to the real pattern, so the parser behaves exactly the same.
    """
    functions = [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, types.FunctionType) and obj.__module__ in PARSER_MODULES
    ]
    for function in functions:
        atheris.instrument_func(function)
    atheris.enabled_hooks.add("RegEx")
    for name, value in list(vars(_abnf).items()):
        if isinstance(value, re.Pattern):
            setattr(_abnf, name, re.compile(value.pattern, value.flags))
    return len(functions)


def main(argv: Sequence[str]) -> None:
    if list(argv[1:]) == ["--make-corpus"]:
        make_corpus()
        return
    import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]

    count = instrument_parser(atheris)
    print(f"INFO: instrumented {count} functions of {', '.join(PARSER_MODULES)}", file=sys.stderr)
    # libFuzzer runs its own argv[0] through the shell for -merge, -fork and -jobs: make that
    # the command that starts this target with this interpreter.
    program = f"{shlex.quote(sys.executable)} {shlex.quote(str(Path(__file__).resolve()))}"
    args = list(argv[1:])
    if not any(arg.startswith("-dict=") for arg in args):
        args.insert(0, f"-dict={DICTIONARY}")
    atheris.Setup([program, *args], fuzz_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
