"""Checks the interop tests make on whichever mix of implementations they run.

A workload's identity is checked against what its *server* publishes (``bundle show``), never
against what its agent says, and with two verifiers: pyspire's and ``openssl verify``.
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from pyspire.spiffe import Bundle, BundleSet, JwtSvid, SpiffeId, TrustDomain, X509Svid, verify_x509_svid
from pyspire.spiffe.workloadapi import WorkloadApiClient

from tests.support.daemons import AgentDaemon, ServerDaemon


def server_bundle(server: ServerDaemon, trust_domain: str = "example.org") -> Bundle:
    """The server's own bundle (X.509 and JWT authorities) as its CLI shows it."""
    document = server.cli("bundle", "show", "-format", "spiffe").stdout
    return Bundle.parse(TrustDomain.parse(trust_domain), document)


def openssl_verifies(svid: X509Svid, bundle: Bundle) -> None:
    """``openssl verify`` accepts the SVID's chain up to one of ``bundle``'s authorities."""
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        pem = serialization.Encoding.PEM
        (directory / "leaf.pem").write_bytes(svid.chain[0].public_bytes(pem))
        (directory / "untrusted.pem").write_bytes(b"".join(c.public_bytes(pem) for c in svid.chain[1:]))
        (directory / "roots.pem").write_bytes(bundle.marshal_x509_pem())
        argv = ["openssl", "verify", "-CAfile", str(directory / "roots.pem")]
        if len(svid.chain) > 1:
            argv += ["-untrusted", str(directory / "untrusted.pem")]
        result = subprocess.run([*argv, str(directory / "leaf.pem")], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


def x509_svid_of(agent: AgentDaemon, spiffe_id: str, timeout: float = 15.0) -> X509Svid:
    """The X509-SVID ``spiffe_id`` this process gets from ``agent``'s Workload API."""

    async def fetch() -> X509Svid:
        async with WorkloadApiClient(agent.address, timeout=timeout) as client:
            context = await asyncio.wait_for(client.fetch_x509_context(), timeout)
        return next(s for s in context.svids if str(s.spiffe_id) == spiffe_id)

    return asyncio.run(fetch())


def jwt_svid_of(agent: AgentDaemon, spiffe_id: str, audience: str) -> str:
    async def fetch() -> str:
        async with WorkloadApiClient(agent.address, timeout=15) as client:
            (svid,) = await client.fetch_jwt_svids([audience], spiffe_id)
            return svid.token

    return asyncio.run(fetch())


def agent_validates(agent: AgentDaemon, token: str, audience: str) -> SpiffeId:
    async def validate() -> SpiffeId:
        async with WorkloadApiClient(agent.address, timeout=15) as client:
            spiffe_id, _claims = await client.validate_jwt_svid(token, audience)
            return spiffe_id

    return asyncio.run(validate())


def check_workload_identity(agent: AgentDaemon, server: ServerDaemon, spiffe_id: str, trust_domain: str) -> X509Svid:
    """The workload's X509-SVID and JWT-SVID from ``agent`` verify against ``server``'s bundle.

    X.509 with pyspire's verifier and openssl, JWT with pyspire's validator; the agent also
    validates the JWT-SVID itself. Returns the X509-SVID checked.
    """
    bundle = server_bundle(server, trust_domain)
    svid = x509_svid_of(agent, spiffe_id)
    verified, _ = verify_x509_svid(svid.chain, BundleSet([bundle]))
    assert str(verified) == spiffe_id
    openssl_verifies(svid, bundle)
    token = jwt_svid_of(agent, spiffe_id, "interop-audience")
    assert str(JwtSvid.parse_and_validate(token, BundleSet([bundle]), ["interop-audience"]).spiffe_id) == spiffe_id
    assert str(agent_validates(agent, token, "interop-audience")) == spiffe_id
    return svid
