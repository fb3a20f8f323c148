"""The deployment the end-to-end tests share (a server and an agent), the test PKI, and HTTPS providers for them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from pyspire.spiffe.workloadapi import WorkloadApiClient

from plugins.oidc_discovery.tests.provider import Provider
from tests.support.daemons import AgentDaemon, ServerDaemon
from tests.support.pki import Issued, make_tls_certificate, write_pem

WORKLOAD_ID = "spiffe://example.org/oidc"
NODE_ID = "spiffe://example.org/node"


@dataclass
class Deployment:
    """The running server and agent, and the issuer the server writes into JWT-SVIDs."""

    server: ServerDaemon
    agent: AgentDaemon
    issuer_port: int

    @property
    def issuer(self) -> str:
        return f"https://localhost:{self.issuer_port}"

    def mint(self, audience: str) -> str:
        """A JWT-SVID for this process from the agent, for ``audience``."""

        async def fetch() -> str:
            async with WorkloadApiClient(self.agent.address, timeout=10) as client:
                return (await client.fetch_jwt_svids([audience]))[0].token

        return asyncio.run(fetch())


@dataclass
class Tls:
    """A CA and a ``localhost`` serving certificate signed by it, as files."""

    ca: Issued
    ca_file: Path
    cert_file: Path
    key_file: Path

    def reissue(self) -> Issued:
        """Write a new ``localhost`` certificate and key over the files; the new pair."""
        issued = make_tls_certificate(self.ca, "localhost")
        write_pem(issued, self.cert_file, self.key_file)
        return issued


def https_provider(directory: Path, deployment: Deployment, tls: Tls) -> Provider:
    """A provider serving HTTPS on the issuer's address with the server API's keys, started."""
    config = f"""
log_level = "debug"
domains = ["localhost"]
serving_cert_file {{
    cert_file_path = "{tls.cert_file}"
    key_file_path = "{tls.key_file}"
    addr = "127.0.0.1:{deployment.issuer_port}"
    file_sync_interval = "100ms"
}}
server_api {{
    address = "unix://{deployment.server.socket_path}"
    poll_interval = "200ms"
}}
"""
    return Provider(directory, config, ("127.0.0.1", deployment.issuer_port)).start()
