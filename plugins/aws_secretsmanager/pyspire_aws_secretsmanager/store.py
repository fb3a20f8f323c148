"""``SVIDStore "aws_secretsmanager"``: SPIRE's plugin, call for call.

Putting an SVID: ``DescribeSecret``; a secret that does not exist is created (its name is
needed) with the tag ``spire-svid=true`` and the value; one that exists must carry that tag,
or the plugin refuses to write it (a secret the agent did not create is never overwritten);
one scheduled for deletion is restored first; then ``PutSecretValue``. Deleting: a secret
that does not exist is not an error, one without the tag is refused, and otherwise
``DeleteSecret`` schedules the deletion with a 7-day recovery window, as SPIRE does, so an
entry deleted by mistake can be brought back with ``RestoreSecret``.

The plugin never reads a secret's value: it needs no read permission beyond
``DescribeSecret``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.config
from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, EndpointConnectionError
from pyspire.plugin import CoreConfig, PluginLogger, hookimpl, parse_plugin_data
from pyspire.plugin.errors import Internal, InvalidArgument, PluginConfigError, PluginError, Unavailable
from pyspire.plugin.svid_document import secret_document
from pyspire.spiffe import Bundle, TrustDomain, X509Svid

from pyspire_aws_secretsmanager.secret import SecretLocation

__all__ = ["AwsSecretsManagerConfig", "AwsSecretsManagerStore"]

SPIRE_TAG = {"Key": "spire-svid", "Value": "true"}
"""The tag that marks a secret as one SPIRE (or pyspire) created for an SVID."""
RECOVERY_WINDOW_DAYS = 7
_CLIENT_CONFIG = botocore.config.Config(connect_timeout=5, read_timeout=20, retries={"max_attempts": 2})
"""Few retries: the agent calls again on its next round (5 s) anyway."""
_RENEW_BEFORE_EXPIRY = 300.0
_SESSION_NAME = "pyspire-svidstore"


@dataclass(frozen=True)
class AwsSecretsManagerConfig:
    """``plugin_data`` of ``SVIDStore "aws_secretsmanager"``: SPIRE's keys and ``assume_role_arn``."""

    region: str = ""
    access_key_id: str = ""
    secret_access_key: str = ""
    assume_role_arn: str = ""
    """pyspire's addition: a role assumed (through STS) for every call, for secrets in another account."""

    def check(self) -> None:
        """Refuse what cannot work, naming the key."""
        if not self.region:
            raise PluginConfigError("region", "region is required")
        if bool(self.access_key_id) != bool(self.secret_access_key):
            raise PluginConfigError(
                "access_key_id" if not self.access_key_id else "secret_access_key",
                "access_key_id and secret_access_key go together",
            )
        if self.assume_role_arn and not self.assume_role_arn.startswith("arn:"):
            raise PluginConfigError("assume_role_arn", f'"{self.assume_role_arn}" is not a role ARN')


def _aws_error(action: str, err: Exception) -> PluginError:
    """An AWS failure as the plugin reports it: unreachable (the agent retries) or refused."""
    if isinstance(err, (EndpointConnectionError, ConnectTimeoutError)):
        return Unavailable(f"{action}: {err}")
    if isinstance(err, ClientError):
        detail = err.response.get("Error", {})
        return Internal(f"{action}: {detail.get('Code', 'error')}: {detail.get('Message', err)}")
    return Internal(f"{action}: {err}")


def _error_code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


class _Client:
    """The Secrets Manager client, as the role of ``assume_role_arn`` when configured.

    Assumed-role credentials are asked for on first use (configuring makes no call) and
    renewed five minutes before STS says they expire.
    """

    def __init__(self, config: AwsSecretsManagerConfig) -> None:
        self._base = boto3.Session(
            aws_access_key_id=config.access_key_id or None,
            aws_secret_access_key=config.secret_access_key or None,
            region_name=config.region,
        )
        self._role_arn = config.assume_role_arn
        self._client: Any = None
        self._renew_at = float("inf")
        self._lock = threading.Lock()
        if not self._role_arn:
            self._client = self._base.client("secretsmanager", config=_CLIENT_CONFIG)

    def get(self) -> Any:
        with self._lock:
            if self._client is None or time.time() >= self._renew_at:
                self._client, self._renew_at = self._assumed()
            return self._client

    def _assumed(self) -> tuple[Any, float]:
        try:
            sts = self._base.client("sts", config=_CLIENT_CONFIG)
            credentials = sts.assume_role(RoleArn=self._role_arn, RoleSessionName=_SESSION_NAME)["Credentials"]
        except (BotoCoreError, ClientError) as err:
            raise _aws_error(f"cannot assume role {self._role_arn}", err) from None
        session = boto3.Session(
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
            region_name=self._base.region_name,
        )
        client = session.client("secretsmanager", config=_CLIENT_CONFIG)
        return client, credentials["Expiration"].timestamp() - _RENEW_BEFORE_EXPIRY


class AwsSecretsManagerStore:
    """Keeps X509-SVIDs in AWS Secrets Manager secrets tagged ``spire-svid=true``."""

    def __init__(self) -> None:
        self._client: _Client | None = None
        self._logger: PluginLogger | None = None

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig, logger: PluginLogger) -> None:
        config = parse_plugin_data(AwsSecretsManagerConfig, plugin_data)
        config.check()
        try:
            self._client = _Client(config)
        except (BotoCoreError, ClientError, ValueError) as err:
            raise PluginConfigError("region", f"cannot create the Secrets Manager client: {err}") from None
        self._logger = logger

    @hookimpl
    def put_x509_svid(
        self, svid: X509Svid, bundle: Bundle, federated_bundles: Mapping[TrustDomain, Bundle], metadata: Sequence[str]
    ) -> None:
        location = SecretLocation.parse(metadata)
        value = secret_document(svid, bundle, federated_bundles)
        description = self._describe(location)
        if description is None:
            self._create(location, value)
            return
        _check_tag(description)
        arn = description["ARN"]
        if description.get("DeletedDate") is not None:
            self._call(f"failed to restore secret {location.secret_id!r}", lambda sm: sm.restore_secret(SecretId=arn))
            self._log("Secret was scheduled for deletion and has been restored", arn=arn)
        put = self._call("failed to put secret value", lambda sm: sm.put_secret_value(SecretId=arn, SecretBinary=value))
        self._log("Secret value updated", arn=arn, version_id=put.get("VersionId", ""))

    @hookimpl
    def delete_x509_svid(self, metadata: Sequence[str]) -> None:
        location = SecretLocation.parse(metadata)
        description = self._describe(location)
        if description is None:
            assert self._logger is not None
            self._logger.warning("Secret not found", extra={"secret_id": location.secret_id})
            return
        _check_tag(description)
        arn = description["ARN"]
        if description.get("DeletedDate") is not None:
            # Already scheduled (by an earlier round): AWS refuses a second DeleteSecret.
            return
        deleted = self._call(
            f"failed to delete secret {location.secret_id!r}",
            lambda sm: sm.delete_secret(SecretId=arn, RecoveryWindowInDays=RECOVERY_WINDOW_DAYS),
        )
        self._log("Secret deleted", arn=arn, deletion_date=str(deleted.get("DeletionDate", "")))

    def _describe(self, location: SecretLocation) -> Mapping[str, Any] | None:
        """The secret's description, or None when there is no such secret."""
        try:
            return self._call_raw(lambda sm: sm.describe_secret(SecretId=location.secret_id))
        except ClientError as err:
            if _error_code(err) == "ResourceNotFoundException":
                return None
            raise _aws_error("failed to describe secret", err) from None
        except BotoCoreError as err:
            raise _aws_error("failed to describe secret", err) from None

    def _create(self, location: SecretLocation, value: bytes) -> None:
        if not location.name:
            raise InvalidArgument("failed to create secret: name selector is required")
        request: dict[str, Any] = {"Name": location.name, "Tags": [SPIRE_TAG], "SecretBinary": value}
        if location.kms_key_id:
            request["KmsKeyId"] = location.kms_key_id
        created = self._call("failed to create secret", lambda sm: sm.create_secret(**request))
        self._log("Secret created", arn=created.get("ARN", ""), name=location.name)

    def _call_raw(self, call: Callable[[Any], Mapping[str, Any]]) -> Mapping[str, Any]:
        assert self._client is not None
        return call(self._client.get())

    def _call(self, action: str, call: Callable[[Any], Mapping[str, Any]]) -> Mapping[str, Any]:
        try:
            return self._call_raw(call)
        except (BotoCoreError, ClientError) as err:
            raise _aws_error(action, err) from None

    def _log(self, message: str, **fields: str) -> None:
        assert self._logger is not None
        self._logger.debug(message, extra=fields)


def _check_tag(description: Mapping[str, Any]) -> None:
    """Refuse a secret the agent did not create: it may hold anyone's data."""
    for tag in description.get("Tags") or []:
        if tag.get("Key") == SPIRE_TAG["Key"] and tag.get("Value") == SPIRE_TAG["Value"]:
            return
    raise InvalidArgument("secret does not contain the 'spire-svid' tag")
