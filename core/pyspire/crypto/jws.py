"""JWT-SVIDs signed by a :class:`~pyspire.crypto.signer.Signer` (compact JWS)."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from pyspire.crypto.keys import KeyType
from pyspire.crypto.signer import Signer, signature_hash

__all__ = ["sign_jwt"]

_ALGORITHMS = {KeyType.EC_P256: "ES256", KeyType.EC_P384: "ES384", KeyType.RSA_2048: "RS256", KeyType.RSA_4096: "RS256"}
_EC_SIZES = {KeyType.EC_P256: 32, KeyType.EC_P384: 48}


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def sign_jwt(claims: Mapping[str, Any], signer: Signer, key_id: str) -> str:
    """A compact JWS over ``claims`` with header ``alg`` (from the key type), ``kid`` and ``typ``.

    ECDSA signatures are converted from DER to the fixed-size r||s that JWS requires.
    """
    header = {"alg": _ALGORITHMS[signer.key_type], "kid": key_id, "typ": "JWT"}
    signing_input = (
        _b64(json.dumps(header, separators=(",", ":")).encode())
        + b"."
        + _b64(json.dumps(dict(claims), separators=(",", ":")).encode())
    )
    signature = signer.sign(signing_input, signature_hash(signer.key_type))
    if signer.key_type in _EC_SIZES:
        size = _EC_SIZES[signer.key_type]
        r, s = decode_dss_signature(signature)
        signature = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return (signing_input + b"." + _b64(signature)).decode("ascii")
