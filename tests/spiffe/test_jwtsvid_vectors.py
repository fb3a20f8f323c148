"""Every case of the shared JWT-SVID vectors (jwtsvid/manifest.json)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pyspire.spiffe import Bundle, BundleSet, JwtSvid, JwtSvidError, TrustDomain

VECTORS = Path(__file__).resolve().parent / "vectors"
ROOT = VECTORS / "jwtsvid"
MANIFEST: dict[str, Any] = json.loads((ROOT / "manifest.json").read_text())
NOW = datetime(2025, 6, 1, tzinfo=UTC)

# Implementation-defined cases and pyspire's decision (the code it must fail with).
POLICY = {
    "iat-in-future": "iat_in_future",  # as go-jose: a token from the future is refused
    "typ-lowercase-jwt": "typ_invalid",  # the standard names "JWT" and "JOSE" exactly
    "kid-missing": "kid_missing",  # keys are selected by kid only
    "extra-header-jku": "header_not_allowed",  # the standard forbids other headers
}


def _bundles(case_name: str) -> BundleSet:
    context = MANIFEST["validation_context"]
    bundles = BundleSet(
        Bundle.parse_jwks(TrustDomain.parse(td), (ROOT / file).read_bytes()) for td, file in context["bundles"].items()
    )
    if case_name == "alg-eddsa":
        # The same domain, with the Ed25519 key present: rejection must be due to alg.
        path = VECTORS / "bundle" / "spiffebundle" / "generated" / "spiffe-bundle-domain1-with-ed25519.json"
        bundles.put(Bundle.parse(TrustDomain("domain1.test"), path.read_bytes()))
    return bundles


@pytest.mark.parametrize("case", MANIFEST["cases"], ids=lambda c: c["name"])
def test_validate(case: dict[str, Any]) -> None:
    audience = [MANIFEST["validation_context"]["audience"]]
    bundles = _bundles(case["name"])
    expected_failure = (
        POLICY.get(case["name"]) if case["valid"] is None else (None if case["valid"] else case["reason"])
    )
    if expected_failure is None:
        svid = JwtSvid.parse_and_validate(case["token"], bundles, audience, now=NOW)
        assert str(svid.spiffe_id) == case["expected_spiffe_id"]
        assert audience[0] in svid.audience
        for claim, value in case.get("expected_claims_subset", {}).items():
            assert svid.claims[claim] == value
        return
    with pytest.raises(JwtSvidError) as raised:
        JwtSvid.parse_and_validate(case["token"], bundles, audience, now=NOW)
    assert raised.value.code == expected_failure


def test_empty_expected_audience_is_an_error() -> None:
    """go-spiffe #407: an empty expectation must not disable the audience check."""
    valid = next(c for c in MANIFEST["cases"] if c["name"] == "valid-es256")
    with pytest.raises(JwtSvidError) as raised:
        JwtSvid.parse_and_validate(valid["token"], _bundles("valid-es256"), [], now=NOW)
    assert raised.value.code == "audience_required"
