"""Scenario 6: nested servers of both implementations in one trust domain.

A downstream server runs beside an agent of its upstream server, has an entry there marked
``downstream``, and gets its CA signed through ``UpstreamAuthority "spire"`` (the agent's
Workload API for its SVID, the upstream's SVID API for the CA, its Bundle API for the JWT
keys). Both ways round: pyspire-server below spire-server, spire-server below pyspire-server.
A workload of the downstream server's agent must verify against the *upstream* server's
bundle, X.509 (pyspire's verifier and openssl, through the downstream CA) and JWT (the
downstream server's key was published upstream).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.support.daemons import AgentDaemon, ServerDaemon, start_agent, start_server
from tests.support.interop_checks import check_workload_identity, server_bundle
from tests.support.waiting import eventually
from tests.support.workloads import register_this_process

pytestmark = pytest.mark.slow

TD = "example.org"


def _upstream_authority(upstream: ServerDaemon, agent: AgentDaemon) -> str:
    return (
        'UpstreamAuthority "spire" {\n plugin_data {\n'
        f'  server_address = "127.0.0.1"\n  server_port = "{upstream.port}"\n'
        f'  workload_api_socket = "{agent.socket_path}"\n }}\n}}'
    )


@pytest.mark.parametrize("downstream", ["pyspire", "spire"], ids=["pyspire-below-spire", "spire-below-pyspire"])
def test_a_downstream_server_of_the_other_implementation_chains_to_the_upstream(
    tmp_path: Path, downstream: str, spire_server_bin: Path, spire_agent_bin: Path
) -> None:
    spire_server, spire_agent = (spire_server_bin, spire_agent_bin)
    upper_server_bin, upper_agent_bin = (spire_server, spire_agent) if downstream == "pyspire" else (None, None)
    lower_server_bin, lower_agent_bin = (None, None) if downstream == "pyspire" else (spire_server, spire_agent)
    started: list[AgentDaemon | ServerDaemon] = []
    try:
        upstream = start_server(tmp_path / "upstream", executable=upper_server_bin)
        started.append(upstream)
        alias = f"spiffe://{TD}/node/upstream-{uuid.uuid4()}"
        beside = start_agent(
            tmp_path / "upstream-agent", upstream, upstream.join_token(alias), executable=upper_agent_bin
        )
        started.append(beside)
        register_this_process(upstream, alias, f"spiffe://{TD}/downstream-server", "-downstream")
        eventually(lambda: beside.cli("api", "fetch", "x509", check=False).returncode == 0, timeout=30)

        lower = start_server(
            tmp_path / "downstream",
            executable=lower_server_bin,
            plugins=_upstream_authority(upstream, beside),
            ca_ttl="1h",
        )
        started.append(lower)
        lower_alias = f"spiffe://{TD}/node/downstream-{uuid.uuid4()}"
        agent = start_agent(
            tmp_path / "downstream-agent", lower, lower.join_token(lower_alias), executable=lower_agent_bin
        )
        started.append(agent)
        workload = f"spiffe://{TD}/nested-workload"
        register_this_process(lower, lower_alias, workload)

        svid = eventually(lambda: check_workload_identity(agent, upstream, workload, TD), timeout=60, interval=1)
        assert len(svid.chain) == 2  # the workload's SVID, then the downstream server's CA
        assert set(server_bundle(lower).x509_authorities) == set(server_bundle(upstream).x509_authorities)
    finally:
        for daemon in reversed(started):
            daemon.stop()
