"""The Cloud Storage client both GCS plugins use (``gcp_cloudstorage``, ``gcs_bundle``), as SPIRE builds it.

Credentials come from the service account key in ``service_account_file`` when set, and
otherwise from Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's,
the metadata server), as SPIRE's
``option.WithCredentialsFile`` and its default do. ``STORAGE_EMULATOR_HOST`` points the client
at an emulator, as it points SPIRE's Go client.
"""

from __future__ import annotations

import json

from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions
from google.cloud import storage
from google.oauth2 import service_account
from pyspire.plugin.errors import PluginConfigError

__all__ = ["api_reason", "storage_client"]

_SCOPES = ["https://www.googleapis.com/auth/devstorage.read_write"]
_NO_PROJECT = "<none>"
"""Objects are addressed by bucket: no project is needed, so none is looked up (the library's own anonymous choice)."""


def storage_client(service_account_file: str) -> storage.Client:
    """A client with SPIRE's credential choice; PluginConfigError naming ``service_account_file`` when none work."""
    try:
        if service_account_file:
            credentials = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
                service_account_file, scopes=_SCOPES
            )
            return storage.Client(project=credentials.project_id or _NO_PROJECT, credentials=credentials)
        return storage.Client(project=_NO_PROJECT)
    except (OSError, ValueError, auth_exceptions.GoogleAuthError) as err:
        raise PluginConfigError("service_account_file", f"failed to create client: {err}") from None


def api_reason(err: Exception) -> str:
    """A Cloud Storage failure in one line: the HTTP status and Google's message, without the request dump."""
    if isinstance(err, api_exceptions.GoogleAPICallError):
        response = err.response
        message = ""
        try:
            message = json.loads(response.text)["error"]["message"] if response is not None else ""
        except (ValueError, KeyError, TypeError, AttributeError):
            message = ""
        return f"{err.code} {message or err.reason or err.message.split(':', 1)[0]}".strip()
    return str(err)
