"""The Prometheus sink: SPIRE's exposition (go-metrics' Prometheus sink behind client_golang's handler).

Names are the key's parts joined with ``_``, every character Prometheus forbids in a name made
``_`` (``spire_server_rpc_agent_v1_agent_attest_agent``). Counters keep that name (no ``_total``
suffix: SPIRE's client adds none, and dashboards written for SPIRE query the bare name),
gauges likewise, and samples are summaries with SPIRE's quantiles (0.5, 0.9, 0.99 over the last
10 seconds) plus ``_sum`` and ``_count``. The ``process_*`` families that client_golang's
default registry exports are exported too, with the same names and meanings; in place of Go's
``go_goroutines`` and ``go_threads``, ``python_asyncio_tasks`` and ``python_threads`` count the
daemon's unfinished tasks and live threads (what a leak shows in). Any path of the listener
serves the text (format 0.0.4), as SPIRE's handler does.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import resource
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from pyspire.http_listener import HttpListener, Response
from pyspire.telemetry.metrics import Key, Labels

__all__ = ["PrometheusSink", "prometheus_name", "serve_prometheus"]

_FORBIDDEN = re.compile(r"[^a-zA-Z0-9_:]")
_QUANTILES = (0.5, 0.9, 0.99)
_MAX_AGE = 10.0
_MAX_WINDOW = 4096  # observations kept per summary for its quantiles (the newest)
_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def prometheus_name(key: Key) -> str:
    """The Prometheus name of a metric key."""
    return _FORBIDDEN.sub("_", "_".join(key))


def _label_name(name: str) -> str:
    return _FORBIDDEN.sub("_", name).replace(":", "_")


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


@dataclass
class _Summary:
    count: int = 0
    total: float = 0.0
    window: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=_MAX_WINDOW))

    def observe(self, value: float, now: float) -> None:
        self.count += 1
        self.total += value
        self.window.append((now, value))

    def quantiles(self, now: float) -> list[tuple[float, float]]:
        recent = sorted(value for at, value in self.window if now - at <= _MAX_AGE)
        if not recent:
            return [(q, math.nan) for q in _QUANTILES]
        return [(q, recent[min(len(recent) - 1, math.ceil(q * len(recent)) - 1)]) for q in _QUANTILES]


def _sorted_labels(labels: Labels) -> Labels:
    merged: dict[str, str] = {}
    for name, value in labels:
        merged[_label_name(name)] = value
    return tuple(sorted(merged.items()))


def _series(name: str, labels: Iterable[tuple[str, str]], value: float) -> str:
    pairs = ",".join(f'{label}="{_escape(text)}"' for label, text in labels)
    return f"{name}{{{pairs}}} {_number(value)}" if pairs else f"{name} {_number(value)}"


class PrometheusSink:
    """Holds every metric's current value and renders them in Prometheus' text format."""

    def __init__(self) -> None:
        """An empty sink."""
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = {}
        self._gauges: dict[str, dict[Labels, float]] = {}
        self._summaries: dict[str, dict[Labels, _Summary]] = {}

    def set_gauge(self, key: Key, value: float, labels: Labels) -> None:
        """Set a gauge."""
        with self._lock:
            self._gauges.setdefault(prometheus_name(key), {})[_sorted_labels(labels)] = value

    def incr_counter(self, key: Key, value: float, labels: Labels) -> None:
        """Add to a counter."""
        with self._lock:
            series = self._counters.setdefault(prometheus_name(key), {})
            sorted_labels = _sorted_labels(labels)
            series[sorted_labels] = series.get(sorted_labels, 0.0) + value

    def add_sample(self, key: Key, value: float, labels: Labels) -> None:
        """Observe a sample."""
        with self._lock:
            series = self._summaries.setdefault(prometheus_name(key), {})
            sorted_labels = _sorted_labels(labels)
            summary = series.get(sorted_labels)
            if summary is None:
                summary = series[sorted_labels] = _Summary()
            summary.observe(value, time.monotonic())

    def render(self) -> str:
        """The exposition text: families sorted by name, series by labels, then the process families."""
        now = time.monotonic()
        families: dict[str, list[str]] = {}
        with self._lock:
            for name, counters in self._counters.items():
                families[name] = [f"# HELP {name} {name}", f"# TYPE {name} counter"] + [
                    _series(name, labels, value) for labels, value in sorted(counters.items())
                ]
            for name, gauges in self._gauges.items():
                families[name] = [f"# HELP {name} {name}", f"# TYPE {name} gauge"] + [
                    _series(name, labels, value) for labels, value in sorted(gauges.items())
                ]
            for name, summaries in self._summaries.items():
                lines = [f"# HELP {name} {name}", f"# TYPE {name} summary"]
                for labels, summary in sorted(summaries.items()):
                    for quantile, value in summary.quantiles(now):
                        lines.append(_series(name, (*labels, ("quantile", str(quantile))), value))
                    lines.append(_series(f"{name}_sum", labels, summary.total))
                    lines.append(_series(f"{name}_count", labels, summary.count))
                families[name] = lines
        for name, lines in (_process_families() | _runtime_families()).items():
            families.setdefault(name, lines)
        return "".join(line + "\n" for name in sorted(families) for line in families[name])


def _runtime_families() -> dict[str, list[str]]:
    """The interpreter's counterparts of client_golang's ``go_goroutines`` and ``go_threads``."""
    families = {
        "python_threads": [
            "# HELP python_threads Number of live Python threads.",
            "# TYPE python_threads gauge",
            _series("python_threads", (), threading.active_count()),
        ]
    }
    try:
        tasks = sum(1 for task in asyncio.all_tasks() if not task.done())
    except RuntimeError:  # rendered outside the daemon's event loop
        return families
    families["python_asyncio_tasks"] = [
        "# HELP python_asyncio_tasks Number of asyncio tasks not yet done in the daemon's event loop.",
        "# TYPE python_asyncio_tasks gauge",
        _series("python_asyncio_tasks", (), tasks),
    ]
    return families


def _process_families() -> dict[str, list[str]]:
    """client_golang's process collector, read from /proc as it reads it."""
    families: dict[str, list[str]] = {}

    def family(name: str, kind: str, help_text: str, value: float) -> None:
        families[name] = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", _series(name, (), value)]

    try:
        with open("/proc/self/stat", encoding="ascii") as stat_file:
            fields = stat_file.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        page = os.sysconf("SC_PAGE_SIZE")
        with open("/proc/stat", encoding="ascii") as boot_file:
            boot = next(float(line.split()[1]) for line in boot_file if line.startswith("btime"))
        fds = len(os.listdir("/proc/self/fd"))
    except (OSError, ValueError, IndexError, StopIteration):
        return families
    family(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        (int(fields[11]) + int(fields[12])) / ticks,
    )
    family("process_open_fds", "gauge", "Number of open file descriptors.", fds)
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    family("process_max_fds", "gauge", "Maximum number of open file descriptors.", limit)
    family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", int(fields[20]))
    family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", int(fields[21]) * page)
    family(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        boot + int(fields[19]) / ticks,
    )
    return families


async def serve_prometheus(sink: PrometheusSink, host: str, port: int) -> HttpListener:
    """Start the exporter on ``host:port`` (every path answers, as SPIRE's does); the running listener."""

    async def metrics() -> Response:
        return Response(200, _CONTENT_TYPE, sink.render().encode())

    listener = HttpListener(host, port, {}, default=metrics)
    await listener.start()
    return listener
