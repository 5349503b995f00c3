"""Metrics in the Prometheus text exposition format (version 0.0.4), without I/O.

A `Registry` holds counters, gauges and histograms; `render()` returns the text that
`GET /metrics` on the publish listener answers. Gauges that mirror live state (connections,
subscriptions, channels, buffered bytes) take a callback read at render time, so nothing has
to be kept in step by hand. Label sets are fixed per metric when it is made, and label values
are escaped as the format requires. Histograms keep cumulative bucket counts, a sum and a
count: O(buckets) per observation, bounded memory whatever the traffic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

from ._errors import LocalProtocolError

__all__ = [
    "DEFAULT_LATENCY_BUCKETS",
    "CallbackCounter",
    "Counter",
    "Gauge",
    "Histogram",
    "Registry",
]

# Seconds: from sub-millisecond deliveries to origins that take seconds to answer.
DEFAULT_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

LabelValues = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        if not name or not all(c.isalnum() or c in "_:" for c in name) or name[0].isdigit():
            raise LocalProtocolError(f"invalid metric name {name!r}")
        self.name = name
        self.help = help_text
        self.label_names = tuple(labels)

    def _key(self, labels: Sequence[str]) -> LabelValues:
        if len(labels) != len(self.label_names):
            raise LocalProtocolError(
                f"{self.name} takes labels {self.label_names}, got {tuple(labels)}"
            )
        return tuple(labels)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def samples(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    """A value that only goes up (items received, deliveries, drops by reason...)."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labels)
        self.values: dict[LabelValues, float] = {}

    def inc(self, amount: float = 1.0, labels: Sequence[str] = ()) -> None:
        if amount < 0:
            raise LocalProtocolError("a counter cannot go down")
        key = self._key(labels)
        self.values[key] = self.values.get(key, 0.0) + amount

    def samples(self) -> list[str]:
        if not self.values and not self.label_names:
            return [f"{self.name} 0"]
        return [
            f"{self.name}{_labels(self.label_names, key)} {_number(value)}"
            for key, value in sorted(self.values.items())
        ]


class Gauge(_Metric):
    """A value read when rendered, from a callback returning (labels, value) pairs."""

    kind = "gauge"

    def __init__(
        self,
        name: str,
        help_text: str,
        read: Callable[[], Iterable[tuple[LabelValues, float]]],
        labels: Sequence[str] = (),
    ) -> None:
        super().__init__(name, help_text, labels)
        self.read = read

    def samples(self) -> list[str]:
        return [
            f"{self.name}{_labels(self.label_names, self._key(key))} {_number(value)}"
            for key, value in self.read()
        ]


class CallbackCounter(Gauge):
    """A counter whose values are read when rendered (from stats kept elsewhere)."""

    kind = "counter"


class Histogram(_Metric):
    """Observations counted into cumulative buckets (latencies)."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        buckets: Sequence[float] = DEFAULT_LATENCY_BUCKETS,
        labels: Sequence[str] = (),
    ) -> None:
        super().__init__(name, help_text, labels)
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise LocalProtocolError("histogram buckets must be increasing and unique")
        self.buckets = tuple(buckets)
        self.series: dict[LabelValues, list[float]] = {}  # counts per bucket, +Inf, sum

    def observe(self, value: float, labels: Sequence[str] = ()) -> None:
        key = self._key(labels)
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = [0.0] * (len(self.buckets) + 2)
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                series[i] += 1
        series[-2] += 1  # +Inf, which is also the count
        series[-1] += value

    def samples(self) -> list[str]:
        out: list[str] = []
        for key, series in sorted(self.series.items()):
            for bound, count in zip(self.buckets, series, strict=False):
                le = f'le="{_number(bound)}"'
                out.append(
                    f"{self.name}_bucket{_labels(self.label_names, key, le)} {_number(count)}"
                )
            inf = _labels(self.label_names, key, 'le="+Inf"')
            out.append(f"{self.name}_bucket{inf} {_number(series[-2])}")
            plain = _labels(self.label_names, key)
            out.append(f"{self.name}_sum{plain} {_number(series[-1])}")
            out.append(f"{self.name}_count{plain} {_number(series[-2])}")
        return out


class Registry:
    """The metrics of one server, rendered together."""

    def __init__(self, prefix: str = "gripcore_") -> None:
        self.prefix = prefix
        self.metrics: dict[str, _Metric] = {}

    def _add(self, metric: _Metric) -> None:
        if metric.name in self.metrics:
            raise LocalProtocolError(f"metric {metric.name} already registered")
        self.metrics[metric.name] = metric

    def counter(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Counter:
        metric = Counter(self.prefix + name, help_text, labels)
        self._add(metric)
        return metric

    def gauge(
        self,
        name: str,
        help_text: str,
        read: Callable[[], Iterable[tuple[LabelValues, float]]],
        labels: Sequence[str] = (),
    ) -> Gauge:
        metric = Gauge(self.prefix + name, help_text, read, labels)
        self._add(metric)
        return metric

    def counter_from(
        self,
        name: str,
        help_text: str,
        read: Callable[[], Iterable[tuple[LabelValues, float]]],
        labels: Sequence[str] = (),
    ) -> CallbackCounter:
        metric = CallbackCounter(self.prefix + name, help_text, read, labels)
        self._add(metric)
        return metric

    def histogram(
        self,
        name: str,
        help_text: str,
        buckets: Sequence[float] = DEFAULT_LATENCY_BUCKETS,
        labels: Sequence[str] = (),
    ) -> Histogram:
        metric = Histogram(self.prefix + name, help_text, buckets, labels)
        self._add(metric)
        return metric

    def render(self) -> bytes:
        """The exposition text (`Content-Type: text/plain; version=0.0.4`)."""
        lines: list[str] = []
        for metric in self.metrics.values():
            lines += metric.header()
            lines += metric.samples()
        return ("\n".join(lines) + "\n").encode("utf-8")
