"""Reading the upstream CA's PEM files from AWS Secrets Manager, with SPIRE's credential choices.

Credentials: ``access_key_id``/``secret_access_key`` (and ``secret_token``, which defaults to
``AWS_SESSION_TOKEN``) when both keys are set, otherwise boto3's default chain; with
``assume_role_arn`` those credentials assume that role and the role reads the secrets.
``AWS_ENDPOINT_URL`` (boto3's own setting) points the clients elsewhere, as in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3
import botocore.config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError
from pyspire.plugin import Internal, PluginError, Unavailable

__all__ = ["Credentials", "SecretReader"]

_CLIENT_CONFIG = botocore.config.Config(connect_timeout=5, read_timeout=20, retries={"max_attempts": 3})


def _aws_error(action: str, err: Exception) -> PluginError:
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


@dataclass(frozen=True)
class Credentials:
    """How the plugin authenticates to AWS."""

    region: str
    access_key_id: str
    secret_access_key: str
    session_token: str
    assume_role_arn: str


class SecretReader:
    """A Secrets Manager client for the configured identity."""

    def __init__(self, credentials: Credentials) -> None:
        region = credentials.region or None
        if credentials.access_key_id and credentials.secret_access_key:
            session = boto3.Session(
                aws_access_key_id=credentials.access_key_id,
                aws_secret_access_key=credentials.secret_access_key,
                aws_session_token=credentials.session_token or None,
                region_name=region,
            )
        else:
            session = boto3.Session(region_name=region)
        if credentials.assume_role_arn:
            session = self._assumed(session, credentials.assume_role_arn, region)
        try:
            self._client: Any = session.client("secretsmanager", config=_CLIENT_CONFIG)
        except BotoCoreError as err:
            raise Internal(f"failed to create AWS client: {err}") from None

    @staticmethod
    def _assumed(session: boto3.Session, role_arn: str, region: str | None) -> boto3.Session:
        try:
            sts = session.client("sts", config=_CLIENT_CONFIG)
            assumed = sts.assume_role(RoleArn=role_arn, RoleSessionName="pyspire-awssecret")["Credentials"]
        except (BotoCoreError, ClientError) as err:
            raise _aws_error(f"cannot assume {role_arn}", err) from None
        return boto3.Session(
            aws_access_key_id=assumed["AccessKeyId"],
            aws_secret_access_key=assumed["SecretAccessKey"],
            aws_session_token=assumed["SessionToken"],
            region_name=region,
        )

    def read(self, arn: str) -> str:
        """The ``SecretString`` of secret ``arn`` (a binary-only secret is refused)."""
        try:
            answer = self._client.get_secret_value(SecretId=arn)
        except (BotoCoreError, ClientError) as err:
            raise _aws_error(f"unable to read {arn}", err) from None
        secret = answer.get("SecretString")
        if secret is None:
            raise Internal(f"unable to read {arn}: the secret has no SecretString")
        return str(secret)
