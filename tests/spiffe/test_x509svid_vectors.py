"""Every parse and verify case of the shared X509-SVID vectors (x509svid/manifest.json)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from pyspire.spiffe import Bundle, BundleSet, TrustDomain, X509Svid, X509SvidError, verify_x509_svid
from pyspire.spiffe.pem import der_certificates

ROOT = Path(__file__).resolve().parent / "vectors" / "x509svid"
MANIFEST: dict[str, Any] = json.loads((ROOT / "manifest.json").read_text())

# Implementation-defined parse cases and pyspire's decision for each.
PARSE_POLICY = {
    # keyUsage criticality is an issuance rule; like go-spiffe, a verifier accepts either.
    "generated/leaf-key-usage-not-critical": True,
    # RFC 5280: a missing basicConstraints means cA=false, which is what a leaf needs.
    "generated/leaf-no-basic-constraints": True,
}


@pytest.mark.parametrize("case", MANIFEST["parse_cases"], ids=lambda c: c["name"])
def test_parse(case: dict[str, Any]) -> None:
    certificates = (ROOT / case["certs"]).read_bytes()
    key = (ROOT / case["key"]).read_bytes()
    valid = case["valid"] if case["valid"] is not None else PARSE_POLICY[case["name"]]
    if not valid:
        with pytest.raises(X509SvidError) as raised:
            X509Svid.parse(certificates, key)
        if case["name"] != "generated/chain-wrong-order":  # "any rejection is correct"
            assert raised.value.code == case["reason"]
        return
    svid = X509Svid.parse(certificates, key)
    if "expected_spiffe_id" in case:
        assert str(svid.spiffe_id) == case["expected_spiffe_id"]
    if "expected_chain_length" in case:
        assert len(svid.chain) == case["expected_chain_length"]
    # Round trips through both encodings give the same SVID.
    pem_chain, pem_key = svid.marshal()
    again = X509Svid.parse(pem_chain, pem_key)
    assert again.spiffe_id == svid.spiffe_id
    assert again.chain == svid.chain
    der_chain, der_key = svid.marshal_raw()
    assert X509Svid.parse_raw(der_chain, der_key).chain == svid.chain


def _read_chain(path: Path) -> list[Any]:
    data = path.read_bytes()
    if data.lstrip().startswith(b"-----"):
        return x509.load_pem_x509_certificates(data)
    return der_certificates(data)


@pytest.mark.parametrize("case", MANIFEST["verify_cases"], ids=lambda c: c["name"])
def test_verify(case: dict[str, Any]) -> None:
    chain = _read_chain(ROOT / case["chain"])
    bundles = BundleSet(
        Bundle.parse_x509(TrustDomain.parse(td), (ROOT / file).read_bytes()) for td, file in case["bundles"].items()
    )
    now = datetime.fromisoformat(case["time"].replace("Z", "+00:00"))
    if case["valid"]:
        spiffe_id, paths = verify_x509_svid(chain, bundles, now=now)
        assert str(spiffe_id) == case["expected_spiffe_id"]
        (path,) = paths
        assert path[0] == chain[0]
        assert bundles.get(spiffe_id.trust_domain).has_x509_authority(path[-1])  # type: ignore[union-attr]
        return
    with pytest.raises(X509SvidError) as raised:
        verify_x509_svid(chain, bundles, now=now)
    if case["name"] != "chain-wrong-order":  # "any rejection is correct"
        assert raised.value.code == case["reason"]
