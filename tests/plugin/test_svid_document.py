"""SPIRE's stored-SVID document, shared by the cloud SVIDStores: Go's encoding of SPIRE's struct."""

from __future__ import annotations

import json

from pyspire.plugin.svid_document import secret_document
from pyspire.plugin.testing.loading import TEST_TRUST_DOMAIN
from pyspire.plugin.testing.pki import TestCa
from pyspire.spiffe import TrustDomain


def test_the_document_is_compact_in_spire_s_field_order_with_sorted_federated_bundles() -> None:
    ca = TestCa.create(TEST_TRUST_DOMAIN)
    svid, bundle = ca.svid("/db"), ca.bundle()
    zeta, alpha = TestCa.create(TrustDomain("zeta.test")).bundle(), TestCa.create(TrustDomain("alpha.test")).bundle()
    raw = secret_document(svid, bundle, {TrustDomain("zeta.test"): zeta, TrustDomain("alpha.test"): alpha})
    chain, key = svid.marshal()
    assert raw.startswith(b'{"spiffeID":"spiffe://example.org/db","x509SVID":"-----BEGIN CERTIFICATE-----\\n')
    document = json.loads(raw)
    assert list(document) == ["spiffeID", "x509SVID", "x509SVIDKey", "bundle", "federatedBundles"]
    assert document["x509SVID"] == chain.decode()
    assert document["x509SVIDKey"] == key.decode()
    assert document["bundle"] == bundle.marshal_x509_pem().decode()
    assert list(document["federatedBundles"]) == ["spiffe://alpha.test", "spiffe://zeta.test"]
    assert document["federatedBundles"]["spiffe://zeta.test"] == zeta.marshal_x509_pem().decode()


def test_no_federated_bundles_leaves_the_field_out() -> None:
    ca = TestCa.create(TEST_TRUST_DOMAIN)
    assert "federatedBundles" not in json.loads(secret_document(ca.svid("/db"), ca.bundle(), {}))
