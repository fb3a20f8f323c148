"""The direct TBSCertificate encoder produces exactly what cryptography's builder produces."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pyspire.crypto import LocalSigner
from pyspire.crypto.der import signature_algorithm
from pyspire.crypto.signer import signature_hash
from pyspire.crypto.x509 import encode_tbs_certificate, issue_certificate

CA_KEYS = {
    "ec-p256": ec.generate_private_key(ec.SECP256R1()),
    "ec-p384": ec.generate_private_key(ec.SECP384R1()),
    "rsa-2048": rsa.generate_private_key(public_exponent=65537, key_size=2048),
}
HASHES = {"ec-p256": hashes.SHA256(), "ec-p384": hashes.SHA384(), "rsa-2048": hashes.SHA256()}


def _extensions(subject_key: ec.EllipticCurvePublicKey, ca_key: object, dns: tuple[str, ...]) -> list[x509.Extension]:  # type: ignore[type-arg]
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier("spiffe://example.org/ns/default/sa/web")]
    sans += [x509.DNSName(d) for d in dns]
    values: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (x509.KeyUsage(True, False, True, False, True, False, False, False, False), True),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), False),
        (x509.SubjectAlternativeName(sans), False),
        (x509.SubjectKeyIdentifier.from_public_key(subject_key), False),
        (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False),  # type: ignore[attr-defined]
    ]
    return [x509.Extension(value.oid, critical, value) for value, critical in values]


@pytest.mark.parametrize("ca_type", sorted(CA_KEYS))
@pytest.mark.parametrize("dns", [(), ("web.example.org", "web")])
@pytest.mark.parametrize("year", [2026, 2051])
def test_tbs_is_byte_identical_to_the_builders(ca_type: str, dns: tuple[str, ...], year: int) -> None:
    ca_key = CA_KEYS[ca_type]
    leaf_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    issuer = x509.Name(
        [x509.NameAttribute(NameOID.COUNTRY_NAME, "US"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIFFE")]
    )
    attributes = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIRE"),
    ]
    if dns:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, dns[0]))
    subject = x509.Name(attributes)
    not_before = datetime(year, 3, 4, 5, 6, 7, 890, tzinfo=UTC)
    not_after = not_before + timedelta(hours=1)
    serial = x509.random_serial_number()
    extensions = _extensions(leaf_key, ca_key, dns)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(leaf_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for extension in extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    expected = builder.sign(ca_key, HASHES[ca_type]).tbs_certificate_bytes  # type: ignore[arg-type]

    signer = LocalSigner(ca_key)  # type: ignore[arg-type]
    algorithm = signature_algorithm(signer.key_type, signature_hash(signer.key_type))
    encoded = encode_tbs_certificate(
        serial_number=serial,
        algorithm=algorithm,
        issuer=issuer,
        not_before=not_before,
        not_after=not_after,
        subject=subject,
        public_key=leaf_key,
        extensions=extensions,
    )
    assert encoded == expected

    issued = issue_certificate(
        serial_number=serial,
        issuer=issuer,
        not_before=not_before,
        not_after=not_after,
        subject=subject,
        public_key=leaf_key,
        extensions=extensions,
        signer=signer,
    )
    assert issued.tbs_certificate_bytes == expected
    ca_certificate = (
        x509.CertificateBuilder()
        .subject_name(issuer)
        .issuer_name(issuer)
        .public_key(ca_key.public_key())  # type: ignore[arg-type]
        .serial_number(1)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(ca_key, HASHES[ca_type])  # type: ignore[arg-type]
    )
    issued.verify_directly_issued_by(ca_certificate)


def test_duplicate_extensions_and_bad_serials_are_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    basic = x509.Extension(x509.BasicConstraints.oid, True, x509.BasicConstraints(ca=False, path_length=None))
    fields = {
        "algorithm": b"",
        "issuer": x509.Name([]),
        "not_before": datetime.now(UTC),
        "not_after": datetime.now(UTC),
        "subject": x509.Name([]),
        "public_key": key.public_key(),
    }
    with pytest.raises(ValueError, match="duplicate extension"):
        encode_tbs_certificate(serial_number=1, extensions=[basic, basic], **fields)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="serial number"):
        encode_tbs_certificate(serial_number=0, extensions=[], **fields)  # type: ignore[arg-type]
