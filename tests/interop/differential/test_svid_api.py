"""The SVID API's minting calls, differentially: one request per case, from the admin socket.

What the servers sign is their own (keys, serials, signatures); what is compared is what the
request decides: the status, the SPIFFE ID, the SANs and subject the CSR asks for, the
lifetime (to the minute), a JWT's claims and header fields other than the key ID.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pyspire.proto.spire.api.server.svid.v1 import svid_grpc, svid_pb2
from pyspire.proto.spire.api.types import types_pb2 as types

from tests.support.daemons import ServerDaemon
from tests.support.differential import Side, assert_same_answers

KEY = ec.generate_private_key(ec.SECP256R1())


def csr(*uris: str, dns: tuple[str, ...] = (), common_name: str = "") -> bytes:
    names = [x509.UniformResourceIdentifier(uri) for uri in uris] + [x509.DNSName(name) for name in dns]
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else []
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(subject))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(KEY, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def sid(path: str, trust_domain: str = "example.org") -> types.SPIFFEID:
    return types.SPIFFEID(trust_domain=trust_domain, path=path)


TD = "spiffe://example.org"
X509_REQUESTS: dict[str, svid_pb2.MintX509SVIDRequest] = {
    "uri": svid_pb2.MintX509SVIDRequest(csr=csr(f"{TD}/mint/a")),
    "uri and dns": svid_pb2.MintX509SVIDRequest(csr=csr(f"{TD}/mint/b", dns=("b.example.org", "c.example.org"))),
    "common name": svid_pb2.MintX509SVIDRequest(csr=csr(f"{TD}/mint/cn", common_name="workload")),
    "ttl 120": svid_pb2.MintX509SVIDRequest(csr=csr(f"{TD}/mint/ttl"), ttl=120),
    "ttl negative": svid_pb2.MintX509SVIDRequest(csr=csr(f"{TD}/mint/neg"), ttl=-1),
    "ttl beyond the CA": svid_pb2.MintX509SVIDRequest(csr=csr(f"{TD}/mint/long"), ttl=10**8),
    "no uri": svid_pb2.MintX509SVIDRequest(csr=csr()),
    "dns only": svid_pb2.MintX509SVIDRequest(csr=csr(dns=("only.example.org",))),
    "two uris": svid_pb2.MintX509SVIDRequest(csr=csr(f"{TD}/mint/one", f"{TD}/mint/two")),
    "other trust domain": svid_pb2.MintX509SVIDRequest(csr=csr("spiffe://other.org/mint")),
    "not spiffe": svid_pb2.MintX509SVIDRequest(csr=csr("https://example.org/mint")),
    "trust domain only": svid_pb2.MintX509SVIDRequest(csr=csr(TD)),
    "reserved path": svid_pb2.MintX509SVIDRequest(csr=csr(f"{TD}/spire/agent/x")),
    "empty csr": svid_pb2.MintX509SVIDRequest(),
    "garbage csr": svid_pb2.MintX509SVIDRequest(csr=b"\x30\x03\x02\x01\x00"),
}

JWT_REQUESTS: dict[str, svid_pb2.MintJWTSVIDRequest] = {
    "one audience": svid_pb2.MintJWTSVIDRequest(id=sid("/jwt/a"), audience=["aud-1"]),
    "two audiences": svid_pb2.MintJWTSVIDRequest(id=sid("/jwt/b"), audience=["aud-1", "aud-2"]),
    "ttl 60": svid_pb2.MintJWTSVIDRequest(id=sid("/jwt/c"), audience=["aud"], ttl=60),
    "ttl negative": svid_pb2.MintJWTSVIDRequest(id=sid("/jwt/d"), audience=["aud"], ttl=-5),
    "no audience": svid_pb2.MintJWTSVIDRequest(id=sid("/jwt/e")),
    "empty audience": svid_pb2.MintJWTSVIDRequest(id=sid("/jwt/f"), audience=[""]),
    "no id": svid_pb2.MintJWTSVIDRequest(audience=["aud"]),
    "other trust domain": svid_pb2.MintJWTSVIDRequest(id=sid("/jwt", "other.org"), audience=["aud"]),
    "bad path": svid_pb2.MintJWTSVIDRequest(id=sid("no-slash"), audience=["aud"]),
    "trust domain only": svid_pb2.MintJWTSVIDRequest(id=sid(""), audience=["aud"]),
    "reserved path": svid_pb2.MintJWTSVIDRequest(id=sid("/spire/agent/x"), audience=["aud"]),
}


MINTING = "Minting: a negative TTL or an empty audience"
DOCUMENTED = {"ttl negative": MINTING, "empty audience": MINTING}
"""Requests answered differently on purpose: the section of docs/compatibility.md that says why."""


def _minutes(expires_at: int) -> int:
    return round((expires_at - time.time()) / 60)


def x509_shape(reply: svid_pb2.MintX509SVIDResponse) -> dict[str, Any]:
    leaf = x509.load_der_x509_certificate(reply.svid.cert_chain[0])
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {
        "id": f"spiffe://{reply.svid.id.trust_domain}{reply.svid.id.path}",
        "chain length": len(reply.svid.cert_chain),
        "uris": sans.get_values_for_type(x509.UniformResourceIdentifier),
        "dns": sans.get_values_for_type(x509.DNSName),
        "subject": leaf.subject.rfc4514_string(),
        "minutes": _minutes(reply.svid.expires_at),
        "expires_at matches": reply.svid.expires_at == int(leaf.not_valid_after_utc.timestamp()),
    }


def _part(token: str, index: int) -> dict[str, Any]:
    segment = token.split(".")[index]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return decoded


def jwt_shape(reply: svid_pb2.MintJWTSVIDResponse) -> dict[str, Any]:
    header, claims = _part(reply.svid.token, 0), _part(reply.svid.token, 1)
    return {
        "id": f"spiffe://{reply.svid.id.trust_domain}{reply.svid.id.path}",
        "header": sorted(header),
        "alg": header.get("alg"),
        "typ": header.get("typ"),
        "claims": sorted(claims),
        "sub": claims.get("sub"),
        "aud": claims.get("aud"),
        "minutes": _minutes(claims["exp"]),
        "expires_at matches": reply.svid.expires_at == claims["exp"],
        "issued_at matches": reply.svid.issued_at == claims.get("iat"),
    }


async def _mint_answers(
    server_pair: dict[str, ServerDaemon], method: str, request: Any, shape: Callable[[Any], object], name: str
) -> None:
    """One mint request to both servers: a documented difference, the same refusal, or minted alike."""

    async def case(side: Side) -> None:
        call = getattr(svid_grpc.SVIDStub(side.channel), method)
        if name in DOCUMENTED:
            await side.call(call, request, documented=DOCUMENTED[name])
            return
        reply = await side.call(call, request, record=False)
        if reply is None:
            await side.call(call, request)
        else:
            side.note("minted", shape(reply))

    await assert_same_answers(case, {n: daemon.socket_path for n, daemon in server_pair.items()})


@pytest.mark.parametrize("name", X509_REQUESTS)
async def test_mint_x509_svid_answers_as_spire_does(name: str, server_pair: dict[str, ServerDaemon]) -> None:
    await _mint_answers(server_pair, "MintX509SVID", X509_REQUESTS[name], x509_shape, name)


@pytest.mark.parametrize("name", JWT_REQUESTS)
async def test_mint_jwt_svid_answers_as_spire_does(name: str, server_pair: dict[str, ServerDaemon]) -> None:
    await _mint_answers(server_pair, "MintJWTSVID", JWT_REQUESTS[name], jwt_shape, name)
