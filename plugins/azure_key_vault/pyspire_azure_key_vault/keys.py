"""Between the key manager's terms and Key Vault's: key types, public keys as JWKs, signatures.

Key Vault signs a digest the caller computes (``sign`` with an algorithm such as ``ES256``) and
answers ECDSA signatures as ``r || s`` (IEEE P1363); X.509 and the key manager contract want
them DER-encoded, so they are re-encoded here. RSA signatures need no change.

A Key Vault EC key signs one digest size (``ES256`` for P-256, ``ES384`` for P-384), while the
contract asks for any of SHA-256/384/512 with any key. ECDSA uses only the leftmost bits of a
digest, as many as the curve order has (FIPS 186-5 section 6.4.1): a longer digest cut to
that size, or a shorter one padded on the left with zero bytes, gives the very signature ECDSA
with the asked hash gives. RSA keys take every hash, with PKCS #1 v1.5 or PSS (Key Vault's
PSS salt is as long as the digest).
"""

from __future__ import annotations

import hashlib
from typing import Any

from azure.keyvault.keys import JsonWebKey, KeyCurveName
from azure.keyvault.keys import KeyType as VaultKeyType
from azure.keyvault.keys.crypto import SignatureAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pyspire.plugin import HashAlgorithm, Internal, KeyType

__all__ = ["create_key_arguments", "der_signature", "jwk_field", "key_type_of", "public_key_der", "signing_request"]

_CURVES: dict[KeyType, tuple[str, ec.EllipticCurve]] = {
    KeyType.EC_P256: (KeyCurveName.p_256, ec.SECP256R1()),
    KeyType.EC_P384: (KeyCurveName.p_384, ec.SECP384R1()),
}
_RSA_SIZES = {KeyType.RSA_2048: 2048, KeyType.RSA_4096: 4096}
_EC_ALGORITHMS = {KeyType.EC_P256: (SignatureAlgorithm.es256, 32), KeyType.EC_P384: (SignatureAlgorithm.es384, 48)}
_RSA_ALGORITHMS = {
    (HashAlgorithm.SHA256, False): SignatureAlgorithm.rs256,
    (HashAlgorithm.SHA384, False): SignatureAlgorithm.rs384,
    (HashAlgorithm.SHA512, False): SignatureAlgorithm.rs512,
    (HashAlgorithm.SHA256, True): SignatureAlgorithm.ps256,
    (HashAlgorithm.SHA384, True): SignatureAlgorithm.ps384,
    (HashAlgorithm.SHA512, True): SignatureAlgorithm.ps512,
}


def jwk_field(jwk: JsonWebKey, name: str) -> Any:
    """A JWK member (``kty``, ``n``, ``crv``...): the SDK sets them in ``__init__``, untyped."""
    return getattr(jwk, name, None)


def create_key_arguments(key_type: KeyType) -> dict[str, object]:
    """The ``KeyClient.create_key`` arguments (besides name, operations and tags) for ``key_type``."""
    if key_type.is_rsa:
        return {"key_type": VaultKeyType.rsa, "size": _RSA_SIZES[key_type]}
    return {"key_type": VaultKeyType.ec, "curve": _CURVES[key_type][0]}


def key_type_of(jwk: JsonWebKey) -> KeyType | None:
    """The key type of a Key Vault key, as SPIRE reads it (RSA by modulus length), or None."""
    if jwk_field(jwk, "kty") == VaultKeyType.rsa and jwk_field(jwk, "n") is not None:
        return {256: KeyType.RSA_2048, 512: KeyType.RSA_4096}.get(len(jwk_field(jwk, "n")))
    if jwk_field(jwk, "kty") == VaultKeyType.ec:
        return {curve: key_type for key_type, (curve, _) in _CURVES.items()}.get(jwk_field(jwk, "crv"))
    return None


def public_key_der(jwk: JsonWebKey, key_type: KeyType) -> bytes:
    """The SubjectPublicKeyInfo (DER) of a Key Vault key's JWK."""
    try:
        if key_type.is_rsa:
            public: rsa.RSAPublicKey | ec.EllipticCurvePublicKey = rsa.RSAPublicNumbers(
                int.from_bytes(jwk_field(jwk, "e"), "big"), int.from_bytes(jwk_field(jwk, "n"), "big")
            ).public_key()
        else:
            curve = _CURVES[key_type][1]
            public = ec.EllipticCurvePublicNumbers(
                int.from_bytes(jwk_field(jwk, "x"), "big"), int.from_bytes(jwk_field(jwk, "y"), "big"), curve
            ).public_key()
    except (TypeError, ValueError) as err:
        raise Internal(f'failed to convert Key Vault key "{jwk_field(jwk, "kid")}" to a public key: {err}') from None
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def signing_request(key_type: KeyType, data: bytes, hash_algorithm: HashAlgorithm, rsa_pss: bool) -> tuple[str, bytes]:
    """The Key Vault signature algorithm and the digest to send for signing ``data``."""
    digest = hashlib.new(hash_algorithm.value, data).digest()
    if key_type.is_rsa:
        return _RSA_ALGORITHMS[(hash_algorithm, rsa_pss)], digest
    algorithm, size = _EC_ALGORITHMS[key_type]
    return algorithm, digest[:size].rjust(size, b"\x00")


def der_signature(key_type: KeyType, signature: bytes) -> bytes:
    """A Key Vault signature as X.509 wants it: ECDSA's ``r || s`` as a DER sequence, RSA unchanged."""
    if key_type.is_rsa:
        return signature
    size = _EC_ALGORITHMS[key_type][1]
    if len(signature) != 2 * size:
        raise Internal("malformed signature response")
    return encode_dss_signature(int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big"))
