"""Every case of the shared bundle vectors (bundle/manifest.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pyspire.spiffe import Bundle, BundleError, BundleSet, TrustDomain

ROOT = Path(__file__).resolve().parent / "vectors" / "bundle"
CASES: dict[str, Any] = json.loads((ROOT / "manifest.json").read_text())["cases"]
TD = TrustDomain("example.org")

# Vector reason -> the code pyspire reports for it, where the names differ.
REASON_CODES = {"duplicate_trust_domain": "duplicate_member"}

# Implementation-defined cases and pyspire's decision.
POLICY: dict[str, dict[str, Any]] = {
    "x509bundle/go-spiffe/empty.pem": {
        "valid": True,
        "authorities": 0,
    },  # empty means trust nothing
    "x509bundle/go-spiffe/key.pem": {
        "valid": True,
        "authorities": 0,
    },  # other PEM blocks are skipped
    # The standard: use the first certificate of x5c; go-spiffe's rejection is the divergence.
    "spiffebundle/go-spiffe/spiffebundle_multiple_x509.json": {
        "valid": True,
        "x509_authorities": 1,
    },
    "spiffebundle/generated/x509-entry-with-kid.json": {"valid": True, "x509_authorities": 1},
    # Two keys under one kid: refusing is safer than "last one wins".
    "spiffebundle/generated/jwt-duplicate-kid.json": {"valid": False, "reason": "duplicate_kid"},
}


def _input(case: dict[str, Any]) -> bytes:
    return (ROOT / case["file"]).read_bytes() if "file" in case else case["bytes"].encode()


def _case_id(case: dict[str, Any]) -> str:
    return case.get("file") or repr(case["bytes"])


def _resolve(case: dict[str, Any]) -> dict[str, Any]:
    return {**case, **POLICY[case["file"]]} if case["valid"] is None else case


def _check_failure(parse: Any, case: dict[str, Any]) -> None:
    with pytest.raises(BundleError) as raised:
        parse()
    assert raised.value.code == REASON_CODES.get(case["reason"], case["reason"])


@pytest.mark.parametrize("case", CASES["x509_bundle"], ids=_case_id)
def test_x509_bundle(case: dict[str, Any]) -> None:
    case = _resolve(case)
    data = _input(case)
    parse = Bundle.parse_x509_der if case["format"] == "DER" else Bundle.parse_x509
    if not case["valid"]:
        _check_failure(lambda: parse(TD, data), case)
        return
    bundle = parse(TD, data)
    assert len(bundle.x509_authorities) == case["authorities"]
    assert Bundle.parse_x509(TD, bundle.marshal_x509_pem()) == bundle
    assert Bundle.parse_x509(TD, bundle.marshal_x509_der()) == bundle
    for subject in case.get("subjects", []):
        assert subject in [c.subject.rfc4514_string() for c in bundle.x509_authorities]


@pytest.mark.parametrize("case", CASES["jwt_bundle"], ids=_case_id)
def test_jwt_bundle(case: dict[str, Any]) -> None:
    case = _resolve(case)
    data = _input(case)
    if not case["valid"]:
        _check_failure(lambda: Bundle.parse_jwks(TD, data), case)
        return
    bundle = Bundle.parse_jwks(TD, data)
    assert len(bundle.jwt_authorities) == case["authorities"]
    if "kids" in case:
        assert sorted(bundle.jwt_authorities) == sorted(case["kids"])
    assert Bundle.parse_jwks(TD, bundle.marshal_jwks()) == bundle


@pytest.mark.parametrize("case", CASES["spiffe_bundle"], ids=_case_id)
def test_spiffe_bundle(case: dict[str, Any]) -> None:
    case = _resolve(case)
    td = TrustDomain.parse(case.get("trust_domain", "example.org"))
    data = _input(case)
    if not case["valid"]:
        _check_failure(lambda: Bundle.parse(td, data), case)
        return
    bundle = Bundle.parse(td, data)
    if "x509_authorities" in case:
        assert len(bundle.x509_authorities) == case["x509_authorities"]
    if "jwt_authorities" in case:
        assert len(bundle.jwt_authorities) == case["jwt_authorities"]
    if "sequence_number" in case:
        assert bundle.sequence_number == case["sequence_number"]
    if "refresh_hint_seconds" in case:
        assert bundle.refresh_hint is not None
        assert bundle.refresh_hint.total_seconds() == case["refresh_hint_seconds"]
    assert Bundle.parse(td, bundle.marshal()) == bundle


@pytest.mark.parametrize("case", CASES["bundle_map"], ids=_case_id)
def test_bundle_map(case: dict[str, Any]) -> None:
    data = _input(case)
    if not case["valid"]:
        _check_failure(lambda: BundleSet.parse_map(data), case)
        return
    bundles = BundleSet.parse_map(data)
    assert [td.name for td in bundles.trust_domains()] == sorted(case["trust_domains"])
    again = BundleSet.parse_map(bundles.marshal_map())
    assert [b.trust_domain for b in again] == [b.trust_domain for b in bundles]
    for bundle in bundles:
        assert again.get(bundle.trust_domain) == bundle


def test_a_refresh_hint_beyond_any_duration_is_refused_by_name() -> None:
    # 86400000000000 s is past what a timedelta (or Go's time.Duration) holds: it crashed the
    # parser with OverflowError instead of a BundleError.
    document = json.dumps({"keys": [], "spiffe_refresh_hint": 86_400_000_000_000})
    with pytest.raises(BundleError, match="spiffe_refresh_hint") as raised:
        Bundle.parse(TD, document)
    assert raised.value.code == "invalid_refresh_hint"


@pytest.mark.parametrize("hint", [-1, (2**63 - 1) // 10**9 + 1, 86_400_000_000_000, 2**63])
def test_a_refresh_hint_no_duration_holds_is_a_bundle_error(hint: int) -> None:
    document = json.dumps({"keys": [], "spiffe_refresh_hint": hint}).encode()
    with pytest.raises(BundleError) as raised:
        Bundle.parse(TD, document)
    assert raised.value.code == "invalid_refresh_hint"


def test_the_largest_refresh_hint_a_duration_holds_is_kept() -> None:
    largest = (2**63 - 1) // 10**9  # Go's time.Duration, in whole seconds
    document = json.dumps({"keys": [], "spiffe_refresh_hint": largest}).encode()
    hint = Bundle.parse(TD, document).refresh_hint
    assert hint is not None
    assert int(hint.total_seconds()) == largest
