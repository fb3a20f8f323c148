"""A real server whose CA is signed by cert-manager: a CertificateRequest approved and signed by the fake issuer.

An X509-SVID the server mints verifies with ``openssl`` through the server's CA and the issuer
to the issuer's root, which is in the server's bundle; preparing the next CA makes another
request, signed under the same root; finished requests are deleted. A server whose request
is denied does not start, and says so.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from plugins.cert_manager.tests.issuer import FakeIssuer
from tests.support.daemons import ServerDaemon, server_config, start_server
from tests.support.kube_api import KubeApiServer
from tests.support.openssl import openssl_verify

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")


def upstream_block(plugin_data: dict[str, str]) -> str:
    lines = "".join(f'  {key} = "{value}"\n' for key, value in plugin_data.items())
    return f'UpstreamAuthority "cert-manager" {{\n plugin_data {{\n{lines} }}\n}}'


def minted_chain(server: ServerDaemon, directory: Path) -> list[x509.Certificate]:
    directory.mkdir()
    server.cli("x509", "mint", "-spiffeID", "spiffe://example.org/workload", "-write", str(directory))
    return x509.load_pem_x509_certificates((directory / "svid.pem").read_bytes())


@pytest.mark.slow
def test_the_server_ca_chains_to_the_issuer_root_through_a_rotation(
    kube: KubeApiServer, issuer: FakeIssuer, issuer_plugin_data: dict[str, str], tmp_path: Path
) -> None:
    server = start_server(tmp_path / "server", plugins=upstream_block(issuer_plugin_data))
    try:
        root_pem = issuer.root.certificate.public_bytes(serialization.Encoding.PEM).decode().strip()
        assert root_pem in server.bundle_pem()
        chain = minted_chain(server, tmp_path / "first")
        assert chain[1] == issuer.signed[0]  # the server's CA is the certificate the issuer signed
        assert chain[2] == issuer.intermediate.certificate
        openssl_verify(chain, [issuer.root.certificate], tmp_path / "verify-first")

        server.x509_authority_id("prepare", "Prepared")
        assert len(issuer.signed) == 2
        assert issuer.signed[1].public_key() != issuer.signed[0].public_key()
        assert [key for key in kube.objects if key[0] == "certificaterequests"] == []
    finally:
        server.stop()


def test_a_server_whose_request_is_denied_does_not_start(
    kube: KubeApiServer, issuer: FakeIssuer, issuer_plugin_data: dict[str, str], tmp_path: Path
) -> None:
    issuer.mode = "deny"
    directory = tmp_path / "server"
    directory.mkdir()
    text, socket_path, _ = server_config(directory, plugins=upstream_block(issuer_plugin_data))
    server = ServerDaemon("pyspire-server", directory, socket_path, text)
    server.start(wait=False)
    assert server.process is not None
    assert server.process.wait(60) != 0
    log = server.log()
    assert "Created CertificateRequest has been denied" in log
    assert "upstreamauthority(cert-manager): request has been denied" in log
    assert "Traceback" not in log
    assert issuer.signed == []
