"""Reading Secret Manager back through Google's client, as a workload holding the secret would."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from google.api_core import exceptions as api_exceptions
from google.api_core.client_options import ClientOptions
from google.cloud import secretmanager
from google.oauth2 import service_account

from tests.support.gcp_secret_manager import FakeSecretManager

PROJECT = "test-project"


def reader(fake: FakeSecretManager, directory: Path) -> secretmanager.SecretManagerServiceClient:
    """A client of the fake with a service account of its own (the workload's)."""
    directory.mkdir(parents=True, exist_ok=True)
    credentials = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
        str(fake.service_account_file(directory, "workload@test-project.iam.gserviceaccount.com")),
        scopes=["https://www.googleapis.com/auth/cloud-platform"],
    )
    return secretmanager.SecretManagerServiceClient(
        credentials=credentials, transport="rest", client_options=ClientOptions(api_endpoint=fake.url)
    )


def secret_name(name: str, project: str = PROJECT) -> str:
    return f"projects/{project}/secrets/{name}"


def stored_document(client: secretmanager.SecretManagerServiceClient, name: str) -> dict[str, Any] | None:
    """The JSON document of the secret's latest version (None when there is no such secret)."""
    try:
        answer = client.access_secret_version(request={"name": f"{secret_name(name)}/versions/latest"})
    except api_exceptions.NotFound:
        return None
    return json.loads(answer.payload.data)  # type: ignore[no-any-return]
