"""x509pop nodes played by the test process: a node certificate, and attestation as the agent does it.

The agent half of the built-in x509pop plugin (loaded as the agent loads it) makes the payload
and answers the server's challenge, so a test can attest many nodes against a real server
without starting an agent for each, and keep the SVID to call the server as that agent.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pyspire.agent.client import ServerClient
from pyspire.crypto import LocalSigner, build_csr
from pyspire.plugin.facades import AgentNodeAttestor
from pyspire.plugin.testing import load_plugin, make_core_config
from pyspire.spiffe import TrustDomain

from tests.support.pki import Issued

__all__ = ["PopNode", "x509pop_server_plugin"]


def x509pop_server_plugin(roots_path: Path, template: str = "") -> str:
    """The server's ``NodeAttestor "x509pop"`` block trusting ``roots_path``."""
    extra = f'\n agent_path_template = "{template}"' if template else ""
    return f'NodeAttestor "x509pop" {{\n plugin_data {{\n ca_bundle_path = "{roots_path}"{extra}\n }}\n }}'


@dataclass
class PopNode:
    """A node holding ``certificate`` (and its key), attesting through the agent plugin."""

    directory: Path
    certificate: Issued
    intermediates: tuple[x509.Certificate, ...] = ()

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        certificate_path, key_path = self.directory / "node.pem", self.directory / "node.key"
        chain = (self.certificate.certificate, *self.intermediates)
        certificate_path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
        key_path.write_bytes(
            self.certificate.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        plugin = load_plugin(
            "agent",
            "NodeAttestor",
            "x509pop",
            {"private_key_path": str(key_path), "certificate_path": str(certificate_path)},
            make_core_config(self.directory),
        )
        assert isinstance(plugin, AgentNodeAttestor)
        self.plugin = plugin

    async def attest(
        self, port: int, roots: list[x509.Certificate]
    ) -> tuple[ServerClient, list[x509.Certificate], ec.EllipticCurvePrivateKey]:
        """AttestAgent on ``127.0.0.1:port``: a client presenting the agent SVID, the SVID and its key."""
        key = ec.generate_private_key(ec.SECP256R1())
        client = ServerClient([("127.0.0.1", port)], TrustDomain.parse("example.org"))
        client.set_roots(roots)

        async def answer(challenge: bytes) -> bytes:
            return self.plugin.answer_challenge(challenge)

        try:
            chain, _ = await client.attest("x509pop", self.plugin.payload(), build_csr(LocalSigner(key)), answer)
        except BaseException:
            client.close()
            raise
        client.set_identity(chain, key)
        return client, list(chain), key
