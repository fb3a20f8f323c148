"""A real server and agent attesting with gcp_iit against Google's endpoints on loopback.

The agent fetches its token from the metadata server, the server verifies it against the
published certificates and reads the instance from the Compute Engine API with a service
account; a workload then gets its SVID. A second agent on the same instance is refused.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from pyspire.crypto import LocalSigner, build_csr

from plugins.gcp_iit.tests.fakes import GoogleFake
from plugins.gcp_iit.tests.test_properties import signed_token
from tests.server.test_api_security import new_client, no_challenge
from tests.support.daemons import start_agent, start_server
from tests.support.workloads import fetched_spiffe_id, register_this_process


def test_agent_attests_with_gcp_iit_and_a_second_attestation_is_refused(tmp_path: Path, google: GoogleFake) -> None:
    service_account = google.service_account_file(tmp_path)
    server = start_server(
        tmp_path / "server",
        plugins=(
            'NodeAttestor "gcp_iit" {\n plugin_data {\n'
            '  projectid_allow_list = ["project-123"]\n'
            "  use_instance_metadata = true\n"
            '  allowed_label_keys = ["env"]\n'
            f'  service_account_file = "{service_account}"\n'
            f'  google_certs_url = "{google.certs_url}"\n'
            f'  compute_endpoint = "{google.base}"\n'
            " }\n }"
        ),
    )
    attestor = f'NodeAttestor "gcp_iit" {{\n plugin_data {{\n identity_token_host = "{google.host}"\n }}\n }}'
    agent = second = None
    try:
        agent = start_agent(tmp_path / "agent", server, node_attestor=attestor)
        agent_id = f"spiffe://example.org/spire/agent/gcp_iit/project-123/{google.instance.instance_id}"
        shown = server.cli("agent", "show", "-spiffeID", agent_id).stdout
        assert "Attestation type  : gcp_iit" in shown
        assert "Selectors         : gcp_iit:label:env:prod" in shown
        assert "Selectors         : gcp_iit:tag:http-server" in shown

        register_this_process(server, agent_id, "spiffe://example.org/blog")
        assert fetched_spiffe_id(agent) == "spiffe://example.org/blog"

        second = start_agent(tmp_path / "second", server, node_attestor=attestor, wait=False)
        assert second.process is not None
        assert second.process.wait(30) == 1
        assert "attestation data has already been used to attest an agent" in second.log()
        assert server.cli("agent", "count").stdout.strip() == "1 attested agent"
    finally:
        for daemon in (second, agent, server):
            if daemon is not None:
                daemon.stop()


def test_a_google_signed_token_with_a_null_iat_is_refused_not_a_crash(tmp_path: Path, google: GoogleFake) -> None:
    """Regression: google-auth raised TypeError on {"iat": null}; the server answered INTERNAL with a traceback."""
    server = start_server(
        tmp_path / "server",
        plugins=(
            'NodeAttestor "gcp_iit" {\n plugin_data {\n  projectid_allow_list = ["project-123"]\n'
            f'  google_certs_url = "{google.certs_url}"\n }}\n }}'
        ),
    )
    try:
        claims = {**google.instance.claims(), "iat": None}
        token = signed_token(google.signing_keys[0], claims)
        csr = build_csr(LocalSigner(ec.generate_private_key(ec.SECP256R1())))

        async def run() -> None:
            client = new_client(server)
            try:
                await client.attest("gcp_iit", token, csr, no_challenge)
            finally:
                client.close()

        with pytest.raises(GRPCError) as raised:
            asyncio.run(run())
        assert raised.value.status is Status.PERMISSION_DENIED
        assert "iat or exp is not a number" in (raised.value.message or "")
        assert "Traceback" not in server.log()
    finally:
        server.stop()
