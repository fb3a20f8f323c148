"""The sshpop exchange on the wire, byte for byte SPIRE's, so each half works with SPIRE's other half.

Three JSON documents, their binary fields in standard base64 as Go's ``encoding/json`` writes
``[]byte``:

1. the agent's payload ``{"Certificate": <the host certificate in SSH wire format>}``;
2. the server's challenge ``{"Nonce": <32 random bytes>}``;
3. the agent's answer ``{"Nonce": <32 random bytes of its own>, "Signature": {"Format": <SSH
   signature algorithm>, "Blob": <signature>, "Rest": null}}``.

What the host key signs is the SHA-256 of the server's nonce followed by the agent's: the
server never chooses the whole message, and every exchange signs something new, so an answer
recorded from one exchange is worthless in the next. Signatures are SSH signatures (RFC 4253,
5656, 8032, 8332) of that digest: the server accepts ``ssh-rsa`` (SHA-1, what SPIRE's agent
sends for RSA keys), ``rsa-sha2-256`` and ``rsa-sha2-512`` for RSA keys, and the one algorithm
of the key for ECDSA and Ed25519; pyspire's agent signs RSA with ``rsa-sha2-256``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from pyspire.plugin.errors import Internal, InvalidArgument

__all__ = [
    "EC_CURVES",
    "NONCE_BYTES",
    "PrivateKey",
    "Signature",
    "attestation_data",
    "challenge",
    "challenge_nonce",
    "challenge_response",
    "read_attestation_data",
    "read_challenge_response",
    "sign",
    "signed_digest",
    "verify",
]

NONCE_BYTES = 32
MAX_MESSAGE_BYTES = 64 * 1024
"""No message of the exchange comes near this; bigger input is refused before it is parsed."""

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
Signature = tuple[str, bytes]
"""An SSH signature: its algorithm name (``Format``) and its bytes (``Blob``)."""

_RSA_HASHES: dict[str, hashes.HashAlgorithm] = {
    "ssh-rsa": hashes.SHA1(),  # noqa: S303 - what SPIRE's agent signs with; a fresh nonce leaves no collision to exploit
    "rsa-sha2-256": hashes.SHA256(),
    "rsa-sha2-512": hashes.SHA512(),
}
_EC_ALGORITHMS: dict[str, tuple[str, hashes.HashAlgorithm]] = {
    "secp256r1": ("ecdsa-sha2-nistp256", hashes.SHA256()),
    "secp384r1": ("ecdsa-sha2-nistp384", hashes.SHA384()),
    "secp521r1": ("ecdsa-sha2-nistp521", hashes.SHA512()),
}
EC_CURVES = frozenset(_EC_ALGORITHMS)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _bytes_field(document: Mapping[str, Any], name: str, what: str) -> bytes:
    value = document.get(name)
    if not isinstance(value, str):
        raise InvalidArgument(f'{what}: "{name}" must be a base64 string')
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument(f'{what}: "{name}" is not valid base64') from None


def _document(data: bytes, what: str) -> Mapping[str, Any]:
    if len(data) > MAX_MESSAGE_BYTES:
        raise InvalidArgument(f"{what} is larger than {MAX_MESSAGE_BYTES} bytes")
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument(f"{what} is not JSON") from None
    if not isinstance(document, dict):
        raise InvalidArgument(f"{what} must be a JSON object")
    return document


def _nonce(document: Mapping[str, Any], what: str) -> bytes:
    nonce = _bytes_field(document, "Nonce", what)
    if len(nonce) != NONCE_BYTES:
        raise InvalidArgument(f"{what}: the nonce must be {NONCE_BYTES} bytes, not {len(nonce)}")
    return nonce


def attestation_data(certificate_wire: bytes) -> bytes:
    """The agent's payload."""
    return json.dumps({"Certificate": _b64(certificate_wire)}).encode()


def read_attestation_data(payload: bytes) -> bytes:
    """The certificate's wire bytes from the agent's payload."""
    certificate = _bytes_field(_document(payload, "attestation data"), "Certificate", "attestation data")
    if not certificate:
        raise InvalidArgument("attestation data: no certificate")
    return certificate


def challenge(nonce: bytes) -> bytes:
    """The server's challenge."""
    return json.dumps({"Nonce": _b64(nonce)}).encode()


def challenge_nonce(data: bytes) -> bytes:
    """The server's nonce from its challenge."""
    return _nonce(_document(data, "challenge"), "challenge")


def challenge_response(nonce: bytes, signature: Signature) -> bytes:
    """The agent's answer: its own nonce and the host key's signature."""
    algorithm, blob = signature
    return json.dumps(
        {"Nonce": _b64(nonce), "Signature": {"Format": algorithm, "Blob": _b64(blob), "Rest": None}}
    ).encode()


def read_challenge_response(data: bytes) -> tuple[bytes, Signature]:
    """The agent's nonce and signature from its answer."""
    what = "challenge response"
    document = _document(data, what)
    nonce = _nonce(document, what)
    signature = document.get("Signature")
    if not isinstance(signature, dict):
        raise InvalidArgument(f'{what}: "Signature" must be an object')
    algorithm = signature.get("Format")
    if not isinstance(algorithm, str) or not algorithm:
        raise InvalidArgument(f'{what}: "Signature.Format" must name a signature algorithm')
    blob = _bytes_field(signature, "Blob", f"{what} signature")
    # Rest carries the flags and counter of security-key signatures, which host keys never make.
    if signature.get("Rest") not in (None, ""):
        raise InvalidArgument(f'{what}: "Signature.Rest" is only for security-key signatures, which are not accepted')
    return nonce, (algorithm, blob)


def signed_digest(server_nonce: bytes, agent_nonce: bytes) -> bytes:
    """What the host key signs."""
    return hashlib.sha256(server_nonce + agent_nonce).digest()


def _mpint(value: int) -> bytes:
    body = value.to_bytes((value.bit_length() + 8) // 8, "big") if value else b""
    return len(body).to_bytes(4, "big") + body


def _read_mpints(blob: bytes, count: int) -> list[int]:
    values = []
    for _ in range(count):
        if len(blob) < 4 or len(blob) < 4 + int.from_bytes(blob[:4], "big"):
            raise ValueError("truncated")
        length = int.from_bytes(blob[:4], "big")
        body, blob = blob[4 : 4 + length], blob[4 + length :]
        if body and body[0] & 0x80:
            raise ValueError("negative")
        values.append(int.from_bytes(body, "big"))
    if blob:
        raise ValueError("trailing bytes")
    return values


def sign(private_key: PrivateKey, data: bytes) -> Signature:
    """An SSH signature of ``data`` by the host key."""
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return "ssh-ed25519", private_key.sign(data)
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        algorithm, digest = _EC_ALGORITHMS[private_key.curve.name]
        r, s = decode_dss_signature(private_key.sign(data, ec.ECDSA(digest)))
        return algorithm, _mpint(r) + _mpint(s)
    if isinstance(private_key, rsa.RSAPrivateKey):
        return "rsa-sha2-256", private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    raise Internal(f"unsupported host key type {type(private_key).__name__}")


def verify(public_key: PublicKey, data: bytes, signature: Signature) -> None:
    """Raise ``InvalidSignature`` unless ``signature`` is the key's signature of ``data`` in an accepted algorithm."""
    algorithm, blob = signature
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        if algorithm != "ssh-ed25519":
            raise InvalidSignature(f"a {algorithm} signature for an ssh-ed25519 key")
        public_key.verify(blob, data)
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        expected, digest = _EC_ALGORITHMS[public_key.curve.name]
        if algorithm != expected:
            raise InvalidSignature(f"a {algorithm} signature for an {expected} key")
        try:
            r, s = _read_mpints(blob, 2)
        except ValueError as err:
            raise InvalidSignature(f"the ECDSA signature is malformed: {err}") from None
        public_key.verify(encode_dss_signature(r, s), data, ec.ECDSA(digest))
    elif isinstance(public_key, rsa.RSAPublicKey):
        if algorithm not in _RSA_HASHES:
            raise InvalidSignature(f"a {algorithm} signature for an ssh-rsa key")
        public_key.verify(blob, data, padding.PKCS1v15(), _RSA_HASHES[algorithm])
    else:
        raise InvalidSignature(f"unsupported host key type {type(public_key).__name__}")
