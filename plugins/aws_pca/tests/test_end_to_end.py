"""A real server whose CA AWS Private CA (the fake) issues; an agent; a workload whose SVID chains to the root.

The workload's SVID chain (SVID, server CA, the subordinate CA) verifies with ``openssl`` to
the PCA root, which is in the server's bundle. A server whose authority cannot be described
does not start, and says why.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from plugins.aws_pca.tests.conftest import Authority
from tests.support.daemons import ServerDaemon, server_config, start_agent, start_server
from tests.support.moto import NO_AWS_FILES
from tests.support.openssl import openssl_verify
from tests.support.workloads import fetched_spiffe_id, register_this_process, x509_context

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")

AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", **NO_AWS_FILES}


def aws_pca_plugin(plugin_data: dict[str, str]) -> str:
    lines = "".join(f'  {key} = "{value}"\n' for key, value in plugin_data.items())
    return f'UpstreamAuthority "aws_pca" {{\n plugin_data {{\n{lines} }}\n}}'


@pytest.mark.slow
def test_a_workload_svid_chains_to_the_pca_root(authority: Authority, tmp_path: Path) -> None:
    server = start_server(tmp_path / "server", env=AWS_ENV, plugins=aws_pca_plugin(authority.plugin_data()))
    agent = None
    try:
        agent = start_agent(tmp_path / "agent", server, server.join_token("spiffe://example.org/node"))
        register_this_process(server, "spiffe://example.org/node", "spiffe://example.org/billing")
        assert fetched_spiffe_id(agent) == "spiffe://example.org/billing"
        chain = list(x509_context(agent).default_svid.chain)
        assert chain[2] == authority.ca.issued.certificate
        assert chain[1].extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
        openssl_verify(chain, [authority.root.certificate], tmp_path / "verify")
        root_pem = authority.root.certificate.public_bytes(serialization.Encoding.PEM).decode().strip()
        assert root_pem in server.bundle_pem()
    finally:
        if agent is not None:
            agent.stop()
        server.stop()


def test_a_server_whose_authority_is_unknown_does_not_start_and_says_why(authority: Authority, tmp_path: Path) -> None:
    gone = authority.ca.arn[:-4] + "0000"
    plugin = aws_pca_plugin({**authority.plugin_data(), "certificate_authority_arn": gone})
    text, socket_path, _ = server_config(tmp_path / "server", plugins=plugin)
    (tmp_path / "server").mkdir()
    server = ServerDaemon("pyspire-server", tmp_path / "server", socket_path, text, env=AWS_ENV)
    server.start(wait=False)
    assert server.process is not None
    assert server.process.wait(60) == 1
    log = server.log()
    assert "upstreamauthority(aws_pca): failed to describe CertificateAuthority: ResourceNotFoundException" in log
    assert "Traceback" not in log
