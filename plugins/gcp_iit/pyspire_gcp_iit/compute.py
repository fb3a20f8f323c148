"""The Compute Engine API's view of an instance (``use_instance_metadata``).

``instances.get`` over REST with google-auth credentials: the service account file from
``service_account_file`` when set, otherwise Application Default Credentials (the
``GOOGLE_APPLICATION_CREDENTIALS`` file, or the metadata server when the server itself runs on
GCP). Only read access is asked for.
"""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Mapping
from typing import Any

import google.auth
import google.auth.exceptions
import google.oauth2.service_account
import requests
from google.auth.transport.requests import AuthorizedSession
from pyspire.plugin.errors import Internal, PluginConfigError

__all__ = ["ComputeClient"]

DEFAULT_ENDPOINT = "https://compute.googleapis.com"
SCOPES = ("https://www.googleapis.com/auth/compute.readonly",)
TIMEOUT_SECONDS = 20.0


class ComputeClient:
    """Reads instances; credentials are created on first use, so a bad file fails at configure."""

    def __init__(self, endpoint: str, service_account_file: str) -> None:
        self._endpoint = endpoint.rstrip("/")
        self._lock = threading.Lock()
        if service_account_file:
            try:
                credentials = google.oauth2.service_account.Credentials.from_service_account_file(
                    service_account_file, scopes=list(SCOPES)
                )
            except (OSError, ValueError) as err:
                raise PluginConfigError("service_account_file", f"{service_account_file}: {err}") from None
        else:
            try:
                credentials, _ = google.auth.default(scopes=list(SCOPES))
            except google.auth.exceptions.DefaultCredentialsError as err:
                raise PluginConfigError(
                    "service_account_file", f"no credentials for the Compute Engine API: {err}"
                ) from None
        self._session = AuthorizedSession(credentials)

    def instance(self, project: str, zone: str, instance_id: str) -> Mapping[str, Any]:
        """``instances.get`` for the instance the token names."""
        project, zone, instance_id = (urllib.parse.quote(part, safe="") for part in (project, zone, instance_id))
        url = f"{self._endpoint}/compute/v1/projects/{project}/zones/{zone}/instances/{instance_id}"
        try:
            with self._lock:  # a requests.Session is not documented as thread safe
                response = self._session.get(url, timeout=TIMEOUT_SECONDS)
        except (requests.RequestException, google.auth.exceptions.GoogleAuthError) as err:
            raise Internal(f"failed to fetch instance metadata: {err}") from None
        if response.status_code != 200:
            raise Internal(f"failed to fetch instance metadata: HTTP {response.status_code}")
        try:
            instance = response.json()
        except ValueError:
            raise Internal("the Compute Engine API returned something other than JSON") from None
        if not isinstance(instance, dict):
            raise Internal("the Compute Engine API returned something other than an instance")
        return instance
