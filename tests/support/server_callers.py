"""The five kinds of caller a SPIRE server tells apart, made for real against a running server.

A server authorizes each RPC by who calls it: a *local* caller on the admin socket; over TCP an
*agent* (the SVID of an attested agent), an *admin* or a *downstream* workload (an SVID whose
SPIFFE ID has an entry with ``admin`` or ``downstream``) or a caller with no identity at all.
:func:`make_callers` registers the entries, attests an agent with a join token and mints the
SVIDs, all through the server's own APIs, so the same steps give the same callers on
spire-server and pyspire-server.
"""

from __future__ import annotations

import contextlib
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.exceptions import GRPCError
from h2.exceptions import StreamClosedError
from pyspire.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from pyspire.proto.spire.api.server.bundle.v1 import bundle_grpc, bundle_pb2
from pyspire.proto.spire.api.server.debug.v1 import debug_pb2
from pyspire.proto.spire.api.server.entry.v1 import entry_grpc, entry_pb2
from pyspire.proto.spire.api.server.localauthority.v1 import localauthority_pb2
from pyspire.proto.spire.api.server.logger.v1 import logger_pb2
from pyspire.proto.spire.api.server.svid.v1 import svid_grpc, svid_pb2
from pyspire.proto.spire.api.server.trustdomain.v1 import trustdomain_pb2
from pyspire.proto.spire.api.types import types_pb2 as types

CALLER_KINDS = ("local", "agent", "admin", "downstream", "nobody")
ADMIN_PATH = "/callers/admin"
DOWNSTREAM_PATH = "/callers/downstream"


_MODULES = (agent_pb2, bundle_pb2, debug_pb2, entry_pb2, localauthority_pb2, logger_pb2, svid_pb2, trustdomain_pb2)
METHODS = {
    f"{service.name}.{method.name}": method
    for module in _MODULES
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
}
"""Every RPC of the server's APIs, by ``Service.Method``."""

_CARDINALITY = {
    (False, False): Cardinality.UNARY_UNARY,
    (False, True): Cardinality.UNARY_STREAM,
    (True, False): Cardinality.STREAM_UNARY,
    (True, True): Cardinality.STREAM_STREAM,
}


def method_path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


async def call_method(
    channel: Channel, method: MethodDescriptor, request: Message | None = None
) -> tuple[str, str, Message | None]:
    """Call ``method`` with ``request`` (empty by default; one message, then the end of a client stream).

    Returns (status code name, message, first reply); a streamed reply ends the call after the first.
    """
    request_type = message_factory.GetMessageClass(method.input_type)
    reply_type = message_factory.GetMessageClass(method.output_type)
    cardinality = _CARDINALITY[(method.client_streaming, method.server_streaming)]
    try:
        async with channel.request(method_path(method), cardinality, request_type, reply_type, timeout=15) as stream:
            await stream.send_message(request or request_type(), end=True)
            reply = await stream.recv_message()
            if method.server_streaming:
                with contextlib.suppress(StreamClosedError):  # the server may have ended it already
                    await stream.cancel()
    except GRPCError as err:
        return err.status.name, err.message or "", None
    return "OK", "", reply


def csr(key: ec.EllipticCurvePrivateKey, uri: str = "") -> bytes:
    """A DER CSR for ``key``, with ``uri`` as its URI SAN when given."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "differential")])
    )
    if uri:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


@dataclass
class Identity:
    """A private key and the certificate chain the server signed for it (DER, leaf first)."""

    key: ec.EllipticCurvePrivateKey
    chain: list[bytes]


@dataclass
class Callers:
    """How to reach one server as each kind of caller."""

    socket_path: Path
    port: int
    roots_pem: str
    identities: dict[str, Identity]
    directory: Path

    def channel(self, kind: str) -> Channel:
        """A channel to the server as ``kind`` (one of :data:`CALLER_KINDS`)."""
        if kind == "local":
            return Channel(path=str(self.socket_path))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False  # the server's SVID names a SPIFFE ID, not a host
        context.load_verify_locations(cadata=self.roots_pem)
        context.set_alpn_protocols(["h2"])
        identity = self.identities.get(kind)
        if identity is not None:
            chain = self.directory / f"{kind}.pem"
            key = self.directory / f"{kind}.key"
            chain.write_bytes(
                b"".join(
                    x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
                    for der in identity.chain
                )
            )
            key.write_bytes(
                identity.key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
            context.load_cert_chain(chain, key)
        return Channel("127.0.0.1", self.port, ssl=context)


async def _mint(channel: Channel, trust_domain: str, path: str) -> Identity:
    key = ec.generate_private_key(ec.SECP256R1())
    request = svid_pb2.MintX509SVIDRequest(csr=csr(key, f"spiffe://{trust_domain}{path}"))
    reply = await svid_grpc.SVIDStub(channel).MintX509SVID(request, timeout=15)
    return Identity(key, list(reply.svid.cert_chain))


async def _attest(callers: Callers, channel: Channel) -> Identity:
    token = await agent_grpc.AgentStub(channel).CreateJoinToken(agent_pb2.CreateJoinTokenRequest(ttl=600), timeout=15)
    return await attest_with_token(callers, token.value)


async def attest_with_token(callers: Callers, token: str) -> Identity:
    """Attest a new agent over TCP with join token ``token``; its key and SVID."""
    key = ec.generate_private_key(ec.SECP256R1())
    params = agent_pb2.AttestAgentRequest.Params(
        data=types.AttestationData(type="join_token", payload=token.encode()),
        params=agent_pb2.AgentX509SVIDParams(csr=csr(key)),
    )
    tcp = callers.channel("nobody")
    try:
        async with agent_grpc.AgentStub(tcp).AttestAgent.open(timeout=15) as stream:
            await stream.send_message(agent_pb2.AttestAgentRequest(params=params), end=True)
            reply = await stream.recv_message()
    finally:
        tcp.close()
    assert reply is not None
    assert reply.result.svid.cert_chain, reply
    return Identity(key, list(reply.result.svid.cert_chain))


async def reach(socket_path: Path, port: int, directory: Path) -> Callers:
    """How to reach a server, with no identities yet (its roots read on the admin socket)."""
    local = Channel(path=str(socket_path))
    try:
        bundle = await bundle_grpc.BundleStub(local).GetBundle(bundle_pb2.GetBundleRequest(), timeout=15)
    finally:
        local.close()
    roots = "".join(
        x509.load_der_x509_certificate(root.asn1).public_bytes(serialization.Encoding.PEM).decode()
        for root in bundle.x509_authorities
    )
    return Callers(socket_path, port, roots, {}, directory)


async def make_callers(socket_path: Path, port: int, directory: Path, trust_domain: str = "example.org") -> Callers:
    """Register the admin and downstream entries, attest an agent, mint the SVIDs (keys kept in ``directory``)."""
    callers = await reach(socket_path, port, directory)
    local = Channel(path=str(socket_path))
    try:
        entries = [
            types.Entry(
                spiffe_id=types.SPIFFEID(trust_domain=trust_domain, path=path),
                parent_id=types.SPIFFEID(trust_domain=trust_domain, path="/callers/node"),
                selectors=[types.Selector(type="unix", value=f"uid:{path}")],
                **{flag: True},
            )
            for path, flag in ((ADMIN_PATH, "admin"), (DOWNSTREAM_PATH, "downstream"))
        ]
        created = await entry_grpc.EntryStub(local).BatchCreateEntry(
            entry_pb2.BatchCreateEntryRequest(entries=entries), timeout=15
        )
        assert all(result.status.code == 0 for result in created.results), created
        callers.identities["admin"] = await _mint(local, trust_domain, ADMIN_PATH)
        callers.identities["downstream"] = await _mint(local, trust_domain, DOWNSTREAM_PATH)
        callers.identities["agent"] = await _attest(callers, local)
        return callers
    finally:
        local.close()
