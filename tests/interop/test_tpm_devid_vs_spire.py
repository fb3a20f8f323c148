"""tpm_devid across implementations: a SPIRE agent attests to a pyspire server, and a pyspire agent
to a SPIRE server, each with a DevID key in the same real swtpm (the exchange is SPIRE's on both sides)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspire_tpm_devid.server import fingerprint

from plugins.tpm_devid.tests.provisioning import (
    Authority,
    DevId,
    SoftwareTpm,
    new_authority,
    provision_devid,
    provision_ek,
)
from tests.support.daemons import start_agent, start_server
from tests.support.interop_checks import check_workload_identity
from tests.support.waiting import eventually
from tests.support.workloads import register_this_process

pytestmark = pytest.mark.slow

TD = "example.org"


@pytest.fixture(scope="module")
def authorities() -> tuple[Authority, Authority]:
    return new_authority("Interop TPM Manufacturer CA"), new_authority("Interop DevID CA")


@pytest.fixture(scope="module")
def software_tpm(
    tmp_path_factory: pytest.TempPathFactory, authorities: tuple[Authority, Authority]
) -> Iterator[SoftwareTpm]:
    tpm = SoftwareTpm(tmp_path_factory.mktemp("swtpm"))
    try:
        provision_ek(tpm, authorities[0])
        yield tpm
    finally:
        tpm.stop()


@pytest.mark.parametrize("mix", ["spire-agent-on-pyspire-server", "pyspire-agent-on-spire-server"])
def test_a_devid_node_attests_across_implementations(
    tmp_path: Path,
    mix: str,
    spire_server_bin: Path,
    spire_agent_bin: Path,
    software_tpm: SoftwareTpm,
    authorities: tuple[Authority, Authority],
) -> None:
    endorsement_ca, devid_ca = authorities
    (tmp_path / "devid-ca.pem").write_bytes(devid_ca.pem())
    (tmp_path / "endorsement-ca.pem").write_bytes(endorsement_ca.pem())
    devid: DevId = provision_devid(software_tpm, devid_ca, tmp_path / "devid", common_name=mix)
    spire_agent = mix.startswith("spire-agent")
    server = start_server(
        tmp_path / "server",
        executable=None if spire_agent else spire_server_bin,
        plugins=(
            'NodeAttestor "tpm_devid" {\n plugin_data {\n'
            f'  devid_ca_path = "{tmp_path / "devid-ca.pem"}"\n'
            f'  endorsement_ca_path = "{tmp_path / "endorsement-ca.pem"}"\n'
            " }\n }"
        ),
    )
    agent = None
    try:
        agent = start_agent(
            tmp_path / "agent",
            server,
            executable=spire_agent_bin if spire_agent else None,
            node_attestor=(
                'NodeAttestor "tpm_devid" {\n plugin_data {\n'
                f'  tpm_device_path = "{software_tpm.socket}"\n'
                f'  devid_cert_path = "{devid.certificate_path}"\n'
                f'  devid_priv_path = "{devid.private_path}"\n'
                f'  devid_pub_path = "{devid.public_path}"\n'
                " }\n }"
            ),
        )
        agent_id = f"spiffe://{TD}/spire/agent/tpm_devid/{fingerprint(devid.certificate)}"
        shown = server.cli("agent", "show", "-spiffeID", agent_id).stdout
        assert "Attestation type  : tpm_devid" in shown
        assert f"Selectors         : tpm_devid:ca:fingerprint:{fingerprint(devid_ca.certificate)}" in shown
        assert f"tpm_devid:subject:cn:{mix}" in shown
        workload = f"spiffe://{TD}/interop/tpm-devid-workload"
        register_this_process(server, agent_id, workload)
        eventually(lambda: check_workload_identity(agent, server, workload, TD), timeout=30)
    finally:
        for daemon in (agent, server):
            if daemon is not None:
                daemon.stop()
