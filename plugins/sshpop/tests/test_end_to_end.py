"""A real server and agent attesting with an ssh-keygen host certificate; a workload gets its SVID."""

from __future__ import annotations

from pathlib import Path

import pytest

from plugins.sshpop.tests.conftest import fingerprint_of
from plugins.sshpop.tests.keygen import KeyPair, certify
from tests.support.daemons import start_agent, start_server
from tests.support.workloads import fetched_spiffe_id, register_this_process


def _attestor(key: KeyPair, certificate: Path) -> str:
    return (
        'NodeAttestor "sshpop" {\n plugin_data {\n'
        f'  host_key_path = "{key.path}"\n  host_cert_path = "{certificate}"\n'
        " }\n }"
    )


@pytest.mark.slow
def test_an_agent_attests_and_re_attests_with_its_host_certificate_and_a_user_certificate_is_refused(
    tmp_path: Path, ca: KeyPair, host_key: KeyPair, host_cert: Path
) -> None:
    authorities = tmp_path / "ssh_cert_authorities.pub"
    authorities.write_text(f"# the fleet's host CA\n{ca.public_line}\n")
    server = start_server(
        tmp_path / "server",
        plugins=(
            'NodeAttestor "sshpop" {\n plugin_data {\n'
            f'  cert_authorities_path = "{authorities}"\n  canonical_domain = "example.com"\n'
            " }\n }"
        ),
    )
    agent = refused = None
    try:
        agent = start_agent(tmp_path / "agent", server, node_attestor=_attestor(host_key, host_cert))
        agent_id = f"spiffe://example.org/spire/agent/sshpop/{fingerprint_of(host_cert)}"
        shown = server.cli("agent", "show", "-spiffeID", agent_id).stdout
        assert "Attestation type  : sshpop" in shown
        assert "Can re-attest     : true" in shown

        register_this_process(server, agent_id, "spiffe://example.org/web")
        assert fetched_spiffe_id(agent) == "spiffe://example.org/web"

        # Re-attestation is allowed: the same host (a reinstalled agent) attests again as itself.
        again = start_agent(tmp_path / "again", server, node_attestor=_attestor(host_key, host_cert))
        again.stop()
        assert server.cli("agent", "count").stdout.strip() == "1 attested agent"

        # The same key certified as a user: the server refuses it, and the agent says why.
        user_cert = certify(ca, host_key, "node2.example.com", host=False)
        refused = start_agent(tmp_path / "refused", server, node_attestor=_attestor(host_key, user_cert), wait=False)
        assert refused.process is not None
        assert refused.process.wait(30) == 1, refused.log()
        assert "the server refused attestation (PERMISSION_DENIED)" in refused.log()
        assert "nodeattestor(sshpop): the certificate is a user certificate" in refused.log()
        assert server.cli("agent", "count").stdout.strip() == "1 attested agent"
    finally:
        for daemon in (refused, agent, server):
            if daemon is not None:
                daemon.stop()
