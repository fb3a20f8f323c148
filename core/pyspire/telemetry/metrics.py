"""Prometheus metrics (``telemetry { Prometheus { host, port } }``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["Metrics"]


class Metrics:
    """The daemons' metrics, on a registry of their own."""

    def __init__(self, prefix: str = "spire_server") -> None:
        """Metrics named ``<prefix>_...``."""
        self.registry = CollectorRegistry()
        self.rpc_calls = Counter(
            f"{prefix}_rpc_calls", "API calls by method and gRPC status", ["method", "status"], registry=self.registry
        )
        self.rpc_seconds = Histogram(f"{prefix}_rpc_seconds", "API call latency", ["method"], registry=self.registry)
        self.datastore_calls = Counter(
            f"{prefix}_datastore_calls",
            "DataStore operations made while answering API calls (syncs answered from memory make none)",
            ["operation"],
            registry=self.registry,
        )
        self.gauges = Gauge(
            f"{prefix}_state", "Counts and times of the daemon's state", ["name"], registry=self.registry
        )

    def serve(self, host: str, port: int) -> None:
        """Export on ``host:port`` (a background thread)."""
        start_http_server(port, addr=host or "0.0.0.0", registry=self.registry)  # noqa: S104 - SPIRE's default is all interfaces
