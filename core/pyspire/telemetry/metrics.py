"""Metrics as SPIRE emits them (hashicorp/go-metrics semantics), fanned out to the configured sinks.

A metric is a *key* (``("rpc", "agent", "v1", "agent", "attest_agent")``) with *labels*; each
sink flattens the key its own way (Prometheus: ``spire_server_rpc_agent_v1_agent_attest_agent``,
Statsd: dots). What SPIRE's telemetry block says about every metric is applied here, once:

- the service name (``spire_server``/``spire_agent``, or ``MetricPrefix``) starts every key;
- ``EnableHostnameLabel`` (on unless set false, as in SPIRE) adds ``host``; ``EnableTrustDomainLabel``
  adds ``trust_domain``;
- label names and values are sanitized as SPIRE does (runs of non-word characters become ``_``);
- ``AllowedPrefixes``/``BlockedPrefixes`` (dotted, service name included) and
  ``AllowedLabels``/``BlockedLabels`` filter as go-metrics does: the longest matching prefix decides.

A *call counter* (:meth:`Metrics.call`) is SPIRE's aggregate: a counter on the key and a sample
of the elapsed milliseconds on ``key + ("elapsed_time",)``, both labelled with the gRPC status
name (``OK``, ``NotFound``...) the call ended with.

Sinks are called from the event loop and from worker threads (datastore and plugin calls run
there); each sink guards its own state.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.plugin.errors import PluginError

__all__ = [
    "NO_METRICS",
    "CallCounter",
    "Key",
    "Labels",
    "Metrics",
    "MetricsSettings",
    "Sink",
    "status_name",
]

Labels = tuple[tuple[str, str], ...]
"""(name, value) pairs, in the order they were added."""

Key = tuple[str, ...]
"""A metric's name as parts (the service name first once shaped)."""

_INVALID = re.compile(r"\W+_?")

# Go's codes.Code.String() for each gRPC status: the "status" label's values.
_STATUS_NAMES = {
    Status.OK: "OK",
    Status.CANCELLED: "Canceled",
    Status.UNKNOWN: "Unknown",
    Status.INVALID_ARGUMENT: "InvalidArgument",
    Status.DEADLINE_EXCEEDED: "DeadlineExceeded",
    Status.NOT_FOUND: "NotFound",
    Status.ALREADY_EXISTS: "AlreadyExists",
    Status.PERMISSION_DENIED: "PermissionDenied",
    Status.RESOURCE_EXHAUSTED: "ResourceExhausted",
    Status.FAILED_PRECONDITION: "FailedPrecondition",
    Status.ABORTED: "Aborted",
    Status.OUT_OF_RANGE: "OutOfRange",
    Status.UNIMPLEMENTED: "Unimplemented",
    Status.INTERNAL: "Internal",
    Status.UNAVAILABLE: "Unavailable",
    Status.DATA_LOSS: "DataLoss",
    Status.UNAUTHENTICATED: "Unauthenticated",
}


def status_name(error: BaseException | None) -> str:
    """The status a call ended with, as SPIRE labels it: OK, the gRPC status of the error, else Unknown."""
    if error is None:
        return "OK"
    if isinstance(error, GRPCError):
        return _STATUS_NAMES[error.status]
    if isinstance(error, PluginError):
        return _STATUS_NAMES[Status(error.code.value)]
    if isinstance(error, TimeoutError):
        return "DeadlineExceeded"
    if type(error).__name__ == "CancelledError":
        return "Canceled"
    return "Unknown"


def _sanitize(text: str) -> str:
    return _INVALID.sub("_", text)


class Sink(Protocol):
    """Where metrics go (Prometheus, Statsd, DogStatsd, InMem); keys arrive with the service name first."""

    def set_gauge(self, key: Key, value: float, labels: Labels) -> None:
        """The gauge ``key`` now reads ``value``."""

    def incr_counter(self, key: Key, value: float, labels: Labels) -> None:
        """The counter ``key`` grows by ``value``."""

    def add_sample(self, key: Key, value: float, labels: Labels) -> None:
        """One observation of ``key`` (a duration in milliseconds, or a count)."""


class MetricsSettings(Protocol):
    """The telemetry keys that shape every metric (``pyspire.config`` ``Telemetry``)."""

    @property
    def metric_prefix(self) -> str: ...
    @property
    def enable_hostname_label(self) -> bool: ...
    @property
    def enable_trust_domain_label(self) -> bool: ...
    @property
    def allowed_prefixes(self) -> tuple[str, ...]: ...
    @property
    def blocked_prefixes(self) -> tuple[str, ...]: ...
    @property
    def allowed_labels(self) -> tuple[str, ...]: ...
    @property
    def blocked_labels(self) -> tuple[str, ...]: ...


class Metrics:
    """The daemon's metrics: shape each one as SPIRE's telemetry settings say, then hand it to every sink."""

    def __init__(
        self, service: str, settings: MetricsSettings | None, trust_domain: str, sinks: Sequence[Sink]
    ) -> None:
        """Metrics of ``service`` (``spire_server``/``spire_agent``) in ``trust_domain``, into ``sinks``."""
        self.service = (settings.metric_prefix if settings is not None else "") or service
        self.sinks = tuple(sinks)
        extra: list[tuple[str, str]] = []
        if settings is not None and settings.enable_trust_domain_label:
            extra.append(("trust_domain", trust_domain))
        self._extra = tuple(extra)
        self._host = (
            (("host", socket.gethostname()),) if settings is not None and settings.enable_hostname_label else ()
        )
        self._prefix_rules = (
            [(p, True) for p in settings.allowed_prefixes] + [(p, False) for p in settings.blocked_prefixes]
            if settings is not None
            else []
        )
        # go-metrics: with allowed prefixes, anything they do not match is filtered out.
        self._default_allowed = settings is None or not settings.allowed_prefixes
        self._allowed_labels = frozenset(settings.allowed_labels) if settings is not None else frozenset()
        self._blocked_labels = frozenset(settings.blocked_labels) if settings is not None else frozenset()

    def _shape(self, key: Sequence[str], labels: Labels) -> tuple[Key, Labels] | None:
        full = (self.service, *key)
        dotted = ".".join(full)
        best, allowed = -1, self._default_allowed
        for prefix, verdict in self._prefix_rules:
            if dotted.startswith(prefix) and len(prefix) > best:
                best, allowed = len(prefix), verdict
        if not allowed:
            return None
        shaped = [(_sanitize(name), _sanitize(value)) for name, value in (*labels, *self._extra)]
        shaped.extend(self._host)
        if self._allowed_labels:
            shaped = [label for label in shaped if label[0] in self._allowed_labels]
        if self._blocked_labels:
            shaped = [label for label in shaped if label[0] not in self._blocked_labels]
        return full, tuple(shaped)

    def set_gauge(self, key: Sequence[str], value: float, labels: Labels = ()) -> None:
        """Set the gauge ``key``."""
        if self.sinks and (shaped := self._shape(key, labels)) is not None:
            for sink in self.sinks:
                sink.set_gauge(shaped[0], value, shaped[1])

    def incr_counter(self, key: Sequence[str], value: float = 1.0, labels: Labels = ()) -> None:
        """Add ``value`` to the counter ``key``."""
        if self.sinks and (shaped := self._shape(key, labels)) is not None:
            for sink in self.sinks:
                sink.incr_counter(shaped[0], value, shaped[1])

    def add_sample(self, key: Sequence[str], value: float, labels: Labels = ()) -> None:
        """Observe ``value`` for the sample ``key``."""
        if self.sinks and (shaped := self._shape(key, labels)) is not None:
            for sink in self.sinks:
                sink.add_sample(shaped[0], value, shaped[1])

    def measure_since(self, key: Sequence[str], started: float, labels: Labels = ()) -> None:
        """Observe the milliseconds since ``started`` (a ``time.monotonic()`` reading) for ``key``."""
        self.add_sample(key, (time.monotonic() - started) * 1000.0, labels)

    @contextmanager
    def call(self, *key: str, labels: Labels = ()) -> Iterator[CallCounter]:
        """Count the call ``key`` and time it, labelled with the status it ends with (the error passes on)."""
        counter = CallCounter(self, key, labels)
        try:
            yield counter
        except BaseException as err:
            counter.done(err)
            raise
        counter.done(None)


class CallCounter:
    """One call being counted: labels may be added until it is done."""

    def __init__(self, metrics: Metrics, key: Key, labels: Labels) -> None:
        """A call of ``key`` starting now."""
        self._metrics = metrics
        self._key = key
        self._labels = list(labels)
        self._started = time.monotonic()
        self._done = False

    def add_label(self, name: str, value: str) -> None:
        """Label this call's counter and sample."""
        self._labels.append((name, value))

    def done(self, error: BaseException | None) -> None:
        """Emit the counter and the elapsed-time sample (once)."""
        if self._done:
            return
        self._done = True
        labels = (*self._labels, ("status", status_name(error)))
        self._metrics.incr_counter(self._key, 1.0, labels)
        self._metrics.measure_since((*self._key, "elapsed_time"), self._started, labels)


NO_METRICS = Metrics("pyspire", None, "", ())
"""Metrics that go nowhere: the default of components built outside a daemon (tools, tests)."""
