"""OpenTelemetry traces (pyspire's addition: SPIRE has none), off unless ``telemetry { OpenTelemetry {} }``.

Code everywhere starts its spans with :func:`start_span`; without a configured provider that
is a shared do-nothing context (OpenTelemetry's own no-op span still costs a few microseconds
and a context switch, paid per signature and per call on the hot paths).
:func:`start_tracing` installs the SDK's provider with a batching OTLP exporter (http/protobuf
or grpc) or the console exporter, and :meth:`Tracing.stop` flushes what is pending before the
daemon exits.

Spans: every gRPC call the daemons serve (``SERVER``, continuing the caller's trace from the
``traceparent`` metadata, which the agent sends with every call to the server), every plugin
hook, node attestation, workload attestation, each sync round, SVID rotation and signing.
Attribute names follow OpenTelemetry's RPC conventions (``rpc.system``, ``rpc.service``,
``rpc.method``, ``rpc.grpc.status_code``) and ``pyspire.*``.

The SDK and the exporters are optional dependencies (``pip install 'pyspire[opentelemetry]'``);
a config asking for traces without them is refused when the daemon starts.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, MutableMapping
from contextlib import AbstractContextManager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from pyspire.config.sections import OpenTelemetry

__all__ = [
    "Tracing",
    "TracingUnavailable",
    "extract_context",
    "inject_context",
    "start_span",
    "start_tracing",
    "tracing_enabled",
]

_log = logging.getLogger("pyspire.telemetry")

_tracer = trace.get_tracer("pyspire")

_NO_SPAN = contextlib.nullcontext(trace.INVALID_SPAN)
_provider_installed = False


def tracing_enabled() -> bool:
    """Whether :func:`start_tracing` installed a provider (spans are recorded)."""
    return _provider_installed


def start_span(name: str, **options: Any) -> AbstractContextManager[trace.Span]:
    """OpenTelemetry's ``start_as_current_span(name, **options)`` while traces are exported, else a no-op.

    The no-op yields OpenTelemetry's invalid span, on which setting attributes or a status does
    nothing, as on any span that is not recorded.
    """
    if not _provider_installed:
        return _NO_SPAN
    return _tracer.start_as_current_span(name, **options)


class TracingUnavailable(Exception):
    """Traces are configured but the OpenTelemetry SDK or the exporter is not installed."""


def inject_context(metadata: MutableMapping[str, Any]) -> None:
    """Add the current trace context (``traceparent``) to outgoing gRPC metadata."""
    propagate.inject(metadata)


def extract_context(metadata: Mapping[str, str] | None) -> otel_context.Context:
    """The trace context a caller sent in its gRPC metadata (an empty context when none)."""
    carrier = {key: value for key, value in (metadata or {}).items() if isinstance(value, str)}
    return propagate.extract(carrier)


class Tracing:
    """The installed SDK provider; :meth:`stop` flushes and shuts it down."""

    def __init__(self, provider: Any) -> None:
        """Wrap ``provider`` (an SDK TracerProvider)."""
        self._provider = provider

    def stop(self) -> None:
        """Export what is pending, then stop exporting."""
        global _provider_installed  # noqa: PLW0603 - one provider per process, as OpenTelemetry's
        _provider_installed = False
        self._provider.force_flush(timeout_millis=5000)
        self._provider.shutdown()


def _exporter(config: OpenTelemetry) -> Any:
    if config.exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter  # noqa: PLC0415 - optional dependency

        return ConsoleSpanExporter()
    headers = dict(config.headers) or None
    if config.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter(endpoint=config.endpoint, insecure=config.insecure, headers=headers)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415

    endpoint = config.endpoint.rstrip("/")
    if not endpoint.endswith("/v1/traces"):
        endpoint += "/v1/traces"
    return OTLPSpanExporter(endpoint=endpoint, headers=headers)


def start_tracing(config: OpenTelemetry, service_name: str, version: str) -> Tracing:
    """Install the SDK's tracer provider for ``config``; raises TracingUnavailable naming the package to install."""
    try:
        from opentelemetry.sdk.resources import Resource  # noqa: PLC0415 - optional dependency
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor  # noqa: PLC0415
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased  # noqa: PLC0415

        exporter = _exporter(config)
    except ImportError as err:
        raise TracingUnavailable(
            f"telemetry.OpenTelemetry needs the OpenTelemetry SDK and its {config.protocol} OTLP exporter "
            f"({err.name} is missing): pip install 'pyspire[opentelemetry]'"
        ) from None
    resource = Resource.create({"service.name": config.service_name or service_name, "service.version": version})
    provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)))
    processor = SimpleSpanProcessor(exporter) if config.exporter == "console" else BatchSpanProcessor(exporter)
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    global _provider_installed  # noqa: PLW0603 - one provider per process, as OpenTelemetry's
    _provider_installed = True
    _log.info(
        "Exporting traces",
        extra={"exporter": config.exporter, "endpoint": config.endpoint, "protocol": config.protocol},
    )
    return Tracing(provider)
