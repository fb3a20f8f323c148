"""What the transit engine is asked to sign: a digest made here, and how Vault is to sign it.

The message never leaves the server: it is hashed here and sent with ``prehashed``, as SPIRE
does. Signatures come back DER-encoded for ECDSA (``marshaling_algorithm=asn1``, what X.509
carries) and as PKCS #1 v1.5 or PSS for RSA; PSS salts are as long as the digest
(``salt_length=hash``), which is what X.509 and JOSE verifiers expect (Vault's own default,
``auto``, would make the salt as long as the key allows).

Vault signs a prehashed ECDSA input only under the hash that matches the curve (SHA-256 for
P-256, SHA-384 for P-384). ECDSA uses only the leftmost bits of a digest, as many as the
curve order has (FIPS 186-5 §6.4.1), so a longer digest cut to the curve's size, or a shorter
one padded on the left with zero bytes (which leaves its integer value unchanged), gives the
very signature ECDSA with the requested hash would give.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from pyspire.plugin import HashAlgorithm, KeyType

__all__ = ["TRANSIT_KEY_TYPES", "SigningRequest", "signing_request"]

TRANSIT_KEY_TYPES: dict[KeyType, str] = {
    KeyType.EC_P256: "ecdsa-p256",
    KeyType.EC_P384: "ecdsa-p384",
    KeyType.RSA_2048: "rsa-2048",
    KeyType.RSA_4096: "rsa-4096",
}
_TRANSIT_HASHES = {HashAlgorithm.SHA256: "sha2-256", HashAlgorithm.SHA384: "sha2-384", HashAlgorithm.SHA512: "sha2-512"}
_CURVES = {KeyType.EC_P256: (32, "sha2-256"), KeyType.EC_P384: (48, "sha2-384")}


@dataclass(frozen=True)
class SigningRequest:
    digest: bytes
    hash_algorithm: str
    signature_algorithm: str | None
    salt_length: str | None


def signing_request(key_type: KeyType, data: bytes, hash_algorithm: HashAlgorithm, rsa_pss: bool) -> SigningRequest:
    """The prehashed input and transit parameters that sign ``data`` as asked."""
    digest = hashlib.new(hash_algorithm.value, data).digest()
    if key_type.is_rsa:
        if rsa_pss:
            return SigningRequest(digest, _TRANSIT_HASHES[hash_algorithm], "pss", "hash")
        return SigningRequest(digest, _TRANSIT_HASHES[hash_algorithm], "pkcs1v15", None)
    size, curve_hash = _CURVES[key_type]
    return SigningRequest(digest[:size].rjust(size, b"\x00"), curve_hash, None, None)
