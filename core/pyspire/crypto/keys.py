"""Key types, signing parameters and public keys: the vocabulary of signing, and of KeyManager plugins.

Plugins import these from :mod:`pyspire.plugin.keys`; they live here so that ``crypto`` needs
nothing above it.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

__all__ = ["HashAlgorithm", "KeyType", "PublicKey"]


class KeyType(enum.Enum):
    """The key types SPIRE's key managers offer, named as SPIRE's config names them."""

    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"
    RSA_2048 = "rsa-2048"
    RSA_4096 = "rsa-4096"

    @classmethod
    def parse(cls, text: str) -> KeyType:
        """The key type called ``text`` (``ec-p256``...), or a ValueError listing them."""
        try:
            return cls(text)
        except ValueError:
            known = ", ".join(member.value for member in cls)
            raise ValueError(f'unknown key type "{text}" (known: {known})') from None

    @property
    def is_rsa(self) -> bool:
        """Whether the type is an RSA key (else elliptic curve)."""
        return self in (KeyType.RSA_2048, KeyType.RSA_4096)


class HashAlgorithm(enum.Enum):
    """Digests a signature may be made over."""

    SHA256 = "sha256"
    SHA384 = "sha384"
    SHA512 = "sha512"


@dataclass(frozen=True)
class PublicKey:
    """A key a KeyManager holds, as everyone outside the key manager may see it.

    ``der`` is the SubjectPublicKeyInfo; the private half never leaves the plugin.
    """

    id: str
    type: KeyType
    der: bytes
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fingerprint", hashlib.sha256(self.der).hexdigest())

    def load(self) -> PublicKeyTypes:
        """The key as a ``cryptography`` public key object."""
        return serialization.load_der_public_key(self.der)
