"""SPIRE's JSON document for a stored X509-SVID, shared by the SVIDStore plugins.

SPIRE's cloud SVIDStores (``aws_secretsmanager``, ``gcp_secretmanager``) put the same document
in the secret they keep, so a workload reading it does not care which cloud it is on. It is
written as Go's encoder writes SPIRE's struct: compact, fields in this order, empty ones left
out::

    {"spiffeID": "spiffe://example.org/db",
     "x509SVID": "<chain PEM, leaf first>", "x509SVIDKey": "<PKCS #8 key PEM>",
     "bundle": "<trust domain's X.509 authorities PEM>",
     "federatedBundles": {"spiffe://partner.org": "<PEM>"}}

It lives in core so that every plugin writes byte-for-byte the same document: a workload
library reading it (or a test comparing it with SPIRE's) sees one format.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from pyspire.spiffe import Bundle, TrustDomain, X509Svid

__all__ = ["secret_document"]


def secret_document(svid: X509Svid, bundle: Bundle, federated_bundles: Mapping[TrustDomain, Bundle]) -> bytes:
    """The stored document for ``svid`` with the trust domain's and the federated bundles.

    Federated bundles are keyed by their trust domain's SPIFFE ID (``spiffe://partner.org``)
    and sorted, so the same SVID and bundles always give the same bytes: a store that compares
    values sees no change where there is none.
    """
    chain, key = svid.marshal()
    federated = {
        f"spiffe://{trust_domain.name}": other.marshal_x509_pem().decode()
        for trust_domain, other in sorted(federated_bundles.items(), key=lambda item: item[0].name)
    }
    fields: dict[str, object] = {
        "spiffeID": str(svid.spiffe_id),
        "x509SVID": chain.decode(),
        "x509SVIDKey": key.decode(),
        "bundle": bundle.marshal_x509_pem().decode(),
        "federatedBundles": federated,
    }
    return json.dumps({name: value for name, value in fields.items() if value}, separators=(",", ":")).encode()
