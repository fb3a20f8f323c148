"""A real server whose CA Vault signs, an agent, a workload whose chain ``openssl`` verifies to Vault's root."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyspire.spiffe.workloadapi import WorkloadApiClient

from plugins.vault_upstream.tests.fakes import VaultServer
from tests.support.daemons import AgentDaemon, ServerDaemon, server_config, start_agent, start_server
from tests.support.workloads import fetched_spiffe_id, register_this_process

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")


def vault_plugin(vault: VaultServer, directory: Path) -> str:
    vault.approles["spire-server"] = "approle-secret"
    return (
        'UpstreamAuthority "vault" {\n plugin_data {\n'
        f'  vault_addr = "{vault.url}"\n'
        f'  ca_cert_path = "{directory / "vault-ca.pem"}"\n'
        '  approle_auth {\n   approle_id = "spire-server"\n   approle_secret_id = "approle-secret"\n  }\n'
        " }\n}"
    )


def svid_chain(agent: AgentDaemon) -> list[x509.Certificate]:
    async def fetch() -> list[x509.Certificate]:
        async with WorkloadApiClient(agent.address, timeout=10) as client:
            context = await client.fetch_x509_context()
            return list(context.default_svid.chain)

    return asyncio.run(fetch())


def openssl_verify(chain: list[x509.Certificate], root: x509.Certificate, directory: Path) -> None:
    def pem(certificates: list[x509.Certificate]) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)

    (directory / "root.pem").write_bytes(pem([root]))
    (directory / "untrusted.pem").write_bytes(pem(chain[1:]))
    (directory / "leaf.pem").write_bytes(pem(chain[:1]))
    result = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(directory / "root.pem"),
            "-untrusted",
            str(directory / "untrusted.pem"),
            str(directory / "leaf.pem"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_workload_svids_chain_to_vault_and_survive_a_vault_outage(vault: VaultServer, tmp_path: Path) -> None:
    server: ServerDaemon = start_server(tmp_path / "server", plugins=vault_plugin(vault, tmp_path / "vault"))
    agent = None
    try:
        agent = start_agent(tmp_path / "agent", server, server.join_token("spiffe://example.org/node"))
        register_this_process(server, "spiffe://example.org/node", "spiffe://example.org/billing")
        assert fetched_spiffe_id(agent) == "spiffe://example.org/billing"
        chain = svid_chain(agent)
        assert len(chain) == 2  # the SVID, then the server's CA that Vault signed
        openssl_verify(chain, vault.root, tmp_path)
        assert vault.root.public_bytes(serialization.Encoding.PEM).decode().strip() in server.bundle_pem()

        # Vault goes away: asking for the next CA fails with Vault's address in the message,
        # and the current CA keeps signing.
        vault.stop()
        refused = server.cli("localauthority", "x509", "prepare", check=False)
        assert refused.returncode == 1
        assert f"cannot reach {vault.url}" in refused.stderr
        assert fetched_spiffe_id(agent) == "spiffe://example.org/billing"
        server.cli("x509", "mint", "-spiffeID", "spiffe://example.org/during-outage")

        # Vault is back: the next CA is Vault's again, and once active it signs new SVIDs.
        vault.start(tmp_path / "vault")
        new_id = server.x509_authority_id("prepare", "Prepared")
        server.cli("localauthority", "x509", "activate", "-authorityID", new_id)
        assert len(vault.signed) == 2
        server.cli("x509", "mint", "-spiffeID", "spiffe://example.org/after-outage", "-write", str(tmp_path))
        minted = x509.load_pem_x509_certificates((tmp_path / "svid.pem").read_bytes())
        assert minted[1] == vault.signed[-1]
        openssl_verify(minted, vault.root, tmp_path)
    finally:
        if agent is not None:
            agent.stop()
        server.stop()


def test_vault_unreachable_at_start_is_a_clear_error(vault: VaultServer, tmp_path: Path) -> None:
    plugin = vault_plugin(vault, tmp_path / "vault")
    vault.stop()
    text, socket_path, _ = server_config(tmp_path / "server", plugins=plugin)
    (tmp_path / "server").mkdir()
    server = ServerDaemon("pyspire-server", tmp_path / "server", socket_path, text).start(wait=False)
    assert server.process is not None
    assert server.process.wait(60) == 1
    log = server.log()
    assert "upstreamauthority(vault)" in log
    assert f"cannot reach {vault.url}" in log
    assert "Traceback" not in log


def test_rotation_retries_while_vault_is_down_and_resumes_when_it_returns(vault: VaultServer, tmp_path: Path) -> None:
    # A one-minute CA: the server prepares the next one after 30 s, checking every 10 s.
    server = start_server(tmp_path / "server", plugins=vault_plugin(vault, tmp_path / "vault"), ca_ttl="60s")
    try:
        vault.stop()
        deadline = time.monotonic() + 60
        while "Rotation step failed" not in server.log():
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.5)
        assert f"cannot reach {vault.url}" in server.log()
        server.cli("x509", "mint", "-spiffeID", "spiffe://example.org/still-signing")
        vault.start(tmp_path / "vault")
        while server.log().count("X.509 CA prepared") < 2:
            assert time.monotonic() < deadline + 15, server.log()
            time.sleep(0.5)
        assert len(vault.signed) == 2
        assert "Traceback" not in server.log()
    finally:
        server.stop()
