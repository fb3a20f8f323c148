"""The shapes of every certificate pyspire issues, in one place (SPIRE's ``credtemplate``).

X509-SVIDs (workload, agent, server: ``C=US, O=SPIRE``, CN from the first DNS name, a leaf's
key usages and both TLS usages), CA certificates (self-signed roots, downstream and
upstream-signed intermediates: a CA's usages, the trust domain's URI SAN) and their validity
(backdated :data:`BACKDATE` against clock skew). Who the credential is for and how long it
lives is decided by the caller; here is only what SPIRE's certificates look like. Identities
arrive as strings (``spiffe://...``), so this module needs nothing from the rest of pyspire.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pyspire.crypto.x509 import CA_KEY_USAGE

__all__ = [
    "BACKDATE",
    "ca_certificate",
    "downstream_ca_subject",
    "root_ca_subject",
    "x509_svid_extensions",
    "x509_svid_subject",
]

BACKDATE = timedelta(seconds=10)
"""How far before "now" every certificate starts (clock skew between machines, as SPIRE)."""

_LEAF_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=True,
    data_encipherment=False,
    key_agreement=True,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)
_SVID_SUBJECT = (x509.NameAttribute(NameOID.COUNTRY_NAME, "US"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIRE"))


def _extension(value: x509.ExtensionType, critical: bool = False) -> x509.Extension[x509.ExtensionType]:
    return x509.Extension(value.oid, critical, value)


_LEAF_EXTENSIONS = (
    _extension(x509.BasicConstraints(ca=False, path_length=None), critical=True),
    _extension(_LEAF_KEY_USAGE, critical=True),
    _extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])),
)


@functools.lru_cache(maxsize=16)
def _authority_key_identifier(ca_certificate: x509.Certificate) -> x509.Extension[x509.ExtensionType]:
    return _extension(_authority_key_id(ca_certificate))


def _authority_key_id(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def x509_svid_subject(dns_names: Sequence[str]) -> x509.Name:
    """An X509-SVID's subject: ``C=US, O=SPIRE``, and ``CN=<first DNS name>`` when it has any."""
    attributes = list(_SVID_SUBJECT)
    if dns_names:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0]))
    return x509.Name(attributes)


def x509_svid_extensions(
    spiffe_id: str, dns_names: Sequence[str], public_key: CertificatePublicKeyTypes, ca_certificate: x509.Certificate
) -> list[x509.Extension[x509.ExtensionType]]:
    """An X509-SVID's extensions: a leaf's constraints and usages, its SANs and key identifiers."""
    san: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id)]
    san += [x509.DNSName(name) for name in dns_names]
    return [
        *_LEAF_EXTENSIONS,
        _extension(x509.SubjectAlternativeName(san)),
        _extension(x509.SubjectKeyIdentifier.from_public_key(public_key)),
        _authority_key_identifier(ca_certificate),
    ]


def root_ca_subject(subject: x509.Name, serial_number: int) -> x509.Name:
    """A self-signed root's name: the configured subject with the serial number, unless it has one.

    As SPIRE: each root's name is its own, so a verifier never mistakes one for the next.
    """
    if subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER):
        return subject
    return x509.Name([*subject, x509.NameAttribute(NameOID.SERIAL_NUMBER, str(serial_number))])


def downstream_ca_subject(parent: x509.Name, depth: int) -> x509.Name:
    """A downstream CA's name: its parent's with ``OU=DOWNSTREAM-<depth>``, as SPIRE names them.

    So no CA in a nested chain has its issuer's name (OpenSSL would take it for self-issued).
    """
    return x509.Name(
        [
            *(a for a in parent if a.oid != NameOID.ORGANIZATIONAL_UNIT_NAME),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"DOWNSTREAM-{depth}"),
        ]
    )


def ca_certificate(
    *,
    subject: x509.Name,
    public_key: CertificatePublicKeyTypes,
    trust_domain_id: str,
    now: datetime,
    not_after: datetime,
    issuer: x509.Certificate | None = None,
    serial_number: int | None = None,
) -> x509.CertificateBuilder:
    """A CA certificate for ``public_key``, to be signed by ``issuer`` (None: self-signed).

    A CA's constraints and usages, the trust domain's URI SAN (``spiffe://<td>``), key
    identifiers, valid from ``now`` less :data:`BACKDATE` until ``not_after``.
    """
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer.subject)
        .public_key(public_key)
        .serial_number(serial_number if serial_number is not None else x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(trust_domain_id)]), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(_authority_key_id(issuer), critical=False)
    return builder
