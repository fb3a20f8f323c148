"""The TPM 2.0 structures the server reads, decoded from their wire form with no TPM library.

The server half must not need a TPM stack: it only parses what the agent's TPM produced
(``TPMT_PUBLIC`` areas, a ``TPMS_ATTEST`` from ``TPM2_Certify``, a ``TPMT_SIGNATURE``) and
checks it with ``cryptography``. Each decoder consumes its whole input and raises
:class:`StructureError` on anything it does not fully understand, so a blob with trailing
or missing bytes is refused rather than half-read. Layouts are the TPM 2.0 Library
specification's, Part 2 (Structures).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec, rsa

__all__ = [
    "ALG_AES",
    "ALG_CFB",
    "ALG_ECC",
    "ALG_NULL",
    "ALG_RSA",
    "ALG_RSASSA",
    "ATTEST_CERTIFY",
    "FIXED_TPM",
    "RESTRICTED",
    "SIGN",
    "Attestation",
    "Public",
    "Signature",
    "StructureError",
    "hash_for",
    "parse_attestation",
    "parse_public",
    "parse_signature",
]

ALG_RSA: Final = 0x0001
ALG_SHA1: Final = 0x0004
ALG_AES: Final = 0x0006
ALG_SHA256: Final = 0x000B
ALG_SHA384: Final = 0x000C
ALG_SHA512: Final = 0x000D
ALG_NULL: Final = 0x0010
ALG_RSASSA: Final = 0x0014
ALG_RSAPSS: Final = 0x0016
ALG_ECDSA: Final = 0x0018
ALG_ECDAA: Final = 0x001A
ALG_ECC: Final = 0x0023
ALG_CFB: Final = 0x0043

FIXED_TPM: Final = 0x00000002
RESTRICTED: Final = 0x00010000
SIGN: Final = 0x00040000

GENERATED_VALUE: Final = 0xFF544347
"""``TPM_GENERATED_VALUE``: the TPM puts it at the start of every structure it signs."""
ATTEST_CERTIFY: Final = 0x8017

_HASHES: Final = {ALG_SHA1: "sha1", ALG_SHA256: "sha256", ALG_SHA384: "sha384", ALG_SHA512: "sha512"}
_CURVES: Final[dict[int, ec.EllipticCurve]] = {0x0003: ec.SECP256R1(), 0x0004: ec.SECP384R1(), 0x0005: ec.SECP521R1()}


class StructureError(ValueError):
    """A TPM structure is truncated, has trailing bytes, or uses something not supported."""


def hash_for(algorithm: int) -> str:
    """The hashlib name of a TPM hash algorithm; StructureError for any other."""
    try:
        return _HASHES[algorithm]
    except KeyError:
        raise StructureError(f"unsupported hash algorithm 0x{algorithm:04x}") from None


class _Reader:
    """Big-endian fields read off a buffer, with bounds checked."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._at = 0
        self._what = what

    def take(self, size: int) -> bytes:
        if self._at + size > len(self._data):
            raise StructureError(f"{self._what} is truncated")
        chunk = self._data[self._at : self._at + size]
        self._at += size
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        value: int = struct.unpack(">H", self.take(2))[0]
        return value

    def u32(self) -> int:
        value: int = struct.unpack(">I", self.take(4))[0]
        return value

    def u64(self) -> int:
        value: int = struct.unpack(">Q", self.take(8))[0]
        return value

    def sized(self) -> bytes:
        """A ``TPM2B_*``: a 16-bit size, then that many bytes."""
        return self.take(self.u16())

    def end(self) -> None:
        if self._at != len(self._data):
            raise StructureError(f"{self._what} has {len(self._data) - self._at} unexpected trailing bytes")


@dataclass(frozen=True)
class Public:
    """A ``TPMT_PUBLIC``: a TPM object's public area (RSA or ECC)."""

    encoded: bytes
    type: int
    name_alg: int
    attributes: int
    symmetric: tuple[int, int, int]
    """``(algorithm, key bits, mode)`` of the object's symmetric definition; ``(ALG_NULL, 0, 0)`` when none."""
    scheme: int
    scheme_hash: int
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey

    @property
    def name(self) -> bytes:
        """The object's Name: its name algorithm, then that hash of the public area."""
        digest = hashlib.new(hash_for(self.name_alg), self.encoded).digest()
        return struct.pack(">H", self.name_alg) + digest

    def has(self, attributes: int) -> bool:
        return self.attributes & attributes == attributes


def _symmetric(reader: _Reader) -> tuple[int, int, int]:
    algorithm = reader.u16()
    if algorithm == ALG_NULL:
        return ALG_NULL, 0, 0
    return algorithm, reader.u16(), reader.u16()


def _scheme(reader: _Reader) -> tuple[int, int]:
    scheme = reader.u16()
    if scheme == ALG_NULL:
        return ALG_NULL, 0
    scheme_hash = reader.u16()
    if scheme == ALG_ECDAA:
        reader.u16()  # the ECDAA commit count
    return scheme, scheme_hash


def parse_public(data: bytes, what: str = "public area") -> Public:
    """Decode a ``TPMT_PUBLIC`` (the form SPIRE's agent sends: no leading size)."""
    reader = _Reader(data, what)
    kind = reader.u16()
    name_alg = reader.u16()
    attributes = reader.u32()
    reader.sized()  # authPolicy
    symmetric = _symmetric(reader)
    scheme, scheme_hash = _scheme(reader)
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    if kind == ALG_RSA:
        reader.u16()  # keyBits: the modulus says it
        exponent = reader.u32() or 65537
        modulus = reader.sized()
        if not modulus:
            raise StructureError(f"{what} has no RSA modulus")
        key = rsa.RSAPublicNumbers(exponent, int.from_bytes(modulus, "big")).public_key()
    elif kind == ALG_ECC:
        curve_id = reader.u16()
        if reader.u16() != ALG_NULL:  # a kdf scheme, then its hash
            reader.u16()
        x, y = reader.sized(), reader.sized()
        curve = _CURVES.get(curve_id)
        if curve is None:
            raise StructureError(f"{what} uses unsupported ECC curve 0x{curve_id:04x}")
        try:
            key = ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve).public_key()
        except ValueError:
            raise StructureError(f"{what} holds a point that is not on its curve") from None
    else:
        raise StructureError(f"{what} has unsupported key type 0x{kind:04x}")
    reader.end()
    return Public(data, kind, name_alg, attributes, symmetric, scheme, scheme_hash, key)


@dataclass(frozen=True)
class Attestation:
    """A ``TPMS_ATTEST`` of type certify: the Name the TPM vouches it holds."""

    magic: int
    type: int
    extra_data: bytes
    certified_name: bytes


def parse_attestation(data: bytes) -> Attestation:
    """Decode the ``TPMS_ATTEST`` of a ``TPM2_Certify`` (only that type)."""
    reader = _Reader(data, "certify info")
    magic, kind = reader.u32(), reader.u16()
    if magic != GENERATED_VALUE:
        raise StructureError("certify info was not generated by a TPM (bad magic)")
    if kind != ATTEST_CERTIFY:
        raise StructureError(f"certify info has type 0x{kind:04x}, not a certification")
    reader.sized()  # qualifiedSigner
    extra_data = reader.sized()
    reader.u64()  # clockInfo: clock, resetCount, restartCount, safe
    reader.u32()
    reader.u32()
    reader.u8()
    reader.u64()  # firmwareVersion
    name = reader.sized()
    reader.sized()  # qualifiedName
    reader.end()
    return Attestation(magic, kind, extra_data, name)


@dataclass(frozen=True)
class Signature:
    """A ``TPMT_SIGNATURE`` of an RSA key (the attestation key is RSA)."""

    algorithm: int
    hash: int
    value: bytes


def parse_signature(data: bytes) -> Signature:
    """Decode a ``TPMT_SIGNATURE`` made by an RSA key (RSASSA or RSAPSS)."""
    reader = _Reader(data, "certification signature")
    algorithm = reader.u16()
    if algorithm not in (ALG_RSASSA, ALG_RSAPSS):
        raise StructureError(f"certification signature has unsupported algorithm 0x{algorithm:04x}")
    hash_alg = reader.u16()
    value = reader.sized()
    reader.end()
    return Signature(algorithm, hash_alg, value)
