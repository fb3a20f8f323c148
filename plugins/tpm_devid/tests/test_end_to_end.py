"""A real server and agent attesting with a DevID key in a real swtpm; a workload gets its SVID."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspire_tpm_devid.server import fingerprint

from plugins.tpm_devid.tests.provisioning import Authority, DevId, SoftwareTpm, new_authority, provision_devid
from tests.support.daemons import start_agent, start_server
from tests.support.workloads import fetched_spiffe_id, register_this_process


def _attestor(tpm: SoftwareTpm, devid: DevId) -> str:
    return (
        'NodeAttestor "tpm_devid" {\n plugin_data {\n'
        f'  tpm_device_path = "{tpm.socket}"\n'
        f'  devid_cert_path = "{devid.certificate_path}"\n'
        f'  devid_priv_path = "{devid.private_path}"\n'
        f'  devid_pub_path = "{devid.public_path}"\n'
        " }\n }"
    )


@pytest.mark.slow
def test_an_agent_attests_and_re_attests_with_its_tpm_and_a_devid_from_another_ca_is_refused(
    tmp_path: Path, ca_files: Path, software_tpm: SoftwareTpm, devid: DevId, devid_ca: Authority
) -> None:
    server = start_server(
        tmp_path / "server",
        plugins=(
            'NodeAttestor "tpm_devid" {\n plugin_data {\n'
            f'  devid_ca_path = "{ca_files / "devid-ca.pem"}"\n'
            f'  endorsement_ca_path = "{ca_files / "endorsement-ca.pem"}"\n'
            " }\n }"
        ),
    )
    agent = refused = None
    try:
        agent = start_agent(tmp_path / "agent", server, node_attestor=_attestor(software_tpm, devid))
        agent_id = f"spiffe://example.org/spire/agent/tpm_devid/{fingerprint(devid.certificate)}"
        shown = server.cli("agent", "show", "-spiffeID", agent_id).stdout
        assert "Attestation type  : tpm_devid" in shown
        assert "Can re-attest     : true" in shown
        assert "Selectors         : tpm_devid:subject:cn:node1.example.org" in shown

        register_this_process(server, agent_id, "spiffe://example.org/web")
        assert fetched_spiffe_id(agent) == "spiffe://example.org/web"

        # Re-attestation is allowed: the same TPM and DevID (a reinstalled agent) attest again as themselves.
        again = start_agent(tmp_path / "again", server, node_attestor=_attestor(software_tpm, devid))
        again.stop()
        assert server.cli("agent", "count").stdout.strip() == "1 attested agent"

        # A key in the same TPM, certified by a CA the server does not trust: refused, and the agent says why.
        rogue = provision_devid(software_tpm, new_authority("Test DevID Root CA"), tmp_path / "rogue")
        refused = start_agent(tmp_path / "refused", server, node_attestor=_attestor(software_tpm, rogue), wait=False)
        assert refused.process is not None
        assert refused.process.wait(30) == 1, refused.log()
        assert "the server refused attestation (INVALID_ARGUMENT)" in refused.log()
        assert "unable to verify DevID signature" in refused.log()
        assert server.cli("agent", "count").stdout.strip() == "1 attested agent"
    finally:
        for daemon in (refused, agent, server):
            if daemon is not None:
                daemon.stop()
