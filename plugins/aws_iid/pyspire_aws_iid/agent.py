"""The agent side of ``aws_iid``: the instance identity document and its signatures from IMDS.

IMDSv2 first: a session token from ``PUT /latest/api/token``, sent with every read. When the
token request is refused the way an IMDSv1-only service refuses it (403, 404 or 405), the
reads are retried without a token, as the AWS SDKs do, unless ``ec2_metadata_v1_disabled``.
A metadata service that cannot be reached is :class:`~pyspire.plugin.Unavailable`, so the
agent retries instead of giving up at boot when the network comes up late.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyspire.plugin import hookimpl, parse_plugin_data
from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import Internal, PluginConfigError, Unavailable

from pyspire_aws_iid.document import MAX_DOCUMENT_BYTES, MAX_SIGNATURE_BYTES, encode_payload

__all__ = ["AgentAwsIid"]

DEFAULT_ENDPOINT = "http://169.254.169.254"
TOKEN_TTL_SECONDS = 21600
TIMEOUT_SECONDS = 5.0
_V1_STATUSES = (403, 404, 405)


@dataclass(frozen=True)
class AgentAwsIidConfig:
    """``plugin_data`` of the agent's ``NodeAttestor "aws_iid"``."""

    ec2_metadata_endpoint: str = DEFAULT_ENDPOINT
    ec2_metadata_v1_disabled: bool = False


class AgentAwsIid:
    """Reads this instance's signed identity from the instance metadata service."""

    def __init__(self) -> None:
        self._base = DEFAULT_ENDPOINT
        self._v1_allowed = True

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        config = parse_plugin_data(AgentAwsIidConfig, plugin_data)
        base = config.ec2_metadata_endpoint.rstrip("/")
        if urllib.parse.urlsplit(base).scheme not in ("http", "https"):
            raise PluginConfigError("ec2_metadata_endpoint", f'"{base}" is not an http:// or https:// URL')
        # SPIRE's documentation shows the endpoint with "/latest"; the paths add it again.
        self._base = base.removesuffix("/latest")
        self._v1_allowed = not config.ec2_metadata_v1_disabled

    def _request(self, method: str, path: str, headers: Mapping[str, str], limit: int) -> bytes:
        # The scheme was checked at configure: http or https only.
        request = urllib.request.Request(f"{self._base}{path}", method=method, headers=dict(headers))  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
                body: bytes = response.read(limit + 1)
        except urllib.error.HTTPError as err:
            if err.code >= 500:
                raise Unavailable(f"{self._base}{path}: HTTP {err.code}") from None
            raise _HttpRefused(err.code) from None
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise Unavailable(f"the instance metadata service at {self._base} is unreachable: {reason}") from None
        if len(body) > limit:
            raise Internal(f"{path} is larger than {limit} bytes")
        return body

    def _token(self) -> str | None:
        try:
            return self._request(
                "PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_SECONDS)}, 4096
            ).decode("ascii", errors="replace")
        except _HttpRefused as err:
            if err.status in _V1_STATUSES and self._v1_allowed:
                return None
            raise Internal(
                f"the metadata service refused an IMDSv2 session token (HTTP {err.status})"
                + ("" if self._v1_allowed else " and ec2_metadata_v1_disabled forbids IMDSv1")
            ) from None

    def _read(self, name: str, token: str | None, limit: int) -> str:
        headers = {"X-aws-ec2-metadata-token": token} if token is not None else {}
        try:
            body = self._request("GET", f"/latest/dynamic/instance-identity/{name}", headers, limit)
        except _HttpRefused as err:
            raise Internal(f"reading instance-identity/{name} failed with HTTP {err.status}") from None
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            raise Internal(f"instance-identity/{name} is not text") from None

    @hookimpl
    def attestation_payload(self) -> bytes:
        token = self._token()
        document = self._read("document", token, MAX_DOCUMENT_BYTES)
        rsa2048 = self._read("rsa2048", token, MAX_SIGNATURE_BYTES)
        try:
            signature = self._read("signature", token, MAX_SIGNATURE_BYTES)
        except Internal:
            signature = ""  # the legacy RSA-1024 signature is only sent for older servers
        return encode_payload(document, signature, rsa2048)


class _HttpRefused(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status
