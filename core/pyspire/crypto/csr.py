"""Certificate signing requests: made with a Signer, and read with suspicion.

A CSR is only ever a way to deliver a public key: the server takes the identity from the
registration entry, never from the CSR (CVE-2021-27098), so :func:`parse_csr` returns the
public key alone, after checking the CSR's self-signature and the key's type and size.
"""

from __future__ import annotations

from typing import Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pyspire.crypto.der import bit_string, sequence, signature_algorithm, tlv
from pyspire.crypto.signer import Signer, signature_hash

__all__ = ["MAX_CSR_BYTES", "CsrError", "build_csr", "parse_csr"]

MAX_CSR_BYTES: Final = 16 * 1024
"""CSRs are refused above this size before any parsing (a CPU and memory guard)."""

_ALLOWED_CURVES: Final = ("secp256r1", "secp384r1")
_ALLOWED_RSA_SIZES: Final = (2048, 3072, 4096)


class CsrError(ValueError):
    """A CSR is malformed, too big, badly signed, or carries a key type pyspire refuses."""


_EXTENSION_REQUEST = bytes.fromhex("06092a864886f70d01090e")  # OID 1.2.840.113549.1.9.14
_SUBJECT_ALT_NAME = bytes.fromhex("0603551d11")  # OID 2.5.29.17


def build_csr(signer: Signer, subject: x509.Name | None = None, uri_san: str | None = None) -> bytes:
    """A DER CSR for the signer's key, optionally with a subject and one URI SAN.

    SPIRE servers ignore everything but the public key (agents send bare CSRs); an upstream
    CA that signs the server's intermediate may read the subject and the trust domain URI.
    """
    attributes = b""
    if uri_san is not None:
        san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri_san)]).public_bytes()
        extension = sequence(_SUBJECT_ALT_NAME, tlv(0x04, san))
        attributes = sequence(_EXTENSION_REQUEST, tlv(0x31, sequence(extension)))
    info = sequence(
        tlv(0x02, b"\x00"),  # version 1
        subject.public_bytes() if subject is not None else sequence(),
        signer.public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
        tlv(0xA0, attributes),  # [0] attributes
    )
    hash_algorithm = signature_hash(signer.key_type)
    signature = signer.sign(info, hash_algorithm)
    return sequence(info, signature_algorithm(signer.key_type, hash_algorithm), bit_string(signature))


def parse_csr(der: bytes) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    """The public key of a DER CSR whose self-signature verifies.

    Raises :class:`CsrError` naming the problem: too large, not a CSR, a repeated extension,
    a bad signature, or a key that is not EC P-256/P-384 or RSA 2048/3072/4096.
    """
    if not der:
        raise CsrError("the CSR is empty")
    if len(der) > MAX_CSR_BYTES:
        raise CsrError(f"the CSR is {len(der)} bytes; at most {MAX_CSR_BYTES} are accepted")
    try:
        csr = x509.load_der_x509_csr(der)
        key = csr.public_key()
        valid = csr.is_signature_valid
        csr.extensions  # noqa: B018 -- decoded for its errors, so callers reading them get none
    except (ValueError, UnsupportedAlgorithm) as err:
        raise CsrError(f"the CSR cannot be parsed: {err}") from None
    except x509.DuplicateExtension as err:
        raise CsrError(f"the CSR repeats extension {err.oid.dotted_string}") from None
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _ALLOWED_CURVES:
            raise CsrError(f"the CSR's EC curve {key.curve.name} is not allowed (P-256 or P-384)")
    elif isinstance(key, rsa.RSAPublicKey):
        if key.key_size not in _ALLOWED_RSA_SIZES:
            raise CsrError(f"the CSR's RSA key has {key.key_size} bits; 2048, 3072 or 4096 are allowed")
    else:
        raise CsrError(f"the CSR's key type {type(key).__name__} is not allowed (EC or RSA)")
    if not valid:
        raise CsrError("the CSR's signature does not verify")
    return key
