"""Key types, signing parameters and public keys: the vocabulary of KeyManager plugins.

Defined in :mod:`pyspire.crypto.keys` (signing needs them and nothing above it); a plugin
imports them from here, with the rest of its API.
"""

from pyspire.crypto.keys import HashAlgorithm, KeyType, PublicKey

__all__ = ["HashAlgorithm", "KeyType", "PublicKey"]
