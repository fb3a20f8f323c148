"""Reading Secrets Manager back through boto3, as a workload holding the secret would."""

from __future__ import annotations

import json
from typing import Any

import boto3
from pyspire.spiffe import Bundle, SpiffeId, TrustDomain, X509Svid

REGION = "us-east-1"


def secrets_manager() -> Any:
    return boto3.client("secretsmanager", region_name=REGION)


def described(secret_id: str) -> dict[str, Any] | None:
    """DescribeSecret's answer, or None when there is no such secret."""
    client = secrets_manager()
    try:
        return client.describe_secret(SecretId=secret_id)  # type: ignore[no-any-return]
    except client.exceptions.ResourceNotFoundException:
        return None


def stored_document(secret_id: str) -> dict[str, Any] | None:
    """The JSON document a live secret holds (None when absent or scheduled for deletion)."""
    description = described(secret_id)
    if description is None or description.get("DeletedDate") is not None:
        return None
    value = secrets_manager().get_secret_value(SecretId=secret_id)
    assert "SecretString" not in value, "SPIRE stores the document as SecretBinary"
    return json.loads(value["SecretBinary"])  # type: ignore[no-any-return]


def svid_of(document: dict[str, Any]) -> X509Svid:
    return X509Svid.parse(document["x509SVID"].encode(), document["x509SVIDKey"].encode())


def bundles_of(document: dict[str, Any]) -> dict[TrustDomain, Bundle]:
    """The trust domain's bundle (named by the SVID's SPIFFE ID) and the federated ones."""
    own = SpiffeId.parse(document["spiffeID"]).trust_domain
    bundles = {own: Bundle.parse_x509(own, document["bundle"].encode())}
    for name, pem in document.get("federatedBundles", {}).items():
        trust_domain = TrustDomain.parse(name.removeprefix("spiffe://"))
        bundles[trust_domain] = Bundle.parse_x509(trust_domain, pem.encode())
    return bundles
