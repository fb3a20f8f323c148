"""``BundlePublisher "aws_s3"``: ``PutObject`` of the bundle, in SPIRE's formats, when it changes.

As SPIRE's plugin does, the bundle last written is remembered and an equal one is not written
again, so the server's 30-second republishing costs no request while nothing changes; a
write that failed is not remembered, so the next call tries again. With ``endpoint`` (an
S3-compatible store such as MinIO) requests use path-style addressing, as SPIRE's do.

Credentials are ``access_key_id``/``secret_access_key`` when both are set, and otherwise
boto3's default chain (environment, shared config, instance profile), as SPIRE falls back to
the AWS SDK's.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import boto3
import botocore.config
from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, EndpointConnectionError
from pyspire.plugin import CoreConfig, PluginLogger, hookimpl, parse_plugin_data
from pyspire.plugin.bundle_format import BundleFormat
from pyspire.plugin.errors import Internal, PluginConfigError, Unavailable
from pyspire.spiffe import Bundle

__all__ = ["AwsS3Config", "AwsS3Publisher"]

_CLIENT_CONFIG = botocore.config.Config(connect_timeout=5, read_timeout=20, retries={"max_attempts": 2})
"""Few retries: the server calls again at the next change and every 30 seconds anyway."""


@dataclass(frozen=True)
class AwsS3Config:
    """``plugin_data`` of ``BundlePublisher "aws_s3"`` (SPIRE's keys)."""

    region: str
    bucket: str
    object_key: str
    format: str
    endpoint: str = ""
    access_key_id: str = ""
    secret_access_key: str = ""

    def checked(self) -> BundleFormat:
        """Refuse what cannot work, naming the key; the bundle format."""
        for key, what in (("region", "region"), ("bucket", "bucket name"), ("object_key", "object key")):
            if not getattr(self, key):
                raise PluginConfigError(key, f"configuration is missing the {what}")
        if bool(self.access_key_id) != bool(self.secret_access_key):
            raise PluginConfigError(
                "access_key_id" if not self.access_key_id else "secret_access_key",
                "access_key_id and secret_access_key go together",
            )
        if self.endpoint:
            parts = urlsplit(self.endpoint)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise PluginConfigError("endpoint", f'"{self.endpoint}" is not an http:// or https:// URL')
        try:
            return BundleFormat.parse(self.format)
        except ValueError as err:
            raise PluginConfigError("format", str(err)) from None


class AwsS3Publisher:
    """Writes the server's bundle to ``s3://<bucket>/<object_key>``."""

    def __init__(self) -> None:
        self._client: Any = None
        self._config: AwsS3Config | None = None
        self._format = BundleFormat.SPIFFE
        self._logger: PluginLogger | None = None
        self._published: Bundle | None = None
        self._lock = threading.Lock()

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig, logger: PluginLogger) -> None:
        config = parse_plugin_data(AwsS3Config, plugin_data)
        self._format = config.checked()
        session = boto3.Session(
            aws_access_key_id=config.access_key_id or None,
            aws_secret_access_key=config.secret_access_key or None,
            region_name=config.region,
        )
        client_config = _CLIENT_CONFIG
        if config.endpoint:
            client_config = client_config.merge(botocore.config.Config(s3={"addressing_style": "path"}))
        try:
            self._client = session.client("s3", endpoint_url=config.endpoint or None, config=client_config)
        except (BotoCoreError, ClientError, ValueError) as err:
            raise PluginConfigError("region", f"cannot create the S3 client: {err}") from None
        self._config = config
        self._logger = logger

    @hookimpl
    def publish_bundle(self, bundle: Bundle) -> None:
        config = self._config
        assert config is not None
        assert self._logger is not None
        with self._lock:
            if bundle == self._published:
                return
            where = f"s3://{config.bucket}/{config.object_key}"
            try:
                self._client.put_object(Bucket=config.bucket, Key=config.object_key, Body=self._format.render(bundle))
            except (EndpointConnectionError, ConnectTimeoutError) as err:
                raise Unavailable(f"failed to put object {where}: {err}") from None
            except ClientError as err:
                detail = err.response.get("Error", {})
                raise Internal(
                    f"failed to put object {where}: {detail.get('Code', 'error')}: {detail.get('Message', err)}"
                ) from None
            except BotoCoreError as err:
                raise Internal(f"failed to put object {where}: {err}") from None
            self._published = bundle
        self._logger.debug("Bundle published", extra={"bucket": config.bucket, "object_key": config.object_key})
