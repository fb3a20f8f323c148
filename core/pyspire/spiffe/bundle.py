"""Trust bundles: the X.509 and JWT authorities of one trust domain.

A :class:`Bundle` is immutable; changing it returns a new one, so a bundle handed to
several tasks never changes under them. Three encodings are read and written:

- the SPIFFE bundle (a JWK Set with ``use`` = ``x509-svid`` / ``jwt-svid``, plus
  ``spiffe_sequence`` and ``spiffe_refresh_hint``), the federation format;
- an X.509 bundle: PEM, or concatenated DER as the Workload API carries it;
- a JWT bundle: a JWK Set of ``kid``-named keys, as FetchJWTBundles carries it.

Parsing follows the standard (SPIFFE Trust Domain and Bundle §4, X509-SVID §6, JWT-SVID
§6): entries with an unknown ``use`` or key type are ignored, an x509-svid entry uses the
first certificate of its ``x5c`` (and is ignored without one), a jwt-svid entry needs a
``kid``. Where the standard leaves a choice, pyspire takes the safe one: two JWT keys with
one ``kid`` are an error rather than "last one wins".
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from types import MappingProxyType
from typing import Any, Final, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from pyspire.spiffe.pem import PemError, der_certificate, der_certificates, pem_blocks
from pyspire.spiffe.spiffeid import TrustDomain

__all__ = ["Bundle", "BundleError", "BundleSource", "JwtAuthorityKey", "refresh_hint_from_seconds"]

MAX_BUNDLE_BYTES: Final = 8 * 1024 * 1024
"""Larger input is refused before parsing: a bundle with thousands of roots is an attack."""

JwtAuthorityKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
"""Key types a JWT authority may have (Ed25519 is kept for round trips; JWT-SVIDs cannot use it)."""

_CURVES: Final[dict[str, Callable[[], ec.EllipticCurve]]] = {
    "P-256": ec.SECP256R1,
    "P-384": ec.SECP384R1,
    "P-521": ec.SECP521R1,
}
_CURVE_NAMES: Final = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
# The longest refresh hint SPIRE's Go code can hold (a time.Duration: 2**63 - 1 ns); longer
# ones overflow there and, past timedelta's range, here.
_MAX_REFRESH_HINT_SECONDS: Final = (2**63 - 1) // 10**9


class BundleError(ValueError):
    """A bundle cannot be parsed or built; ``code`` names the rule broken."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class BundleSource(Protocol):
    """Anything that can give the bundle of a trust domain (a Bundle, a BundleSet...)."""

    def get_bundle_for_trust_domain(self, trust_domain: TrustDomain) -> Bundle | None:
        """The bundle of ``trust_domain``, or None when this source has none."""
        ...


def _b64url_decode(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise BundleError("invalid_key", f"{what} must be a base64url string")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError as err:
        raise BundleError("invalid_key", f"{what} is not base64url: {err}") from None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _reject_duplicate_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise BundleError("duplicate_member", f'JSON member "{key}" appears twice')
        result[key] = value
    return result


def load_json(data: bytes | str, what: str) -> Any:
    """Parse JSON strictly (duplicate members are an error), with a size limit."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError("too_large", f"{what} is {len(data)} bytes; the limit is {MAX_BUNDLE_BYTES}")
    try:
        return json.loads(data, object_pairs_hook=_reject_duplicate_members)
    except (ValueError, UnicodeDecodeError) as err:
        if isinstance(err, BundleError):
            raise
        raise BundleError("not_json", f"{what} is not valid JSON: {err}") from None


def jwk_to_public_key(jwk: Mapping[str, Any]) -> JwtAuthorityKey | None:
    """The public key of a JWK, or None for a key type SPIFFE does not know.

    Private members (``d``, ``p``...) are ignored: only the public key is ever used.
    """
    kty = jwk.get("kty")
    try:
        if kty == "EC":
            curve = _CURVES.get(str(jwk.get("crv")))
            if curve is None:
                raise BundleError("invalid_key", f'unsupported EC curve "{jwk.get("crv")}"')
            x = int.from_bytes(_b64url_decode(jwk.get("x"), "EC key x"), "big")
            y = int.from_bytes(_b64url_decode(jwk.get("y"), "EC key y"), "big")
            return ec.EllipticCurvePublicNumbers(x, y, curve()).public_key()
        if kty == "RSA":
            n = int.from_bytes(_b64url_decode(jwk.get("n"), "RSA key n"), "big")
            e = int.from_bytes(_b64url_decode(jwk.get("e"), "RSA key e"), "big")
            return rsa.RSAPublicNumbers(e, n).public_key()
        if kty == "OKP":
            if jwk.get("crv") != "Ed25519":
                raise BundleError("invalid_key", f'unsupported OKP curve "{jwk.get("crv")}"')
            return ed25519.Ed25519PublicKey.from_public_bytes(_b64url_decode(jwk.get("x"), "OKP key x"))
    except BundleError:
        raise
    except ValueError as err:
        raise BundleError("invalid_key", f"invalid {kty} key: {err}") from None
    return None


def public_key_to_jwk(key: PublicKeyTypes) -> dict[str, str]:
    """The JWK members of a public key (kty and its parameters); BundleError for a key JWKs cannot carry."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        curve = _CURVE_NAMES.get(key.curve.name)
        if curve is None:
            raise BundleError("invalid_key", f"cannot encode an EC key on {key.curve.name} as a JWK")
        size = (key.curve.key_size + 7) // 8
        numbers = key.public_numbers()
        return {
            "kty": "EC",
            "crv": curve,
            "x": _b64url(numbers.x.to_bytes(size, "big")),
            "y": _b64url(numbers.y.to_bytes(size, "big")),
        }
    if isinstance(key, rsa.RSAPublicKey):
        numbers_rsa = key.public_numbers()
        return {
            "kty": "RSA",
            "n": _b64url(numbers_rsa.n.to_bytes((numbers_rsa.n.bit_length() + 7) // 8, "big")),
            "e": _b64url(numbers_rsa.e.to_bytes((numbers_rsa.e.bit_length() + 7) // 8, "big")),
        }
    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw)}
    raise BundleError("invalid_key", f"cannot encode a {type(key).__name__} as a JWK")


def _public_der(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


class Bundle:
    """The authorities of one trust domain."""

    __slots__ = ("_jwt", "_refresh_hint", "_sequence", "_trust_domain", "_x509", "_x509_der")

    def __init__(
        self,
        trust_domain: TrustDomain,
        x509_authorities: Iterable[x509.Certificate] = (),
        jwt_authorities: Mapping[str, JwtAuthorityKey] | None = None,
        *,
        sequence_number: int | None = None,
        refresh_hint: timedelta | None = None,
    ) -> None:
        """Build a bundle; duplicate X.509 authorities are kept once."""
        unique: dict[bytes, x509.Certificate] = {}
        for certificate in x509_authorities:
            unique.setdefault(certificate.public_bytes(serialization.Encoding.DER), certificate)
        for key_id in jwt_authorities or {}:
            if not key_id:
                raise BundleError("missing_kid", "a JWT authority needs a key ID")
        if sequence_number is not None and not 0 <= sequence_number < 2**64:
            raise BundleError("invalid_sequence", f"sequence number {sequence_number} is out of range")
        self._trust_domain = trust_domain
        self._x509 = tuple(unique.values())
        self._x509_der = frozenset(unique)
        self._jwt: Mapping[str, JwtAuthorityKey] = MappingProxyType(dict(jwt_authorities or {}))
        self._sequence = sequence_number
        self._refresh_hint = refresh_hint

    # --- reading --------------------------------------------------------------------

    @property
    def trust_domain(self) -> TrustDomain:
        """The trust domain the authorities speak for."""
        return self._trust_domain

    @property
    def x509_authorities(self) -> tuple[x509.Certificate, ...]:
        """CA certificates that X509-SVIDs of this trust domain chain to."""
        return self._x509

    @property
    def jwt_authorities(self) -> Mapping[str, JwtAuthorityKey]:
        """Public keys, by key ID, that sign this trust domain's JWT-SVIDs."""
        return self._jwt

    @property
    def sequence_number(self) -> int | None:
        """``spiffe_sequence``: grows with every change of the bundle, when set."""
        return self._sequence

    @property
    def refresh_hint(self) -> timedelta | None:
        """``spiffe_refresh_hint``: how often a consumer should fetch it again."""
        return self._refresh_hint

    def has_x509_authority(self, certificate: x509.Certificate) -> bool:
        """Whether ``certificate`` is one of the X.509 authorities."""
        return certificate.public_bytes(serialization.Encoding.DER) in self._x509_der

    def get_bundle_for_trust_domain(self, trust_domain: TrustDomain) -> Bundle | None:
        """A bundle is a :class:`BundleSource` for its own trust domain."""
        return self if trust_domain == self._trust_domain else None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Bundle):
            return NotImplemented
        return (
            self._trust_domain == other._trust_domain
            and [c.public_bytes(serialization.Encoding.DER) for c in self._x509]
            == [c.public_bytes(serialization.Encoding.DER) for c in other._x509]
            and {k: _public_der(v) for k, v in self._jwt.items()} == {k: _public_der(v) for k, v in other._jwt.items()}
            and self._sequence == other._sequence
            and self._refresh_hint == other._refresh_hint
        )

    __hash__ = None  # type: ignore[assignment]  # equal bundles may differ in identity

    def __repr__(self) -> str:
        return (
            f"Bundle({self._trust_domain.name!r}, x509={len(self._x509)}, jwt={sorted(self._jwt)}, "
            f"sequence={self._sequence})"
        )

    # --- changing (each returns a new bundle) ----------------------------------------

    def _replace(self, **changes: Any) -> Bundle:
        values: dict[str, Any] = {
            "x509_authorities": self._x509,
            "jwt_authorities": self._jwt,
            "sequence_number": self._sequence,
            "refresh_hint": self._refresh_hint,
        }
        values.update(changes)
        return Bundle(self._trust_domain, **values)

    def with_x509_authorities(self, authorities: Iterable[x509.Certificate]) -> Bundle:
        """The same bundle with exactly these X.509 authorities."""
        return self._replace(x509_authorities=tuple(authorities))

    def with_x509_authority(self, authority: x509.Certificate) -> Bundle:
        """The bundle plus one X.509 authority (unchanged if present)."""
        return self._replace(x509_authorities=(*self._x509, authority))

    def without_x509_authority(self, authority: x509.Certificate) -> Bundle:
        """The bundle minus one X.509 authority."""
        der = authority.public_bytes(serialization.Encoding.DER)
        return self._replace(
            x509_authorities=tuple(c for c in self._x509 if c.public_bytes(serialization.Encoding.DER) != der)
        )

    def with_jwt_authority(self, key_id: str, key: JwtAuthorityKey) -> Bundle:
        """The bundle plus (or with a replaced) JWT authority ``key_id``."""
        return self._replace(jwt_authorities={**self._jwt, key_id: key})

    def without_jwt_authority(self, key_id: str) -> Bundle:
        """The bundle minus the JWT authority ``key_id``."""
        return self._replace(jwt_authorities={k: v for k, v in self._jwt.items() if k != key_id})

    def with_sequence_number(self, sequence_number: int | None) -> Bundle:
        """The bundle with another sequence number."""
        return self._replace(sequence_number=sequence_number)

    def with_refresh_hint(self, refresh_hint: timedelta | None) -> Bundle:
        """The bundle with another refresh hint."""
        return self._replace(refresh_hint=refresh_hint)

    # --- SPIFFE bundle ---------------------------------------------------------------

    @classmethod
    def parse(cls, trust_domain: TrustDomain, data: bytes | str) -> Bundle:
        """Parse a SPIFFE bundle (JWK Set) for ``trust_domain``."""
        document = load_json(data, "SPIFFE bundle")
        return cls.from_spiffe_document(trust_domain, document)

    @classmethod
    def from_spiffe_document(cls, trust_domain: TrustDomain, document: Any) -> Bundle:
        """Build a bundle from an already-decoded SPIFFE bundle JSON object."""
        if not isinstance(document, dict):
            raise BundleError("not_json", "a SPIFFE bundle must be a JSON object")
        keys = document.get("keys")
        if keys is None:
            raise BundleError("keys_missing", 'a SPIFFE bundle must have a "keys" member (it may be empty)')
        if not isinstance(keys, list):
            raise BundleError("keys_missing", '"keys" must be an array')
        x509_authorities: list[x509.Certificate] = []
        jwt_authorities: dict[str, JwtAuthorityKey] = {}
        for index, entry in enumerate(keys):
            if not isinstance(entry, dict):
                raise BundleError("invalid_entry", f"key entry {index} is not a JSON object")
            use = entry.get("use")
            if use == "x509-svid":
                x5c = entry.get("x5c")
                if not isinstance(x5c, list) or not x5c:
                    continue  # X509-SVID §6.2: an entry without a certificate is ignored
                try:
                    der = base64.b64decode(str(x5c[0]), validate=True)
                    x509_authorities.append(der_certificate(der))
                except ValueError as err:
                    raise BundleError("cert_parse_error", f"x509-svid entry {index}: bad certificate: {err}") from None
            elif use == "jwt-svid":
                key = jwk_to_public_key(entry)
                if key is None:
                    continue  # unknown kty: ignore the whole element (§4.2.1)
                key_id = entry.get("kid")
                if not isinstance(key_id, str) or not key_id:
                    raise BundleError("jwt_entry_missing_kid", f"jwt-svid entry {index} has no key ID (kid)")
                if key_id in jwt_authorities:
                    raise BundleError("duplicate_kid", f'two jwt-svid entries have the key ID "{key_id}"')
                jwt_authorities[key_id] = key
        sequence = document.get("spiffe_sequence")
        if sequence is not None and (not isinstance(sequence, int) or isinstance(sequence, bool)):
            raise BundleError("invalid_sequence", "spiffe_sequence must be an integer")
        hint = document.get("spiffe_refresh_hint")
        if hint is not None and (not isinstance(hint, int) or isinstance(hint, bool)):
            raise BundleError("invalid_refresh_hint", "spiffe_refresh_hint must be a non-negative integer")
        if hint is not None and hint > _MAX_REFRESH_HINT_SECONDS:
            raise BundleError(
                "invalid_refresh_hint",
                f"spiffe_refresh_hint {hint} s is more than {_MAX_REFRESH_HINT_SECONDS} s (about 292 years)",
            )
        return cls(
            trust_domain,
            x509_authorities,
            jwt_authorities,
            sequence_number=sequence,
            refresh_hint=refresh_hint_from_seconds(hint) if hint is not None else None,
        )

    def to_spiffe_document(self) -> dict[str, Any]:
        """The SPIFFE bundle as a JSON-ready object."""
        keys: list[dict[str, Any]] = []
        for certificate in self._x509:
            entry: dict[str, Any] = {
                "use": "x509-svid",
                **public_key_to_jwk(certificate.public_key()),
            }
            entry["x5c"] = [base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()]
            keys.append(entry)
        for key_id, key in sorted(self._jwt.items()):
            keys.append({"use": "jwt-svid", "kid": key_id, **public_key_to_jwk(key)})
        document: dict[str, Any] = {"keys": keys}
        if self._sequence is not None:
            document["spiffe_sequence"] = self._sequence
        if self._refresh_hint is not None:
            document["spiffe_refresh_hint"] = int(self._refresh_hint.total_seconds())
        return document

    def marshal(self) -> bytes:
        """The SPIFFE bundle as JSON bytes."""
        return json.dumps(self.to_spiffe_document(), indent=2).encode()

    # --- X.509 bundle ----------------------------------------------------------------

    @classmethod
    def parse_x509(cls, trust_domain: TrustDomain, data: bytes) -> Bundle:
        """Parse an X.509 bundle: PEM certificates, or concatenated DER.

        Empty input is an empty bundle (it means "trust nothing"); PEM holding only other
        block types (a key) is an empty bundle too, as in go-spiffe.
        """
        if len(data) > MAX_BUNDLE_BYTES:
            raise BundleError("too_large", f"X.509 bundle is {len(data)} bytes; the limit is {MAX_BUNDLE_BYTES}")
        if not data.strip():
            return cls(trust_domain)
        if data.lstrip().startswith(b"-----BEGIN"):
            try:
                certificates = [der_certificate(der) for _, der in pem_blocks(data, {"CERTIFICATE"})]
            except PemError as err:
                raise BundleError("cert_parse_error", f"cannot parse X.509 bundle: {err}") from None
            except ValueError as err:
                raise BundleError("cert_parse_error", f"cannot parse certificate: {err}") from None
            return cls(trust_domain, certificates)
        if data[:1] != b"\x30":
            raise BundleError("no_pem_blocks", "cannot parse X.509 bundle: no PEM blocks found (and not DER)")
        return cls.parse_x509_der(trust_domain, data)

    @classmethod
    def parse_x509_der(cls, trust_domain: TrustDomain, data: bytes) -> Bundle:
        """Parse concatenated DER certificates (the Workload API's bundle encoding)."""
        if len(data) > MAX_BUNDLE_BYTES:
            raise BundleError("too_large", f"X.509 bundle is {len(data)} bytes; the limit is {MAX_BUNDLE_BYTES}")
        try:
            return cls(trust_domain, der_certificates(data))
        except ValueError as err:
            raise BundleError("cert_parse_error", f"cannot parse certificate: {err}") from None

    def marshal_x509_pem(self) -> bytes:
        """The X.509 authorities as PEM."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self._x509)

    def marshal_x509_der(self) -> bytes:
        """The X.509 authorities as concatenated DER (the Workload API encoding)."""
        return b"".join(c.public_bytes(serialization.Encoding.DER) for c in self._x509)

    # --- JWT bundle ------------------------------------------------------------------

    @classmethod
    def parse_jwks(cls, trust_domain: TrustDomain, data: bytes | str) -> Bundle:
        """Parse a JWT bundle (a JWK Set of keys named by ``kid``).

        Every key counts as a JWT authority whatever its ``use``; a null or empty ``keys``
        is an empty bundle.
        """
        document = load_json(data, "JWT bundle")
        if not isinstance(document, dict):
            raise BundleError("not_json", "a JWT bundle must be a JSON object")
        keys = document.get("keys") or []
        if not isinstance(keys, list):
            raise BundleError("keys_missing", '"keys" must be an array')
        authorities: dict[str, JwtAuthorityKey] = {}
        for index, entry in enumerate(keys):
            if not isinstance(entry, dict):
                raise BundleError("invalid_entry", f"key {index} is not a JSON object")
            key = jwk_to_public_key(entry)
            if key is None:
                raise BundleError("invalid_key", f'key {index} has an unsupported key type "{entry.get("kty")}"')
            key_id = entry.get("kid")
            if not isinstance(key_id, str) or not key_id:
                raise BundleError("missing_kid", f"key {index} of the JWKS has no key ID (kid)")
            if key_id in authorities:
                raise BundleError("duplicate_kid", f'two keys have the key ID "{key_id}"')
            authorities[key_id] = key
        return cls(trust_domain, jwt_authorities=authorities)

    def marshal_jwks(self) -> bytes:
        """The JWT authorities as a JWK Set (the Workload API encoding)."""
        keys = [{"kid": key_id, **public_key_to_jwk(key)} for key_id, key in sorted(self._jwt.items())]
        return json.dumps({"keys": keys}).encode()


def refresh_hint_from_seconds(seconds: int) -> timedelta:
    """A refresh hint of ``seconds``; BundleError when negative or beyond what a duration can hold.

    Hints arrive from bundle documents and API messages (int64): one of 10**15 seconds would
    otherwise overflow the conversion instead of being refused.
    """
    if not 0 <= seconds <= _MAX_REFRESH_HINT_SECONDS:
        raise BundleError("invalid_refresh_hint", f"refresh hint {seconds} s is negative or out of range")
    return timedelta(seconds=seconds)
