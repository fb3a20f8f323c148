"""``Notifier "gcs_bundle"``: the PEM of the bundle's X.509 roots written to ``<bucket>/<object_path>``.

Each write is SPIRE's read-modify-write: read the object's generation (0 when there is none),
take the newest bundle the plugin has been handed, upload it on condition that the generation
is still the one read (``ifGenerationMatch``; 0 means "only if the object does not exist").
A 412 ``conditionNotMet`` means another server wrote in between: read again and retry, up to
``CONFLICT_ATTEMPTS`` times (SPIRE retries without a bound). A "bundle loaded" that could not
be written stops the server, as SPIRE's does.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions
from google.cloud import storage
from pyspire.plugin import CoreConfig, PluginLogger, hookimpl, parse_plugin_data
from pyspire.plugin.errors import Internal, PluginConfigError, Unavailable
from pyspire.spiffe import Bundle
from pyspire_gcp_cloudstorage.storage import api_reason, storage_client

__all__ = ["CONFLICT_ATTEMPTS", "GcsBundleConfig", "GcsBundleNotifier"]

CONFLICT_ATTEMPTS = 10
CONTENT_TYPE = "application/x-pem-file"
_TIMEOUT_SECONDS = 20.0
_RETRY = storage.retry.DEFAULT_RETRY.with_timeout(5.0)
_GoogleErrors = (api_exceptions.GoogleAPIError, auth_exceptions.GoogleAuthError)
_Unreachable = (requests.ConnectionError, requests.Timeout, api_exceptions.RetryError)


@dataclass(frozen=True)
class GcsBundleConfig:
    """``plugin_data`` of ``Notifier "gcs_bundle"`` (SPIRE's keys)."""

    bucket: str = ""
    object_path: str = ""
    service_account_file: str = ""

    def check(self) -> None:
        """Refuse what cannot work, naming the key, in SPIRE's words."""
        for key in ("bucket", "object_path"):
            if not getattr(self, key):
                raise PluginConfigError(key, f"{key} must be set")


class GcsBundleNotifier:
    """Keeps the bundle's X.509 roots in one Cloud Storage object."""

    def __init__(self) -> None:
        self._client: storage.Client | None = None
        self._config = GcsBundleConfig()
        self._logger: PluginLogger | None = None
        self._bundle: Bundle | None = None
        self._writing = threading.Lock()

    @hookimpl
    def validate(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        parse_plugin_data(GcsBundleConfig, plugin_data).check()

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig, logger: PluginLogger) -> None:
        config = parse_plugin_data(GcsBundleConfig, plugin_data)
        config.check()
        self._client = storage_client(config.service_account_file)
        self._config = config
        self._logger = logger

    @hookimpl
    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    @hookimpl
    def notify_bundle_loaded(self, bundle: Bundle) -> None:
        self._update(bundle)

    @hookimpl
    def notify_bundle_updated(self, bundle: Bundle) -> None:
        self._update(bundle)

    def _update(self, bundle: Bundle) -> None:
        assert self._client is not None
        assert self._logger is not None
        self._bundle = bundle
        config = self._config
        where = f"{config.bucket}/{config.object_path}"
        bucket = self._client.bucket(config.bucket)
        with self._writing:
            for _ in range(CONFLICT_ATTEMPTS):
                try:
                    found = bucket.get_blob(config.object_path, timeout=_TIMEOUT_SECONDS, retry=_RETRY)
                except _Unreachable as err:
                    raise Unavailable(f"unable to get bundle object {where}: {err}") from None
                except _GoogleErrors as err:
                    raise Internal(f"unable to get bundle object {where}: {api_reason(err)}") from None
                generation = found.generation if found is not None else 0
                self._logger.debug("Bundle object retrieved", extra={"generation": generation})
                newest = self._bundle  # read after the generation: a racing writer's change is corrected
                assert newest is not None
                blob = bucket.blob(config.object_path)
                try:
                    blob.upload_from_string(
                        newest.marshal_x509_pem(),
                        content_type=CONTENT_TYPE,
                        if_generation_match=generation,
                        timeout=_TIMEOUT_SECONDS,
                        retry=_RETRY,
                    )
                except api_exceptions.PreconditionFailed:
                    # The generation is the only precondition sent: 412 is SPIRE's conditionNotMet.
                    self._logger.debug("Conflict detected setting bundle object", extra={"generation": generation})
                    continue
                except _Unreachable as err:
                    raise Unavailable(f"unable to update bundle object {where}: {err}") from None
                except _GoogleErrors as err:
                    raise Internal(f"unable to update bundle object {where}: {api_reason(err)}") from None
                self._logger.debug("Bundle object updated", extra={"generation": generation})
                return
        raise Internal(
            f"unable to update bundle object {where}: other writers changed it {CONFLICT_ATTEMPTS} times in a row"
        )
