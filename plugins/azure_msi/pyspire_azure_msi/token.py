"""The managed identity token's checks: Entra's signature, the tenant, the audience, the time.

Entra publishes its signing keys at the ``jwks_uri`` of ``<issuer>.well-known/openid-configuration``
(SPIRE's issuer is ``https://login.microsoftonline.com/common/``, whose keys sign every tenant's
tokens). The keys are cached for an hour, as SPIRE's; a token naming a key not in the cache makes
the plugin fetch them again at most every 30 seconds, so forged key IDs cannot flood Entra. The
signature is verified before any claim is used. ``exp`` and ``nbf`` are checked with SPIRE's five
minutes of leeway; pyspire also requires ``exp`` and an issuer that is the token's own tenant's.
A wrong audience or issuer is PermissionDenied (the agent stops: asking again gives the same
token); SPIRE answers Internal. A token outside its time is Internal, as SPIRE's: a fresh one may pass.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from pyspire.plugin.errors import Internal, InvalidArgument, PermissionDenied

__all__ = ["DEFAULT_OPENID_ISSUER", "EntraKeys", "MsiClaims", "check_claims", "verified_claims"]

DEFAULT_OPENID_ISSUER = "https://login.microsoftonline.com/common/"
REFRESH_SECONDS = 3600.0
UNKNOWN_KEY_REFETCH_SECONDS = 30.0
LEEWAY_SECONDS = 300
MAX_DOCUMENT_BYTES = 256 * 1024
FETCH_TIMEOUT_SECONDS = 10.0
ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"]


def _get_json(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_SECONDS) as response:  # noqa: S310 - https issuer
            body: bytes = response.read(MAX_DOCUMENT_BYTES + 1)
    except urllib.error.HTTPError as err:
        raise Internal(f"unable to obtain JWKS: {url} answered HTTP {err.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        raise Internal(f"unable to obtain JWKS: {url}: {getattr(err, 'reason', err)}") from None
    try:
        parsed = json.loads(body[:MAX_DOCUMENT_BYTES])
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise Internal(f"unable to obtain JWKS: {url} is not JSON: {err}") from None
    if not isinstance(parsed, dict):
        raise Internal(f"unable to obtain JWKS: {url} is not a JSON object")
    return parsed


class EntraKeys:
    """Entra's token-signing keys by key ID, fetched through the issuer's OpenID configuration."""

    def __init__(self, issuer: str = DEFAULT_OPENID_ISSUER, clock: Callable[[], float] = time.monotonic) -> None:
        self._discovery = f"{issuer.rstrip('/')}/.well-known/openid-configuration"
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched: float | None = None

    def key(self, key_id: str) -> jwt.PyJWK | None:
        with self._lock:
            now = self._clock()
            stale = self._fetched is None or now - self._fetched >= REFRESH_SECONDS
            unknown = key_id not in self._keys and (
                self._fetched is None or now - self._fetched >= UNKNOWN_KEY_REFETCH_SECONDS
            )
            if stale or unknown:
                self._keys = self._fetch()
                self._fetched = now
            return self._keys.get(key_id)

    def _fetch(self) -> dict[str, jwt.PyJWK]:
        jwks_uri = _get_json(self._discovery).get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
            raise Internal(f"unable to obtain JWKS: {self._discovery} names no jwks_uri")
        try:
            key_set = jwt.PyJWKSet.from_dict(_get_json(jwks_uri))
        except jwt.PyJWTError as err:
            raise Internal(f"unable to obtain JWKS: {err}") from None
        return {key.key_id: key for key in key_set.keys if key.key_id}


@dataclass(frozen=True)
class MsiClaims:
    """The claims the attestation uses: ``tid`` and ``sub`` (the identity's principal ID)."""

    tenant_id: str
    principal_id: str
    claims: dict[str, Any]


def verified_claims(token: str, keys: EntraKeys) -> MsiClaims:
    """The claims of a token Entra signed (audience and time are checked later, per tenant)."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as err:
        raise InvalidArgument(f"unable to parse token: {err}") from None
    if header.get("alg") not in ALGORITHMS:
        raise InvalidArgument(f'unable to parse token: algorithm "{header.get("alg")}" is not allowed')
    key_id = header.get("kid")
    if not isinstance(key_id, str) or not key_id:
        raise InvalidArgument("token missing key id")
    key = keys.key(key_id)
    if key is None:
        raise InvalidArgument(f'key id "{key_id}" not found')
    try:
        claims = jwt.decode(
            token,
            key=key,
            algorithms=[header["alg"]],
            options={"verify_aud": False, "verify_exp": False, "verify_nbf": False, "verify_iat": False},
        )
    except jwt.PyJWTError as err:
        raise InvalidArgument(f"unable to verify token: {err}") from None
    tenant_id, principal_id = claims.get("tid"), claims.get("sub")
    if not isinstance(tenant_id, str) or not tenant_id:
        raise Internal("token missing tenant ID claim")
    if not isinstance(principal_id, str) or not principal_id:
        raise Internal("token missing subject claim")
    return MsiClaims(tenant_id, principal_id, claims)


def check_claims(claims: MsiClaims, resource_id: str, now: float | None = None) -> None:
    """The token is for ``resource_id``, from its own tenant's issuer, and current (five minutes of leeway)."""
    raw = claims.claims
    audience = raw.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if resource_id not in audiences:
        raise PermissionDenied(f'unable to validate token claims: audience {audience!r} is not "{resource_id}"')
    issuers = {
        f"https://sts.windows.net/{claims.tenant_id}/",
        f"https://login.microsoftonline.com/{claims.tenant_id}/v2.0",
    }
    if raw.get("iss") not in issuers:
        raise PermissionDenied(
            f'unable to validate token claims: issuer {raw.get("iss")!r} is not tenant "{claims.tenant_id}"\'s'
        )
    current = time.time() if now is None else now
    expires, not_before = raw.get("exp"), raw.get("nbf")
    if not isinstance(expires, int | float) or isinstance(expires, bool):
        raise Internal("unable to validate token claims: exp is missing or not a number")
    if current > expires + LEEWAY_SECONDS:
        raise Internal("unable to validate token claims: the token is expired")
    if not_before is not None:
        if not isinstance(not_before, int | float) or isinstance(not_before, bool):
            raise Internal("unable to validate token claims: nbf is not a number")
        if current < not_before - LEEWAY_SECONDS:
            raise Internal("unable to validate token claims: the token is not valid yet")
