"""A daemon's ``telemetry`` block brought to life: its sinks, the exporter, ``started``/uptime, traces.

SPIRE starts its sinks before anything else and keeps going when the Prometheus listener
cannot bind (it logs a warning): metrics must never stand between a workload and its identity.
pyspire does the same. ``M3`` is refused when the config is read: no maintained Python client
speaks its protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Literal

from pyspire import __version__
from pyspire.config.sections import Telemetry
from pyspire.http_listener import HttpListener
from pyspire.telemetry.inmem import InmemSink
from pyspire.telemetry.metrics import Metrics, Sink
from pyspire.telemetry.prometheus import PrometheusSink, serve_prometheus
from pyspire.telemetry.tracing import Tracing, TracingUnavailable, start_tracing

__all__ = ["TelemetryError", "TelemetryRuntime"]

_log = logging.getLogger("pyspire.telemetry")

UPTIME_INTERVAL = 10.0  # SPIRE reports uptime_in_ms every 10 s


class TelemetryError(Exception):
    """A sink or the tracer cannot be set up as configured; the message says what to install or fix."""


def _statsd_sinks(config: Telemetry) -> list[Sink]:
    sinks: list[Sink] = []
    if config.statsd or config.dogstatsd:
        from pyspire.telemetry.statsd import DogStatsdSink, StatsdSink  # noqa: PLC0415 - optional clients

        try:
            sinks.extend(StatsdSink(item.address) for item in config.statsd)
        except ImportError:
            raise TelemetryError("telemetry.Statsd needs the statsd client: pip install 'pyspire[statsd]'") from None
        except ValueError as err:
            raise TelemetryError(str(err)) from None
        try:
            sinks.extend(DogStatsdSink(item.address) for item in config.dogstatsd)
        except ImportError:
            raise TelemetryError(
                "telemetry.DogStatsd needs Datadog's client: pip install 'pyspire[dogstatsd]'"
            ) from None
        except ValueError as err:
            raise TelemetryError(str(err)) from None
    return sinks


class TelemetryRuntime:
    """The metrics and traces of one daemon."""

    def __init__(self, service: Literal["spire_server", "spire_agent"], config: Telemetry, trust_domain: str) -> None:
        """Build the sinks ``config`` names (TelemetryError when one cannot be); nothing runs until :meth:`start`."""
        self._service = service
        self._config = config
        self._trust_domain = trust_domain
        self.prometheus = PrometheusSink() if config.prometheus is not None else None
        self.inmem = InmemSink() if config.inmem is not None else None
        sinks = _statsd_sinks(config)
        sinks += [sink for sink in (self.prometheus, self.inmem) if sink is not None]
        self.metrics = Metrics(service, config, trust_domain, sinks)
        self._listener: HttpListener | None = None
        self._uptime: asyncio.Task[None] | None = None
        self._tracing: Tracing | None = None
        self._started = time.monotonic()

    @property
    def prometheus_port(self) -> int | None:
        """The port the exporter listens on (the one chosen when the config says 0)."""
        return self._listener.port if self._listener is not None else None

    async def start(self) -> None:
        """Start tracing and the exporter, emit ``started`` and keep ``uptime_in_ms`` current."""
        tracing = self._config.open_telemetry
        if tracing is not None:
            name = "pyspire-server" if self._service == "spire_server" else "pyspire-agent"
            try:
                self._tracing = start_tracing(tracing, name, __version__)
            except TracingUnavailable as err:
                raise TelemetryError(str(err)) from None
        prometheus = self._config.prometheus
        if prometheus is not None and self.prometheus is not None:
            host = prometheus.host or "localhost"
            if host != "localhost":
                _log.warning(
                    "Agent is now configured to accept remote network connections for Prometheus stats "
                    "collection. Please ensure access to this port is tightly controlled"
                )
            try:
                self._listener = await serve_prometheus(self.prometheus, host, prometheus.port)
            except OSError as err:
                _log.warning("Prometheus listener stopped unexpectedly: %s", err.strerror or err)
            else:
                _log.info("Starting prometheus exporter", extra={"host": host, "port": self._listener.port})
        self.metrics.set_gauge(("started",), 1, (("version", __version__), ("trust_domain_id", self._trust_domain)))
        self._uptime = asyncio.create_task(self._report_uptime(), name="pyspire-uptime")

    async def _report_uptime(self) -> None:
        while True:
            self.metrics.set_gauge(("uptime_in_ms",), (time.monotonic() - self._started) * 1000.0)
            await asyncio.sleep(UPTIME_INTERVAL)

    def dump_inmem(self) -> None:
        """SIGUSR1 with an InMem sink: write its intervals to the log."""
        if self.inmem is not None:
            self.inmem.dump()

    async def stop(self) -> None:
        """Stop the exporter and the uptime reports; flush pending spans."""
        if self._uptime is not None:
            self._uptime.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._uptime
            self._uptime = None
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        if self._tracing is not None:
            await asyncio.to_thread(self._tracing.stop)
            self._tracing = None
