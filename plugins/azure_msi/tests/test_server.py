"""The server half, loaded as the daemon loads it, against Entra and Resource Manager on loopback."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from pyspire.plugin.attestation import AttestationResult
from pyspire.plugin.catalog import CatalogError
from pyspire.plugin.errors import Internal, InvalidArgument, PermissionDenied
from pyspire.plugin.facades import ServerNodeAttestor
from pyspire.plugin.testing import load_plugin, make_core_config

from plugins.azure_msi.tests.fakes import PRINCIPAL_ID, SUBSCRIPTION_ID, TENANT_ID, MsiFake
from tests.support.free_port import free_port


def no_challenge(data: bytes) -> bytes:
    raise AssertionError("azure_msi never challenges")


def attestor(tmp_path: Path, azure: MsiFake, **changes: Any) -> ServerNodeAttestor:
    data = {**azure.server_plugin_data(), **changes}
    handle = load_plugin("server", "NodeAttestor", "azure_msi", data, make_core_config(tmp_path))
    assert isinstance(handle, ServerNodeAttestor)
    return handle


def attest(handle: ServerNodeAttestor, token: str) -> AttestationResult:
    return handle.attest(json.dumps({"token": token}).encode(), no_challenge)


def test_path_and_selectors_are_spires(tmp_path: Path, azure: MsiFake) -> None:
    result = attest(attestor(tmp_path, azure), azure.token())
    assert result.agent_path == f"/azure_msi/{TENANT_ID}/{PRINCIPAL_ID}"
    assert not result.can_reattest
    assert result.selector_values == (
        "network-security-group:frontend:webservers",
        f"subscription-id:{SUBSCRIPTION_ID}",
        "virtual-network-subnet:network:vnet:default",
        "virtual-network:network:vnet",
        "vm-name:frontend:blog",
    )


def test_a_tenant_not_configured_is_refused_before_any_lookup(tmp_path: Path, azure: MsiFake) -> None:
    other = "00000000-1111-2222-3333-444444444444"
    token = azure.token(tid=other, iss=f"https://sts.windows.net/{other}/")
    with pytest.raises(PermissionDenied, match=f'tenant "{other}" is not authorized'):
        attest(attestor(tmp_path, azure), token)
    assert azure.arm_requests == []


def test_a_token_for_another_resource_is_refused(tmp_path: Path, azure: MsiFake) -> None:
    with pytest.raises(PermissionDenied, match="unable to validate token claims: audience"):
        attest(attestor(tmp_path, azure), azure.token("https://vault.azure.net"))
    handle = attestor(
        tmp_path,
        azure,
        tenants={
            TENANT_ID: {**azure.server_plugin_data()["tenants"][TENANT_ID], "resource_id": "http://example.org/app/"}
        },
    )
    assert attest(handle, azure.token("http://example.org/app/")).agent_path.endswith(PRINCIPAL_ID)


def test_an_expired_token_is_refused_past_the_leeway_only(tmp_path: Path, azure: MsiFake) -> None:
    handle = attestor(tmp_path, azure)
    now = int(time.time())
    assert attest(handle, azure.token(exp=now - 240)).agent_path.endswith(PRINCIPAL_ID)
    with pytest.raises(Internal, match="the token is expired"):
        attest(handle, azure.token(exp=now - 360))


def test_a_token_not_valid_yet_is_refused(tmp_path: Path, azure: MsiFake) -> None:
    with pytest.raises(Internal, match="the token is not valid yet"):
        attest(attestor(tmp_path, azure), azure.token(nbf=int(time.time()) + 600))


def test_a_token_from_another_tenants_issuer_is_refused(tmp_path: Path, azure: MsiFake) -> None:
    with pytest.raises(PermissionDenied, match="unable to validate token claims: issuer"):
        attest(attestor(tmp_path, azure), azure.token(iss="https://sts.windows.net/someone-else/"))


def test_a_forged_token_is_refused(tmp_path: Path, azure: MsiFake) -> None:
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(InvalidArgument, match="unable to verify token: Signature verification failed"):
        attest(attestor(tmp_path, azure), azure.token(key=forger))
    assert azure.arm_requests == []


def test_a_token_naming_an_unknown_key_is_refused(tmp_path: Path, azure: MsiFake) -> None:
    handle = attestor(tmp_path, azure)
    azure.key_id = "unpublished"
    token = azure.token()
    azure.key_id = "entra-key-1"
    with pytest.raises(InvalidArgument, match='key id "unpublished" not found'):
        attest(handle, token)


def test_an_unsigned_token_is_refused(tmp_path: Path, azure: MsiFake) -> None:
    token = jwt.encode({"tid": TENANT_ID, "sub": PRINCIPAL_ID}, key=None, algorithm="none")
    with pytest.raises(InvalidArgument, match='algorithm "none" is not allowed'):
        attest(attestor(tmp_path, azure), token)


def test_a_principal_without_a_vm_refuses_the_node(tmp_path: Path, azure: MsiFake) -> None:
    azure.principals = {}
    with pytest.raises(Internal, match="principal not found"):
        attest(attestor(tmp_path, azure), azure.token())


def test_a_wrong_app_secret_refuses_the_node(tmp_path: Path, azure: MsiFake) -> None:
    tenants = {TENANT_ID: {**azure.server_plugin_data()["tenants"][TENANT_ID], "app_secret": "wrong"}}
    with pytest.raises(Internal, match="unable to get resource for principal"):
        attest(attestor(tmp_path, azure, tenants=tenants), azure.token())


def test_without_app_credentials_the_subscription_comes_from_imds(
    tmp_path: Path, azure: MsiFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SPIRE's fallback: the default credential chain (here its environment step) in the server VM's subscription."""
    monkeypatch.setenv("AZURE_TENANT_ID", TENANT_ID)
    monkeypatch.setenv("AZURE_CLIENT_ID", "12345678-1234-1234-1234-123456789012")
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "app-secret")
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", azure.base)
    handle = attestor(tmp_path, azure, tenants={TENANT_ID: {}}, imds_host=azure.imds_host)
    assert f"subscription-id:{SUBSCRIPTION_ID}" in attest(handle, azure.token()).selector_values


@pytest.mark.parametrize(
    ("changes", "key", "reason"),
    [
        ({"tenants": {}}, "tenants", "at least one tenant"),
        (
            {"tenants": {TENANT_ID: {"app_id": "a", "app_secret": "s"}}},
            f"tenants.{TENANT_ID}.subscription_id",
            "missing subscription id",
        ),
        (
            {"tenants": {TENANT_ID: {"subscription_id": "s", "app_id": "a"}}},
            f"tenants.{TENANT_ID}.app_secret",
            "missing app secret",
        ),
        (
            {"tenants": {TENANT_ID: {}}, "imds_host": "127.0.0.1:{port}"},
            f"tenants.{TENANT_ID}",
            "subscription is unknown",
        ),
        (
            {"agent_path_template": "/{{ if .TenantID }}x{{ end }}"},
            "agent_path_template",
            "unsupported template action",
        ),
    ],
)
def test_bad_config_is_refused_by_name(
    tmp_path: Path, azure: MsiFake, changes: dict[str, Any], key: str, reason: str
) -> None:
    if "imds_host" in changes:
        changes = {**changes, "imds_host": f"127.0.0.1:{free_port()}"}
    with pytest.raises(CatalogError) as raised:
        attestor(tmp_path, azure, **changes)
    assert key in str(raised.value)
    assert reason in str(raised.value)
