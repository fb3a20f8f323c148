"""What KMS is asked to sign: a digest computed here, and the KMS signing algorithm for it.

The plugin sends ``MessageType=DIGEST``, as SPIRE does: the message never leaves the server
and no message is limited to the 4096 bytes KMS signs in ``RAW`` mode.

KMS ties an ECDSA key to one hash (``ECDSA_SHA_256`` for P-256, ``ECDSA_SHA_384`` for P-384);
the key manager contract asks for any of SHA-256/384/512 with any key. ECDSA signs only the
leftmost bits of the digest, as many as the curve order has (FIPS 186-5 §6.4.1), so a SHA-384
or SHA-512 digest cut to that length, or a SHA-256 digest padded on the left with zero bytes
(which leaves its integer value unchanged) to 48 bytes for P-384, gives the very signature
ECDSA with that hash would give. RSA keys take every hash with PKCS #1 v1.5 or PSS (KMS's PSS
salt is as long as the digest).
"""

from __future__ import annotations

import hashlib

from pyspire.plugin import HashAlgorithm, KeyType

__all__ = ["KEY_SPECS", "KEY_TYPES", "kms_signing_request"]

KEY_SPECS: dict[KeyType, str] = {
    KeyType.EC_P256: "ECC_NIST_P256",
    KeyType.EC_P384: "ECC_NIST_P384",
    KeyType.RSA_2048: "RSA_2048",
    KeyType.RSA_4096: "RSA_4096",
}
KEY_TYPES: dict[str, KeyType] = {spec: key_type for key_type, spec in KEY_SPECS.items()}

_DIGEST_BITS = {HashAlgorithm.SHA256: "256", HashAlgorithm.SHA384: "384", HashAlgorithm.SHA512: "512"}
_EC_DIGEST_BYTES = {KeyType.EC_P256: 32, KeyType.EC_P384: 48}


def kms_signing_request(
    key_type: KeyType, data: bytes, hash_algorithm: HashAlgorithm, rsa_pss: bool
) -> tuple[bytes, str]:
    """The digest to send and the ``SigningAlgorithm`` to name for signing ``data``."""
    digest = hashlib.new(hash_algorithm.value, data).digest()
    bits = _DIGEST_BITS[hash_algorithm]
    if key_type.is_rsa:
        return digest, f"RSASSA_{'PSS' if rsa_pss else 'PKCS1_V1_5'}_SHA_{bits}"
    size = _EC_DIGEST_BYTES[key_type]
    fitted = digest[:size].rjust(size, b"\x00")
    return fitted, f"ECDSA_SHA_{size * 8}"
