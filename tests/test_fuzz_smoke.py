"""The parser's fuzz target (``fuzz/fuzz_parser.py``) in CI.

A bounded atheris run (about 15 s) must find nothing; it is skipped where atheris cannot be
installed (its wheels cover CPython 3.10-3.13 on Linux x86_64 only). Everywhere else the seed
corpus is still replayed through the target in-process, and the target itself is checked: it
must accept every ``ProtocolError`` and report anything else. docs/fuzzing.md has the longer run.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FUZZ_DIR = ROOT / "fuzz"
TARGET = FUZZ_DIR / "fuzz_parser.py"
SEEDS = FUZZ_DIR / "corpus"
sys.path.insert(0, str(FUZZ_DIR))

import fuzz_parser  # noqa: E402

from tests.helpers import parsing  # noqa: E402
from wsgipool.http import ProtocolError  # noqa: E402

FUZZ_SECONDS = 15
MAX_RUNS = 2_000_000  # far more than 15 s allows: the time bound is the one that ends the run
MIN_RUNS = 1_000  # fewer means the target barely ran (an import or setup problem)


def seed_files() -> list[Path]:
    return sorted(path for path in SEEDS.iterdir() if path.is_file())


def test_seed_corpus_is_small():
    files = seed_files()
    assert 10 <= len(files) < 100
    assert sum(path.stat().st_size for path in files) < 200 * 1024


def test_seeds_replay_through_the_target():
    for path in seed_files():
        fuzz_parser.fuzz_one_input(path.read_bytes())


@pytest.mark.parametrize("segmentation", fuzz_parser.SEGMENTATIONS)
@pytest.mark.parametrize("small", [False, True])
def test_input_encoding_round_trips(segmentation, small):
    stream = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
    data = fuzz_parser.encode_input(
        stream, small=small, segmentation=segmentation, parameter=5, read_limit_index=31
    )
    limits, got_segmentation, parameter, read_limit, got_stream = fuzz_parser.decode_input(data)
    assert (got_segmentation, parameter, got_stream) == (segmentation, 5, stream)
    assert limits == (fuzz_parser.SMALL_LIMITS if small else fuzz_parser.LIMITS)
    assert read_limit == fuzz_parser.READ_LIMITS[31]
    pieces = fuzz_parser.segment(stream, segmentation, parameter)
    assert b"".join(pieces) == stream


@pytest.mark.parametrize(
    "error", [ValueError("planted"), IndexError("planted"), ProtocolError(599, "planted")]
)
def test_target_reports_what_is_not_a_defined_protocol_error(monkeypatch, error):
    def broken_parse_head(head, limits):
        raise error

    monkeypatch.setattr(parsing, "parse_head", broken_parse_head)
    data = fuzz_parser.encode_input(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    with pytest.raises((type(error), AssertionError)):
        fuzz_parser.fuzz_one_input(data)


def test_target_accepts_protocol_errors():
    for stream in (b"GET / HTTP/1.1\r\n\r\n", b"\x00", b"GET / HTTP/1.1\n\n", b"\r\n" * 5):
        fuzz_parser.fuzz_one_input(fuzz_parser.encode_input(stream, segmentation="bytewise"))


def test_fuzz_target_finds_nothing_in_a_bounded_run(tmp_path):
    if importlib.util.find_spec("atheris") is None:
        pytest.skip(
            f"atheris is not installed for Python {sys.version_info[0]}.{sys.version_info[1]} "
            "(wheels exist for CPython 3.10-3.13 on Linux x86_64 only)"
        )
    work = tmp_path / "corpus"
    work.mkdir()
    command = [
        sys.executable,
        str(TARGET),
        f"-max_total_time={FUZZ_SECONDS}",
        f"-runs={MAX_RUNS}",
        "-seed=1",
        "-timeout=10",
        "-rss_limit_mb=2048",
        "-max_len=8192",
        f"-artifact_prefix={tmp_path}/",
        "-print_final_stats=1",
        str(work),  # new inputs go to the first directory, never into the committed seeds
        str(SEEDS),
    ]
    result = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=FUZZ_SECONDS + 60
    )
    log = result.stderr + result.stdout
    findings = sorted(p.name for p in tmp_path.iterdir() if p.name != work.name)
    assert result.returncode == 0 and not findings, (
        f"the fuzzer found a problem (exit {result.returncode}); inputs {findings} in {tmp_path}; "
        f"replay one with: python fuzz/fuzz_parser.py <file>\n{log[-6000:]}"
    )
    runs = re.search(r"stat::number_of_executed_units: *(\d+)", log)
    assert runs is not None, log[-3000:]
    assert int(runs.group(1)) >= MIN_RUNS, log[-3000:]
