"""What the Azure plugins share, against small HTTP servers on loopback."""

from __future__ import annotations

import base64
import json
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from azure.identity import ClientSecretCredential, DefaultAzureCredential
from pyspire.plugin.errors import Internal, PluginConfigError, Unavailable
from pyspire_azure_common import imds
from pyspire_azure_common.credentials import (
    DEFAULT_AUTHORITY,
    TenantLookupError,
    assertion_reader,
    credential,
    environment_authority,
    lookup_tenant_id,
)

from tests.support import http_fakes

servers: list[Any] = []
"""The servers this test started; stopped after it."""


def serve(status: int, body: Any) -> str:
    """A server answering every GET with ``status`` and ``body`` (as JSON), if ``Metadata: true`` is sent."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.headers.get("Metadata") != "true" and "openid" not in self.path:
                return http_fakes.send_json(self, 400, {"error": "Required metadata header not specified"})
            http_fakes.send_json(self, status, body)

    server = http_fakes.serve(Handler)
    servers.append(server)
    return f"127.0.0.1:{server.server_address[1]}"


@pytest.fixture(autouse=True)
def _stop_servers() -> Any:
    yield
    while servers:
        http_fakes.stop(servers.pop())


def test_imds_requests_carry_the_metadata_header(tmp_path: Path) -> None:
    host = serve(200, {"compute": {"name": "vm", "subscriptionId": "s", "resourceGroupName": "g"}})
    assert imds.compute_metadata(host)["subscriptionId"] == "s"


def test_compute_metadata_without_a_subscription_is_refused() -> None:
    with pytest.raises(Internal, match="response missing instance subscriptionId"):
        imds.compute_metadata(serve(200, {"compute": {"name": "vm", "resourceGroupName": "g"}}))


def test_imds_5xx_is_unavailable_and_4xx_internal() -> None:
    with pytest.raises(Unavailable, match="HTTP 503"):
        imds.get_json(serve(503, {}), "/metadata/instance", {})
    with pytest.raises(Internal, match=r"refused /metadata/instance \(HTTP 404\)"):
        imds.get_json(serve(404, {}), "/metadata/instance", {})


def test_an_imds_host_with_a_path_is_refused_by_name() -> None:
    with pytest.raises(PluginConfigError, match="imds_host"):
        imds.check_host("169.254.169.254/metadata")


def test_the_tenant_id_is_the_issuers(tmp_path: Path) -> None:
    host = serve(200, {"issuer": "https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/"})
    assert lookup_tenant_id("example.com", f"http://{host}") == "72f988bf-86f1-41af-91ab-2d7cd011db47"
    with pytest.raises(TenantLookupError, match="malformed tenant ID"):
        lookup_tenant_id("example.com", f"http://{serve(200, {'issuer': 'https://evil.example/tenant/'})}")


def test_the_assertion_must_be_a_signed_jwt(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")
    with pytest.raises(ValueError, match="not a signed JWT"):
        assertion_reader(str(token))()
    header = json.dumps({"alg": "RS256"}).encode()
    token.write_text(base64.urlsafe_b64encode(header).decode().rstrip("=") + ".e30.c2ln\n")
    assert assertion_reader(str(token))().endswith(".c2ln")


def test_the_authority_is_azure_authority_host_or_the_public_clouds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_AUTHORITY_HOST", raising=False)
    assert environment_authority() == DEFAULT_AUTHORITY
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.us")
    assert environment_authority() == "https://login.microsoftonline.us"


def test_without_a_tenant_the_credential_is_the_default_chain() -> None:
    assert isinstance(credential(None), DefaultAzureCredential)
    assert isinstance(credential("t", secret=("app", "secret")), ClientSecretCredential)
