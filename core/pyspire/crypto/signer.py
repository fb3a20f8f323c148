"""The one thing pyspire needs from a private key: sign these bytes."""

from __future__ import annotations

from typing import Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from pyspire.crypto.keys import HashAlgorithm, KeyType, PublicKey

__all__ = ["KeyManagerSigner", "LocalSigner", "Signer", "key_type_of", "signature_hash"]

_HASH_CLASSES: dict[HashAlgorithm, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
    HashAlgorithm.SHA256: hashes.SHA256,
    HashAlgorithm.SHA384: hashes.SHA384,
    HashAlgorithm.SHA512: hashes.SHA512,
}


class Signer(Protocol):
    """Signs with one private key it never reveals."""

    @property
    def key_type(self) -> KeyType:
        """The key's type (it decides the signature algorithm)."""
        ...

    @property
    def public_key(self) -> PublicKeyTypes:
        """The public half, as a cryptography object."""
        ...

    def sign(self, data: bytes, hash_algorithm: HashAlgorithm) -> bytes:
        """A signature over ``data``: DER ECDSA, or RSA PKCS#1 v1.5."""
        ...


def key_type_of(public_key: PublicKeyTypes) -> KeyType:
    """The KeyType of a public key, or ValueError for a type pyspire does not sign with."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name == "secp256r1":
            return KeyType.EC_P256
        if public_key.curve.name == "secp384r1":
            return KeyType.EC_P384
    elif isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size in (2048, 4096):
        return KeyType.RSA_2048 if public_key.key_size == 2048 else KeyType.RSA_4096
    raise ValueError(f"unsupported key: {type(public_key).__name__}")


def signature_hash(key_type: KeyType) -> HashAlgorithm:
    """The digest pyspire pairs with a key type (SHA-384 for P-384, SHA-256 otherwise)."""
    return HashAlgorithm.SHA384 if key_type is KeyType.EC_P384 else HashAlgorithm.SHA256


class SignsData(Protocol):
    """What signing needs of a KeyManager: a signature by one of its keys (the plugin's handle)."""

    def sign_data(self, key_id: str, data: bytes, hash_algorithm: HashAlgorithm = ...) -> bytes:
        """A signature of ``data`` by the key ``key_id``."""
        ...


class KeyManagerSigner:
    """A key held by a KeyManager plugin; signing is a hook call."""

    def __init__(self, key_manager: SignsData, public_key: PublicKey) -> None:
        """Sign with the key ``public_key.id`` of ``key_manager``."""
        self._key_manager = key_manager
        self._key = public_key
        self._public = public_key.load()

    @property
    def key_id(self) -> str:
        """The key's ID in the key manager."""
        return self._key.id

    @property
    def key_type(self) -> KeyType:
        """The key's type."""
        return self._key.type

    @property
    def public_key(self) -> PublicKeyTypes:
        """The public half."""
        return self._public

    def sign(self, data: bytes, hash_algorithm: HashAlgorithm) -> bytes:
        """Ask the key manager for a signature."""
        return self._key_manager.sign_data(self._key.id, data, hash_algorithm)


class LocalSigner:
    """A private key held in this process (workload keys, the server's own TLS key)."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
        """Sign with ``private_key``."""
        self._private_key = private_key
        self._key_type = key_type_of(private_key.public_key())

    @property
    def key_type(self) -> KeyType:
        """The key's type."""
        return self._key_type

    @property
    def public_key(self) -> PublicKeyTypes:
        """The public half."""
        return self._private_key.public_key()

    def sign(self, data: bytes, hash_algorithm: HashAlgorithm) -> bytes:
        """Sign in process."""
        digest = _HASH_CLASSES[hash_algorithm]()
        if isinstance(self._private_key, ec.EllipticCurvePrivateKey):
            return self._private_key.sign(data, ec.ECDSA(digest))
        return self._private_key.sign(data, padding.PKCS1v15(), digest)
