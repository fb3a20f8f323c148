"""A real server whose CA is signed by a CA kept in moto's Secrets Manager; an agent; a workload.

The workload's SVID chain (SVID, server CA, the upstream intermediate) verifies with
``openssl`` to the root in ``bundle_file_arn``, which is in the server's bundle. A server whose
secret cannot be read does not start, and names the secret.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyspire.spiffe.workloadapi import WorkloadApiClient

from plugins.awssecret.tests.upstream_ca import UpstreamSecrets
from tests.support.daemons import AgentDaemon, ServerDaemon, server_config, start_agent, start_server
from tests.support.moto import MotoServer
from tests.support.openssl import openssl_verify
from tests.support.workloads import fetched_spiffe_id, register_this_process

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")


def awssecret_plugin(plugin_data: dict[str, str]) -> str:
    lines = "".join(f'  {key} = "{value}"\n' for key, value in plugin_data.items())
    return f'UpstreamAuthority "awssecret" {{\n plugin_data {{\n{lines} }}\n}}'


def svid_chain(agent: AgentDaemon) -> list[x509.Certificate]:
    async def fetch() -> list[x509.Certificate]:
        async with WorkloadApiClient(agent.address, timeout=10) as client:
            context = await client.fetch_x509_context()
            return list(context.default_svid.chain)

    return asyncio.run(fetch())


@pytest.mark.slow
def test_a_workload_svid_chains_to_the_secrets_root(
    aws: MotoServer, secrets_ca: UpstreamSecrets, tmp_path: Path
) -> None:
    server = start_server(
        tmp_path / "server", env=aws.environment(), plugins=awssecret_plugin(secrets_ca.plugin_data())
    )
    agent = None
    try:
        agent = start_agent(tmp_path / "agent", server, server.join_token("spiffe://example.org/node"))
        register_this_process(server, "spiffe://example.org/node", "spiffe://example.org/billing")
        assert fetched_spiffe_id(agent) == "spiffe://example.org/billing"
        chain = svid_chain(agent)
        assert chain[2] == secrets_ca.intermediate.certificate
        openssl_verify(chain, [secrets_ca.root.certificate], tmp_path / "verify")
        root_pem = secrets_ca.root.certificate.public_bytes(serialization.Encoding.PEM).decode().strip()
        assert root_pem in server.bundle_pem()
    finally:
        if agent is not None:
            agent.stop()
        server.stop()


def test_a_server_whose_secret_is_missing_does_not_start_and_names_it(
    aws: MotoServer, secrets_ca: UpstreamSecrets, tmp_path: Path
) -> None:
    missing = "arn:aws:secretsmanager:us-west-2:123456789012:secret:gone"
    plugin = awssecret_plugin({**secrets_ca.plugin_data(), "key_file_arn": missing})
    text, socket_path, _ = server_config(tmp_path / "server", plugins=plugin)
    (tmp_path / "server").mkdir()
    server = ServerDaemon("pyspire-server", tmp_path / "server", socket_path, text, env=aws.environment())
    server.start(wait=False)
    assert server.process is not None
    assert server.process.wait(60) == 1
    log = server.log()
    assert f"upstreamauthority(awssecret): unable to read {missing}: ResourceNotFoundException" in log
    assert "Traceback" not in log
