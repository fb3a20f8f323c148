"""Reading Secrets Manager back through boto3, as a workload holding the secret would."""

from __future__ import annotations

import json
from typing import Any

import boto3

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
