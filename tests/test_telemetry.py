"""Metrics and health of real daemons, scraped and probed as an operator's tools would.

One server and one agent export to every sink at once (Prometheus, Statsd, DogStatsd to UDP
listeners in this process, InMem); the agent attests, this process is registered and fetches
its SVIDs, then the tests read what each sink saw: SPIRE's names, labels and status values.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pyspire.server.api.ratelimit import LIMITED_METHODS
from pyspire.spiffe.workloadapi import WorkloadApiClient
from pyspire.telemetry.catalog import catalog, prometheus_names

from tests.support.daemons import AgentDaemon, ServerDaemon, start_agent, start_server
from tests.support.free_port import free_port
from tests.support.waiting import eventually
from tests.support.workloads import fetched_spiffe_id, register_this_process

HOST = socket.gethostname()


@dataclass
class UdpSink:
    """A UDP listener collecting the datagrams a Statsd client sends."""

    sock: socket.socket
    lines: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.sock.getsockname()[1]}"

    def run(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            self.lines.extend(data.decode().splitlines())


def _udp_sink() -> UdpSink:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sink = UdpSink(sock)
    threading.Thread(target=sink.run, daemon=True).start()
    return sink


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return str(response.read().decode())


def http_get(port: int, path: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def series(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of ``name`` (exactly) with its labels."""
    found = []
    for match in re.finditer(rf"^{re.escape(name)}(?:\{{([^}}]*)\}})? (\S+)$", text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        found.append((labels, float(match.group(2))))
    return found


@dataclass
class Deployment:
    server: ServerDaemon
    agent: AgentDaemon
    server_metrics: int
    agent_metrics: int
    server_health: int
    agent_health: int
    statsd: UdpSink
    dogstatsd: UdpSink


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    directory = tmp_path_factory.mktemp("telemetry")
    statsd, dogstatsd = _udp_sink(), _udp_sink()
    ports = [free_port() for _ in range(4)]
    server = start_server(
        directory / "server",
        extra=f'log_file = "{directory / "server.log"}"',
        blocks=f"""
telemetry {{
    Prometheus {{
        host = "127.0.0.1"
        port = {ports[0]}
    }}
    Statsd = [{{ address = "{statsd.address}" }}]
    DogStatsd = [{{ address = "{dogstatsd.address}" }}]
    InMem {{}}
}}
health_checks {{
    listener_enabled = true
    bind_address = "127.0.0.1"
    bind_port = "{ports[2]}"
}}
""",
    )
    alias = "spiffe://example.org/node/telemetry"
    try:
        agent = start_agent(
            directory / "agent",
            server,
            server.join_token(alias),
            blocks=f"""
telemetry {{
    Prometheus {{
        host = "127.0.0.1"
        port = {ports[1]}
    }}
}}
health_checks {{
    listener_enabled = true
    bind_address = "127.0.0.1"
    bind_port = "{ports[3]}"
    live_path = "/alive"
    ready_path = "/readyz"
}}
""",
        )
    except BaseException:
        server.stop()
        raise
    try:
        register_this_process(server, alias, "spiffe://example.org/telemetry/workload")
        assert fetched_spiffe_id(agent) == "spiffe://example.org/telemetry/workload"

        async def fetch_jwt() -> None:
            async with WorkloadApiClient(agent.address, timeout=10) as client:
                await client.fetch_jwt_svids(["db"])

        asyncio.run(fetch_jwt())
        server.cli("entry", "show", "-entryID", "no-such-entry", check=False)
        yield Deployment(server, agent, ports[0], ports[1], ports[2], ports[3], statsd, dogstatsd)
    finally:
        agent.stop()
        server.stop()
        statsd.sock.close()
        dogstatsd.sock.close()


SERVER_NAMES = [
    "spire_server_rpc_agent_v1_agent_attest_agent",
    "spire_server_rpc_agent_v1_agent_attest_agent_elapsed_time",
    "spire_server_rpc_entry_v1_entry_batch_create_entry",
    "spire_server_rpc_entry_v1_entry_sync_authorized_entries",
    "spire_server_rpc_svid_v1_svid_batch_new_x509svid",
    "spire_server_rpc_svid_v1_svid_new_jwtsvid",
    "spire_server_rpc_bundle_v1_bundle_get_bundle",
    "spire_server_datastore_node_create",
    "spire_server_datastore_join_token_fetch",
    "spire_server_datastore_registration_entry_create",
    "spire_server_datastore_bundle_list",
    "spire_server_server_ca_sign_x509_svid",
    "spire_server_server_ca_sign_jwt_svid",
    "spire_server_ca_manager_x509_ca_prepare",
    "spire_server_ca_manager_x509_ca_activate",
    "spire_server_ca_manager_jwt_key_prepare",
    "spire_server_manager_jwt_key_activate",
    "spire_server_manager_x509_ca_rotate_ttl",
    "spire_server_server_key_manager_generate_key",
    "spire_server_svid_rotate",
    "spire_server_entry_cache_reload",
    "spire_server_started",
    "spire_server_uptime_in_ms",
]

AGENT_NAMES = [
    "spire_agent_rpc_workload_api_fetch_x509svid",
    "spire_agent_rpc_workload_api_fetch_jwtsvid",
    "spire_agent_workload_api_connection",
    "spire_agent_workload_api_connections",
    "spire_agent_workload_api_workload_attestation",
    "spire_agent_workload_api_workload_attestor",
    "spire_agent_workload_api_discovered_selectors",
    "spire_agent_node_attestor_new_svid",
    "spire_agent_manager_sync_fetch_entries_updates",
    "spire_agent_manager_sync_fetch_svids_updates",
    "spire_agent_agent_key_manager_generate_key",
    "spire_agent_lru_cache_record_map_size",
    "spire_agent_lru_cache_svid_map_size",
    "spire_agent_lru_cache_entry_add",
    "spire_agent_sync_entries_total",
    "spire_agent_sync_bundles_total",
    "spire_agent_store_store_svid_updates",
    "spire_agent_bootstraped",
    "spire_agent_started",
    "spire_agent_uptime_in_ms",
]


@pytest.mark.slow
def test_the_server_exports_spire_metric_names_with_spire_labels(deployment: Deployment) -> None:
    text = scrape(deployment.server_metrics)
    for name in SERVER_NAMES:
        assert series(text, name), f"{name} missing"
    attested = series(text, "spire_server_rpc_agent_v1_agent_attest_agent")
    assert attested == [({"host": HOST, "status": "OK"}, 1.0)]
    assert "# TYPE spire_server_rpc_agent_v1_agent_attest_agent counter" in text
    assert "# TYPE spire_server_rpc_agent_v1_agent_attest_agent_elapsed_time summary" in text
    quantiles = {
        labels["quantile"] for labels, _ in series(text, "spire_server_rpc_agent_v1_agent_attest_agent_elapsed_time")
    }
    assert quantiles == {"0.5", "0.9", "0.99"}
    assert series(text, "spire_server_rpc_agent_v1_agent_attest_agent_elapsed_time_count")[0][1] == 1.0
    started = series(text, "spire_server_started")
    assert started[0][0]["trust_domain_id"] == "example_org"  # sanitized, as SPIRE labels it
    assert re.fullmatch(r"\d+_\d+_\d+.*", started[0][0]["version"])
    assert not any(line.endswith("_total") for line in re.findall(r"^spire_\S+(?=[{ ])", text, re.M))


@pytest.mark.slow
def test_a_failed_call_is_counted_under_its_grpc_status_name(deployment: Deployment) -> None:
    text = scrape(deployment.server_metrics)
    assert ({"host": HOST, "status": "NotFound"}, 1.0) in series(text, "spire_server_rpc_entry_v1_entry_get_entry")


@pytest.mark.slow
def test_the_agent_exports_spire_metric_names_with_spire_labels(deployment: Deployment) -> None:
    text = scrape(deployment.agent_metrics)
    for name in AGENT_NAMES:
        assert series(text, name), f"{name} missing"
    attestors = series(text, "spire_agent_workload_api_workload_attestor")
    assert {labels["attestor"] for labels, _ in attestors} == {"unix"}
    # The agent holds two entries: the join token's alias (parent: the agent) and the workload's.
    assert series(text, "spire_agent_lru_cache_record_map_size")[0][1] == 2.0
    assert series(text, "spire_agent_sync_entries_total")[0][1] == 2.0
    assert series(text, "spire_agent_workload_api_connections")[0][1] == 0.0  # every stream has ended
    assert series(text, "spire_agent_bootstraped") == [({"host": HOST}, 1.0)]
    # The series of the attempts (mode "bootstrap") stays beside it, as in SPIRE's Prometheus sink.
    assert ({"host": HOST, "mode": "rebootstrap"}, 0.0) in series(text, "spire_agent_bootstrap_attempts")
    for _, value in series(text, "process_resident_memory_bytes"):
        assert value > 1e6


@pytest.mark.slow
def test_an_agents_telemetry_keys_shape_what_it_exports(deployment: Deployment, tmp_path: Path) -> None:
    """MetricPrefix, EnableHostnameLabel and EnableTrustDomainLabel read from a real agent's config
    file: every name starts with the prefix instead of ``spire_agent``, no sample carries ``host``,
    every one of the agent's own carries the sanitized trust domain."""
    port = free_port()
    agent = start_agent(
        tmp_path / "agent",
        deployment.server,
        deployment.server.join_token("spiffe://example.org/node/shaped-telemetry"),
        blocks=f"""
telemetry {{
    Prometheus {{
        host = "127.0.0.1"
        port = {port}
    }}
    MetricPrefix = "acme.agent"
    EnableHostnameLabel = false
    EnableTrustDomainLabel = true
}}
""",
    )
    try:
        text = scrape(port)
    finally:
        agent.stop()
    assert series(text, "acme_agent_started"), text
    assert not re.findall(r"^spire_agent_\w+", text, re.M)
    own = [line for line in text.splitlines() if line.startswith("acme_agent_")]
    assert own
    assert not [line for line in own if 'host="' in line]
    assert all('trust_domain="example_org"' in line for line in own), own


@pytest.mark.slow
def test_statsd_and_dogstatsd_receive_the_names_flattened_as_go_metrics_does(deployment: Deployment) -> None:
    statsd = eventually(
        lambda: [
            line for line in deployment.statsd.lines if line.startswith("spire_server.rpc.agent.v1.agent.attest_agent.")
        ]
    )
    assert statsd[0] == f"spire_server.rpc.agent.v1.agent.attest_agent.OK.{HOST}:1|c"
    assert any(
        line.startswith(f"spire_server.rpc.agent.v1.agent.attest_agent.elapsed_time.OK.{HOST}:")
        and line.endswith("|ms")
        for line in deployment.statsd.lines
    )
    dogstatsd = eventually(
        lambda: [
            line
            for line in deployment.dogstatsd.lines
            if line.startswith("spire_server.rpc.agent.v1.agent.attest_agent:")
        ]
    )
    assert dogstatsd[0] == f"spire_server.rpc.agent.v1.agent.attest_agent:1|c|#status:OK,host:{HOST}"


@pytest.mark.slow
def test_sigusr1_dumps_the_inmem_sink_to_the_log(deployment: Deployment) -> None:
    log = deployment.server.directory.parent / "server.log"
    deployment.server.cli("entry", "show")
    process = deployment.server.process
    assert process is not None
    counted = re.compile(r"\[C\] 'spire_server\.rpc\.entry\.v1\.entry\.list_entries;status=OK;host=[^']+': Count: \d+")

    def dumped() -> bool:
        # Only complete (1 s) intervals are dumped: ask again until the call's interval is one.
        process.send_signal(signal.SIGUSR1)
        return bool(counted.search(log.read_text()))

    eventually(dumped, timeout=10, interval=0.5)
    assert re.search(r"\[G\] 'spire_server\.uptime_in_ms;host=[^']+': \d+\.\d{3}", log.read_text())


@pytest.mark.slow
def test_health_checks_answer_with_spire_checks_and_details(deployment: Deployment) -> None:
    status, body = http_get(deployment.server_health, "/ready")
    spire_checks = {"server": {}, "catalog.datastore": {}, "server.ca": {}, "server.ca.rotator": {}}
    assert (status, body) == (200, {**spire_checks, "datastore_writes": {}})  # and pyspire's own
    assert http_get(deployment.server_health, "/live")[0] == 200
    # SPIRE's "agent" check, and pyspire's own agent_svid_saved.
    assert http_get(deployment.agent_health, "/readyz") == (200, {"agent": {}, "agent_svid_saved": {}})
    assert http_get(deployment.agent_health, "/alive") == (200, {"agent": {}, "agent_svid_saved": {}})
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"http://127.0.0.1:{deployment.agent_health}/ready", timeout=10)
    assert missing.value.code == 404


def test_an_agent_still_attesting_is_live_but_not_ready_and_counts_its_attempts(tmp_path: Path) -> None:
    """SPIRE's meaning: live while starting, ready only once the Workload API answers."""
    port, metrics_port = free_port(), free_port()
    unreachable = ServerDaemon("pyspire-server", tmp_path / "none", tmp_path / "none.sock", "")
    unreachable.port = free_port()
    (tmp_path / "none").mkdir()
    agent = AgentDaemon(
        "pyspire-agent",
        tmp_path / "agent",
        tmp_path / "agent" / "public" / "api.sock",
        f"""
agent {{
    trust_domain = "example.org"
    server_address = "127.0.0.1"
    server_port = "{unreachable.port}"
    socket_path = "{tmp_path / "agent" / "public" / "api.sock"}"
    insecure_bootstrap = true
    data_dir = "{tmp_path / "agent" / "data"}"
}}
plugins {{
    NodeAttestor "join_token" {{
        plugin_data {{}}
    }}
    KeyManager "memory" {{
        plugin_data {{}}
    }}
    WorkloadAttestor "unix" {{
        plugin_data {{}}
    }}
}}
health_checks {{
    listener_enabled = true
    bind_address = "127.0.0.1"
    bind_port = "{port}"
}}
telemetry {{
    Prometheus {{
        host = "127.0.0.1"
        port = {metrics_port}
    }}
}}
""",
        ["-joinToken", "never-used"],
    )
    agent.start(wait=False)
    try:
        ready = eventually(lambda: _answered(port, "/ready"))
        assert ready == (500, {"agent": {"make_new_x509_err": "workload api is unavailable"}, "agent_svid_saved": {}})
        assert http_get(port, "/live") == (200, {"agent": {}, "agent_svid_saved": {}})
        # SPIRE's bootstrap gauges: not bootstrapped, since when, and the attempts climbing.
        attempts = eventually(
            lambda: [v for _, v in series(scrape(metrics_port), "spire_agent_bootstrap_attempts") if v >= 2]
        )
        assert attempts
        text = scrape(metrics_port)
        assert series(text, "spire_agent_bootstraped") == [({"host": HOST}, 0.0)]
        [(labels, started)] = series(text, "spire_agent_bootstrap_seconds")
        assert labels == {"host": HOST, "mode": "bootstrap"}
        assert abs(started - time.time()) < 120
    finally:
        agent.stop()


def _answered(port: int, path: str) -> tuple[int, dict[str, object]] | None:
    try:
        return http_get(port, path)
    except urllib.error.URLError:
        return None


def test_grpc_health_reports_a_missing_bundle_as_not_serving(tmp_path: Path) -> None:
    """SPIRE's server health: SERVING only while its own bundle can be read from the datastore."""
    server = start_server(tmp_path)
    try:
        assert "Server is healthy." in server.cli("healthcheck").stdout
        with sqlite3.connect(tmp_path / "data" / "datastore.sqlite3") as database:
            database.execute("DELETE FROM bundles")
        unhealthy = server.cli("healthcheck", check=False)
        assert unhealthy.returncode == 1
        assert "NOT_SERVING" in unhealthy.stderr
        assert "bundle is missing" in server.log()
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.parametrize(("daemon", "service"), [("server", "spire_server"), ("agent", "spire_agent")])
def test_every_metric_a_daemon_exports_is_in_the_reference(deployment: Deployment, daemon: str, service: str) -> None:
    """docs/metrics.md is generated from the catalog: a metric missing from it would be undocumented."""
    port = deployment.server_metrics if daemon == "server" else deployment.agent_metrics
    exported = set(re.findall(r"^(spire_\w+)(?=[{ ])", scrape(port), re.M))
    limited = LIMITED_METHODS if daemon == "server" else ()
    documented = {name for info in catalog(daemon, limited) for name in prometheus_names(info, service)}  # type: ignore[arg-type]
    assert exported
    assert exported - documented == set()


@pytest.mark.slow
def test_the_agents_debug_log_says_who_called_what_matched_and_what_was_delivered(deployment: Deployment) -> None:
    log = deployment.agent.log()
    uid = os.getuid()
    attested = re.search(
        rf'msg="PID attested to have selectors" pid=\d+ selectors="([^"]+)" subsystem_name=\S+ uid={uid}', log
    )
    assert attested is not None, log[-3000:]
    assert f"unix:uid:{uid}" in attested.group(1).split(",")
    workload = 'spiffe_id="spiffe://example.org/telemetry/workload"'
    matched = r'msg="Entries matched the caller\'s selectors" count=1 entry_ids=\S+ spiffe_ids="spiffe://example.org/telemetry/workload"'
    assert re.search(matched, log)
    assert re.search(rf'msg="Fetched X.509 SVID" {workload} subsystem_name=\S+ ttl=\d', log)
    assert re.search(rf'msg="Fetched JWT SVID" audience=db {workload}', log)
    assert re.search(rf'msg="Entry created" entry=\S+ revision_number=0 selectors="unix:uid:{uid}" {workload}', log)
    assert re.search(rf'msg="Creating X509-SVID" entry_id=\S+ {workload}', log)
    assert re.search(rf'msg="SVID updated" entry=\S+ expiration="[^"]+" {workload}', log)
    assert (
        'msg="Node attestation was successful" reattestable=false spiffe_id="spiffe://example.org/spire/agent/join_token/'
        in log
    )
