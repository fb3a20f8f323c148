"""boto3 clients for KMS and STS, with the credentials the plugin is configured with.

Credentials are ``access_key_id``/``secret_access_key`` when set, otherwise boto3's default
chain (environment, shared files, instance role); see pyspire-aws-common.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError
from pyspire.plugin import Internal
from pyspire_aws_common import CLIENT_CONFIG, Credentials, session

__all__ = ["new_clients"]


def new_clients(region: str, access_key_id: str, secret_access_key: str) -> tuple[Any, Any]:
    """A KMS client and an STS client for ``region``."""
    credentials = Credentials(region=region, access_key_id=access_key_id, secret_access_key=secret_access_key)
    aws = session(credentials, "pyspire-aws-kms")
    try:
        return aws.client("kms", config=CLIENT_CONFIG), aws.client("sts", config=CLIENT_CONFIG)
    except BotoCoreError as err:
        raise Internal(f"cannot create the KMS client: {err}") from None
