"""JWT-SVIDs: parsing and validation (JWT-SVID standard).

A token is accepted only when every rule holds; each failure is a :class:`JwtSvidError`
whose ``code`` names the rule:

- compact JWS with exactly three parts; the header holds only ``alg``, ``kid`` and ``typ``
  (no ``crit``, no key-fetching ``jku``/``x5u``: the standard forbids other headers);
- ``alg`` is one of RS/ES/PS 256/384/512 — never ``none``, HMAC or EdDSA — and fits the key
  (``ES256`` needs a P-256 key, ``RS*``/``PS*`` an RSA key);
- ``kid`` names a key in the JWT bundle of the trust domain of ``sub`` (never another
  trust domain's bundle);
- ``sub`` is a strictly valid SPIFFE ID; ``exp`` is present and a number; ``nbf`` and
  ``iat`` are numbers not in the future; 60 seconds of clock skew are tolerated (go-jose's
  default, which SPIRE uses);
- ``aud`` is present and non-empty and contains one of the expected audiences, and the
  caller must expect at least one (an empty expectation would accept any audience).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import get_default_algorithms

from pyspire.spiffe.bundle import BundleSource
from pyspire.spiffe.spiffeid import SpiffeId, SpiffeIdError

__all__ = ["ALLOWED_ALGORITHMS", "LEEWAY_SECONDS", "JwtSvid", "JwtSvidError"]

ALLOWED_ALGORITHMS: Final = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"})
LEEWAY_SECONDS: Final = 60
MAX_TOKEN_LENGTH: Final = 64 * 1024
_EARLIEST: Final = -62_135_596_800  # 0001-01-01T00:00:00Z
_LATEST: Final = 253_402_300_799  # 9999-12-31T23:59:59Z
_ALLOWED_HEADERS: Final = frozenset({"alg", "kid", "typ"})
_EC_CURVE_FOR_ALG: Final = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
_ALGORITHMS: Final = {
    name: algorithm for name, algorithm in get_default_algorithms().items() if name in ALLOWED_ALGORITHMS
}


class JwtSvidError(ValueError):
    """A JWT-SVID is malformed or invalid; ``code`` names the rule it breaks."""

    def __init__(self, code: str, message: str, key_id: str = "", trust_domain: str = "") -> None:
        super().__init__(f"jwtsvid: {message}")
        self.code = code
        self.reason = message
        """The message without the library's ``jwtsvid:`` prefix (what SPIRE's agent answers)."""
        self.key_id = key_id
        self.trust_domain = trust_domain
        """For ``key_not_found``: the key ID no authority of the trust domain has."""


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _decode_segment(segment: str, what: str) -> dict[str, Any]:
    try:
        # NaN and Infinity are Python's extensions, not JSON: a token carrying them is malformed.
        value = json.loads(_b64decode(segment), parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise JwtSvidError("malformed", f"unable to parse JWT token: the {what} is not base64url JSON") from None
    if not isinstance(value, dict):
        raise JwtSvidError("malformed", f"unable to parse JWT token: the {what} is not a JSON object")
    return value


def _is_number(value: object) -> bool:
    """Whether ``value`` is a NumericDate a datetime can hold (years 1 to 9999)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and _EARLIEST <= value <= _LATEST


class _Parsed:
    """A token split and decoded, nothing checked yet beyond its shape."""

    __slots__ = ("claims", "header", "signature", "signing_input")

    def __init__(self, token: str) -> None:
        if not isinstance(token, str) or not token:
            raise JwtSvidError("malformed", "unable to parse JWT token: the token is empty")
        if len(token) > MAX_TOKEN_LENGTH:
            raise JwtSvidError("malformed", f"unable to parse JWT token: longer than {MAX_TOKEN_LENGTH} characters")
        parts = token.split(".")
        if len(parts) != 3 or not parts[0] or not parts[1]:
            raise JwtSvidError(
                "malformed",
                "unable to parse JWT token: not a compact JWS (header.payload.signature)",
            )
        self.header = _decode_segment(parts[0], "header")
        self.claims = _decode_segment(parts[1], "payload")
        self.signing_input = f"{parts[0]}.{parts[1]}".encode("ascii", "replace")
        try:
            self.signature = _b64decode(parts[2])
        except ValueError:
            raise JwtSvidError("bad_signature", "the signature is not base64url") from None


def _check_header(header: Mapping[str, Any]) -> tuple[str, str]:
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
        raise JwtSvidError(
            "alg_not_allowed",
            f"unable to parse JWT token: algorithm {alg!r} is not allowed for JWT-SVIDs",
        )
    if "crit" in header:
        raise JwtSvidError(
            "header_invalid",
            "token header has a critical extension (crit), which JWT-SVIDs do not use",
        )
    extra = sorted(set(header) - _ALLOWED_HEADERS)
    if extra:
        raise JwtSvidError(
            "header_not_allowed",
            f"token header has members other than alg, kid and typ: {', '.join(extra)}",
        )
    if "typ" in header and header["typ"] not in ("JWT", "JOSE"):
        raise JwtSvidError("typ_invalid", "token header type not equal to either JWT or JOSE")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise JwtSvidError("kid_missing", "token header missing key id")
    return str(alg), kid


def _subject(claims: Mapping[str, Any]) -> SpiffeId:
    sub = claims.get("sub")
    if sub is None:
        raise JwtSvidError("sub_missing", "token missing subject claim")
    if not isinstance(sub, str):
        raise JwtSvidError("sub_invalid", "token has an invalid subject claim: not a string")
    try:
        return SpiffeId.parse(sub)
    except SpiffeIdError as err:
        raise JwtSvidError("sub_invalid", f"token has an invalid subject claim: {err}") from None


def _audience(claims: Mapping[str, Any]) -> tuple[str, ...]:
    aud = claims.get("aud")
    values = (aud,) if isinstance(aud, str) else tuple(aud) if isinstance(aud, list) else ()
    if not values or not all(isinstance(value, str) and value for value in values):
        raise JwtSvidError("audience_missing", "token has no audience (aud claim)")
    return values


def _check_times(claims: Mapping[str, Any], now: float) -> float:
    exp = claims.get("exp")
    if exp is None:
        raise JwtSvidError("exp_missing", "token missing exp claim")
    if not _is_number(exp):
        raise JwtSvidError("exp_invalid", "token exp claim is not a number")
    if now > exp + LEEWAY_SECONDS:
        raise JwtSvidError("expired", "token has expired")
    for name, code, message in (
        ("nbf", "not_yet_valid", "token is not valid yet"),
        ("iat", "iat_in_future", "token was issued in the future"),
    ):
        value = claims.get(name)
        if value is None:
            continue
        if not _is_number(value):
            raise JwtSvidError(f"{name}_invalid", f"token {name} claim is not a number")
        if value > now + LEEWAY_SECONDS:
            raise JwtSvidError(code, message)
    return float(exp)


def _check_key_fits(alg: str, key: object) -> None:
    if alg.startswith("ES"):
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != _EC_CURVE_FOR_ALG[alg]:
            raise JwtSvidError("alg_key_mismatch", f"algorithm {alg} does not fit the key of the token's key ID")
    elif not isinstance(key, rsa.RSAPublicKey):
        raise JwtSvidError("alg_key_mismatch", f"algorithm {alg} needs an RSA key")


class JwtSvid:
    """A validated (or, from :meth:`parse_insecure`, merely parsed) JWT-SVID."""

    __slots__ = ("_audience", "_claims", "_expiry", "_hint", "_spiffe_id", "_token")

    def __init__(  # noqa: PLR0917 - private constructor; the classmethods are the API
        self,
        token: str,
        spiffe_id: SpiffeId,
        audience: Sequence[str],
        expiry: datetime,
        claims: Mapping[str, Any],
        hint: str = "",
    ) -> None:
        """Hold parts that are already checked; use the classmethods for input."""
        self._token = token
        self._spiffe_id = spiffe_id
        self._audience = tuple(audience)
        self._expiry = expiry
        self._claims: Mapping[str, Any] = MappingProxyType(dict(claims))
        self._hint = hint

    @classmethod
    def parse_and_validate(
        cls,
        token: str,
        bundle_source: BundleSource,
        audience: Sequence[str],
        *,
        now: datetime | float | None = None,
        hint: str = "",
    ) -> JwtSvid:
        """Validate ``token`` against the bundles of ``bundle_source`` for ``audience``.

        ``audience`` must not be empty; the token must name at least one of its values.
        """
        expected = _expected_audience(audience)
        parsed = _Parsed(token)
        alg, kid = _check_header(parsed.header)
        spiffe_id = _subject(parsed.claims)
        bundle = bundle_source.get_bundle_for_trust_domain(spiffe_id.trust_domain)
        if bundle is None:
            raise JwtSvidError("bundle_not_found", f'no bundle found for trust domain "{spiffe_id.trust_domain}"')
        key = bundle.jwt_authorities.get(kid)
        if key is None:
            raise JwtSvidError(
                "key_not_found",
                f'no JWT authority "{kid}" found for trust domain "{spiffe_id.trust_domain}"',
                key_id=kid,
                trust_domain=str(spiffe_id.trust_domain),
            )
        _check_key_fits(alg, key)
        try:
            valid = _ALGORITHMS[alg].verify(parsed.signing_input, key, parsed.signature)
        except (ValueError, TypeError, jwt.exceptions.PyJWTError):
            valid = False
        if not valid:
            raise JwtSvidError("bad_signature", "unable to get claims from token: the signature does not verify")
        moment = _timestamp(now)
        exp = _check_times(parsed.claims, moment)
        token_audience = _audience(parsed.claims)
        if not expected.intersection(token_audience):
            raise JwtSvidError(
                "audience_mismatch",
                f"expected audience in {json.dumps(sorted(expected))} (audience={json.dumps(list(token_audience))})",
            )
        return cls(token, spiffe_id, token_audience, datetime.fromtimestamp(exp, UTC), parsed.claims, hint)

    @classmethod
    def parse_insecure(cls, token: str, audience: Sequence[str] | None = None, *, hint: str = "") -> JwtSvid:
        """Parse ``token`` WITHOUT checking its signature or times, for inspection.

        The header, ``sub``, ``exp`` and ``aud`` must still be well formed; when
        ``audience`` is given the token must name one of its values. Never use the result to
        make a trust decision.
        """
        parsed = _Parsed(token)
        _check_header(parsed.header)
        spiffe_id = _subject(parsed.claims)
        exp = parsed.claims.get("exp")
        if exp is None:
            raise JwtSvidError("exp_missing", "token missing exp claim")
        if not _is_number(exp):
            raise JwtSvidError("exp_invalid", "token exp claim is not a number")
        token_audience = _audience(parsed.claims)
        if audience is not None and not _expected_audience(audience).intersection(token_audience):
            raise JwtSvidError("audience_mismatch", f"expected audience in {json.dumps(list(audience))}")
        return cls(
            token,
            spiffe_id,
            token_audience,
            datetime.fromtimestamp(float(exp), UTC),
            parsed.claims,
            hint,
        )

    @property
    def token(self) -> str:
        """The compact JWS, as presented to peers."""
        return self._token

    @property
    def spiffe_id(self) -> SpiffeId:
        """The ``sub`` claim."""
        return self._spiffe_id

    @property
    def audience(self) -> tuple[str, ...]:
        """The ``aud`` claim's values."""
        return self._audience

    @property
    def expiry(self) -> datetime:
        """The ``exp`` claim."""
        return self._expiry

    @property
    def claims(self) -> Mapping[str, Any]:
        """All claims of the token."""
        return self._claims

    @property
    def hint(self) -> str:
        """The operator's hint telling several SVIDs of one workload apart."""
        return self._hint

    def marshal(self) -> str:
        """The token string."""
        return self._token

    def __repr__(self) -> str:
        return f"JwtSvid({str(self._spiffe_id)!r}, audience={list(self._audience)}, expiry={self._expiry.isoformat()})"


def _expected_audience(audience: Sequence[str]) -> frozenset[str]:
    if isinstance(audience, str):
        audience = [audience]
    expected = frozenset(value for value in audience if value)
    if not expected:
        raise JwtSvidError("audience_required", "an expected audience is required to validate a JWT-SVID")
    return expected


def _timestamp(now: datetime | float | None) -> float:
    if now is None:
        return time.time()
    if isinstance(now, datetime):
        return now.timestamp()
    return float(now)
