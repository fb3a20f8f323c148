"""The two documents the provider serves: the OIDC discovery document and the JWKS.

Both are written byte for byte as SPIRE writes them (Go's ``json.MarshalIndent`` with two
spaces, members in go-jose's order, ``<``, ``>`` and ``&`` escaped), so a relying party that
pinned SPIRE's output sees the same here. Every key gets the ``alg`` its type implies
(``RS256`` for RSA of 2048 bits or more, ``ES256``/``ES384`` for P-256/P-384), which some
relying parties need to pick the key; one whose algorithm cannot be told is served without
``alg`` and logged, as SPIRE does.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

__all__ = ["SIGNING_ALGORITHMS", "JwtKey", "discovery_document", "go_json", "jwks_document"]

_log = logging.getLogger("pyspire.oidc_discovery.documents")

SIGNING_ALGORITHMS = ("RS256", "ES256", "ES384")
"""What the discovery document says JWT-SVIDs are signed with (SPIRE's JWT key types)."""
_CURVES = {"secp256r1": ("P-256", "ES256"), "secp384r1": ("P-384", "ES384"), "secp521r1": ("P-521", None)}


@dataclass(frozen=True)
class JwtKey:
    """One JWT authority: its key ID and public key."""

    key_id: str
    public_key: PublicKeyTypes


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unsigned(value: int, size: int | None = None) -> str:
    return _b64url(value.to_bytes(size or max(1, (value.bit_length() + 7) // 8), "big"))


def _algorithm(key: PublicKeyTypes) -> str | None:
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256" if key.key_size >= 2048 else None
    if isinstance(key, ec.EllipticCurvePublicKey):
        return _CURVES.get(key.curve.name, (None, None))[1]
    return None


def _jwk(key: JwtKey, set_key_use: bool) -> dict[str, str] | None:
    """The key as go-jose writes a JSONWebKey; None (logged) for a key type a JWK cannot carry."""
    public = key.public_key
    member: dict[str, str] = {"use": "sig"} if set_key_use else {}
    algorithm = _algorithm(public)
    if isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name in _CURVES:
        size = (public.curve.key_size + 7) // 8
        numbers = public.public_numbers()
        member.update(kty="EC", kid=key.key_id, crv=_CURVES[public.curve.name][0])
        if algorithm:
            member["alg"] = algorithm
        member.update(x=_unsigned(numbers.x, size), y=_unsigned(numbers.y, size))
    elif isinstance(public, rsa.RSAPublicKey):
        rsa_numbers = public.public_numbers()
        member.update(kty="RSA", kid=key.key_id)
        if algorithm:
            member["alg"] = algorithm
        member.update(n=_unsigned(rsa_numbers.n), e=_unsigned(rsa_numbers.e))
    elif isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        member.update(kty="OKP", kid=key.key_id, crv="Ed25519", x=_b64url(raw))
    else:
        _log.warning("Public key type cannot be written as a JWK; key left out", extra={"kid": key.key_id})
        return None
    if algorithm is None:
        _log.error("Failed to get public key algorithm", extra={"kid": key.key_id})
    return member


def go_json(document: Any) -> bytes:
    """``document`` as Go's ``json.MarshalIndent(document, "", "  ")`` writes it."""
    text = json.dumps(document, indent=2, ensure_ascii=False)
    for character, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028")):
        text = text.replace(character, escape)
    return text.replace("\u2029", "\\u2029").encode("utf-8")


def jwks_document(keys: Sequence[JwtKey], set_key_use: bool) -> bytes:
    """The JWKS of ``keys``."""
    members = [member for member in (_jwk(key, set_key_use) for key in keys) if member is not None]
    return go_json({"keys": members})


def discovery_document(issuer: str, jwks_uri: str) -> bytes:
    """The OIDC discovery document naming ``issuer`` and ``jwks_uri``; the rest is what JWT-SVIDs are."""
    return go_json(
        {
            "issuer": issuer,
            "jwks_uri": jwks_uri,
            # Required members of the discovery document; SPIRE answers them with constants.
            "authorization_endpoint": "",
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": list(SIGNING_ALGORITHMS),
        }
    )
