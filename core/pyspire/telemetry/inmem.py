"""The InMem sink: SPIRE's in-memory aggregation, dumped to the log on SIGUSR1.

As go-metrics' InmemSink with SPIRE's settings, metrics are aggregated per 1 s interval and
intervals are kept for an hour; SIGUSR1 writes every complete interval to the log in
go-metrics' dump format, one log line per metric: ``[<interval start>][G] 'name': value`` for
gauges, ``[C]`` for counters and ``[S]`` for samples with ``Count``, ``Sum`` (and
``Min``/``Mean``/``Max``/``Stddev`` once they differ). Names are the dotted key with
``;label=value`` pairs appended. Intervals in which nothing was recorded are not kept.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

from pyspire.telemetry.metrics import Key, Labels

__all__ = ["InmemSink"]

_log = logging.getLogger("pyspire.telemetry")

INTERVAL = 1.0
RETENTION = 3600.0


@dataclass
class _Aggregate:
    count: int = 0
    total: float = 0.0
    squares: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    last: float = 0.0

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.squares += value * value
        self.low, self.high = min(self.low, value), max(self.high, value)
        self.last = time.time()

    def describe(self) -> str:
        if not self.count:
            return "Count: 0"
        updated = datetime.fromtimestamp(self.last, UTC).strftime("%Y-%m-%d %H:%M:%S.%f +0000 UTC")
        mean = self.total / self.count
        variance = (self.squares - self.count * mean * mean) / (self.count - 1) if self.count > 1 else 0.0
        stddev = math.sqrt(max(variance, 0.0))
        if stddev == 0:
            return f"Count: {self.count} Sum: {self.total:0.3f} LastUpdated: {updated}"
        return (
            f"Count: {self.count} Min: {self.low:0.3f} Mean: {mean:0.3f} Max: {self.high:0.3f} "
            f"Stddev: {stddev:0.3f} Sum: {self.total:0.3f} LastUpdated: {updated}"
        )


@dataclass
class _Interval:
    start: float
    gauges: dict[str, float]
    counters: dict[str, _Aggregate]
    samples: dict[str, _Aggregate]


def _name(key: Key, labels: Labels) -> str:
    return ".".join(key) + "".join(f";{name}={value}" for name, value in labels)


class InmemSink:
    """Per-interval aggregates of every metric, for a dump on demand."""

    def __init__(self, interval: float = INTERVAL, retention: float = RETENTION) -> None:
        """Aggregate over ``interval`` seconds, keeping ``retention`` seconds of intervals."""
        self._interval = interval
        self._retention = retention
        self._lock = threading.Lock()
        self._intervals: deque[_Interval] = deque()

    def _now_interval(self) -> _Interval:
        now = time.time()
        start = now - now % self._interval
        if not self._intervals or self._intervals[-1].start != start:
            self._intervals.append(_Interval(start, {}, {}, {}))
            while self._intervals and self._intervals[0].start < now - self._retention:
                self._intervals.popleft()
        return self._intervals[-1]

    def set_gauge(self, key: Key, value: float, labels: Labels) -> None:
        """Record a gauge."""
        with self._lock:
            self._now_interval().gauges[_name(key, labels)] = value

    def incr_counter(self, key: Key, value: float, labels: Labels) -> None:
        """Record a counter increment."""
        with self._lock:
            self._now_interval().counters.setdefault(_name(key, labels), _Aggregate()).add(value)

    def add_sample(self, key: Key, value: float, labels: Labels) -> None:
        """Record a sample."""
        with self._lock:
            self._now_interval().samples.setdefault(_name(key, labels), _Aggregate()).add(value)

    def dump_lines(self) -> list[str]:
        """Every complete interval, oldest first, in go-metrics' format (the one still filling is skipped)."""
        lines: list[str] = []
        with self._lock:
            current = self._now_interval()
            for interval in self._intervals:
                if interval is current:
                    continue
                start = datetime.fromtimestamp(interval.start, UTC).strftime("%Y-%m-%d %H:%M:%S +0000 UTC")
                lines += [f"[{start}][G] '{name}': {value:0.3f}" for name, value in sorted(interval.gauges.items())]
                lines += [f"[{start}][C] '{name}': {a.describe()}" for name, a in sorted(interval.counters.items())]
                lines += [f"[{start}][S] '{name}': {a.describe()}" for name, a in sorted(interval.samples.items())]
        return lines

    def dump(self) -> None:
        """Write the dump to the log (SIGUSR1), one line per metric."""
        for line in self.dump_lines():
            _log.info(line)
