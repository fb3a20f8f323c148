"""A real server whose CA CA Service (the fake) issues; an agent; a workload whose SVID chains to the CAS root.

The server finds its credentials as SPIRE's does, through Application Default Credentials
(``GOOGLE_APPLICATION_CREDENTIALS``, a service account whose token endpoint is the fake). The
workload's SVID chain (SVID, server CA, the labelled subordinate CA) verifies with ``openssl``
to the root, which is in the server's bundle. A server whose label matches no CA does not
start, and says why.
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from plugins.gcp_cas.tests.conftest import LABEL, Authority
from tests.support.daemons import ServerDaemon, server_config, start_agent, start_server
from tests.support.openssl import openssl_verify
from tests.support.workloads import fetched_spiffe_id, register_this_process, x509_context

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")


def gcp_cas_plugin(plugin_data: dict[str, Any]) -> str:
    spec = "".join(f'    {key} = "{value}"\n' for key, value in plugin_data["root_cert_spec"].items())
    return (
        f'UpstreamAuthority "gcp_cas" {{\n plugin_data {{\n  root_cert_spec {{\n{spec}  }}\n'
        f'  cas_endpoint = "{plugin_data["cas_endpoint"]}"\n }}\n}}'
    )


def google_env(authority: Authority) -> dict[str, str]:
    return {"GOOGLE_APPLICATION_CREDENTIALS": str(authority.credentials)}


@pytest.mark.slow
def test_a_workload_svid_chains_to_the_cas_root(authority: Authority, tmp_path: Path) -> None:
    plugin = gcp_cas_plugin(authority.plugin_data(ca_pool=None))  # every pool of the region searched
    server = start_server(tmp_path / "server", env=google_env(authority), plugins=plugin)
    agent = None
    try:
        agent = start_agent(tmp_path / "agent", server, server.join_token("spiffe://example.org/node"))
        register_this_process(server, "spiffe://example.org/node", "spiffe://example.org/billing")
        assert fetched_spiffe_id(agent) == "spiffe://example.org/billing"
        chain = list(x509_context(agent).default_svid.chain)
        assert chain[2] == authority.ca.issued.certificate
        assert chain[1].extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
        [request] = authority.cas.requests
        assert chain[1].public_bytes(serialization.Encoding.PEM).decode() == request.answer["pemCertificate"]
        openssl_verify(chain, [authority.root.root], tmp_path / "verify")
        root_pem = authority.root.root.public_bytes(serialization.Encoding.PEM).decode().strip()
        assert root_pem in server.bundle_pem()
        log = server.log()
        assert "every CA pool of the region is searched" in log
        assert "Minting X509 intermediate CA" in log
    finally:
        if agent is not None:
            agent.stop()
        server.stop()


@pytest.mark.slow
def test_no_svid_outlives_the_cas_root(authority: Authority, tmp_path: Path) -> None:
    # CA Service issues the server's 24 h CA under a subordinate that outlives its 2 h root: the
    # server learns that root from the plugin and ends what it signs with it.
    cas = authority.cas
    pool = cas.add_pool("short-lived")
    root = cas.add_ca(pool, "short-root", {}, lifetime=timedelta(hours=2))
    cas.add_ca(pool, "long-subordinate", {LABEL[0]: LABEL[1]}, issuer=root, lifetime=timedelta(days=2))
    plugin = gcp_cas_plugin(authority.plugin_data(ca_pool="short-lived"))
    server = start_server(tmp_path / "server", env=google_env(authority), plugins=plugin, ca_ttl="24h")
    try:
        server.cli("x509", "mint", "-spiffeID", "spiffe://example.org/long", "-ttl", "10h", "-write", str(tmp_path))
        minted = x509.load_pem_x509_certificates((tmp_path / "svid.pem").read_bytes())
        assert minted[1].not_valid_after_utc > root.root.not_valid_after_utc  # as CA Service issued it
        assert minted[0].not_valid_after_utc <= root.root.not_valid_after_utc
        openssl_verify(minted, [root.root], tmp_path / "verify")
        assert "The upstream CA outlives the chain above it" in server.log()
    finally:
        server.stop()


def test_a_server_whose_label_matches_no_ca_does_not_start_and_says_why(authority: Authority, tmp_path: Path) -> None:
    plugin = gcp_cas_plugin(authority.plugin_data(label_value="nothing-has-this"))
    text, socket_path, _ = server_config(tmp_path / "server", plugins=plugin)
    (tmp_path / "server").mkdir()
    server = ServerDaemon("pyspire-server", tmp_path / "server", socket_path, text, env=google_env(authority))
    server.start(wait=False)
    assert server.process is not None
    assert server.process.wait(60) == 1
    log = server.log()
    # The log's msg is quoted: the quotes of the label pair come escaped.
    expected = 'no certificate authorities found with label pair "spire-upstream":"nothing-has-this"'
    assert f"Server failed to start: upstreamauthority(gcp_cas): {expected}".replace('"', '\\"') in log
    assert "Traceback" not in log
    assert authority.cas.requests == []
