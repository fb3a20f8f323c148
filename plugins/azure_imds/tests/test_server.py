"""The server half, loaded as the daemon loads it, against Entra, Resource Graph and IMDS's signer on loopback."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pyspire.plugin.attestation import AttestationResult
from pyspire.plugin.catalog import CatalogError
from pyspire.plugin.errors import Internal, InvalidArgument, NotFound, PermissionDenied
from pyspire.plugin.facades import ServerNodeAttestor
from pyspire.plugin.testing import load_plugin, make_core_config

from plugins.azure_imds.tests.fakes import (
    APP_ID,
    SUBSCRIPTION_ID,
    TENANT_DOMAIN,
    TENANT_ID,
    VM_ID,
    AzureFake,
    SigningChain,
    VirtualMachine,
)

FIRST_PAYLOAD = b"non_empty_payload"


def attestor(tmp_path: Path, azure: AzureFake, **changes: Any) -> ServerNodeAttestor:
    data = {**azure.server_plugin_data(), **changes}
    handle = load_plugin("server", "NodeAttestor", "azure_imds", data, make_core_config(tmp_path))
    assert isinstance(handle, ServerNodeAttestor)
    return handle


def attest(
    handle: ServerNodeAttestor, azure: AzureFake, *, domain: str = TENANT_DOMAIN, vmss: str | None = None
) -> AttestationResult:
    """One attestation, answering the server's nonce with the fake IMDS's document for it."""

    def answer(nonce: bytes) -> bytes:
        document = azure.document(nonce.decode())
        return json.dumps({"document": document, "metadata": {"agentDomain": domain, "vmssName": vmss}}).encode()

    return handle.attest(FIRST_PAYLOAD, answer)


def test_path_and_selectors_are_spires(tmp_path: Path, azure: AzureFake) -> None:
    result = attest(attestor(tmp_path, azure, tenants=tenant(azure, allowed_vm_tags=["environment"])), azure)
    assert result.agent_path == f"/azure_imds/{TENANT_ID}/{SUBSCRIPTION_ID}/{VM_ID}"
    assert not result.can_reattest
    assert result.selector_values == (
        "network-security-group:frontend:webservers",
        "resource-group:frontend",
        f"subscription-id:{SUBSCRIPTION_ID}",
        "virtual-network-subnet:vnet:backend",
        "virtual-network-subnet:vnet:default",
        "virtual-network:vnet",
        "vm-location:eastus",
        "vm-name:blog",
        "vm-tag:environment:production",
    )


def tenant(azure: AzureFake, **settings: Any) -> dict[str, Any]:
    return {TENANT_DOMAIN: {**azure.server_plugin_data()["tenants"][TENANT_DOMAIN], **settings}}


def test_agent_path_template_fields(tmp_path: Path, azure: AzureFake) -> None:
    template = "/{{ .PluginName }}/{{ .SubscriptionID }}/{{ .VMID }}/custom"
    result = attest(attestor(tmp_path, azure, agent_path_template=template), azure)
    assert result.agent_path == f"/azure_imds/{SUBSCRIPTION_ID}/{VM_ID}/custom"


def test_a_tenant_not_configured_is_refused(tmp_path: Path, azure: AzureFake) -> None:
    with pytest.raises(PermissionDenied, match=r'tenant "other\.onmicrosoft\.com" is not authorized'):
        attest(attestor(tmp_path, azure), azure, domain="other.onmicrosoft.com")
    assert azure.graph_queries == []


def test_a_subscription_the_tenant_does_not_allow_is_refused_before_any_lookup(
    tmp_path: Path, azure: AzureFake
) -> None:
    handle = attestor(tmp_path, azure, tenants=tenant(azure, restrict_to_subscriptions=["another-subscription"]))
    with pytest.raises(PermissionDenied, match=f'subscription "{SUBSCRIPTION_ID}" is not authorized'):
        attest(handle, azure)
    assert azure.graph_queries == []


def test_the_allowed_subscription_is_accepted(tmp_path: Path, azure: AzureFake) -> None:
    handle = attestor(tmp_path, azure, tenants=tenant(azure, restrict_to_subscriptions=[SUBSCRIPTION_ID]))
    assert attest(handle, azure).agent_path.endswith(VM_ID)


def test_a_document_signed_over_another_nonce_is_refused(tmp_path: Path, azure: AzureFake) -> None:
    """A document recorded from an earlier attestation (or another server) is not this one's."""
    azure.nonce_override = "recordedEarlierRecordedEarlier00"
    with pytest.raises(InvalidArgument, match="nonce mismatch"):
        attest(attestor(tmp_path, azure), azure)


def test_a_signature_not_made_by_the_certificates_key_is_refused(tmp_path: Path, azure: AzureFake) -> None:
    azure.chain.signer_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(InvalidArgument, match="signature verification failed"):
        attest(attestor(tmp_path, azure), azure)


def test_altered_content_is_refused(tmp_path: Path, azure: AzureFake) -> None:
    handle = attestor(tmp_path, azure)

    def answer(nonce: bytes) -> bytes:
        document = azure.document(nonce.decode())
        der = base64.b64decode(document["signature"])
        altered = der.replace(VM_ID.encode(), b"12345678-74ef-476e-8182-f6d2ba4166a6")
        assert altered != der
        document["signature"] = base64.b64encode(altered).decode()
        return json.dumps({"document": document, "metadata": {"agentDomain": TENANT_DOMAIN}}).encode()

    with pytest.raises(InvalidArgument, match="the content digest does not match"):
        handle.attest(FIRST_PAYLOAD, answer)


def test_a_chain_to_an_untrusted_root_is_refused(tmp_path: Path, azure: AzureFake) -> None:
    azure.chain = SigningChain(azure.chain.issuers_url, fresh_keys=True)  # same names, a root nobody trusts
    with pytest.raises(InvalidArgument, match="the chain does not end at a trusted root"):
        attest(attestor(tmp_path, azure), azure)


@pytest.mark.parametrize(
    ("names", "refusal"),
    [
        ({"signer_name": "metadata.azure.com.evil.example"}, 'signing certificate subject "metadata.azure.com.evil'),
        ({"issuer_name": "Evil Issuing CA 03"}, 'signing certificate issuer "Evil Issuing CA 03"'),
        ({"root_name": "Evil Root"}, 'intermediate certificate issuer "Evil Root"'),
    ],
)
def test_certificates_without_azures_names_are_refused(
    tmp_path: Path, azure: AzureFake, names: dict[str, str], refusal: str
) -> None:
    azure.chain = SigningChain(azure.chain.issuers_url, **names)
    azure.roots_file.write_bytes(azure.chain.root.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(InvalidArgument, match=refusal):
        attest(attestor(tmp_path, azure), azure)


def test_an_expired_signing_certificate_is_refused(tmp_path: Path, azure: AzureFake) -> None:
    azure.chain = SigningChain(azure.chain.issuers_url, signer_lifetime=timedelta(minutes=1))
    azure.roots_file.write_bytes(azure.chain.root.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(InvalidArgument, match="the signing certificate is not valid now"):
        attest(attestor(tmp_path, azure), azure)


def test_the_intermediate_is_fetched_only_from_the_expected_host(tmp_path: Path, azure: AzureFake) -> None:
    handle = attestor(tmp_path, azure, ca_issuers_host="www.microsoft.com")
    with pytest.raises(InvalidArgument, match=r'CA Issuers URL host "127\.0\.0\.1:\d+" does not match expected value'):
        attest(handle, azure)


def test_a_vm_id_that_is_not_a_uuid_is_refused(tmp_path: Path, azure: AzureFake) -> None:
    azure.content_override = {"vmId": "not-a-uuid"}
    with pytest.raises(InvalidArgument, match='invalid VM ID: invalid UUID format: "not-a-uuid"'):
        attest(attestor(tmp_path, azure), azure)


def test_a_document_without_a_subscription_is_refused(tmp_path: Path, azure: AzureFake) -> None:
    azure.content_override = {"subscriptionId": ""}
    with pytest.raises(InvalidArgument, match="missing subscription ID in attested document"):
        attest(attestor(tmp_path, azure), azure)


def test_a_vm_resource_graph_does_not_know_is_refused(tmp_path: Path, azure: AzureFake) -> None:
    azure.vms = []
    with pytest.raises(NotFound, match="resource not found"):
        attest(attestor(tmp_path, azure), azure)


def test_resource_graph_refusing_the_app_refuses_the_node(tmp_path: Path, azure: AzureFake) -> None:
    azure.graph_forbidden = True
    with pytest.raises(Internal, match=r"unable to get virtual machine: .*no read access"):
        attest(attestor(tmp_path, azure), azure)


def test_a_wrong_app_secret_refuses_the_node(tmp_path: Path, azure: AzureFake) -> None:
    handle = attestor(tmp_path, azure, tenants=tenant(azure, secret_auth={"app_id": APP_ID, "app_secret": "wrong"}))
    with pytest.raises(Internal, match="unable to get virtual machine"):
        attest(handle, azure)
    assert azure.graph_queries == []


def token_auth_attestor(tmp_path: Path, azure: AzureFake, token: str) -> ServerNodeAttestor:
    token_path = tmp_path / "azure-token"
    token_path.write_text(token)
    return attestor(
        tmp_path, azure, tenants={TENANT_DOMAIN: {"token_auth": {"app_id": APP_ID, "token_path": str(token_path)}}}
    )


def test_token_auth_presents_the_jwt_on_disk(tmp_path: Path, azure: AzureFake) -> None:
    handle = token_auth_attestor(tmp_path, azure, "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhcHAifQ.c2lnbmF0dXJl\n")
    assert attest(handle, azure).agent_path.endswith(VM_ID)


def test_token_auth_with_a_file_that_is_not_a_jwt_refuses_the_node(tmp_path: Path, azure: AzureFake) -> None:
    with pytest.raises(Internal, match="not a signed JWT"):
        attest(token_auth_attestor(tmp_path, azure, "not a jwt"), azure)
    assert azure.graph_queries == []


def test_a_scale_set_instance_is_found_in_its_scale_set(tmp_path: Path, azure: AzureFake) -> None:
    azure.vm.vmss_name = "myvmss"
    result = attest(attestor(tmp_path, azure), azure, vmss="myvmss")
    assert result.agent_path == f"/azure_imds/{TENANT_ID}/{SUBSCRIPTION_ID}/{VM_ID}"
    assert result.selector_values == (
        "network-security-group:frontend:webservers",
        "resource-group:frontend",
        f"subscription-id:{SUBSCRIPTION_ID}",
        "virtual-network-subnet:vnet:default",
        "virtual-network:vnet",
        "vm-location:eastus",
        "vm-name:myvmss_0",
        "vmss-name:myvmss",
    )


def test_a_scale_set_the_vm_is_not_in_is_refused(tmp_path: Path, azure: AzureFake) -> None:
    """The scale set name is the agent's say-so: the VM ID must be among its instances."""
    azure.vms = [
        azure.vm,
        VirtualMachine(vm_id="11111111-2222-3333-4444-555555555555", name="other", vmss_name="theirs"),
    ]
    with pytest.raises(Internal, match=f'VMSS instance "{VM_ID}" not found'):
        attest(attestor(tmp_path, azure), azure, vmss="theirs")


def test_a_malformed_scale_set_name_is_refused_before_any_lookup(tmp_path: Path, azure: AzureFake) -> None:
    with pytest.raises(InvalidArgument, match="invalid VMSS name"):
        attest(attestor(tmp_path, azure), azure, vmss="x' or name != '")
    assert azure.graph_queries == []


def test_a_first_payload_other_than_spires_is_refused(tmp_path: Path, azure: AzureFake) -> None:
    with pytest.raises(InvalidArgument, match="the first payload is not"):
        attestor(tmp_path, azure).attest(b"{}", lambda nonce: b"")


@pytest.mark.parametrize(
    ("changes", "key", "reason"),
    [
        ({"tenants": {}}, "tenants", "at least one tenant"),
        ({"tenants": {"unknown.example": {}}}, "tenants.unknown.example", "unable to lookup tenant ID"),
        (
            {"tenants": {TENANT_DOMAIN: {"secret_auth": {"app_id": APP_ID}}}},
            f"tenants.{TENANT_DOMAIN}.secret_auth.app_secret",
            "missing app secret",
        ),
        (
            {"tenants": {TENANT_DOMAIN: {"token_auth": {"app_id": APP_ID}}}},
            f"tenants.{TENANT_DOMAIN}.token_auth.token_path",
            "missing token file path",
        ),
        (
            {
                "tenants": {
                    TENANT_DOMAIN: {
                        "secret_auth": {"app_id": APP_ID, "app_secret": "s"},
                        "token_auth": {"app_id": APP_ID, "token_path": "/t"},
                    }
                }
            },
            f"tenants.{TENANT_DOMAIN}",
            "only one of secret_auth or token_auth",
        ),
        (
            {"tenants": {TENANT_DOMAIN: {"restrict_to_subscriptions": [" "]}}},
            f"tenants.{TENANT_DOMAIN}.restrict_to_subscriptions",
            "entries must be non-empty",
        ),
        ({"trust_bundle_path": "/nonexistent/roots.pem"}, "trust_bundle_path", "cannot read root CAs"),
        ({"agent_path_template": "/{{ if .VMID }}x{{ end }}"}, "agent_path_template", "unsupported template action"),
        ({"tenants": {TENANT_DOMAIN: {"auth_type": "secret"}}}, "auth_type", ""),
    ],
)
def test_bad_config_is_refused_by_name(
    tmp_path: Path, azure: AzureFake, changes: dict[str, Any], key: str, reason: str
) -> None:
    with pytest.raises(CatalogError) as raised:
        attestor(tmp_path, azure, **changes)
    assert key in str(raised.value)
    assert reason in str(raised.value)
