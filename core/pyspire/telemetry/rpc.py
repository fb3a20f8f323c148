"""Every gRPC call a daemon serves, counted and timed as SPIRE's metrics middleware does, and traced.

SPIRE names a call's metric from its full method: the ``spire.api.server.`` prefix dropped,
its well-known services shortened (``SpiffeWorkloadAPI`` is ``WorkloadAPI``, Envoy's SDS is
``SDS.v3``, ``grpc.health.v1.Health`` is ``Health``, ``logger.v1.Logger`` is ``Logger``), split
on dots, each part and the method turned from PascalCase into snake_case:
``/spire.api.server.agent.v1.Agent/AttestAgent`` is ``rpc.agent.v1.agent.attest_agent`` and
``/SpiffeWorkloadAPI/FetchX509SVID`` is ``rpc.workload_api.fetch_x509_svid``. The agent also
counts connections (calls) to the Workload API and SDS with their open-call gauges.

:func:`instrument` wraps grpclib services without touching them: each method of the mapping
grpclib serves is replaced by one that measures it, so no handler can forget to.
"""

from __future__ import annotations

import asyncio
import functools
import unicodedata
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from grpclib.const import Handler
from opentelemetry.trace import SpanKind, StatusCode

from pyspire.telemetry.metrics import Metrics, status_name
from pyspire.telemetry.tracing import extract_context, start_span, tracing_enabled

__all__ = ["instrument", "rpc_metric_key"]

_SERVICE_REPLACEMENTS = (
    ("spire.api.server.", ""),
    ("SpiffeWorkloadAPI", "WorkloadAPI"),
    ("envoy.service.secret.v3.SecretDiscoveryService", "SDS.v3"),
    ("grpc.health.v1.Health", "Health"),
    ("logger.v1.Logger", "Logger"),
    ("spire.api.agent.delegatedidentity.v1.DelegatedIdentity", "DelegatedIdentity"),
)
_METHOD_REPLACEMENTS = {"SubscribeToX509SVIDs": "subscribe_to_x509_svids"}
_CONNECTION_PREFIXES = {
    "SpiffeWorkloadAPI": "workload_api",
    "envoy.service.secret.v3.SecretDiscoveryService": "sds_api",
}


def _snake(text: str) -> str:
    """SPIRE's metricKey: PascalCase to snake_case, non-alphanumerics to ``_``."""
    out: list[str] = []
    for index, char in enumerate(text):
        if not (char.isalpha() or unicodedata.category(char).startswith("N")):
            out.append("_")
            continue
        lower = char.lower()
        if (
            char != lower
            and 0 < index < len(text) - 1
            and (text[index + 1].islower() or text[index - 1].islower())
            and out[-1] != "_"
        ):
            out.append("_")
        out.append(lower)
    return "".join(out)


@functools.cache
def rpc_metric_key(path: str) -> tuple[str, ...]:
    """The metric key of the gRPC method ``path`` (``/package.Service/Method``), as SPIRE builds it."""
    service, _, method = path.lstrip("/").partition("/")
    for old, new in _SERVICE_REPLACEMENTS:
        service = service.replace(old, new)
    method = _METHOD_REPLACEMENTS.get(method, method)
    return ("rpc", *(_snake(part) for part in service.split(".")), _snake(method))


class _OpenCalls:
    """Open calls per service, for the connection gauges."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}


Func = Callable[[Any], Coroutine[Any, Any, None]]


def _measured(path: str, func: Func, metrics: Metrics, open_calls: _OpenCalls, connections: bool) -> Func:
    raw_service, _, method = path.lstrip("/").partition("/")
    key = rpc_metric_key(path)
    api = _CONNECTION_PREFIXES.get(raw_service) if connections else None
    attributes = {"rpc.system": "grpc", "rpc.service": raw_service, "rpc.method": method}

    @functools.wraps(func)
    async def call(stream: Any) -> None:
        if api is not None:
            # SPIRE counts every call as a connection and gauges the ones open.
            metrics.incr_counter((api, "connection"))
            open_calls.counts[api] = open_calls.counts.get(api, 0) + 1
            metrics.set_gauge((api, "connections"), open_calls.counts[api])
        parent = extract_context(stream.metadata) if tracing_enabled() else None
        error: BaseException | None = None
        with (
            metrics.call(*key),
            start_span(f"{raw_service}/{method}", context=parent, kind=SpanKind.SERVER, attributes=attributes) as span,
        ):
            try:
                await func(stream)
            except (Exception, asyncio.CancelledError) as err:
                error = err
                raise
            finally:
                status = status_name(error)
                span.set_attribute("rpc.grpc.status_code", status)
                if error is not None:
                    span.set_status(StatusCode.ERROR, status)
                if api is not None:
                    open_calls.counts[api] -= 1
                    metrics.set_gauge((api, "connections"), open_calls.counts[api])

    return call


class _Instrumented:
    """A grpclib service whose every method is measured."""

    def __init__(self, service: Any, metrics: Metrics, open_calls: _OpenCalls, connections: bool) -> None:
        self._service = service
        self._metrics = metrics
        self._open_calls = open_calls
        self._connections = connections

    def __mapping__(self) -> Mapping[str, Handler]:
        mapping: Mapping[str, Handler] = self._service.__mapping__()
        return {
            path: Handler(
                _measured(path, handler.func, self._metrics, self._open_calls, self._connections),
                handler.cardinality,
                handler.request_type,
                handler.reply_type,
            )
            for path, handler in mapping.items()
        }


def instrument(services: Sequence[Any], metrics: Metrics, *, connections: bool = False) -> list[Any]:
    """``services`` with every method counted, timed and traced; ``connections`` adds the agent's gauges."""
    open_calls = _OpenCalls()
    return [_Instrumented(service, metrics, open_calls, connections) for service in services]
