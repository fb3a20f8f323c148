"""OpenTelemetry traces from real daemons, received by a real OTLP receiver (the OpenTelemetry Collector).

The server exports over OTLP/HTTP and the agent over OTLP/gRPC; after one agent attests and
this process fetches its SVID, the collector must hold spans for the served calls, plugin
hooks, attestation, sync and signing, and the server's spans for the agent's calls must sit in
the agent's traces (the agent sends ``traceparent``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from pyspire.telemetry.tracing import start_span, tracing_enabled

from tests.support import peer_builds
from tests.support.daemons import start_agent, start_server
from tests.support.otelcol import Span, running_collector
from tests.support.waiting import eventually
from tests.support.workloads import fetched_spiffe_id, register_this_process

pytestmark = pytest.mark.needs_build("otelcol")


@pytest.fixture(scope="module")
def spans(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Span]]:
    directory = tmp_path_factory.mktemp("tracing")
    with running_collector(directory, peer_builds.require("otelcol")) as collector:
        server = start_server(
            directory / "server",
            blocks=f'telemetry {{\n  OpenTelemetry {{\n    endpoint = "{collector.http_endpoint}"\n  }}\n}}\n',
        )
        try:
            alias = "spiffe://example.org/node/traced"
            agent = start_agent(
                directory / "agent",
                server,
                server.join_token(alias),
                blocks=(
                    "telemetry {\n  OpenTelemetry {\n"
                    f'    endpoint = "{collector.grpc_endpoint}"\n    protocol = "grpc"\n    insecure = true\n'
                    '    service_name = "agent-under-test"\n  }\n}\n'
                ),
            )
            try:
                register_this_process(server, alias, "spiffe://example.org/traced/workload")
                assert fetched_spiffe_id(agent) == "spiffe://example.org/traced/workload"
            finally:
                assert agent.stop() == 0  # a clean stop flushes what is batched
        finally:
            assert server.stop() == 0
        eventually(lambda: any(s.service == "agent-under-test" for s in collector.spans()), timeout=10)
        yield collector.spans()


def _names(spans: list[Span], service: str) -> set[str]:
    return {span.name for span in spans if span.service == service}


@pytest.mark.slow
def test_the_server_traces_calls_plugin_hooks_and_signing(spans: list[Span]) -> None:
    names = _names(spans, "pyspire-server")
    assert {
        "spire.api.server.agent.v1.Agent/AttestAgent",
        "spire.api.server.entry.v1.Entry/BatchCreateEntry",
        "spire.api.server.svid.v1.SVID/BatchNewX509SVID",
        "datastore(sql).take_join_token",
        "datastore(sql).create_attested_node",
        "keymanager(disk).sign_data",
        "ca.sign_x509_svid",
    } <= names, sorted(names)
    attest = next(s for s in spans if s.name == "spire.api.server.agent.v1.Agent/AttestAgent")
    assert attest.attributes["rpc.system"] == "grpc"
    assert attest.attributes["rpc.grpc.status_code"] == "OK"


@pytest.mark.slow
def test_the_agent_traces_attestation_sync_and_the_workload_api(spans: list[Span]) -> None:
    names = _names(spans, "agent-under-test")
    assert {
        "agent.node_attestation",
        "agent.sync",
        "agent.fetch_entries_updates",
        "agent.fetch_svids_updates",
        "agent.workload_attestation",
        "workloadattestor(unix).attest_workload",
        "SpiffeWorkloadAPI/FetchX509SVID",
    } <= names, sorted(names)


@pytest.mark.slow
def test_server_spans_continue_the_agent_s_traces(spans: list[Span]) -> None:
    agent_syncs = {s.trace_id for s in spans if s.service == "agent-under-test" and s.name == "agent.sync"}
    served = [
        s for s in spans if s.service == "pyspire-server" and s.name == "spire.api.server.svid.v1.SVID/BatchNewX509SVID"
    ]
    assert served
    assert any(s.trace_id in agent_syncs and s.parent_id for s in served)


def test_the_console_exporter_prints_spans_as_json(tmp_path: Path) -> None:
    server = start_server(tmp_path, blocks='telemetry {\n  OpenTelemetry {\n    exporter = "console"\n  }\n}\n')
    try:
        server.cli("entry", "show")
    finally:
        server.stop()
    documents = [json.loads(chunk) for chunk in _json_objects(server.log())]
    listed = [d for d in documents if d.get("name") == "spire.api.server.entry.v1.Entry/ListEntries"]
    assert listed
    assert listed[0]["kind"] == "SpanKind.SERVER"
    assert listed[0]["resource"]["attributes"]["service.name"] == "pyspire-server"


def _json_objects(text: str) -> list[str]:
    """The multi-line JSON objects the console exporter prints, one per span."""
    chunks, current, depth = [], [], 0
    for line in text.splitlines():
        if depth == 0 and line != "{":
            continue
        current.append(line)
        depth += line.count("{") - line.count("}")
        if depth == 0:
            chunks.append("\n".join(current))
            current = []
    return chunks


def test_without_a_provider_spans_are_one_shared_no_op() -> None:
    """A process that never called start_tracing (this one) builds no span per call: start_span
    hands back OpenTelemetry's invalid span, and nothing becomes the current span."""
    assert not tracing_enabled()
    with start_span("ca.sign_x509_svid", attributes={"pyspire.spiffe_id": "spiffe://example.org/w"}) as span:
        assert span is trace.INVALID_SPAN
        assert not span.is_recording()
        assert trace.get_current_span() is trace.INVALID_SPAN
    assert start_span("a") is start_span("b")
