"""Azure's side for the azure_msi tests, built from Azure's API reference and served on loopback.

- IMDS (plain HTTP, ``Metadata: true`` required): ``/metadata/identity/oauth2/token?resource=``
  answers the VM identity's access token, a JWT signed by a key of the fake Entra, with the
  claims Entra puts in v1 tokens (``aud`` the resource, ``iss`` ``https://sts.windows.net/<tid>/``,
  ``tid``, ``sub``/``oid`` the principal ID, ``nbf``, ``exp``); ``/metadata/instance`` the compute metadata.
- Over HTTPS (a test CA): Entra's ``common`` OpenID configuration and its JWKS, the tenant's
  v2.0 configuration and token endpoint (client credentials with the app's secret), and Resource
  Manager's resource list (``$filter`` by principal ID), VM and network interface reads, which
  answer only bearer tokens the token endpoint issued.
"""

from __future__ import annotations

import base64
import functools
import secrets
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support import azure, http_fakes

TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
SUBSCRIPTION_ID = "d5b40d61-272e-48da-beb9-05f295c42bd6"
PRINCIPAL_ID = "a1b2c3d4-1111-2222-3333-444455556666"
APP_ID = "12345678-1234-1234-1234-123456789012"
APP_SECRET = "app-secret"
RESOURCE = "https://management.azure.com/"


@functools.cache
def signing_key() -> rsa.RSAPrivateKey:
    """Entra's token-signing key in the fake, made once per test process."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _b64(number: int) -> str:
    return base64.urlsafe_b64encode(number.to_bytes((number.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()


@dataclass
class Vm:
    """The VM the identity is assigned to, with one interface."""

    group: str = "frontend"
    name: str = "blog"

    def resource_id(self, kind: str, name: str, group: str | None = None) -> str:
        return f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{group or self.group}/providers/{kind}/{name}"


class MsiFake:
    """IMDS on one port (HTTP), Entra and Resource Manager on another (HTTPS)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.key_id = "entra-key-1"
        self.vm = Vm()
        self.principals = {PRINCIPAL_ID: self.vm}
        self.issued: set[str] = set()
        self.arm_requests: list[str] = []
        self.claims_override: dict[str, Any] = {}
        self._imds: ThreadingHTTPServer | None = None
        self._https: ThreadingHTTPServer | None = None

    @property
    def imds_host(self) -> str:
        assert self._imds is not None
        return f"127.0.0.1:{self._imds.server_address[1]}"

    @property
    def base(self) -> str:
        assert self._https is not None
        return f"https://127.0.0.1:{self._https.server_address[1]}"

    def env(self) -> dict[str, str]:
        return azure.trust_env(self.directory)

    def server_plugin_data(self, **tenant: Any) -> dict[str, Any]:
        app = {"subscription_id": SUBSCRIPTION_ID, "app_id": APP_ID, "app_secret": APP_SECRET}
        return {
            "tenants": {TENANT_ID: {**app, **tenant}},
            "openid_issuer": f"{self.base}/common/",
            "authority_host": self.base,
            "resource_manager_endpoint": self.base,
        }

    def token(self, resource: str = RESOURCE, key: rsa.RSAPrivateKey | None = None, **claims: Any) -> str:
        now = int(time.time())
        body = {
            "aud": resource,
            "iss": f"https://sts.windows.net/{TENANT_ID}/",
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "tid": TENANT_ID,
            "sub": PRINCIPAL_ID,
            "oid": PRINCIPAL_ID,
            "xms_mirid": self.vm.resource_id("Microsoft.Compute/virtualMachines", self.vm.name),
            **self.claims_override,
            **claims,
        }
        return jwt.encode(body, key or signing_key(), algorithm="RS256", headers={"kid": self.key_id})

    def jwks(self) -> dict[str, Any]:
        numbers = signing_key().public_key().public_numbers()
        return {"keys": [{"kty": "RSA", "use": "sig", "kid": self.key_id, "n": _b64(numbers.n), "e": _b64(numbers.e)}]}

    def start(self) -> MsiFake:
        fake = self

        class Imds(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                if self.headers.get("Metadata") != "true" or "api-version" not in query:
                    return http_fakes.send_json(self, 400, {"error": "Required metadata header not specified"})
                if url.path == "/metadata/identity/oauth2/token":
                    token = fake.token(query.get("resource", ""))
                    return http_fakes.send_json(self, 200, {"access_token": token, "token_type": "Bearer"})
                if url.path == "/metadata/instance":
                    compute = {
                        "name": fake.vm.name,
                        "subscriptionId": SUBSCRIPTION_ID,
                        "resourceGroupName": fake.vm.group,
                    }
                    return http_fakes.send_json(self, 200, {"compute": compute})
                http_fakes.send_json(self, 404, {"error": "Not found"})

        class Azure(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                if url.path == "/common/.well-known/openid-configuration":
                    return http_fakes.send_json(self, 200, {"jwks_uri": f"{fake.base}/common/discovery/keys"})
                if url.path == "/common/discovery/keys":
                    return http_fakes.send_json(self, 200, fake.jwks())
                if url.path == f"/{TENANT_ID}/v2.0/.well-known/openid-configuration":
                    return http_fakes.send_json(self, 200, azure.openid_v2(fake.base, TENANT_ID))
                if url.path.startswith("/subscriptions/"):
                    return self._arm(url)
                http_fakes.send_json(self, 404, {"error": "not found"})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                form = dict(urllib.parse.parse_qsl(body.decode()))
                if self.path.startswith(f"/{TENANT_ID}/oauth2/v2.0/token") and form.get("client_secret") == APP_SECRET:
                    token = secrets.token_urlsafe(24)
                    fake.issued.add(token)
                    return http_fakes.send_json(
                        self, 200, {"token_type": "Bearer", "expires_in": 3599, "access_token": token}
                    )
                http_fakes.send_json(self, 401, {"error": "invalid_client"})

            def _arm(self, url: urllib.parse.SplitResult) -> None:
                if self.headers.get("Authorization", "").removeprefix("Bearer ") not in fake.issued:
                    return http_fakes.send_json(
                        self, 401, {"error": {"code": "InvalidAuthenticationToken", "message": "no"}}
                    )
                fake.arm_requests.append(url.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                prefix = f"/subscriptions/{SUBSCRIPTION_ID}"
                vm = fake.vm
                if url.path == f"{prefix}/resources":
                    rows = [
                        {
                            "id": v.resource_id("Microsoft.Compute/virtualMachines", v.name),
                            "name": v.name,
                            "type": "Microsoft.Compute/virtualMachines",
                        }
                        for principal, v in fake.principals.items()
                        if f"identity/principalId eq '{principal}'" in query.get("$filter", "")
                    ]
                    return http_fakes.send_json(self, 200, {"value": rows})
                nic_id = vm.resource_id("Microsoft.Network/networkInterfaces", f"{vm.name}-nic")
                if url.path == vm.resource_id("Microsoft.Compute/virtualMachines", vm.name):
                    properties = {
                        "vmId": "02aab8a4-74ef-476e-8182-f6d2ba4166a6",
                        "networkProfile": {"networkInterfaces": [{"id": nic_id}]},
                    }
                    return http_fakes.send_json(
                        self, 200, {"id": url.path, "name": vm.name, "location": "eastus", "properties": properties}
                    )
                if url.path == nic_id:
                    subnet = vm.resource_id("Microsoft.Network/virtualNetworks", "vnet/subnets/default", "network")
                    properties = {
                        "networkSecurityGroup": {
                            "id": vm.resource_id("Microsoft.Network/networkSecurityGroups", "webservers")
                        },
                        "ipConfigurations": [{"name": "ipconfig1", "properties": {"subnet": {"id": subnet}}}],
                    }
                    return http_fakes.send_json(
                        self, 200, {"id": nic_id, "name": f"{vm.name}-nic", "properties": properties}
                    )
                http_fakes.send_json(
                    self, 404, {"error": {"code": "ResourceNotFound", "message": f"{url.path} not found"}}
                )

        self._https = azure.serve_https(Azure, self.directory)
        self._imds = http_fakes.serve(Imds)
        return self

    def stop(self) -> None:
        http_fakes.stop(self._https)
        http_fakes.stop(self._imds)
