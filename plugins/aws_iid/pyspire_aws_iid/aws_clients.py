"""boto3 sessions for the accounts nodes attest from, and the organization's account list.

Credentials come from ``access_key_id``/``secret_access_key`` when set and otherwise from
boto3's default chain (environment, shared config, instance profile). With ``assume_role``
every call about an account is made as ``arn:<partition>:iam::<account>:role/<assume_role>``,
so one server can inspect instances of many accounts. Sessions are kept per (account, region)
because assumed-role credentials are worth reusing until they are about to expire.

``AWS_ENDPOINT_URL`` (boto3's own setting) points every client at another endpoint, which is
how the tests reach moto's server.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import botocore.config
from botocore.exceptions import BotoCoreError, ClientError
from pyspire.plugin.errors import Internal, PluginConfigError

__all__ = ["AccountAllowList", "AwsSessions", "OrganizationConfig", "aws_error"]

_CLIENT_CONFIG = botocore.config.Config(connect_timeout=5, read_timeout=20, retries={"max_attempts": 3})
MIN_ACCOUNT_LIST_TTL = timedelta(minutes=1)
_RENEW_BEFORE_EXPIRY = 300.0


def aws_error(action: str, err: Exception) -> Internal:
    """An AWS failure as the plugin reports it: the server cannot decide, so it refuses."""
    if isinstance(err, ClientError):
        detail = err.response.get("Error", {})
        return Internal(f"{action}: {detail.get('Code', 'error')}: {detail.get('Message', err)}")
    return Internal(f"{action}: {err}")


class AwsSessions:
    """boto3 sessions per (account, region), assuming ``assume_role`` when configured.

    Assumed-role sessions hold the temporary credentials STS returned and are replaced five
    minutes before those expire.
    """

    def __init__(self, access_key_id: str, secret_access_key: str, assume_role: str, partition: str) -> None:
        self._keys = (access_key_id, secret_access_key) if access_key_id else None
        self._assume_role = assume_role
        self.partition = partition
        self._sessions: dict[tuple[str, str, str], tuple[boto3.Session, float]] = {}
        self._lock = threading.Lock()

    def _base(self, region: str) -> boto3.Session:
        if self._keys:
            return boto3.Session(
                aws_access_key_id=self._keys[0], aws_secret_access_key=self._keys[1], region_name=region
            )
        return boto3.Session(region_name=region)

    def client(self, service: str, region: str, account_id: str, role: str = "") -> Any:
        """A client for ``service`` acting on ``account_id`` in ``region``."""
        role = role or self._assume_role
        key = (account_id if role else "", region, role)
        with self._lock:
            session, renew_at = self._sessions.get(key, (None, 0.0))
            if session is None or time.time() >= renew_at:
                session, renew_at = self._base(region), float("inf")
                if role:
                    session, renew_at = self._assumed(
                        session, f"arn:{self.partition}:iam::{account_id}:role/{role}", region
                    )
                self._sessions[key] = (session, renew_at)
        try:
            return session.client(service, config=_CLIENT_CONFIG)
        except (BotoCoreError, ClientError) as err:
            raise aws_error(f"cannot create the {service} client", err) from None

    @staticmethod
    def _assumed(base: boto3.Session, role_arn: str, region: str) -> tuple[boto3.Session, float]:
        try:
            sts = base.client("sts", config=_CLIENT_CONFIG)
            credentials = sts.assume_role(RoleArn=role_arn, RoleSessionName="pyspire-aws-iid")["Credentials"]
        except (BotoCoreError, ClientError) as err:
            raise aws_error(f"cannot assume {role_arn}", err) from None
        session = boto3.Session(
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
            region_name=region,
        )
        return session, credentials["Expiration"].timestamp() - _RENEW_BEFORE_EXPIRY


@dataclass(frozen=True)
class OrganizationConfig:
    """``verify_organization { }``: nodes must come from an account of the organization."""

    management_account_id: str = ""
    management_account_region: str = "us-west-2"
    assume_org_role: str = ""
    org_account_map_ttl: timedelta = timedelta(minutes=3)
    account_list_file: str = ""

    def check(self) -> None:
        """Refuse a block that cannot work, naming the key."""
        if self.account_list_file:
            if self.management_account_id or self.assume_org_role:
                raise PluginConfigError(
                    "verify_organization",
                    "account_list_file excludes management_account_id and assume_org_role",
                )
        elif not (self.management_account_id and self.assume_org_role):
            raise PluginConfigError(
                "verify_organization",
                "management_account_id and assume_org_role are required (or account_list_file)",
            )
        if self.org_account_map_ttl < MIN_ACCOUNT_LIST_TTL:
            raise PluginConfigError("verify_organization", "org_account_map_ttl must be at least 1m")


def read_account_list(path: str) -> frozenset[str]:
    """The account IDs of a JSON array file; anything else is an error (fail closed)."""
    try:
        accounts = json.loads(Path(path).read_text())
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err.strerror}") from None
    except ValueError:
        raise ValueError(f"{path} is not JSON") from None
    if not isinstance(accounts, list) or not all(isinstance(a, str) and len(a) == 12 and a.isdigit() for a in accounts):
        raise ValueError(f"{path} must be a JSON array of 12-digit account IDs")
    return frozenset(accounts)


class AccountAllowList:
    """The organization's ACTIVE accounts, from a file or the Organizations API, cached for a TTL.

    Refreshed lazily, on the first attestation after the TTL; a list that cannot be read makes
    attestation fail (Internal) rather than pass.
    """

    def __init__(self, config: OrganizationConfig, sessions: AwsSessions) -> None:
        config.check()
        self._config = config
        self._sessions = sessions
        self._accounts: frozenset[str] = frozenset()
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()
        if config.account_list_file:
            try:
                self._accounts = read_account_list(config.account_list_file)
            except ValueError as err:
                raise PluginConfigError("verify_organization", f"account_list_file: {err}") from None
            self._loaded_at = time.monotonic()

    def __contains__(self, account_id: str) -> bool:
        with self._lock:
            if time.monotonic() - self._loaded_at >= self._config.org_account_map_ttl.total_seconds():
                self._accounts = self._load()
                self._loaded_at = time.monotonic()
            return account_id in self._accounts

    def _load(self) -> frozenset[str]:
        config = self._config
        if config.account_list_file:
            try:
                return read_account_list(config.account_list_file)
            except ValueError as err:
                raise Internal(f"verify_organization: {err}") from None
        client = self._sessions.client(
            "organizations", config.management_account_region, config.management_account_id, config.assume_org_role
        )
        accounts: set[str] = set()
        try:
            for page in client.get_paginator("list_accounts").paginate():
                accounts.update(a["Id"] for a in page["Accounts"] if a.get("Status") == "ACTIVE")
        except (BotoCoreError, ClientError) as err:
            raise aws_error("cannot list the organization's accounts", err) from None
        return frozenset(accounts)
