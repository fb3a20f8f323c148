"""Azure's side for the azure_imds tests, built from Azure's API reference and served on loopback.

- IMDS (plain HTTP, ``Metadata: true`` required): ``/metadata/attested/document?nonce=`` answers
  ``{"encoding": "pkcs7", "signature": <base64 SignedData>}`` whose content is the documented JSON
  (nonce, vmId, subscriptionId, plan, timeStamp, ...), signed by a ``metadata.azure.com``
  certificate; ``/metadata/instance?format=json`` answers the compute metadata.
- Over HTTPS, with a test CA the clients are pointed at: Microsoft Entra's per-domain OpenID
  configuration (issuer ``https://sts.windows.net/<tenant id>/``), the per-tenant v2.0 OpenID
  configuration and token endpoint MSAL uses (client credentials: secret or JWT assertion),
  the CA Issuers URL the signing certificate names (the intermediate, DER), and Resource
  Graph's ``POST /providers/Microsoft.ResourceGraph/resources``, answering only bearer tokens
  the token endpoint issued and only the two query shapes the plugin sends.

The signing chain imitates Azure's names: ``DigiCert Global Root G2`` (a test key, trusted through
``trust_bundle_path``) -> ``Microsoft Azure RSA TLS Issuing CA 03`` -> ``metadata.azure.com``.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import secrets
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from tests.support import azure, http_fakes

TENANT_DOMAIN = "example.onmicrosoft.com"
TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
SUBSCRIPTION_ID = "d5b40d61-272e-48da-beb9-05f295c42bd6"
VM_ID = "02aab8a4-74ef-476e-8182-f6d2ba4166a6"
APP_ID = "12345678-1234-1234-1234-123456789012"
APP_SECRET = "app-secret"


@functools.cache
def _shared_key(index: int) -> rsa.RSAPrivateKey:
    """RSA keys made once per test process: a 2048-bit key takes a tenth of a second each."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass
class SigningChain:
    """A root, an intermediate and a signing certificate with Azure's names (or others, to test refusals)."""

    issuers_url: str
    root_name: str = "DigiCert Global Root G2"
    issuer_name: str = "Microsoft Azure RSA TLS Issuing CA 03"
    signer_name: str = "metadata.azure.com"
    signer_lifetime: timedelta = timedelta(days=1)
    fresh_keys: bool = False
    """New keys, for a chain that must not verify under the shared chain's root."""
    root: x509.Certificate = field(init=False)
    intermediate: x509.Certificate = field(init=False)
    signer: x509.Certificate = field(init=False)
    signer_key: rsa.RSAPrivateKey = field(init=False)

    def __post_init__(self) -> None:
        now = datetime.now(UTC) - timedelta(minutes=5)
        root_key, issuer_key, self.signer_key = (
            (_new_key(), _new_key(), _new_key())
            if self.fresh_keys
            else (_shared_key(0), _shared_key(1), _shared_key(2))
        )
        ca = x509.BasicConstraints(ca=True, path_length=None)

        def build(
            subject: str, issuer: str, key: rsa.RSAPrivateKey, signer: rsa.RSAPrivateKey
        ) -> x509.CertificateBuilder:
            return (
                x509.CertificateBuilder()
                .subject_name(_name(subject))
                .issuer_name(_name(issuer))
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now)
            )

        self.root = (
            build(self.root_name, self.root_name, root_key, root_key)
            .not_valid_after(now + timedelta(days=30))
            .add_extension(ca, critical=True)
            .sign(root_key, hashes.SHA256())
        )
        self.intermediate = (
            build(self.issuer_name, self.root_name, issuer_key, root_key)
            .not_valid_after(now + timedelta(days=30))
            .add_extension(ca, critical=True)
            .sign(root_key, hashes.SHA256())
        )
        access = x509.AuthorityInformationAccess(
            [
                x509.AccessDescription(
                    AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(self.issuers_url)
                )
            ]
        )
        self.signer = (
            build(self.signer_name, self.issuer_name, self.signer_key, issuer_key)
            .not_valid_after(now + self.signer_lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(access, critical=False)
            .sign(issuer_key, hashes.SHA256())
        )

    def sign(self, content: dict[str, Any]) -> str:
        """``content`` as IMDS signs it: base64 of a PKCS#7 SignedData carrying the signing certificate."""
        der = (
            pkcs7.PKCS7SignatureBuilder()
            .set_data(json.dumps(content).encode())
            .add_signer(self.signer, self.signer_key, hashes.SHA256())
            .sign(serialization.Encoding.DER, [])
        )
        return base64.b64encode(der).decode()


@dataclass
class VirtualMachine:
    """One VM as Resource Graph holds it."""

    vm_id: str = VM_ID
    subscription_id: str = SUBSCRIPTION_ID
    name: str = "blog"
    resource_group: str = "frontend"
    location: str = "eastus"
    tags: dict[str, str] = field(default_factory=lambda: {"environment": "production", "owner": "web"})
    vmss_name: str = ""

    @property
    def resource_id(self) -> str:
        return f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}/providers/Microsoft.Compute/virtualMachines/{self.name}"

    def row(self) -> dict[str, Any]:
        return {
            "id": self.resource_id.replace(
                f"/resourceGroups/{self.resource_group}/", f"/resourcegroups/{self.resource_group.lower()}/"
            ),
            "name": self.name,
            "location": self.location,
            "tags": self.tags,
            "vmId": self.vm_id,
            "networkProfile": {},
            "resourceGroup": self.resource_group,
        }

    def scale_set_instance(self) -> dict[str, Any]:
        """The instance as the Compute API lists a scale set's VMs (interfaces from its network profile configuration)."""
        prefix = (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}/providers/Microsoft.Network"
        )
        nic = {
            "name": f"{self.name}-nic",
            "properties": {
                "networkSecurityGroup": {"id": f"{prefix}/networkSecurityGroups/webservers"},
                "ipConfigurations": [
                    {
                        "name": "ipconfig1",
                        "properties": {"subnet": {"id": f"{prefix}/virtualNetworks/vnet/subnets/default"}},
                    }
                ],
            },
        }
        return {
            "id": f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}/providers/Microsoft.Compute/virtualMachineScaleSets/{self.vmss_name}/virtualMachines/0",
            "name": f"{self.vmss_name}_0",
            "location": self.location,
            "tags": self.tags,
            "instanceId": "0",
            "properties": {
                "vmId": self.vm_id,
                "networkProfileConfiguration": {"networkInterfaceConfigurations": [nic]},
            },
        }

    def interfaces(self) -> list[dict[str, Any]]:
        group = json.dumps({"resourceGroup": self.resource_group, "name": "webservers"})
        return [
            {
                "name": f"{self.name}-nic",
                "resourceGroup": self.resource_group,
                "subnets": [{"vnet": "vnet", "name": "default"}, {"vnet": "vnet", "name": "backend"}],
                "securityGroup": group,
            }
        ]


_VMSS_QUERY = re.compile(r"virtualmachinescalesets'\s*\| where name == '([^']*)'")
_VM_QUERY = re.compile(r"properties\.vmId == '([^']*)'")
_NIC_QUERY = re.compile(r'tolower\(properties\.virtualMachine\.id\) == tolower\("([^"]*)"\)')


class AzureFake:
    """IMDS on one port (HTTP), Entra + the CA Issuers URL + Resource Graph on another (HTTPS)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.tenants = {TENANT_DOMAIN: TENANT_ID}
        self.apps = {APP_ID: APP_SECRET}
        self.vm = VirtualMachine()
        self.vms = [self.vm]
        self.issued_tokens: set[str] = set()
        self.graph_queries: list[str] = []
        self.nonce_override: str | None = None
        self.content_override: dict[str, Any] = {}
        self.graph_forbidden = False
        self._imds: ThreadingHTTPServer | None = None
        self._https: ThreadingHTTPServer | None = None
        self.chain: SigningChain

    @property
    def imds_host(self) -> str:
        assert self._imds is not None
        return f"127.0.0.1:{self._imds.server_address[1]}"

    @property
    def base(self) -> str:
        assert self._https is not None
        return f"https://127.0.0.1:{self._https.server_address[1]}"

    @property
    def issuers_host(self) -> str:
        return self.base.removeprefix("https://")

    @property
    def roots_file(self) -> Path:
        return self.directory / "azure-roots.pem"

    def env(self) -> dict[str, str]:
        """What a process needs to trust the fake's TLS (Python's ssl and requests both read these)."""
        return azure.trust_env(self.directory)

    def server_plugin_data(self, **tenant: Any) -> dict[str, Any]:
        """``plugin_data`` for the server half: the fake's tenant with its app secret, the fake's endpoints."""
        return {
            "tenants": {TENANT_DOMAIN: {"secret_auth": {"app_id": APP_ID, "app_secret": APP_SECRET}, **tenant}},
            "trust_bundle_path": str(self.roots_file),
            "authority_host": self.base,
            "resource_manager_endpoint": self.base,
            "ca_issuers_host": self.issuers_host,
        }

    def document(self, nonce: str) -> dict[str, Any]:
        now = datetime.now(UTC)
        content = {
            "nonce": self.nonce_override if self.nonce_override is not None else nonce,
            "plan": {"name": "", "product": "", "publisher": ""},
            "timeStamp": {
                "createdOn": now.strftime("%m/%d/%y %H:%M:%S -0000"),
                "expiresOn": (now + timedelta(hours=6)).strftime("%m/%d/%y %H:%M:%S -0000"),
            },
            "vmId": self.vm.vm_id,
            "licenseType": "",
            "subscriptionId": self.vm.subscription_id,
            "sku": "22_04-lts-gen2",
        }
        content.update(self.content_override)
        return {"encoding": "pkcs7", "signature": self.chain.sign(content)}

    def start(self) -> AzureFake:
        fake = self

        class Imds(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                if self.headers.get("Metadata") != "true" or "api-version" not in query:
                    return http_fakes.send_json(
                        self, 400, {"error": "Bad request. Required metadata header not specified"}
                    )
                if url.path == "/metadata/attested/document":
                    return http_fakes.send_json(self, 200, fake.document(query.get("nonce", "")))
                if url.path == "/metadata/instance":
                    compute = {
                        "name": fake.vm.name,
                        "subscriptionId": fake.vm.subscription_id,
                        "resourceGroupName": fake.vm.resource_group,
                        "vmId": fake.vm.vm_id,
                        "vmScaleSetName": fake.vm.vmss_name,
                        "location": fake.vm.location,
                    }
                    return http_fakes.send_json(self, 200, {"compute": compute})
                http_fakes.send_json(self, 404, {"error": "Not found"})

        class Azure(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = urllib.parse.urlsplit(self.path).path
                parts = path.strip("/").split("/")
                if path.endswith("/v2.0/.well-known/openid-configuration") and parts[0] in fake.tenants.values():
                    return http_fakes.send_json(self, 200, azure.openid_v2(fake.base, parts[0]))
                if path.endswith("/.well-known/openid-configuration") and len(parts) == 3:
                    tenant_id = fake.tenants.get(parts[0])
                    if tenant_id is None:
                        return http_fakes.send_json(self, 400, {"error": "invalid_tenant"})
                    return http_fakes.send_json(self, 200, {"issuer": f"https://sts.windows.net/{tenant_id}/"})
                if path.endswith("/virtualMachines") and "/virtualMachineScaleSets/" in path:
                    return self._scale_set_instances(path)
                if path == "/pkiops/certs/issuer.crt":
                    body = fake.chain.intermediate.public_bytes(serialization.Encoding.DER)
                    self.send_response(200)
                    self.send_header("Content-Type", "application/pkix-cert")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return None
                http_fakes.send_json(self, 404, {"error": "not found"})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                path = urllib.parse.urlsplit(self.path).path
                if path.endswith("/oauth2/v2.0/token"):
                    return self._token(path.strip("/").split("/")[0], dict(urllib.parse.parse_qsl(body.decode())))
                if path == "/providers/Microsoft.ResourceGraph/resources":
                    return self._graph(json.loads(body))
                http_fakes.send_json(self, 404, {"error": "not found"})

            def _token(self, tenant_id: str, form: dict[str, str]) -> None:
                if tenant_id not in fake.tenants.values() or form.get("grant_type") != "client_credentials":
                    return http_fakes.send_json(self, 400, {"error": "invalid_request"})
                app = form.get("client_id", "")
                secret_ok = app in fake.apps and form.get("client_secret") == fake.apps[app]
                assertion_ok = app in fake.apps and form.get("client_assertion", "").count(".") == 2
                if not secret_ok and not assertion_ok:
                    return http_fakes.send_json(
                        self, 401, {"error": "invalid_client", "error_description": "AADSTS7000215"}
                    )
                token = secrets.token_urlsafe(24)
                fake.issued_tokens.add(token)
                http_fakes.send_json(self, 200, {"token_type": "Bearer", "expires_in": 3599, "access_token": token})

            def _scale_set_instances(self, path: str) -> None:
                if self.headers.get("Authorization", "").removeprefix("Bearer ") not in fake.issued_tokens:
                    return http_fakes.send_json(self, 401, {"error": {"code": "AuthenticationFailed", "message": "no"}})
                fake.graph_queries.append(path)
                instances = [
                    vm.scale_set_instance()
                    for vm in fake.vms
                    if vm.vmss_name and f"/virtualMachineScaleSets/{vm.vmss_name}/" in path
                ]
                http_fakes.send_json(self, 200, {"value": instances})

            def _graph(self, request: dict[str, Any]) -> None:
                authorization = self.headers.get("Authorization", "")
                if authorization.removeprefix("Bearer ") not in fake.issued_tokens:
                    return http_fakes.send_json(
                        self, 401, {"error": {"code": "AuthenticationFailed", "message": "bad token"}}
                    )
                if fake.graph_forbidden:
                    error = {"code": "AuthorizationFailed", "message": "the client has no read access to the scope"}
                    return http_fakes.send_json(self, 403, {"error": error})
                query, subscriptions = request.get("query", ""), request.get("subscriptions", [])
                fake.graph_queries.append(query)
                rows: list[dict[str, Any]] = []
                if match := _VMSS_QUERY.search(query):
                    rows = [
                        {
                            "id": f"/subscriptions/{vm.subscription_id}/resourceGroups/{vm.resource_group}/providers/Microsoft.Compute/virtualMachineScaleSets/{vm.vmss_name}",
                            "name": vm.vmss_name,
                            "location": vm.location,
                            "resourceGroup": vm.resource_group,
                            "subscriptionId": vm.subscription_id,
                        }
                        for vm in fake.vms
                        if vm.vmss_name and vm.vmss_name == match.group(1) and vm.subscription_id in subscriptions
                    ][:1]
                elif match := _VM_QUERY.search(query):
                    rows = [
                        vm.row()
                        for vm in fake.vms
                        if vm.vm_id == match.group(1) and vm.subscription_id in subscriptions
                    ]
                elif match := _NIC_QUERY.search(query):
                    wanted = match.group(1).lower()
                    rows = [nic for vm in fake.vms if vm.resource_id.lower() == wanted for nic in vm.interfaces()]
                else:
                    return http_fakes.send_json(
                        self, 400, {"error": {"code": "BadRequest", "message": "unknown query"}}
                    )
                http_fakes.send_json(
                    self, 200, {"totalRecords": len(rows), "count": len(rows), "data": rows, "resultTruncated": "false"}
                )

        self._https = azure.serve_https(Azure, self.directory)
        self._imds = http_fakes.serve(Imds)
        self.chain = SigningChain(f"{self.base}/pkiops/certs/issuer.crt")
        self.roots_file.write_bytes(self.chain.root.public_bytes(serialization.Encoding.PEM))
        return self

    def stop(self) -> None:
        http_fakes.stop(self._https)
        http_fakes.stop(self._imds)
