"""What pyspire's AWS plugins share: boto3 sessions with SPIRE's credential choices, AWS failures as plugin errors.

A distribution of its own because pyspire's core does not depend on boto3, and one module
because the plugins need the same three things from it, no more.
"""

from __future__ import annotations

from dataclasses import dataclass

import boto3
import botocore.config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
)
from pyspire.plugin import Internal, PluginError, Unavailable

__all__ = ["CLIENT_CONFIG", "Credentials", "aws_error", "error_code", "session"]

CLIENT_CONFIG = botocore.config.Config(connect_timeout=5, read_timeout=20, retries={"max_attempts": 3})
"""Timeouts and retries of every client: a daemon never waits on AWS for minutes."""


@dataclass(frozen=True)
class Credentials:
    """How a plugin authenticates to AWS: SPIRE's keys of the AWS plugins."""

    region: str = ""
    access_key_id: str = ""
    secret_access_key: str = ""
    session_token: str = ""
    assume_role_arn: str = ""


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
    if isinstance(err, (EndpointConnectionError, ConnectTimeoutError)):
        return Unavailable(f"{action}: cannot reach AWS: {err}")
    return Unavailable(f"{action}: {err}")


def session(credentials: Credentials, purpose: str) -> boto3.Session:
    """A session with ``credentials``; as the assumed role (session name ``purpose``) when one is given."""
    region = credentials.region or None
    if credentials.access_key_id and credentials.secret_access_key:
        base = boto3.Session(
            aws_access_key_id=credentials.access_key_id,
            aws_secret_access_key=credentials.secret_access_key,
            aws_session_token=credentials.session_token or None,
            region_name=region,
        )
    else:
        base = boto3.Session(region_name=region)
    if not credentials.assume_role_arn:
        return base
    try:
        sts = base.client("sts", config=CLIENT_CONFIG)
        assumed = sts.assume_role(RoleArn=credentials.assume_role_arn, RoleSessionName=purpose)["Credentials"]
    except (BotoCoreError, ClientError) as err:
        raise aws_error(f"cannot assume {credentials.assume_role_arn}", err) from None
    return boto3.Session(
        aws_access_key_id=assumed["AccessKeyId"],
        aws_secret_access_key=assumed["SecretAccessKey"],
        aws_session_token=assumed["SessionToken"],
        region_name=region,
    )
