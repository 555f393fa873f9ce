"""A strict reader of Prometheus text 0.0.4 and OpenMetrics 1.0 text, for the tests.

``parse`` reads an exposition back into families and checks what a scraper relies on:
every line's grammar, a TYPE before a family's samples and each family in one block,
sample names that fit their family's type, no series twice, histograms whose buckets
rise with ``le``, are cumulative and end with +Inf equal to ``_count``, and, for
OpenMetrics, counters' ``_total`` samples and the final ``# EOF``. Any breach raises
``ExpositionError`` naming the line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
_COMMENT = re.compile(rf"# (HELP|TYPE|UNIT) ({NAME})(?: (.*))?$")
_SAMPLE = re.compile(rf"({NAME})(?:\{{(.*)\}})? (\S+)$")
_LABEL = re.compile(rf'({LABEL_NAME})="((?:[^"\\]|\\.)*)"')
_TYPES = {"counter", "gauge", "histogram", "summary", "untyped", "unknown"}
_SUFFIXES = {
    "counter": ("_total", "_created", ""),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
}


class ExpositionError(AssertionError):
    pass


@dataclass
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass
class Family:
    name: str
    type: str = ""
    help: str | None = None
    unit: str | None = None
    samples: list[Sample] = field(default_factory=list)

    def value(self, name: str | None = None, **labels: str) -> float:
        """The value of the one sample named ``name`` (the family's) with these labels."""
        found = [
            sample.value
            for sample in self.samples
            if sample.name == (name or self.name) and sample.labels == labels
        ]
        if len(found) != 1:
            raise KeyError(f"{len(found)} samples {name or self.name}{labels}")
        return found[0]


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), value)


def _value(text: str) -> float:
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    if not re.fullmatch(r"-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text):
        raise ValueError(text)
    return float(text)


def _labels(text: str | None) -> dict[str, str]:
    labels: dict[str, str] = {}
    if not text:
        return labels
    position = 0
    while position < len(text):
        match = _LABEL.match(text, position)
        if match is None:
            raise ValueError(f"bad labels {text!r}")
        if match.group(1) in labels:
            raise ValueError(f"label {match.group(1)} twice")
        labels[match.group(1)] = _unescape(match.group(2))
        position = match.end()
        if position < len(text):
            if text[position] != ",":
                raise ValueError(f"bad labels {text!r}")
            position += 1
    return labels


def parse(text: str, openmetrics: bool) -> dict[str, Family]:
    """The families of an exposition, checked; see the module's doc."""
    lines = text.split("\n")
    if lines[-1] != "":
        raise ExpositionError("the exposition does not end with a newline")
    lines.pop()
    if openmetrics:
        if not lines or lines[-1] != "# EOF":
            raise ExpositionError("OpenMetrics text must end with # EOF")
        lines.pop()
    families: dict[str, Family] = {}
    current: Family | None = None
    seen_series: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for number, line in enumerate(lines, 1):
        where = f"line {number}: {line!r}"
        if line.startswith("#"):
            comment = _COMMENT.match(line)
            if comment is None:
                raise ExpositionError(f"{where}: not a HELP, TYPE or UNIT line")
            kind, name, rest = comment.groups()
            if current is None or current.name != name:
                if name in families:
                    raise ExpositionError(f"{where}: family {name} declared in two places")
                if current is not None and not current.type:
                    raise ExpositionError(f"family {current.name} has no TYPE")
                current = families[name] = Family(name)
            if kind == "TYPE":
                if current.type or rest not in _TYPES or current.samples:
                    raise ExpositionError(f"{where}: bad, repeated or late TYPE")
                current.type = rest
            elif kind == "HELP":
                current.help = rest
            else:
                if not openmetrics or not name.endswith("_" + (rest or "")):
                    raise ExpositionError(f"{where}: UNIT only in OpenMetrics, as the suffix")
                current.unit = rest
            continue
        match = _SAMPLE.match(line)
        if match is None:
            raise ExpositionError(f"{where}: not a sample")
        name, label_text, value_text = match.groups()
        try:
            labels = _labels(label_text)
            value = _value(value_text)
        except ValueError as exc:
            raise ExpositionError(f"{where}: {exc}") from None
        if current is None or not current.type:
            raise ExpositionError(f"{where}: a sample before its family's TYPE")
        suffix = name[len(current.name) :] if name.startswith(current.name) else None
        allowed = _SUFFIXES.get(current.type, ("",))
        if openmetrics and current.type == "counter":
            allowed = ("_total", "_created")
        if suffix not in allowed:
            raise ExpositionError(f"{where}: not a sample of {current.type} {current.name}")
        series = (name, tuple(sorted(labels.items())))
        if series in seen_series:
            raise ExpositionError(f"{where}: the same series twice")
        seen_series.add(series)
        current.samples.append(Sample(name, labels, value))
    for family in families.values():
        if family.type == "histogram":
            _check_histogram(family)
    return families


def _check_histogram(family: Family) -> None:
    groups: dict[tuple[tuple[str, str], ...], dict[str, list[Sample]]] = {}
    for sample in family.samples:
        key = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
        groups.setdefault(key, {}).setdefault(sample.name[len(family.name) :], []).append(sample)
    for key, parts in groups.items():
        where = f"{family.name}{dict(key)}"
        buckets = parts.get("_bucket", [])
        bounds = [_value(sample.labels["le"]) for sample in buckets]
        if not bounds or bounds[-1] != math.inf:
            raise ExpositionError(f"{where}: no +Inf bucket last")
        if bounds != sorted(bounds) or len(set(bounds)) != len(bounds):
            raise ExpositionError(f"{where}: buckets not in rising order of le")
        counts = [sample.value for sample in buckets]
        if counts != sorted(counts):
            raise ExpositionError(f"{where}: bucket counts are not cumulative")
        if len(parts.get("_count", [])) != 1 or len(parts.get("_sum", [])) != 1:
            raise ExpositionError(f"{where}: not one _count and one _sum")
        if parts["_count"][0].value != counts[-1]:
            raise ExpositionError(f"{where}: the +Inf bucket is not _count")


def histogram(family: Family, **labels: str) -> tuple[dict[float, float], float, float]:
    """One histogram series of a parsed family: {le: cumulative count}, sum, count."""
    buckets = {
        _value(sample.labels["le"]): sample.value
        for sample in family.samples
        if sample.name == family.name + "_bucket"
        and {k: v for k, v in sample.labels.items() if k != "le"} == labels
    }
    return (
        buckets,
        family.value(family.name + "_sum", **labels),
        family.value(family.name + "_count", **labels),
    )
