"""Reading the upstream CA's PEM files from AWS Secrets Manager, with SPIRE's credential choices.

Credentials: ``access_key_id``/``secret_access_key`` (and ``secret_token``, which defaults to
``AWS_SESSION_TOKEN``) when both keys are set, otherwise boto3's default chain; with
``assume_role_arn`` those credentials assume that role and the role reads the secrets (see
pyspire-aws-common). ``AWS_ENDPOINT_URL`` (boto3's own setting) points the clients elsewhere,
as in the tests.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pyspire.plugin import Internal
from pyspire_aws_common import CLIENT_CONFIG, Credentials, aws_error, session

__all__ = ["Credentials", "SecretReader"]


class SecretReader:
    """A Secrets Manager client for the configured identity."""

    def __init__(self, credentials: Credentials) -> None:
        aws = session(credentials, "pyspire-awssecret")
        try:
            self._client: Any = aws.client("secretsmanager", config=CLIENT_CONFIG)
        except BotoCoreError as err:
            raise Internal(f"failed to create AWS client: {err}") from None

    def read(self, arn: str) -> str:
        """The ``SecretString`` of secret ``arn`` (a binary-only secret is refused)."""
        try:
            answer = self._client.get_secret_value(SecretId=arn)
        except (BotoCoreError, ClientError) as err:
            raise aws_error(f"unable to read {arn}", err) from None
        secret = answer.get("SecretString")
        if secret is None:
            raise Internal(f"unable to read {arn}: the secret has no SecretString")
        return str(secret)
