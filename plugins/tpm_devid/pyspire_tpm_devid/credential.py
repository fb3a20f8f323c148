"""``TPM2_MakeCredential`` done in software: the challenge only the TPM holding the EK can open.

The server wraps a fresh secret for a given attestation key Name under the endorsement key
(TPM 2.0 Library, Part 1, "Credential Protection"). ``TPM2_ActivateCredential`` releases it
only inside a TPM that holds both the EK's private key and a loaded object with that Name,
so a correct answer proves the AK lives in the same TPM as the certified EK.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from pyspire_tpm_devid.structures import ALG_AES, ALG_CFB, Public, StructureError, hash_for

__all__ = ["CredentialChallenge", "kdfa", "make_credential"]

_OAEP_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def kdfa(hash_name: str, key: bytes, label: bytes, context: tuple[bytes, bytes], bits: int) -> bytes:
    """The TPM's KDFa (SP 800-108 counter mode with HMAC), ``bits`` long; ``context`` is (contextU, contextV)."""
    out = b""
    counter = 0
    while len(out) * 8 < bits:
        counter += 1
        message = struct.pack(">I", counter) + label + b"\0" + context[0] + context[1] + struct.pack(">I", bits)
        out += hmac.new(key, message, hash_name).digest()
    return out[: bits // 8]


def _aes_cfb(key: bytes, plaintext: bytes) -> bytes:
    """AES in full-block CFB mode with a zero IV, as the TPM protects a credential.

    Built on single-block AES: cryptography is moving CFB out of its main modes, and this is
    the only place it is needed.
    """
    block = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305 -- one block at a time, CFB
    feedback = bytes(16)
    out = b""
    for start in range(0, len(plaintext), 16):
        keystream = block.update(feedback)
        chunk = bytes(a ^ b for a, b in zip(plaintext[start : start + 16], keystream, strict=False))
        out += chunk
        feedback = chunk
    return out


class CredentialChallenge:
    """A wrapped secret: ``credential`` (TPM2B_ID_OBJECT's contents) and ``secret`` (the encrypted seed)."""

    def __init__(self, credential: bytes, secret: bytes, expected: bytes) -> None:
        self.credential = credential
        self.secret = secret
        self.expected = expected


def make_credential(ek: Public, object_name: bytes) -> CredentialChallenge:
    """Wrap a fresh secret (the size of the EK's name hash) for ``object_name`` under ``ek``.

    Only RSA endorsement keys with an AES-CFB symmetric definition (the TCG EK templates) are
    supported, as SPIRE supports; anything else is a StructureError.
    """
    if not isinstance(ek.key, rsa.RSAPublicKey):
        raise StructureError("the endorsement key is not an RSA key")
    algorithm, key_bits, mode = ek.symmetric
    if algorithm != ALG_AES or mode != ALG_CFB or key_bits not in (128, 192, 256):
        raise StructureError("the endorsement key has no AES-CFB symmetric definition")
    hash_name = hash_for(ek.name_alg)
    digest_size = hashlib.new(hash_name).digest_size
    expected = os.urandom(digest_size)
    seed = os.urandom(key_bits // 8)
    oaep_hash = _OAEP_HASHES[hash_name]
    secret = ek.key.encrypt(
        seed, padding.OAEP(mgf=padding.MGF1(oaep_hash()), algorithm=oaep_hash(), label=b"IDENTITY\0")
    )
    symmetric_key = kdfa(hash_name, seed, b"STORAGE", (object_name, b""), key_bits)
    encrypted = _aes_cfb(symmetric_key, struct.pack(">H", len(expected)) + expected)
    hmac_key = kdfa(hash_name, seed, b"INTEGRITY", (b"", b""), digest_size * 8)
    integrity = hmac.new(hmac_key, encrypted + object_name, hash_name).digest()
    return CredentialChallenge(struct.pack(">H", len(integrity)) + integrity + encrypted, secret, expected)
