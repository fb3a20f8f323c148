"""Certificates signed by a :class:`~pyspire.crypto.signer.Signer`.

The builder signs once with a throw-away key of the signer's type: that yields the exact
TBSCertificate (whose signature-algorithm field matches the real key) and the outer
AlgorithmIdentifier. The real signer then signs the TBS bytes, and the certificate is
reassembled around its signature. The throw-away keys are made once per type and never
sign anything that is kept.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pyspire.crypto.der import bit_string, element_end, sequence, signature_algorithm, tlv
from pyspire.crypto.keys import HashAlgorithm, KeyType
from pyspire.crypto.signer import Signer, signature_hash

__all__ = ["CA_KEY_USAGE", "encode_tbs_certificate", "issue_certificate", "sign_certificate"]

_HASHES: dict[HashAlgorithm, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
    HashAlgorithm.SHA256: hashes.SHA256,
    HashAlgorithm.SHA384: hashes.SHA384,
    HashAlgorithm.SHA512: hashes.SHA512,
}
_placeholders: dict[KeyType, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey] = {}
_lock = threading.Lock()


CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)
"""Key usage of every CA certificate pyspire makes (SPIRE's: certificate and CRL signing)."""


def _placeholder(key_type: KeyType) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    """A throw-away key of ``key_type``'s family (RSA signature IDs do not depend on size)."""
    family = KeyType.RSA_2048 if key_type.is_rsa else key_type
    with _lock:
        key = _placeholders.get(family)
        if key is None:
            if family is KeyType.EC_P256:
                key = ec.generate_private_key(ec.SECP256R1())
            elif family is KeyType.EC_P384:
                key = ec.generate_private_key(ec.SECP384R1())
            else:
                key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            _placeholders[family] = key
        return key


def sign_certificate(builder: x509.CertificateBuilder, signer: Signer) -> x509.Certificate:
    """Finish ``builder`` (subject key, names, validity, extensions all set) with ``signer``."""
    hash_algorithm = signature_hash(signer.key_type)
    draft = builder.sign(_placeholder(signer.key_type), _HASHES[hash_algorithm]())
    der = draft.public_bytes(Encoding.DER)
    tbs = draft.tbs_certificate_bytes
    outer_start = der.index(tbs)
    algorithm_end = element_end(der, outer_start + len(tbs))
    algorithm = der[outer_start + len(tbs) : algorithm_end]
    signature = signer.sign(tbs, hash_algorithm)
    return x509.load_der_x509_certificate(sequence(tbs, algorithm, bit_string(signature)))


# --- the direct path: encoding the TBSCertificate without a builder -------------------------
#
# Every workload SVID goes through here, so it skips what the builder path pays for (a
# throw-away signature and a second parse): the TBSCertificate is encoded from parts whose DER
# cryptography already produces (names, the public key, each extension's value), cached where
# the part repeats (issuer, constant extensions). Tests check that the bytes are identical to
# the builder's.

_VERSION_3 = b"\xa0\x03\x02\x01\x02"
_TRUE = b"\x01\x01\xff"


@functools.lru_cache(maxsize=256)
def _oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    body = bytearray()
    for arc in [parts[0] * 40 + parts[1], *parts[2:]]:
        chunk = [arc & 0x7F]
        rest = arc >> 7
        while rest:
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        body.extend(reversed(chunk))
    return tlv(0x06, bytes(body))


@functools.lru_cache(maxsize=256)
def _name(name: x509.Name) -> bytes:
    return name.public_bytes()


@functools.lru_cache(maxsize=1024)
def _extension(extension: x509.Extension[x509.ExtensionType]) -> bytes:
    parts = [_oid(extension.oid.dotted_string)]
    if extension.critical:
        parts.append(_TRUE)
    parts.append(tlv(0x04, extension.value.public_bytes()))
    return sequence(*parts)


def _integer(value: int) -> bytes:
    return tlv(0x02, value.to_bytes((value.bit_length() + 8) // 8, "big"))


def _time(moment: datetime) -> bytes:
    moment = moment.astimezone(UTC)
    if 1950 <= moment.year < 2050:
        return tlv(0x17, moment.strftime("%y%m%d%H%M%SZ").encode())
    return tlv(0x18, moment.strftime("%Y%m%d%H%M%SZ").encode())


def encode_tbs_certificate(
    *,
    serial_number: int,
    algorithm: bytes,
    issuer: x509.Name,
    not_before: datetime,
    not_after: datetime,
    subject: x509.Name,
    public_key: CertificatePublicKeyTypes,
    extensions: Sequence[x509.Extension[x509.ExtensionType]],
) -> bytes:
    """The DER TBSCertificate (v3) of these fields, extensions in the order given."""
    seen = set()
    for extension in extensions:
        if extension.oid in seen:
            raise ValueError(f"duplicate extension {extension.oid.dotted_string}")
        seen.add(extension.oid)
    if not 0 < serial_number < 2**159:
        raise ValueError("the serial number must be positive and at most 159 bits")
    fields = [
        _VERSION_3,
        _integer(serial_number),
        algorithm,
        _name(issuer),
        sequence(_time(not_before), _time(not_after)),
        _name(subject),
        public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo),
    ]
    if extensions:
        fields.append(tlv(0xA3, sequence(*(_extension(e) for e in extensions))))
    return sequence(*fields)


def issue_certificate(
    *,
    serial_number: int,
    issuer: x509.Name,
    not_before: datetime,
    not_after: datetime,
    subject: x509.Name,
    public_key: CertificatePublicKeyTypes,
    extensions: Sequence[x509.Extension[x509.ExtensionType]],
    signer: Signer,
) -> x509.Certificate:
    """A certificate of these fields signed by ``signer``, encoded without a builder."""
    hash_algorithm = signature_hash(signer.key_type)
    algorithm = signature_algorithm(signer.key_type, hash_algorithm)
    tbs = encode_tbs_certificate(
        serial_number=serial_number,
        algorithm=algorithm,
        issuer=issuer,
        not_before=not_before,
        not_after=not_after,
        subject=subject,
        public_key=public_key,
        extensions=extensions,
    )
    return x509.load_der_x509_certificate(sequence(tbs, algorithm, bit_string(signer.sign(tbs, hash_algorithm))))
