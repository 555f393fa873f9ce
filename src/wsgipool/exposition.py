"""A ``Snapshot`` as Prometheus text 0.0.4, OpenMetrics 1.0 text, or versioned JSON.

``render_metrics(accept)`` picks the text format from a scrape's Accept header (OpenMetrics
when asked for at least as much as Prometheus text, which is the default), as Prometheus
itself negotiates. Every metric is declared once (``FAMILIES``, which docs/observability.md
lists), with its HELP text, so the formats cannot drift apart.

Counters and histograms are totals over every worker process, live and retired, with no
``worker`` label, except ``wsgipool_thread_busy_seconds_total``, whose spread over workers
shows an imbalance; gauges and the per-process resources are by ``worker`` index (never the
pid). The JSON document holds the same numbers and no request details.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

from .metrics import (
    BUCKET_BOUNDS,
    CONNECTION_STATES,
    THREAD_STATES,
    Histogram,
    Snapshot,
    WorkerReading,
)

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TEXT = "application/openmetrics-text; version=1.0.0; charset=utf-8"
STATS_VERSION = 1

Labels = Sequence[tuple[str, str]]
# A sample: the suffix after its family's name ("" for the family's own, or a counter's
# _total), its labels, its value.
Sample = tuple[str, Labels, float]
SampleSource = Callable[[Snapshot], Iterator[Sample]]

# The ``le`` label of each bucket: Go's float formatting, as Prometheus' clients write it.
_BOUND_LABELS = (*(repr(bound) for bound in BUCKET_BOUNDS), "+Inf")


@dataclass(frozen=True)
class Family:
    name: str  # without _total for a counter (OpenMetrics' family name)
    type: str  # "counter", "gauge" or "histogram"
    help: str
    labels: tuple[str, ...] = ()
    unit: str = ""  # OpenMetrics' UNIT, when the name ends with it


REQUEST_LABELS = ("http_request_method", "http_response_status_code", "url_scheme")

FAMILIES: tuple[Family, ...] = (
    Family(
        "http_server_request_duration_seconds",
        "histogram",
        "Duration of HTTP server requests, from the complete request head to the last byte "
        "of the response.",
        REQUEST_LABELS,
        "seconds",
    ),
    Family(
        "http_server_active_requests",
        "gauge",
        "Requests between their complete head and the last byte of their response.",
        ("worker",),
    ),
    Family(
        "wsgipool_request_queue_wait_seconds",
        "histogram",
        "Time requests waited in the task queue for a worker thread.",
        (),
        "seconds",
    ),
    Family(
        "wsgipool_queue_length",
        "gauge",
        "Requests waiting in the task queue for a worker thread.",
        ("worker",),
    ),
    Family(
        "wsgipool_queue_limit",
        "gauge",
        "Most requests the task queue holds before it refuses more.",
        ("worker",),
    ),
    Family(
        "wsgipool_queue_rejected",
        "counter",
        "Requests refused because the task queue was full.",
    ),
    Family(
        "wsgipool_threads",
        "gauge",
        "Worker threads by what they are doing.",
        ("worker", "state"),
    ),
    Family(
        "wsgipool_thread_busy_seconds",
        "counter",
        "Time worker threads spent on requests.",
        ("worker",),
        "seconds",
    ),
    Family(
        "wsgipool_connections",
        "gauge",
        "Open client connections: active (a request in progress) or idle (kept alive).",
        ("worker", "state"),
    ),
    Family(
        "wsgipool_requests_stuck",
        "gauge",
        "Requests that made no progress for longer than the stuck threshold.",
        ("worker",),
    ),
    Family(
        "wsgipool_worker_restarts",
        "counter",
        "Worker processes replaced, by reason.",
        ("reason",),
    ),
    Family(
        "wsgipool_process_resident_memory_bytes",
        "gauge",
        "Resident memory of the worker's processes.",
        ("worker",),
        "bytes",
    ),
    Family(
        "wsgipool_process_cpu_seconds",
        "counter",
        "CPU time (user and system) of the worker's live processes.",
        ("worker",),
        "seconds",
    ),
    Family(
        "wsgipool_process_threads",
        "gauge",
        "Operating-system threads of the worker's processes.",
        ("worker",),
    ),
    Family(
        "wsgipool_process_open_fds",
        "gauge",
        "Open file descriptors of the worker's processes.",
        ("worker",),
    ),
)


# --- the samples of each family ---------------------------------------------------------


def _histogram_samples(histogram: Histogram, labels: Labels) -> Iterator[Sample]:
    cumulative = histogram.cumulative()
    for bound, count in zip(_BOUND_LABELS, cumulative, strict=True):
        yield "_bucket", (*labels, ("le", bound)), count
    yield "_sum", labels, histogram.sum
    yield "_count", labels, cumulative[-1]


def _request_duration(snapshot: Snapshot) -> Iterator[Sample]:
    for key, histogram in snapshot.request_duration.items():
        yield from _histogram_samples(histogram, tuple(zip(REQUEST_LABELS, key, strict=True)))


def _by_worker(value: Callable[[WorkerReading], float | None]) -> SampleSource:
    """Samples of one number per live worker index (none where it is unknown)."""

    def samples(snapshot: Snapshot) -> Iterator[Sample]:
        for index, reading in snapshot.workers.items():
            number = value(reading)
            if number is not None:
                yield "", (("worker", str(index)),), number

    return samples


def _by_worker_and_state(prefix: str, states: tuple[str, ...]) -> SampleSource:
    def samples(snapshot: Snapshot) -> Iterator[Sample]:
        for index, reading in snapshot.workers.items():
            for state in states:
                value = getattr(reading.gauges, f"{prefix}_{state}")
                yield "", (("worker", str(index)), ("state", state)), value

    return samples


def _busy_seconds(snapshot: Snapshot) -> Iterator[Sample]:
    for index, seconds in snapshot.busy_seconds.items():
        yield "", (("worker", str(index)),), seconds


def _restarts(snapshot: Snapshot) -> Iterator[Sample]:
    for reason, count in snapshot.restarts.items():
        yield "", (("reason", reason),), count


_SAMPLES: dict[str, SampleSource] = {
    "http_server_request_duration_seconds": _request_duration,
    "http_server_active_requests": _by_worker(lambda r: r.gauges.active_requests),
    "wsgipool_request_queue_wait_seconds": lambda s: _histogram_samples(s.queue_wait, ()),
    "wsgipool_queue_length": _by_worker(lambda r: r.gauges.queue_length),
    "wsgipool_queue_limit": _by_worker(lambda r: r.gauges.queue_limit),
    "wsgipool_queue_rejected": lambda s: iter([("", (), s.rejected)]),
    "wsgipool_threads": _by_worker_and_state("threads", THREAD_STATES),
    "wsgipool_thread_busy_seconds": _busy_seconds,
    "wsgipool_connections": _by_worker_and_state("connections", CONNECTION_STATES),
    "wsgipool_requests_stuck": _by_worker(lambda r: r.gauges.stuck_requests),
    "wsgipool_worker_restarts": _restarts,
    "wsgipool_process_resident_memory_bytes": _by_worker(lambda r: r.process.resident_memory_bytes),
    "wsgipool_process_cpu_seconds": _by_worker(lambda r: r.process.cpu_seconds),
    "wsgipool_process_threads": _by_worker(lambda r: r.process.threads),
    "wsgipool_process_open_fds": _by_worker(lambda r: r.process.open_fds),
}
assert set(_SAMPLES) == {family.name for family in FAMILIES}


# --- text formats -------------------------------------------------------------------------


def _number(value: float) -> str:
    """A sample value or bound as both formats write it (Go's float formatting for the
    values these metrics take: 1.0, 0.0005, +Inf)."""
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(value)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _lines(snapshot: Snapshot, openmetrics: bool) -> Iterator[str]:
    for family in FAMILIES:
        # A counter's samples end in _total. Prometheus text declares the family by that
        # sample name, OpenMetrics by the name without it.
        total = "_total" if family.type == "counter" else ""
        declared = family.name if openmetrics else family.name + total
        yield f"# HELP {declared} {_escape_help(family.help)}"
        yield f"# TYPE {declared} {family.type}"
        if openmetrics and family.unit:
            yield f"# UNIT {declared} {family.unit}"
        for suffix, labels, value in _SAMPLES[family.name](snapshot):
            name = family.name + (suffix or total)
            if labels:
                text = ",".join(f'{label}="{_escape_label(v)}"' for label, v in labels)
                name = f"{name}{{{text}}}"
            yield f"{name} {_number(value)}"
    if openmetrics:
        yield "# EOF"


def prometheus_text(snapshot: Snapshot) -> bytes:
    """The Prometheus text exposition format, version 0.0.4."""
    return ("\n".join(_lines(snapshot, openmetrics=False)) + "\n").encode()


def openmetrics_text(snapshot: Snapshot) -> bytes:
    """The OpenMetrics 1.0 text format (ends with ``# EOF``)."""
    return ("\n".join(_lines(snapshot, openmetrics=True)) + "\n").encode()


def wants_openmetrics(accept: str | None) -> bool:
    """Whether an Accept header prefers OpenMetrics to Prometheus text: it names
    application/openmetrics-text with a quality above zero and at least that of
    text/plain (or of */*, when text/plain is not named)."""
    if not accept:
        return False
    openmetrics = plain = wildcard = -1.0
    for media_range in accept.split(","):
        media_type, *parameters = (part.strip() for part in media_range.split(";"))
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        media_type = media_type.lower()
        if media_type == "application/openmetrics-text":
            openmetrics = max(openmetrics, quality)
        elif media_type in ("text/plain", "text/*"):
            plain = max(plain, quality)
        elif media_type == "*/*":
            wildcard = max(wildcard, quality)
    rival = plain if plain >= 0 else wildcard
    return openmetrics > 0 and openmetrics >= rival


def render_metrics(snapshot: Snapshot, accept: str | None) -> tuple[str, bytes]:
    """The content type and body answering a scrape with this Accept header."""
    if wants_openmetrics(accept):
        return OPENMETRICS_TEXT, openmetrics_text(snapshot)
    return PROMETHEUS_TEXT, prometheus_text(snapshot)


# --- JSON -----------------------------------------------------------------------------------


def _histogram_json(histogram: Histogram) -> dict[str, Any]:
    return {
        "count": histogram.count,
        "sum": histogram.sum,
        "buckets": dict(zip(_BOUND_LABELS, histogram.cumulative(), strict=True)),
    }


def _worker_json(index: int, reading: WorkerReading, busy: float) -> dict[str, Any]:
    gauges = reading.gauges
    return {
        "worker": index,
        "processes": reading.processes,
        "active_requests": gauges.active_requests,
        "queue_length": gauges.queue_length,
        "queue_limit": gauges.queue_limit,
        "queue_oldest_wait_seconds": gauges.queue_oldest_wait_us / 1e6,
        "stuck_requests": gauges.stuck_requests,
        "threads": {state: getattr(gauges, f"threads_{state}") for state in THREAD_STATES},
        "connections": {
            state: getattr(gauges, f"connections_{state}") for state in CONNECTION_STATES
        },
        "busy_seconds": busy,
        "process": {f.name: getattr(reading.process, f.name) for f in fields(reading.process)},
    }


def stats_document(snapshot: Snapshot) -> dict[str, Any]:
    """The /stats document: the metrics as versioned JSON, no request details."""
    total = Histogram()
    for histogram in snapshot.request_duration.values():
        total += histogram
    return {
        "version": STATS_VERSION,
        "requests": {
            "count": total.count,
            "duration_seconds": _histogram_json(total),
            "series": [
                {
                    "method": key.method,
                    "status_code": key.status_code,
                    "scheme": key.scheme,
                    "duration_seconds": _histogram_json(histogram),
                }
                for key, histogram in snapshot.request_duration.items()
            ],
        },
        "queue": {
            "wait_seconds": _histogram_json(snapshot.queue_wait),
            "rejected": snapshot.rejected,
        },
        "workers": [
            _worker_json(index, reading, snapshot.busy_seconds.get(index, 0.0))
            for index, reading in snapshot.workers.items()
        ],
        # Retired worker indexes included: a total over every process there has been.
        "thread_busy_seconds": sum(snapshot.busy_seconds.values()),
        "worker_restarts": dict(snapshot.restarts),
    }


def stats_json(snapshot: Snapshot) -> bytes:
    """``stats_document`` as the body of a /stats response."""
    return json.dumps(stats_document(snapshot), indent=1).encode() + b"\n"
