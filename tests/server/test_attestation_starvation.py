"""Unanswered attestation challenges cannot stall signing on a real server.

Unauthenticated AttestAgent streams present a public x509pop certificate (no key needed) and
never answer the challenge: each holds a thread of the NodeAttestor, as many as the
attestation pool has, and more wait behind them. Minting an X509-SVID meanwhile takes its
usual time, because signing runs in threads of its own (before, the streams took asyncio's
default pool, and the signing waited the 30 s the challenges had to be answered in).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.client import Channel
from pyspire.plugin.facades import AgentNodeAttestor
from pyspire.plugin.testing import load_plugin, make_core_config
from pyspire.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from pyspire.proto.spire.api.server.svid.v1 import svid_grpc, svid_pb2
from pyspire.proto.spire.api.types import types_pb2
from pyspire.server.work import ATTESTATION_THREADS
from pyspire.transport import client_tls_context

from tests.plugin.test_x509pop import key_pem, node_certificate, pem
from tests.support.daemons import ServerDaemon, start_server
from tests.support.pki import make_ca

QUEUED_STREAMS = 4


def _csr() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _mint_request() -> svid_pb2.MintX509SVIDRequest:
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://example.org/meanwhile")])
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(san, critical=False)
        .sign(key, hashes.SHA256())
    )
    return svid_pb2.MintX509SVIDRequest(csr=csr.public_bytes(serialization.Encoding.DER))


async def _attest_and_stall(
    server: ServerDaemon, payload: bytes, roots: list[x509.Certificate], *, wait_for_challenge: bool
) -> Any:
    """Open AttestAgent and present the certificate, never to answer: (channel, stream)."""
    channel = Channel("127.0.0.1", server.port, ssl=client_tls_context(roots))
    stream = agent_grpc.AgentStub(channel).AttestAgent.open()
    await stream.__aenter__()
    params = agent_pb2.AttestAgentRequest.Params(
        data=types_pb2.AttestationData(type="x509pop", payload=payload),
        params=agent_pb2.AgentX509SVIDParams(csr=_csr()),
    )
    await stream.send_message(agent_pb2.AttestAgentRequest(params=params))
    if wait_for_challenge:
        reply = await stream.recv_message()
        assert reply is not None
        assert reply.challenge
    return channel, stream


async def _mint_while_challenges_hang(server: ServerDaemon, payload: bytes) -> float:
    roots = x509.load_pem_x509_certificates(server.bundle_pem().encode())
    held = await asyncio.gather(
        *(_attest_and_stall(server, payload, roots, wait_for_challenge=True) for _ in range(ATTESTATION_THREADS))
    )
    for _ in range(QUEUED_STREAMS):
        held.append(await _attest_and_stall(server, payload, roots, wait_for_challenge=False))
    try:
        admin = Channel(path=str(server.socket_path))
        try:
            started = time.monotonic()
            await asyncio.wait_for(svid_grpc.SVIDStub(admin).MintX509SVID(_mint_request()), 60)
            return time.monotonic() - started
        finally:
            admin.close()
    finally:
        for channel, stream in held:
            with contextlib.suppress(Exception):
                await stream.cancel()
            channel.close()


def test_signing_goes_on_while_attestation_challenges_hang(tmp_path: Path) -> None:
    root = make_ca(name="fleet root")
    node = node_certificate(root, common_name="public-cert")
    (tmp_path / "roots.pem").write_bytes(pem(root.certificate))
    (tmp_path / "node.pem").write_bytes(pem(node.certificate))
    (tmp_path / "node.key").write_bytes(key_pem(node.key))
    server = start_server(
        tmp_path / "server",
        extra="ratelimit {\n attestation = false\n }",  # one address opens every stream
        plugins=f'NodeAttestor "x509pop" {{\n plugin_data {{\n ca_bundle_path = "{tmp_path / "roots.pem"}"\n }}\n }}',
    )
    try:
        agent_side = load_plugin(
            "agent",
            "NodeAttestor",
            "x509pop",
            {"private_key_path": str(tmp_path / "node.key"), "certificate_path": str(tmp_path / "node.pem")},
            make_core_config(tmp_path / "agent"),
        )
        assert isinstance(agent_side, AgentNodeAttestor)
        elapsed = asyncio.run(_mint_while_challenges_hang(server, agent_side.payload()))
        assert elapsed < 10, f"minting took {elapsed:.1f} s while {ATTESTATION_THREADS} challenges hung"
    finally:
        server.stop()
    assert "Traceback" not in server.log()
