"""The metrics store (wsgipool.metrics) and its exposition (wsgipool.exposition).

Recording and rendering are read back with a strict parser of the formats
(tests/helpers/exposition.py); the shared block is exercised with real threads and real forked
processes, waiting on pipes with deadlines, never on sleeps or timings.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import select
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers.exposition import Family, histogram, parse
from wsgipool.exposition import (
    FAMILIES,
    OPENMETRICS_TEXT,
    PROMETHEUS_TEXT,
    render_metrics,
    stats_json,
)
from wsgipool.metrics import (
    BUCKET_BOUNDS,
    FLUSH_EVERY,
    GAUGE_FIELDS,
    MAGIC,
    RESTART_REASONS,
    Gauges,
    Histogram,
    MetricsStore,
    NullRecorder,
    ProcessStats,
    Recorder,
    RequestKey,
    Snapshot,
    read_process_stats,
)

DEADLINE = 30.0

# Durations that binary floating point holds exactly, so sums compare exactly.
DURATION, QUEUE_WAIT = 0.25, 0.0009765625
BUSY = DURATION - QUEUE_WAIT  # a thread is held from taking a request to its last byte


def single() -> tuple[MetricsStore, Recorder]:
    store = MetricsStore()
    return store, store.recorder(store.assign(0))


def scrape(snapshot: Snapshot, openmetrics: bool = False) -> dict[str, Family]:
    accept = "application/openmetrics-text" if openmetrics else None
    content_type, body = render_metrics(snapshot, accept)
    assert content_type == (OPENMETRICS_TEXT if openmetrics else PROMETHEUS_TEXT)
    return parse(body.decode(), openmetrics)


def record_steady(recorder: Recorder, count: int) -> None:
    for _ in range(count):
        recorder.request_done("GET", "200", "http", DURATION, QUEUE_WAIT)
    recorder.flush()  # as a worker thread does before it waits for work


def assert_consistent(snapshot: Snapshot) -> int:
    """Requests recorded only by ``record_steady``: every total says the same count."""
    count = snapshot.requests
    assert snapshot.queue_wait.count == count
    assert snapshot.request_duration.get(RequestKey("GET", "200", "http"), Histogram()).sum == (
        count * DURATION
    )
    assert snapshot.queue_wait.sum == count * QUEUE_WAIT
    assert sum(snapshot.busy_seconds.values()) == count * BUSY
    return count


# --- recording and rendering -------------------------------------------------------------


@pytest.mark.parametrize("openmetrics", [False, True], ids=["prometheus", "openmetrics"])
def test_recorded_requests_render_as_valid_exposition(openmetrics):
    store, recorder = single()
    recorder.request_done("GET", "200", "http", 0.0004, 0.0001)
    recorder.request_done("GET", "200", "http", 0.003, 0.002)
    recorder.request_done("POST", "503", "https", 75.0, 0.0)
    recorder.flush()
    recorder.rejected()
    recorder.rejected()
    recorder.publish(
        Gauges(
            active_requests=3,
            queue_length=4,
            queue_limit=64,
            stuck_requests=1,
            threads_idle=5,
            threads_app=2,
            threads_sending=1,
            connections_active=3,
            connections_idle=7,
        )
    )
    store.worker_restart("crash")
    families = scrape(store.snapshot(), openmetrics)

    assert [family.name for family in families.values()] == [
        family.name + ("_total" if family.type == "counter" and not openmetrics else "")
        for family in FAMILIES
    ]
    assert all(family.help for family in families.values())

    duration = families["http_server_request_duration_seconds"]
    assert duration.type == "histogram"
    get = {"http_request_method": "GET", "http_response_status_code": "200", "url_scheme": "http"}
    buckets, total, count = histogram(duration, **get)
    assert count == 2
    assert total == pytest.approx(0.0034)
    assert buckets[0.0005] == 1  # 0.4 ms
    assert buckets[0.0025] == 1
    assert buckets[0.005] == 2  # 3 ms
    assert buckets[math.inf] == 2
    post = {
        "http_request_method": "POST",
        "http_response_status_code": "503",
        "url_scheme": "https",
    }
    buckets, total, count = histogram(duration, **post)
    assert (buckets[60.0], buckets[math.inf], total) == (0, 1, 75.0)  # past the last bound

    buckets, total, count = histogram(families["wsgipool_request_queue_wait_seconds"])
    assert (buckets[0.0005], buckets[0.025], count) == (2, 3, 3)
    assert total == pytest.approx(0.0021)

    counter = "wsgipool_queue_rejected" if openmetrics else "wsgipool_queue_rejected_total"
    assert families[counter].type == "counter"
    assert families[counter].value("wsgipool_queue_rejected_total") == 2
    restarts = "wsgipool_worker_restarts" if openmetrics else "wsgipool_worker_restarts_total"
    assert families[restarts].value("wsgipool_worker_restarts_total", reason="crash") == 1
    assert families[restarts].value("wsgipool_worker_restarts_total", reason="signal") == 0
    busy = "wsgipool_thread_busy_seconds" if openmetrics else "wsgipool_thread_busy_seconds_total"
    assert families[busy].value("wsgipool_thread_busy_seconds_total", worker="0") == pytest.approx(
        75.0013  # durations less queue waits
    )

    assert families["http_server_active_requests"].value(worker="0") == 3
    assert families["wsgipool_queue_length"].value(worker="0") == 4
    assert families["wsgipool_queue_limit"].value(worker="0") == 64
    assert families["wsgipool_requests_stuck"].value(worker="0") == 1
    threads = families["wsgipool_threads"]
    assert [threads.value(worker="0", state=s) for s in ("idle", "reading", "app", "sending")] == [
        5,
        0,
        2,
        1,
    ]
    connections = families["wsgipool_connections"]
    assert connections.value(worker="0", state="active") == 3
    assert connections.value(worker="0", state="idle") == 7

    assert families["wsgipool_process_resident_memory_bytes"].value(worker="0") > 0
    assert families["wsgipool_process_threads"].value(worker="0") >= 1
    if openmetrics:
        assert families["http_server_request_duration_seconds"].unit == "seconds"
        assert families["wsgipool_process_resident_memory_bytes"].unit == "bytes"


def test_an_empty_store_renders_every_family():
    store = MetricsStore()
    for openmetrics in (False, True):
        families = scrape(store.snapshot(), openmetrics)
        assert len(families) == len(FAMILIES)
        # Restarts are there from the start, at zero, so rate() sees the first one.
        restarts = next(f for name, f in families.items() if "restarts" in name)
        assert {s.labels["reason"] for s in restarts.samples} == set(RESTART_REASONS)


VALID = """# HELP a_total A counter.
# TYPE a_total counter
a_total{x="1"} 3
# TYPE h histogram
h_bucket{le="0.5"} 1
h_bucket{le="+Inf"} 2
h_sum 0.75
h_count 2
"""


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (("", ""), None),
        (('h_bucket{le="+Inf"} 2', 'h_bucket{le="+Inf"} 0'), "cumulative"),
        (("h_count 2", "h_count 3"), "_count"),
        (('h_bucket{le="+Inf"} 2\n', ""), r"no \+Inf bucket"),
        (('a_total{x="1"} 3', 'a_total{x="1"} 3\na_total{x="1"} 4'), "twice"),
        (("# TYPE a_total counter\n", ""), "TYPE"),
        (("h_sum", "a_total"), "not a sample"),
        (('{x="1"}', "{x=1}"), "bad labels"),
        ((" 3\n", " three\n"), "three"),
    ],
)
def test_the_parser_rejects_what_a_scraper_would(change, error):
    """The parser is these tests' judge: check that it catches each kind of mistake."""
    text = VALID.replace(*change)
    if error is None:
        parse(text, openmetrics=False)
    else:
        with pytest.raises(AssertionError, match=error):
            parse(text, openmetrics=False)
    with pytest.raises(AssertionError, match="EOF"):
        parse(VALID, openmetrics=True)


def test_label_values_are_escaped():
    """No label value the store writes needs escaping, but the renderer escapes anyway."""
    from wsgipool.exposition import _escape_label

    assert _escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


@pytest.mark.parametrize(
    ("accept", "openmetrics"),
    [
        (None, False),
        ("", False),
        ("text/plain", False),
        ("*/*", False),
        ("application/openmetrics-text", True),
        ("application/openmetrics-text; version=1.0.0; charset=utf-8", True),
        # What Prometheus 2.x sends.
        (
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
            "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            True,
        ),
        ("text/plain;version=0.0.4;q=0.5,application/openmetrics-text;q=0.3", False),
        ("application/openmetrics-text;q=0", False),
        ("application/openmetrics-text;q=bogus", False),
        ("APPLICATION/OpenMetrics-Text;q=0.5,*/*;q=0.4", True),
    ],
)
def test_the_accept_header_chooses_the_format(accept, openmetrics):
    store = MetricsStore()
    content_type, body = render_metrics(store.snapshot(process_stats=False), accept)
    assert content_type == (OPENMETRICS_TEXT if openmetrics else PROMETHEUS_TEXT)
    assert body.endswith(b"# EOF\n") == openmetrics
    parse(body.decode(), openmetrics)


def test_stats_json_is_versioned_and_holds_no_request_details():
    store, recorder = single()
    recorder.request_done("GET", "404", "http", 0.002, 0.0001)
    recorder.request_done("GET", "200", "http", 0.0002, 0.0001)
    recorder.flush()
    recorder.publish(Gauges(active_requests=1, threads_idle=3, queue_limit=10))
    document = json.loads(stats_json(store.snapshot()))
    assert document["version"] == 1
    assert set(document) == {
        "version",
        "requests",
        "queue",
        "workers",
        "thread_busy_seconds",
        "worker_restarts",
    }
    requests = document["requests"]
    assert requests["count"] == 2
    assert requests["duration_seconds"]["buckets"]["0.0005"] == 1
    assert requests["duration_seconds"]["buckets"]["+Inf"] == 2
    assert {(s["method"], s["status_code"], s["scheme"]) for s in requests["series"]} == {
        ("GET", "200", "http"),
        ("GET", "404", "http"),
    }
    assert document["queue"]["wait_seconds"]["count"] == 2
    (worker,) = document["workers"]
    assert worker["worker"] == 0
    assert worker["threads"] == {"idle": 3, "reading": 0, "app": 0, "sending": 0}
    assert worker["queue_limit"] == 10
    assert worker["process"]["resident_memory_bytes"] > 0


def test_every_metric_is_documented_with_its_type_and_labels():
    page = (Path(__file__).resolve().parent.parent / "docs" / "observability.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \|([^|]*)\|", page, re.M)
    documented = {name: (kind, re.findall(r"`(\w+)`", labels)) for name, kind, labels in rows}
    assert documented == {
        family.name + ("_total" if family.type == "counter" else ""): (
            family.type,
            list(family.labels),
        )
        for family in FAMILIES
    }


# --- bounded labels ------------------------------------------------------------------------


def test_unknown_methods_schemes_and_status_codes_are_other():
    store, recorder = single()
    for method in ("BREW", "get", "PROPFIND"):
        recorder.request_done(method, "200", "http", 0.001, 0.0)
    recorder.request_done("GET", "999", "http", 0.001, 0.0)
    recorder.request_done("GET", "", "gopher", 0.001, 0.0)
    recorder.flush()
    snapshot = store.snapshot(process_stats=False)
    assert {key: h.count for key, h in snapshot.request_duration.items()} == {
        RequestKey("_OTHER", "200", "http"): 3,
        RequestKey("GET", "_OTHER", "http"): 1,
        RequestKey("GET", "_OTHER", "_OTHER"): 1,
    }


def test_the_status_code_is_read_from_the_status_line_as_sent():
    store, recorder = single()
    for status in ("200 OK", "200 Fine", "200", "404 Not Found", "2\u00b2\u00b2 Odd", "20"):
        recorder.request_done("GET", status, "http", 0.001, 0.0)
    recorder.flush()
    snapshot = store.snapshot(process_stats=False)
    assert {key: h.count for key, h in snapshot.request_duration.items()} == {
        RequestKey("GET", "200", "http"): 3,
        RequestKey("GET", "404", "http"): 1,
        RequestKey("GET", "_OTHER", "http"): 2,
    }


def test_combinations_past_the_row_limit_go_to_the_overflow_row():
    store = MetricsStore(rows=3)
    recorder = store.recorder(store.assign(0))
    statuses = [200, 201, 202, 203, 204, 200, 205]
    for status in statuses:
        recorder.request_done("GET", str(status), "http", 0.001, 0.0)
    # Many distinct raw methods, none cached: the table and the output stay bounded.
    for number in range(500):
        recorder.request_done(f"X{number}", "200", "http", 0.001, 0.0)
    recorder.flush()
    snapshot = store.snapshot(process_stats=False)
    counts = {key: h.count for key, h in snapshot.request_duration.items()}
    assert counts == {
        RequestKey("GET", "200", "http"): 2,
        RequestKey("GET", "201", "http"): 1,
        RequestKey("GET", "202", "http"): 1,
        RequestKey("_OTHER", "_OTHER", "_OTHER"): 503,  # 203, 204, 205 and the X methods
    }
    families = scrape(snapshot)
    duration = families["http_server_request_duration_seconds"]
    _, _, count = histogram(
        duration,
        http_request_method="_OTHER",
        http_response_status_code="_OTHER",
        url_scheme="_OTHER",
    )
    assert count == 503


# --- the shared block: threads -------------------------------------------------------------


@contextlib.contextmanager
def fast_thread_switches() -> Iterator[None]:
    """Switch threads as often as the interpreter can, so that a reader lands between a
    writer's stores as often as possible."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def test_each_thread_adds_its_requests_in_batches_and_when_it_flushes():
    store, recorder = single()

    def counted() -> int:
        return store.snapshot(process_stats=False).requests

    for _ in range(FLUSH_EVERY - 1):
        recorder.request_done("GET", "200 OK", "http", DURATION, QUEUE_WAIT)
    other = threading.Thread(
        target=lambda: recorder.request_done("GET", "200 OK", "http", DURATION, QUEUE_WAIT)
    )
    other.start()
    other.join()
    assert counted() == 0  # neither thread has flushed: each tally is its own
    recorder.request_done("GET", "200 OK", "http", DURATION, QUEUE_WAIT)
    assert counted() == FLUSH_EVERY  # a whole batch, at once
    recorder.request_done("GET", "200 OK", "http", DURATION, QUEUE_WAIT)
    recorder.flush()
    recorder.flush()  # nothing new: adds nothing
    assert assert_consistent(store.snapshot(process_stats=False)) == FLUSH_EVERY + 1
    # Before a scrape, at each sample and at stop: every thread's, the other's too.
    recorder.flush_all()
    assert assert_consistent(store.snapshot(process_stats=False)) == FLUSH_EVERY + 2


def test_a_thread_that_leaves_adds_its_requests_and_is_forgotten():
    store, recorder = single()

    def serve_and_leave() -> None:
        recorder.request_done("GET", "200 OK", "http", DURATION, QUEUE_WAIT)
        recorder.leave()

    for _ in range(3):
        thread = threading.Thread(target=serve_and_leave)
        thread.start()
        thread.join()
    assert assert_consistent(store.snapshot(process_stats=False)) == 3
    assert recorder._tallies == []  # a pool that grows and shrinks keeps no tally behind


def test_a_reader_sees_consistent_copies_while_threads_write():
    """Two threads record into one slot while this one reads it. (Under the GIL a switch
    cannot fall between a group's stores, so this guards free-threaded builds; the forked
    tests below are the ones that show the sequence number at work everywhere.)"""
    store = MetricsStore()
    recorder = store.recorder(store.assign(0))
    per_writer = 20_000
    with fast_thread_switches():
        writers = [
            threading.Thread(target=record_steady, args=(recorder, per_writer)) for _ in range(2)
        ]
        for writer in writers:
            writer.start()
        seen = []
        deadline = time.monotonic() + DEADLINE
        while any(writer.is_alive() for writer in writers):
            assert time.monotonic() < deadline, "the writers did not finish"
            seen.append(assert_consistent(store.snapshot(process_stats=False)))
        for writer in writers:
            writer.join()
    assert seen == sorted(seen)  # never backwards
    assert assert_consistent(store.snapshot()) == 2 * per_writer


# --- the shared block: processes -----------------------------------------------------------


class Child:
    """A forked process running ``body(child)``; ``done`` (a pipe) reaches end of file
    when it exits, so the parent can wait for that with a deadline and no polling."""

    def __init__(self, body: Callable[[Child], None]) -> None:
        self.go_r, self.go_w = os.pipe()
        done_r, done_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # The child: never returns into pytest.
            code = 1
            try:
                os.close(self.go_w)
                os.close(done_r)
                body(self)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(self.go_r)
        os.close(done_w)
        self.done_r = done_r
        self.status: int | None = None

    def wait_for_go(self) -> None:
        """(In the child.) Block until the parent says go."""
        assert os.read(self.go_r, 1) == b"g"

    def go(self) -> None:
        os.write(self.go_w, b"g")

    def running(self) -> bool:
        return not select.select([self.done_r], [], [], 0)[0]

    def wait(self) -> int:
        """The child's exit code (negative: killed by that signal)."""
        ready, _, _ = select.select([self.done_r], [], [], DEADLINE)
        if not ready:
            os.kill(self.pid, signal.SIGKILL)
        _, status = os.waitpid(self.pid, 0)
        os.close(self.done_r)
        os.close(self.go_w)
        assert ready, "the child did not finish in time"
        return os.waitstatus_to_exitcode(status)


def test_gauges_are_published_as_a_whole():
    """A reader never sees half of one publish and half of another: a child publishes
    gauges that are all equal, the parent checks every copy it reads."""
    store = MetricsStore()
    slot = store.assign(0)

    def body(child: Child) -> None:
        recorder = store.recorder(slot)
        for value in range(50_000):
            recorder.publish(Gauges(*([value] * len(GAUGE_FIELDS))))

    child = Child(body)
    while child.running():
        reading = store.snapshot(process_stats=False).workers.get(0)
        if reading is not None:
            assert len(set(vars(reading.gauges).values())) == 1, reading.gauges
    assert child.wait() == 0


def test_a_forked_child_writes_its_slot_while_the_parent_reads():
    store = MetricsStore(slots=2)
    slot = store.assign(3)
    count = 30_000

    def body(child: Child) -> None:
        recorder = store.recorder(slot)
        child.wait_for_go()
        record_steady(recorder, count)

    child = Child(body)
    child.go()
    seen = []
    while child.running():
        snapshot = store.snapshot(process_stats=False)
        seen.append(assert_consistent(snapshot))
    assert child.wait() == 0
    assert seen == sorted(seen)
    before = store.snapshot(process_stats=False)
    assert assert_consistent(before) == count
    assert set(before.workers) == {3}
    assert before.busy_seconds == {3: count * BUSY}

    store.retire(slot)
    after = store.snapshot(process_stats=False)
    assert assert_consistent(after) == count
    assert after.workers == {}  # gauges are of live processes only
    assert after.busy_seconds == {3: count * BUSY}  # counters are kept, by worker index
    assert store.assign(3) == slot  # the slot is free again, and starts from zero
    assert assert_consistent(store.snapshot(process_stats=False)) == count


def test_retiring_slots_keeps_every_total_monotonic():
    store = MetricsStore(slots=3)
    first, second = store.assign(0), store.assign(1)
    assert (first, second) == (0, 1)
    record_steady(store.recorder(first), 5)
    recorder = store.recorder(second)
    record_steady(recorder, 7)
    recorder.rejected()
    assert assert_consistent(store.snapshot()) == 12

    store.retire(first)
    store.worker_restart("crash")
    assert assert_consistent(store.snapshot()) == 12
    replacement = store.assign(0)
    assert replacement == first
    record_steady(store.recorder(replacement), 2)
    snapshot = store.snapshot()
    assert assert_consistent(snapshot) == 14
    assert snapshot.busy_seconds == {0: 7 * BUSY, 1: 7 * BUSY}
    assert snapshot.rejected == 1
    assert snapshot.restarts["crash"] == 1

    store.retire(second)
    store.retire(replacement)
    snapshot = store.snapshot()
    assert assert_consistent(snapshot) == 14
    assert snapshot.rejected == 1
    families = scrape(snapshot)
    assert families["wsgipool_thread_busy_seconds_total"].value(
        "wsgipool_thread_busy_seconds_total", worker="1"
    ) == (7 * BUSY)


def test_a_rolling_restart_sums_both_processes_of_a_worker_index():
    store = MetricsStore(slots=2)
    old, new = store.assign(0), store.assign(0)
    store.recorder(old).publish(Gauges(active_requests=2, threads_app=2))
    store.recorder(new).publish(Gauges(threads_idle=4))
    snapshot = store.snapshot(process_stats=False)
    assert snapshot.workers[0].processes == 2
    assert snapshot.workers[0].gauges == Gauges(active_requests=2, threads_app=2, threads_idle=4)
    parse(render_metrics(snapshot, None)[1].decode(), openmetrics=False)  # no series twice


def test_a_worker_killed_in_the_middle_of_a_write_is_read_and_retired():
    """SIGKILL between the two halves of a group leaves the slot's sequence odd for good:
    readers still finish, and the slot's counts are folded into the totals."""
    store = MetricsStore(slots=1)
    slot = store.assign(0)

    def body(child: Child) -> None:
        recorder = store.recorder(slot)
        record_steady(recorder, 10)
        store._counts[store._base(slot)] += 1  # a group begun...
        os.kill(os.getpid(), signal.SIGKILL)  # ...and never ended

    child = Child(body)
    assert child.wait() == -signal.SIGKILL
    _, consistent = store._read_slot(slot)
    assert not consistent
    assert assert_consistent(store.snapshot(process_stats=False)) == 10
    store.retire(slot)
    assert assert_consistent(store.snapshot(process_stats=False)) == 10
    assert store._read_slot(store.assign(0))[1]  # the replacement's slot reads clean


def test_a_child_records_though_the_store_was_locked_when_it_forked():
    """A supervisor thread may be in ``snapshot`` (holding the store's lock) when the main
    thread forks: the child never takes that lock."""
    store = MetricsStore(slots=1)
    slot = store.assign(0)
    with store._lock:
        child = Child(lambda child: record_steady(store.recorder(slot), 3))
    assert child.wait() == 0
    assert assert_consistent(store.snapshot(process_stats=False)) == 3


def test_a_process_without_a_slot_records_nothing():
    store = MetricsStore(slots=1)
    assert store.assign(0) == 0
    assert store.assign(1) is None
    recorder = store.recorder(None)
    assert isinstance(recorder, NullRecorder)
    recorder.request_done("GET", "200", "http", 0.1, 0.1)
    recorder.rejected()
    recorder.publish(Gauges(active_requests=1))
    snapshot = store.snapshot(process_stats=False)
    assert snapshot.requests == 0
    assert snapshot.rejected == 0


def test_the_block_starts_with_its_layout():
    store = MetricsStore(slots=4, rows=10)
    header = store._counts[:7].tolist()
    assert header[0] == MAGIC
    assert bytes(store._mmap[:8]) == b"wsgipool"
    assert header[1:] == [1, 64, store.layout.slot_words * 8, 4, 10, len(BUCKET_BOUNDS) + 1]
    assert store.size == 64 + 4 * store.layout.slot_words * 8
    assert store.layout.slot_words % 8 == 0  # slots start on their own cache line
    store.close()


def test_a_slot_has_one_recorder():
    store = MetricsStore(slots=2)
    with pytest.raises(ValueError, match="not assigned"):
        store.recorder(1)
    slot = store.assign(0)
    store.recorder(slot)
    with pytest.raises(ValueError, match="already has its recorder"):
        store.recorder(slot)
    store.retire(slot)
    store.retire(slot)  # a free slot: nothing to fold
    assert store.snapshot(process_stats=False).requests == 0
    with pytest.raises(ValueError, match="worker index"):
        store.assign(-1)


@pytest.mark.parametrize(("slots", "rows"), [(0, 1), (1, 0), (1, 5000)])
def test_bad_sizes_are_refused(slots, rows):
    with pytest.raises(ValueError):
        MetricsStore(slots=slots, rows=rows)


# --- histograms and process statistics ----------------------------------------------------


def test_quantiles_interpolate_within_buckets():
    assert Histogram().quantile(0.5) is None
    # 10 observations in (0.001, 0.0025], 10 in (0.01, 0.025].
    counts = [0] * (len(BUCKET_BOUNDS) + 1)
    counts[2], counts[5] = 10, 10
    histogram_ = Histogram(tuple(counts), 0.0)
    assert histogram_.quantile(0.25) == pytest.approx(0.001 + 0.0015 * 0.5)
    assert histogram_.quantile(0.5) == pytest.approx(0.0025)
    assert histogram_.quantile(0.99) == pytest.approx(0.01 + 0.015 * 0.98)
    counts = [0] * (len(BUCKET_BOUNDS) + 1)
    counts[-1] = 1
    assert Histogram(tuple(counts), 100.0).quantile(0.5) == BUCKET_BOUNDS[-1]


def test_process_statistics_of_this_process():
    stats = read_process_stats()
    assert stats.cpu_seconds is not None and stats.cpu_seconds >= 0
    assert stats.threads is not None and stats.threads >= 1
    if os.path.isdir("/proc/self/fd"):
        assert stats.resident_memory_bytes is not None and stats.resident_memory_bytes > 0
        assert stats.open_fds is not None and stats.open_fds >= 3


def test_process_statistics_of_a_process_that_is_gone():
    child = Child(lambda child: None)
    assert child.wait() == 0
    assert read_process_stats(child.pid) == ProcessStats()


def test_process_statistics_add_what_is_known():
    assert ProcessStats(10, None, 2, None) + ProcessStats(5, 1.5, None, None) == ProcessStats(
        15, 1.5, 2, None
    )
