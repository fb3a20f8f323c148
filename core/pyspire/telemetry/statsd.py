"""The Statsd and DogStatsd sinks, through the maintained clients (``statsd``, Datadog's ``datadog``).

Names are flattened as go-metrics' sinks do, so a Statsd/Datadog dashboard built for SPIRE reads
pyspire's: Statsd joins the key's parts and then the label *values* with ``.`` (``:`` and spaces
become ``_``), since plain Statsd has no labels; DogStatsd joins the key with ``.`` and sends the
labels as ``name:value`` tags. Counters are ``|c``, gauges ``|g`` and samples ``|ms``, sent over
UDP to each configured ``address`` (``host:port``). The clients are optional dependencies: a
config naming a sink whose client is not installed is refused at start with the pip command.
"""

from __future__ import annotations

from typing import Any

from pyspire.telemetry.metrics import Key, Labels

__all__ = ["DogStatsdSink", "StatsdSink", "split_address"]


def split_address(address: str, what: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) as a pair; ValueError naming ``what`` otherwise."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f'{what}: address "{address}" is not host:port')
    return host, int(port)


def _flat(parts: tuple[str, ...]) -> str:
    return ".".join(parts).replace(":", "_").replace(" ", "_")


class StatsdSink:
    """go-metrics' StatsdSink: label values become parts of the name."""

    def __init__(self, address: str) -> None:
        """Send to ``address``; ImportError when the ``statsd`` package is missing."""
        import statsd  # noqa: PLC0415 - optional: only a config naming the sink needs it

        host, port = split_address(address, "telemetry.Statsd")
        self._client: Any = statsd.StatsClient(host, port, maxudpsize=1432)

    def _name(self, key: Key, labels: Labels) -> str:
        return _flat((*key, *(value for _, value in labels)))

    def set_gauge(self, key: Key, value: float, labels: Labels) -> None:
        """``name:value|g`` (the client sends a negative value as a reset and a value, not a delta)."""
        self._client.gauge(self._name(key, labels), value)

    def incr_counter(self, key: Key, value: float, labels: Labels) -> None:
        """``name:value|c`` (whole numbers without a fraction)."""
        self._client.incr(self._name(key, labels), int(value) if float(value).is_integer() else value)

    def add_sample(self, key: Key, value: float, labels: Labels) -> None:
        """``name:value|ms``."""
        self._client.timing(self._name(key, labels), value)


class DogStatsdSink:
    """go-metrics' DogStatsdSink: dotted names, labels as tags."""

    def __init__(self, address: str) -> None:
        """Send to ``address``; ImportError when the ``datadog`` package is missing."""
        from datadog.dogstatsd.base import DogStatsd  # noqa: PLC0415 - optional dependency

        host, port = split_address(address, "telemetry.DogStatsd")
        self._client: Any = DogStatsd(host=host, port=port, disable_telemetry=True, origin_detection_enabled=False)

    @staticmethod
    def _tags(labels: Labels) -> list[str]:
        return [f"{name}:{value}" for name, value in labels]

    def set_gauge(self, key: Key, value: float, labels: Labels) -> None:
        """A gauge with tags."""
        self._client.gauge(_flat(key), value, tags=self._tags(labels))

    def incr_counter(self, key: Key, value: float, labels: Labels) -> None:
        """A count with tags (whole numbers, as go-metrics sends them)."""
        self._client.increment(_flat(key), int(value), tags=self._tags(labels))

    def add_sample(self, key: Key, value: float, labels: Labels) -> None:
        """A timing in milliseconds with tags."""
        self._client.timing(_flat(key), value, tags=self._tags(labels))
