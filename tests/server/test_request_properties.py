"""Property tests against a real server: hostile AttestAgent and Mint requests get a refusal, never a crash.

Over TLS from anyone (AttestAgent: attestation types, payloads of join_token and x509pop,
challenge answers, CSRs) and over the admin socket (MintX509SVID's CSR, MintJWTSVID), a request
the server cannot honour must be answered with a client-error status. INTERNAL or UNKNOWN
would mean an exception escaped a parser, and the server would log a traceback for it.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspire.agent.client import ServerUnavailable
from pyspire.crypto import LocalSigner, build_csr
from pyspire.crypto.der import bit_string, sequence, signature_algorithm, tlv
from pyspire.crypto.signer import signature_hash
from pyspire.proto.spire.api.server.svid.v1 import svid_grpc, svid_pb2
from pyspire.proto.spire.api.types import types_pb2

from tests.plugin.test_x509pop import node_certificate
from tests.server.test_api_security import new_client
from tests.support.daemons import ServerDaemon, start_server
from tests.support.pki import make_ca
from tests.support.proto_strategies import texts

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REFUSALS = {
    Status.INVALID_ARGUMENT,
    Status.PERMISSION_DENIED,
    Status.FAILED_PRECONDITION,
    Status.NOT_FOUND,
    Status.UNAUTHENTICATED,
}

_ROOT = make_ca(name="fleet root")
_NODE = node_certificate(_ROOT, common_name="node")
_NODE_DER = _NODE.certificate.public_bytes(serialization.Encoding.DER)
_KEY = ec.generate_private_key(ec.SECP256R1())
_CSR = build_csr(LocalSigner(_KEY))
_MINT_CSR = (
    x509.CertificateSigningRequestBuilder()
    .subject_name(x509.Name([]))
    .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://example.org/m")]), False)
    .sign(_KEY, hashes.SHA256())
    .public_bytes(serialization.Encoding.DER)
)


def _csr_repeating_its_san() -> bytes:
    """A validly signed CSR with two subjectAltName extensions (cryptography's builder refuses to make one)."""
    signer = LocalSigner(_KEY)
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://example.org/m")]).public_bytes()
    extension = sequence(bytes.fromhex("0603551d11"), tlv(0x04, san))
    request = sequence(bytes.fromhex("06092a864886f70d01090e"), tlv(0x31, sequence(extension, extension)))
    spki = _KEY.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    info = sequence(tlv(0x02, b"\x00"), sequence(), spki, tlv(0xA0, request))
    algorithm = signature_hash(signer.key_type)
    return sequence(info, signature_algorithm(signer.key_type, algorithm), bit_string(signer.sign(info, algorithm)))


_REPEATING_CSR = _csr_repeating_its_san()


@st.composite
def _corrupted(draw: st.DrawFn, good: bytes) -> bytes:
    data = bytearray(good)
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))])


def _der_variants(good: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(st.just(good), _corrupted(good), st.binary(max_size=40), st.just(_REPEATING_CSR))


_b64 = st.one_of(_der_variants(_NODE_DER).map(lambda der: base64.b64encode(der).decode()), texts)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
_x509pop_payloads = st.fixed_dictionaries(
    {}, optional={"certificates": st.one_of(st.lists(_b64, max_size=3), _json)}
).map(lambda document: json.dumps(document).encode())
payloads = st.one_of(_x509pop_payloads, _json.map(lambda v: json.dumps(v).encode()), st.binary(max_size=80))
answers = st.one_of(
    st.fixed_dictionaries({}, optional={"signature": _b64, "client_nonce": _b64}).map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=40),
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerDaemon]:
    directory: Path = tmp_path_factory.mktemp("server")
    (directory / "roots.pem").write_bytes(_ROOT.certificate.public_bytes(serialization.Encoding.PEM))
    daemon = start_server(
        directory,
        extra="ratelimit {\n attestation = false\n signing = false\n }",
        plugins=f'NodeAttestor "x509pop" {{\n plugin_data {{\n ca_bundle_path = "{directory / "roots.pem"}"\n }}\n }}',
        log_level="INFO",
    )
    yield daemon
    assert "Traceback" not in daemon.log()
    daemon.stop()


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as runner:
        yield runner


@SETTINGS
@given(
    attestation_type=st.one_of(st.sampled_from(["x509pop", "join_token"]), texts),
    payload=payloads,
    csr=_der_variants(_CSR),
    answer=answers,
)
def test_attestation_requests_are_refused_not_crashed(
    server: ServerDaemon, loop: asyncio.Runner, attestation_type: str, payload: bytes, csr: bytes, answer: bytes
) -> None:
    async def respond(_challenge: bytes) -> bytes:
        return answer

    async def run() -> None:
        client = new_client(server)
        try:
            await client.attest(attestation_type, payload, csr, respond)
        finally:
            client.close()

    try:
        loop.run(run())
    except GRPCError as err:
        status = err.status, err.message
    except ServerUnavailable as err:
        raise AssertionError(f"the server was unavailable: {err}") from None
    else:
        return
    assert status[0] in REFUSALS, status


@SETTINGS
@given(csr=_der_variants(_MINT_CSR), ttl=st.integers(-(2**31), 2**31 - 1), audience=st.lists(texts, max_size=2))
def test_mint_requests_are_refused_not_crashed(
    server: ServerDaemon, loop: asyncio.Runner, csr: bytes, ttl: int, audience: list[str]
) -> None:
    async def run() -> list[tuple[Status, str | None]]:
        statuses = []
        channel = Channel(path=str(server.socket_path))
        stub = svid_grpc.SVIDStub(channel)
        try:
            for call in (
                lambda: stub.MintX509SVID(svid_pb2.MintX509SVIDRequest(csr=csr, ttl=ttl), timeout=10),
                lambda: stub.MintJWTSVID(
                    svid_pb2.MintJWTSVIDRequest(
                        id=types_pb2.SPIFFEID(trust_domain="example.org", path="/m"), audience=audience, ttl=ttl
                    ),
                    timeout=10,
                ),
            ):
                try:
                    await call()
                except GRPCError as err:
                    statuses.append((err.status, err.message))
        finally:
            channel.close()
        return statuses

    for status in loop.run(run()):
        assert status[0] in REFUSALS, status
