"""What SPIRE's telemetry block does to every metric, on pyspire's metrics facade (go-metrics' rules).

The sinks are pyspire's own (Prometheus rendering, InMem); the daemon-level behaviour is in
tests/test_telemetry.py. These cover the rules' corners: prefix filters with longest match,
label filters, sanitizing, the host and trust domain labels, and call counters' status names.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from pyspire.plugin.errors import NotFound
from pyspire.telemetry.inmem import InmemSink
from pyspire.telemetry.metrics import Metrics
from pyspire.telemetry.prometheus import PrometheusSink


@dataclass(frozen=True)
class Settings:
    metric_prefix: str = ""
    enable_hostname_label: bool = True
    enable_trust_domain_label: bool = False
    allowed_prefixes: tuple[str, ...] = ()
    blocked_prefixes: tuple[str, ...] = ()
    allowed_labels: tuple[str, ...] = ()
    blocked_labels: tuple[str, ...] = ()


def _metrics(**settings: object) -> tuple[Metrics, PrometheusSink]:
    sink = PrometheusSink()
    return Metrics("spire_server", Settings(**settings), "example.org", [sink]), sink  # type: ignore[arg-type]


def _lines(sink: PrometheusSink) -> list[str]:
    return [line for line in sink.render().splitlines() if line.startswith("spire") or line.startswith("acme")]


def test_the_host_label_is_on_by_default_and_can_be_turned_off() -> None:
    metrics, sink = _metrics()
    metrics.incr_counter(("started",))
    assert _lines(sink) == [f'spire_server_started{{host="{socket.gethostname()}"}} 1']
    metrics, sink = _metrics(enable_hostname_label=False)
    metrics.incr_counter(("started",))
    assert _lines(sink) == ["spire_server_started 1"]


def test_metric_prefix_replaces_the_service_name_and_trust_domain_is_sanitized() -> None:
    metrics, sink = _metrics(
        metric_prefix="acme-spire.server", enable_hostname_label=False, enable_trust_domain_label=True
    )
    metrics.set_gauge(("started",), 1, (("version", "1.13.3"),))
    assert _lines(sink) == ['acme_spire_server_started{trust_domain="example_org",version="1_13_3"} 1']


def test_prefix_filters_take_the_longest_match() -> None:
    metrics, sink = _metrics(
        enable_hostname_label=False,
        blocked_prefixes=("spire_server.datastore",),
        allowed_prefixes=("spire_server.datastore.bundle",),
    )
    metrics.incr_counter(("datastore", "node", "fetch"))
    metrics.incr_counter(("datastore", "bundle", "fetch"))
    metrics.incr_counter(("rpc", "x"))
    # With allowed prefixes, what none of them matches is dropped too (go-metrics' default flips).
    assert _lines(sink) == ["spire_server_datastore_bundle_fetch 1"]


def test_label_filters_keep_only_allowed_labels_and_drop_blocked_ones() -> None:
    metrics, sink = _metrics(allowed_labels=("status", "attestor"), blocked_labels=("attestor",))
    metrics.incr_counter(("workload_api", "workload_attestor"), labels=(("attestor", "unix"), ("status", "OK")))
    assert _lines(sink) == ['spire_server_workload_api_workload_attestor{status="OK"} 1']


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (None, "OK"),
        (GRPCError(Status.PERMISSION_DENIED, "no"), "PermissionDenied"),
        (NotFound("gone"), "NotFound"),
        (RuntimeError("boom"), "Unknown"),
        (TimeoutError(), "DeadlineExceeded"),
    ],
)
def test_call_counters_carry_the_status_name_the_call_ended_with(error: BaseException | None, status: str) -> None:
    metrics, sink = _metrics(enable_hostname_label=False)
    raised: BaseException | None = None
    try:
        with metrics.call("rpc", "entry", "v1", "entry", "get_entry"):
            if error is not None:
                raise error
    except BaseException as err:
        raised = err
    assert raised is error  # the call counter passes the error on
    lines = _lines(sink)
    assert f'spire_server_rpc_entry_v1_entry_get_entry{{status="{status}"}} 1' in lines
    assert f'spire_server_rpc_entry_v1_entry_get_entry_elapsed_time_count{{status="{status}"}} 1' in lines


def test_inmem_dumps_only_complete_intervals_in_go_metrics_format() -> None:
    sink = InmemSink(interval=0.05)
    metrics = Metrics("spire_agent", Settings(enable_hostname_label=False), "example.org", [sink])  # type: ignore[arg-type]
    metrics.incr_counter(("workload_api", "connection"))
    metrics.add_sample(("workload_api", "discovered_selectors"), 3)
    metrics.add_sample(("workload_api", "discovered_selectors"), 5)
    assert sink.dump_lines() == []  # the interval is still filling
    time.sleep(0.06)
    lines = sink.dump_lines()
    assert any(
        line.endswith(
            "[C] 'spire_agent.workload_api.connection': Count: 1 Sum: 1.000 LastUpdated: "
            + line.rsplit("LastUpdated: ", 1)[1]
        )
        for line in lines
    )
    assert any(
        "[S] 'spire_agent.workload_api.discovered_selectors': Count: 2 Min: 3.000 Mean: 4.000 Max: 5.000" in line
        for line in lines
    )
