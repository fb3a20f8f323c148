"""boto3 clients for KMS and STS, and AWS failures as the plugin errors the daemon expects.

Credentials are ``access_key_id``/``secret_access_key`` when set, otherwise boto3's default
chain (environment, shared files, instance role). ``AWS_ENDPOINT_URL`` (boto3's own setting)
points the clients elsewhere, which is how the tests reach moto's server.
"""

from __future__ import annotations

from typing import Any

import boto3
import botocore.config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError
from pyspire.plugin import Internal, PluginError, Unavailable

__all__ = ["aws_error", "error_code", "new_clients"]

_CLIENT_CONFIG = botocore.config.Config(connect_timeout=5, read_timeout=20, retries={"max_attempts": 3})


def new_clients(region: str, access_key_id: str, secret_access_key: str) -> tuple[Any, Any]:
    """A KMS client and an STS client for ``region``."""
    if access_key_id:
        session = boto3.Session(
            aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key, region_name=region
        )
    else:
        session = boto3.Session(region_name=region)
    try:
        return session.client("kms", config=_CLIENT_CONFIG), session.client("sts", config=_CLIENT_CONFIG)
    except BotoCoreError as err:
        raise Internal(f"cannot create the KMS client: {err}") from None


def error_code(err: Exception) -> str:
    """The AWS error code of a failed call ("" when the call never got an answer)."""
    if isinstance(err, ClientError):
        return str(err.response.get("Error", {}).get("Code", ""))
    return ""


def aws_error(action: str, err: Exception) -> PluginError:
    """A failed AWS call as the plugin reports it: Unavailable when AWS was not reached."""
    if isinstance(err, ClientError):
        detail = err.response.get("Error", {})
        return Internal(f"{action}: {detail.get('Code', 'error')}: {detail.get('Message', err)}")
    if isinstance(err, NoCredentialsError):
        return Internal(
            f"{action}: no AWS credentials (set access_key_id and secret_access_key, or give the server a role)"
        )
    if isinstance(err, EndpointConnectionError):
        return Unavailable(f"{action}: cannot reach AWS: {err}")
    return Unavailable(f"{action}: {err}")
