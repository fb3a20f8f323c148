"""The instance identity token: Google's certificates, verification, and the claims used.

The token is a Google-signed RS256 JWT (``format=full``) whose ``google.compute_engine``
claim names the project, zone and instance. It is verified with google-auth against the
certificates Google publishes at ``https://www.googleapis.com/oauth2/v1/certs`` (a JSON
object of key ID to PEM certificate). Those certificates are cached for as long as the
response's ``Cache-Control: max-age`` allows, and fetched again early when a token names a key
ID the cache does not hold (Google rotates keys), at most once per ``REFETCH_INTERVAL``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import google.auth.crypt
import google.auth.exceptions
import google.auth.jwt
import google.auth.transport.requests
import requests
from pyspire.plugin.errors import Internal, InvalidArgument, PermissionDenied

from pyspire_gcp_iit.protocol import DEFAULT_AUDIENCE, MAX_TOKEN_BYTES

__all__ = ["DEFAULT_AUDIENCE", "MAX_TOKEN_BYTES", "GoogleCertificates", "IdentityToken", "verify_token"]

PLUGIN_NAME = "gcp_iit"
GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
ISSUERS = ("https://accounts.google.com", "accounts.google.com")
CLOCK_SKEW_SECONDS = 10
DEFAULT_CACHE_SECONDS = 3600
REFETCH_INTERVAL = 30.0
_MAX_AGE = re.compile(r"max-age=(\d+)")


@dataclass(frozen=True)
class IdentityToken:
    """The verified claims an agent ID and selectors are made of."""

    project_id: str
    project_number: int
    zone: str
    instance_id: str
    instance_name: str
    instance_creation_timestamp: int
    email: str

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> IdentityToken:
        engine = claims.get("google", {}).get("compute_engine") if isinstance(claims.get("google"), dict) else None
        if not isinstance(engine, dict):
            raise PermissionDenied("the token has no google.compute_engine claim (request it with format=full)")

        def text(name: str) -> str:
            value = engine.get(name)
            if not isinstance(value, str) or not value:
                raise PermissionDenied(f"the token's compute_engine claim has no {name}")
            return value

        def number(name: str) -> int:
            value = engine.get(name, 0)
            if not isinstance(value, int):
                raise PermissionDenied(f"the token's compute_engine {name} is not a number")
            return value

        email = claims.get("email", "")
        return cls(
            project_id=text("project_id"),
            project_number=number("project_number"),
            zone=text("zone"),
            instance_id=text("instance_id"),
            instance_name=text("instance_name"),
            instance_creation_timestamp=number("instance_creation_timestamp"),
            email=email if isinstance(email, str) else "",
        )


class GoogleCertificates:
    """Google's token-signing certificates, fetched through google-auth's HTTP transport."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._certificates: dict[str, str] = {}
        self._expires_at = 0.0
        self._fetched_at = float("-inf")
        self._lock = threading.Lock()
        self._request = google.auth.transport.requests.Request(requests.Session())

    def current(self, key_id: str | None) -> Mapping[str, str]:
        """The certificates, fetched again when stale or missing ``key_id``."""
        with self._lock:
            now = time.monotonic()
            stale = now >= self._expires_at
            unknown = key_id is not None and key_id not in self._certificates
            if stale or (unknown and now - self._fetched_at >= REFETCH_INTERVAL):
                self._fetch(now)
            return dict(self._certificates)

    def _fetch(self, now: float) -> None:
        try:
            response = self._request(self.url, method="GET")
        except google.auth.exceptions.TransportError as err:
            raise Internal(f"cannot fetch Google's certificates from {self.url}: {err}") from None
        if response.status != 200:
            raise Internal(f"Google's certificates at {self.url} answered HTTP {response.status}")
        try:
            certificates = json.loads(response.data)
        except ValueError:
            raise Internal(f"Google's certificates at {self.url} are not JSON") from None
        if not isinstance(certificates, dict) or not all(isinstance(v, str) for v in certificates.values()):
            raise Internal(f"{self.url} did not return a key ID to certificate map")
        match = _MAX_AGE.search(response.headers.get("cache-control", ""))
        self._certificates = certificates
        self._fetched_at = now
        self._expires_at = now + (int(match.group(1)) if match else DEFAULT_CACHE_SECONDS)


def verify_token(token: bytes, certificates: GoogleCertificates, audience: str) -> IdentityToken:
    """Verify the token's signature, issuer, audience and lifetime; its identity claims."""
    if len(token) > MAX_TOKEN_BYTES:
        raise InvalidArgument(f"the identity token is larger than {MAX_TOKEN_BYTES} bytes")
    try:
        text = token.decode("ascii")
        encoded_header = text.split(".", 1)[0]
        header = json.loads(base64.urlsafe_b64decode(encoded_header + "=" * (-len(encoded_header) % 4)))
    except (UnicodeDecodeError, ValueError, binascii.Error):
        raise InvalidArgument("the attestation payload is not a JWT") from None
    if not isinstance(header, dict) or header.get("alg") != "RS256":
        raise InvalidArgument("the identity token must be signed with RS256")
    key_id = header.get("kid")
    if not isinstance(key_id, str) or not key_id:
        raise InvalidArgument("the identity token names no signing key (kid)")
    known = certificates.current(key_id)
    if key_id not in known:
        raise InvalidArgument(f"the identity token is signed by key {key_id!r}, which Google does not publish")
    if not _signed_by(text, known[key_id]):
        # As SPIRE: a signature that does not verify is bad input; a genuine token whose
        # claims do not qualify (audience, lifetime, project) is a refusal.
        raise InvalidArgument(f"the identity token's signature does not verify with Google's key {key_id!r}")
    try:
        claims = google.auth.jwt.decode(
            text,
            certs=known,
            audience=audience,
            clock_skew_in_seconds=CLOCK_SKEW_SECONDS,
        )
    except (google.auth.exceptions.GoogleAuthError, ValueError) as err:
        raise PermissionDenied(f"the identity token is not valid: {err}") from None
    except TypeError:
        # google-auth does arithmetic on iat/exp before checking their type ({"iat": null}).
        raise PermissionDenied("the identity token is not valid: its iat or exp is not a number") from None
    if claims.get("iss") not in ISSUERS:
        raise PermissionDenied(f"the identity token was not issued by Google (iss {claims.get('iss')!r})")
    return IdentityToken.from_claims(claims)


def _signed_by(token: str, certificate: str) -> bool:
    signed, _, encoded_signature = token.rpartition(".")
    try:
        signature = base64.urlsafe_b64decode(encoded_signature + "=" * (-len(encoded_signature) % 4))
        verifier = google.auth.crypt.RSAVerifier.from_string(certificate)
    except (ValueError, binascii.Error):
        return False
    return bool(verifier.verify(signed.encode("ascii"), signature))
