"""Certificates from outside reach a real server through one loader, and malformed ones are refused by name.

cryptography reports a certificate of an unknown version (InvalidVersion) and one that repeats an
extension (DuplicateExtension) with exceptions that are not ValueErrors; modules that loaded
untrusted certificates themselves let them escape as INTERNAL errors with a traceback. Both
kinds arrive here through an attestation payload and through the bundle API.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec
from cryptography.x509.oid import NameOID
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from pyspire.crypto import LocalSigner, build_csr
from pyspire.proto.spire.api.server.bundle.v1 import bundle_grpc, bundle_pb2
from pyspire.proto.spire.api.types import types_pb2

from tests.server.test_api_security import new_client, no_challenge
from tests.support.daemons import ServerDaemon, start_server
from tests.support.pki import make_ca, make_leaf

_V3 = bytes.fromhex("a003020102")
_SAN_OID, _EKU_OID = bytes.fromhex("0603551d11"), bytes.fromhex("0603551d25")


def _malformed_certificates() -> dict[str, bytes]:
    """DER certificates cryptography loads only with a non-ValueError (or lazily fails on)."""
    der = make_leaf(make_ca()).certificate.public_bytes(serialization.Encoding.DER)
    assert der.count(_V3) == 1
    assert der.count(_EKU_OID) == 1
    return {
        "unknown version 1": der.replace(_V3, bytes.fromhex("a003020101")),
        "repeats extension 2.5.29.37": der.replace(_SAN_OID, _EKU_OID, 1),
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerDaemon]:
    directory = tmp_path_factory.mktemp("server")
    roots = directory / "roots.pem"
    roots.write_bytes(make_ca().certificate.public_bytes(serialization.Encoding.PEM))
    daemon = start_server(
        directory,
        extra="ratelimit {\n attestation = false\n }",
        plugins=f'NodeAttestor "x509pop" {{\n plugin_data {{\n ca_bundle_path = "{roots}"\n }}\n }}',
    )
    yield daemon
    daemon.stop()


@pytest.mark.parametrize("problem", sorted(_malformed_certificates()))
def test_a_malformed_certificate_in_an_attestation_payload_is_invalid_argument(
    server: ServerDaemon, problem: str
) -> None:
    certificate = _malformed_certificates()[problem]
    payload = json.dumps({"certificates": [base64.b64encode(certificate).decode()]}).encode()
    csr = build_csr(LocalSigner(ec.generate_private_key(ec.SECP256R1())))

    async def run() -> None:
        client = new_client(server)
        try:
            await client.attest("x509pop", payload, csr, no_challenge)
        finally:
            client.close()

    with pytest.raises(GRPCError) as raised:
        asyncio.run(run())
    assert raised.value.status is Status.INVALID_ARGUMENT
    assert problem in (raised.value.message or "")
    assert "Traceback" not in server.log()


def test_a_malformed_federated_authority_is_invalid_argument(server: ServerDaemon) -> None:
    bundles = [
        types_pb2.Bundle(trust_domain=f"partner{index}.org", x509_authorities=[types_pb2.X509Certificate(asn1=der)])
        for index, der in enumerate(_malformed_certificates().values())
    ]

    async def run() -> list[types_pb2.Status]:
        channel = Channel(path=str(server.socket_path))
        try:
            reply = await bundle_grpc.BundleStub(channel).BatchSetFederatedBundle(
                bundle_pb2.BatchSetFederatedBundleRequest(bundle=bundles), timeout=10
            )
        finally:
            channel.close()
        return [result.status for result in reply.results]

    statuses = asyncio.run(run())
    assert [s.code for s in statuses] == [Status.INVALID_ARGUMENT.value] * 2
    for status, problem in zip(statuses, _malformed_certificates(), strict=True):
        assert problem in status.message
    assert "partner" not in server.cli("bundle", "list").stdout
    assert "Traceback" not in server.log()


def _dsa_ca() -> bytes:
    """A well-formed self-signed CA certificate whose DSA key no JWK (x5c) can carry."""
    key = dsa.generate_private_key(2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "DSA CA")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.DER)


def test_a_federated_bundle_the_server_could_not_serve_is_refused(server: ServerDaemon) -> None:
    """Keys a SPIFFE bundle cannot encode and refresh hints no duration holds are refused when set.

    Stored, the first made every later rendering of that bundle fail (bundle show, the bundle
    endpoint, agents' federated bundles); the second overflowed timedelta on the way back out.
    """
    secp256k1 = (
        ec.generate_private_key(ec.SECP256K1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    good = make_ca("partner-hint.org").certificate.public_bytes(serialization.Encoding.DER)
    bundles = [
        types_pb2.Bundle(trust_domain="partner-dsa.org", x509_authorities=[types_pb2.X509Certificate(asn1=_dsa_ca())]),
        types_pb2.Bundle(
            trust_domain="partner-k1.org",
            x509_authorities=[types_pb2.X509Certificate(asn1=good)],
            jwt_authorities=[types_pb2.JWTKey(key_id="k1", public_key=secp256k1)],
        ),
        types_pb2.Bundle(
            trust_domain="partner-hint.org",
            x509_authorities=[types_pb2.X509Certificate(asn1=good)],
            refresh_hint=10**15,
        ),
    ]

    async def run() -> list[types_pb2.Status]:
        channel = Channel(path=str(server.socket_path))
        try:
            reply = await bundle_grpc.BundleStub(channel).BatchSetFederatedBundle(
                bundle_pb2.BatchSetFederatedBundleRequest(bundle=bundles), timeout=10
            )
        finally:
            channel.close()
        return [result.status for result in reply.results]

    statuses = asyncio.run(run())
    assert [s.code for s in statuses] == [Status.INVALID_ARGUMENT.value] * 3, statuses
    # SPIRE's words for the field, then the reason.
    assert statuses[0].message.startswith("failed to convert bundle: unable to parse X.509 authority: ")
    assert "DSA" in statuses[0].message
    assert statuses[1].message.startswith("failed to convert bundle: unable to parse JWT authority: ")
    assert "secp256k1" in statuses[1].message
    assert "refresh hint" in statuses[2].message
    listed = server.cli("bundle", "list")
    assert listed.returncode == 0, listed.stderr
    assert "partner-" not in listed.stdout
    assert "Traceback" not in server.log()


def test_untrusted_certificates_are_loaded_in_one_place() -> None:
    """No module reads certificates from outside with cryptography's loaders: pyspire.spiffe.pem does.

    The exceptions are the modules that build certificates themselves (crypto) and those reading
    what only the server wrote (the CA journal, its datastore bundle, the shipped AWS roots).
    """
    core = Path(__file__).parents[2]
    allowed = {
        "core/pyspire/spiffe/pem.py",
        "core/pyspire/crypto/x509.py",
        "core/pyspire/server/ca/authority.py",
        "core/pyspire/server/ca/bundle_edits.py",
        "core/pyspire/server/ca/journal.py",
        "core/pyspire/server/daemon.py",
        "core/pyspire/server/federation/documents.py",
        "core/pyspire/server/federation/refresher.py",
        "core/pyspire/server/cli/admin.py",
        "plugins/aws_iid/pyspire_aws_iid/document.py",
    }
    direct = {
        str(path.relative_to(core))
        for top in ("core", "plugins")
        for path in (core / top).rglob("*.py")
        if "/tests/" not in str(path)
        and ("load_der_x509_certificate" in path.read_text() or "load_pem_x509_certificate" in path.read_text())
    }
    assert direct <= allowed, sorted(direct - allowed)
