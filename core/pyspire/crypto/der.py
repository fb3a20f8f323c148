"""The few DER encodings pyspire assembles by hand (around signatures it did not make)."""

from __future__ import annotations

from typing import Final

from pyspire.crypto.keys import HashAlgorithm, KeyType

__all__ = ["bit_string", "element_end", "sequence", "signature_algorithm", "tlv"]

# AlgorithmIdentifier DER for each (key family, digest): ECDSA has no parameters, RSA a NULL.
_ECDSA_OIDS: Final = {
    HashAlgorithm.SHA256: "2a8648ce3d040302",
    HashAlgorithm.SHA384: "2a8648ce3d040303",
    HashAlgorithm.SHA512: "2a8648ce3d040304",
}
_RSA_OIDS: Final = {
    HashAlgorithm.SHA256: "2a864886f70d01010b",
    HashAlgorithm.SHA384: "2a864886f70d01010c",
    HashAlgorithm.SHA512: "2a864886f70d01010d",
}


def _length(size: int) -> bytes:
    if size < 0x80:
        return bytes([size])
    raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def tlv(tag: int, content: bytes) -> bytes:
    """One DER element."""
    return bytes([tag]) + _length(len(content)) + content


def sequence(*items: bytes) -> bytes:
    """A SEQUENCE of already-encoded elements."""
    return tlv(0x30, b"".join(items))


def bit_string(data: bytes) -> bytes:
    """A BIT STRING with no unused bits (how signatures are carried)."""
    return tlv(0x03, b"\x00" + data)


def element_end(data: bytes, offset: int) -> int:
    """The offset just past the DER element starting at ``offset``."""
    first = data[offset + 1]
    if first < 0x80:
        return offset + 2 + first
    count = first & 0x7F
    size = int.from_bytes(data[offset + 2 : offset + 2 + count], "big")
    return offset + 2 + count + size


def signature_algorithm(key_type: KeyType, hash_algorithm: HashAlgorithm) -> bytes:
    """The AlgorithmIdentifier for signing with ``key_type`` over ``hash_algorithm``."""
    if key_type.is_rsa:
        return sequence(tlv(0x06, bytes.fromhex(_RSA_OIDS[hash_algorithm])), b"\x05\x00")
    return sequence(tlv(0x06, bytes.fromhex(_ECDSA_OIDS[hash_algorithm])))
