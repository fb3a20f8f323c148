"""``BundlePublisher "gcp_cloudstorage"``: the bundle uploaded to a Cloud Storage object when it changes.

As SPIRE's plugin does, the bundle last written is remembered and an equal one is not written
again, so the server's 30-second republishing costs no request while nothing changes; a
write that failed is not remembered, so the next call tries again. ``refresh_hint``, when
set, replaces the bundle's own refresh hint in what is written (the ``spiffe`` format is the
one that carries it).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import requests
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions
from google.cloud import storage
from pyspire.plugin import CoreConfig, PluginLogger, hookimpl, parse_plugin_data
from pyspire.plugin.bundle_format import BundleFormat
from pyspire.plugin.errors import Internal, PluginConfigError, Unavailable
from pyspire.spiffe import Bundle

from pyspire_gcp_cloudstorage.storage import api_reason, storage_client

__all__ = ["GcpCloudStorageConfig", "GcpCloudStoragePublisher"]

_TIMEOUT_SECONDS = 20.0
_RETRY = storage.retry.DEFAULT_RETRY.with_timeout(5.0)
"""Short: the server calls again at the next change and every 30 seconds anyway."""


@dataclass(frozen=True)
class GcpCloudStorageConfig:
    """``plugin_data`` of ``BundlePublisher "gcp_cloudstorage"`` (SPIRE's keys)."""

    bucket_name: str = ""
    object_name: str = ""
    format: str = ""
    service_account_file: str = ""
    refresh_hint: timedelta = timedelta(0)

    def checked(self) -> BundleFormat:
        """Refuse what cannot work, naming the key; the bundle format."""
        for key, what in (("bucket_name", "bucket name"), ("object_name", "object name"), ("format", "bundle format")):
            if not getattr(self, key):
                raise PluginConfigError(key, f"configuration is missing the {what}")
        if self.refresh_hint < timedelta(0):
            raise PluginConfigError("refresh_hint", "a refresh hint cannot be negative")
        try:
            return BundleFormat.parse(self.format)
        except ValueError as err:
            raise PluginConfigError("format", str(err)) from None


class GcpCloudStoragePublisher:
    """Writes the server's bundle to ``gs://<bucket_name>/<object_name>``."""

    def __init__(self) -> None:
        self._client: storage.Client | None = None
        self._config = GcpCloudStorageConfig()
        self._format = BundleFormat.SPIFFE
        self._logger: PluginLogger | None = None
        self._published: Bundle | None = None
        self._lock = threading.Lock()

    @hookimpl
    def validate(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        parse_plugin_data(GcpCloudStorageConfig, plugin_data).checked()

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig, logger: PluginLogger) -> None:
        config = parse_plugin_data(GcpCloudStorageConfig, plugin_data)
        self._format = config.checked()
        self._client = storage_client(config.service_account_file)
        self._config = config
        self._logger = logger
        self._published = None

    @hookimpl
    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def _render(self, bundle: Bundle) -> bytes:
        seconds = int(self._config.refresh_hint.total_seconds())  # whole seconds, as SPIRE keeps it
        if seconds:
            bundle = bundle.with_refresh_hint(timedelta(seconds=seconds))
        return self._format.render(bundle)

    @hookimpl
    def publish_bundle(self, bundle: Bundle) -> None:
        config = self._config
        assert self._client is not None
        assert self._logger is not None
        with self._lock:
            if bundle == self._published:
                return
            where = f"gs://{config.bucket_name}/{config.object_name}"
            blob = self._client.bucket(config.bucket_name).blob(config.object_name)
            try:
                blob.upload_from_string(self._render(bundle), timeout=_TIMEOUT_SECONDS, retry=_RETRY)
            except (requests.ConnectionError, requests.Timeout, api_exceptions.RetryError) as err:
                raise Unavailable(f"failed to write bundle to {where}: {err}") from None
            except (api_exceptions.GoogleAPIError, auth_exceptions.GoogleAuthError) as err:
                raise Internal(f"failed to write bundle to {where}: {api_reason(err)}") from None
            self._published = bundle
        self._logger.debug(
            "Bundle published", extra={"bucket_name": config.bucket_name, "object_name": config.object_name}
        )
