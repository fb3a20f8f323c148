"""``plugin_data`` of ``UpstreamAuthority "vault"``, with SPIRE's keys and environment fallbacks.

Exactly one of the four auth blocks must be present (an empty block is enough when the
environment supplies its values, as in SPIRE). Values given in the file win; the standard
Vault variables (``VAULT_ADDR``, ``VAULT_CACERT``, ``VAULT_NAMESPACE``, ``VAULT_TOKEN``,
``VAULT_CLIENT_CERT``, ``VAULT_CLIENT_KEY``) and SPIRE's ``VAULT_APPROLE_ID`` and
``VAULT_APPROLE_SECRET_ID`` fill in what the file leaves empty. Every problem an operator can
fix is reported at configure time, naming the key, so a server never starts half-configured.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pyspire.plugin import PluginConfigError, parse_plugin_data
from pyspire.spiffe.pem import pem_certificates

__all__ = [
    "AppRoleAuth",
    "CertAuth",
    "K8sAuth",
    "TokenAuth",
    "VaultAuth",
    "VaultConnectionData",
    "VaultSettings",
    "load_settings",
]


@dataclass(frozen=True)
class TokenAuth:
    """``token_auth``: a token obtained elsewhere, sent as ``X-Vault-Token``."""

    token: str = ""


@dataclass(frozen=True)
class CertAuth:
    """``cert_auth``: log in with a TLS client certificate."""

    cert_auth_mount_point: str = "cert"
    cert_auth_role_name: str = ""
    client_cert_path: str = ""
    client_key_path: str = ""


@dataclass(frozen=True)
class AppRoleAuth:
    """``approle_auth``: log in with a role ID and a secret ID."""

    approle_auth_mount_point: str = "approle"
    approle_id: str = ""
    approle_secret_id: str = ""


@dataclass(frozen=True)
class K8sAuth:
    """``k8s_auth``: log in with a Kubernetes service account token."""

    k8s_auth_mount_point: str = "kubernetes"
    k8s_auth_role_name: str = ""
    token_path: str = ""


VaultAuth = TokenAuth | CertAuth | AppRoleAuth | K8sAuth


@dataclass(frozen=True)
class VaultConnectionData:
    """The keys of the Vault connection and its login, as in ``plugin_data``: SPIRE's Vault
    plugins (this UpstreamAuthority, the hashicorp_vault KeyManager) share them."""

    vault_addr: str = ""
    namespace: str = ""
    ca_cert_path: str = ""
    insecure_skip_verify: bool = False
    token_auth: TokenAuth | None = None
    cert_auth: CertAuth | None = None
    approle_auth: AppRoleAuth | None = None
    k8s_auth: K8sAuth | None = None


@dataclass(frozen=True)
class VaultPluginData(VaultConnectionData):
    """The keys exactly as they appear in ``plugin_data``."""

    pki_mount_point: str = "pki"


@dataclass(frozen=True)
class VaultSettings:
    """What the plugin runs with: the file's values completed from the environment."""

    vault_addr: str
    namespace: str
    pki_mount_point: str
    ca_cert_path: str
    insecure_skip_verify: bool
    auth: VaultAuth

    @property
    def verify(self) -> bool | str:
        """What requests' ``verify`` takes: off, a CA file, or the system roots."""
        if self.insecure_skip_verify:
            return False
        return self.ca_cert_path or True

    @property
    def client_certificate(self) -> tuple[str, str] | None:
        if isinstance(self.auth, CertAuth):
            return self.auth.client_cert_path, self.auth.client_key_path
        return None


def load_settings(plugin_data: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> VaultSettings:
    """Parse and check ``plugin_data``; raise :class:`PluginConfigError` naming the key at fault."""
    env = os.environ if environ is None else environ
    data = parse_plugin_data(VaultPluginData, plugin_data)

    def fill(value: str, variable: str) -> str:
        return value or env.get(variable, "")

    vault_addr = fill(data.vault_addr, "VAULT_ADDR")
    if not vault_addr:
        raise PluginConfigError("vault_addr", "is required (or set VAULT_ADDR)")
    address = urlsplit(vault_addr)
    if address.scheme not in ("https", "http") or not address.hostname:
        raise PluginConfigError("vault_addr", f'"{vault_addr}" is not an http(s) URL such as https://vault:8200')
    if not data.pki_mount_point.strip("/"):
        raise PluginConfigError("pki_mount_point", "must not be empty")
    ca_cert_path = fill(data.ca_cert_path, "VAULT_CACERT")
    if ca_cert_path:
        _check_certificates(ca_cert_path, "ca_cert_path")
    return VaultSettings(
        vault_addr=vault_addr.rstrip("/"),
        namespace=fill(data.namespace, "VAULT_NAMESPACE"),
        pki_mount_point=data.pki_mount_point.strip("/"),
        ca_cert_path=ca_cert_path,
        insecure_skip_verify=data.insecure_skip_verify,
        auth=_auth(data, fill),
    )


def _auth(data: VaultPluginData, fill: Callable[[str, str], str]) -> VaultAuth:
    blocks = {
        "token_auth": data.token_auth,
        "cert_auth": data.cert_auth,
        "approle_auth": data.approle_auth,
        "k8s_auth": data.k8s_auth,
    }
    present = [name for name, block in blocks.items() if block is not None]
    if not present:
        raise PluginConfigError(None, "one auth method is required: token_auth, cert_auth, approle_auth or k8s_auth")
    if len(present) > 1:
        raise PluginConfigError(None, f"only one auth method may be configured, found {' and '.join(present)}")
    block = blocks[present[0]]
    if isinstance(block, TokenAuth):
        token = fill(block.token, "VAULT_TOKEN")
        if not token:
            raise PluginConfigError("token_auth.token", "is required (or set VAULT_TOKEN)")
        return TokenAuth(token)
    if isinstance(block, CertAuth):
        cert = fill(block.client_cert_path, "VAULT_CLIENT_CERT")
        key = fill(block.client_key_path, "VAULT_CLIENT_KEY")
        if not cert or not key:
            raise PluginConfigError(
                "cert_auth",
                "client_cert_path and client_key_path are both required (or VAULT_CLIENT_CERT and VAULT_CLIENT_KEY)",
            )
        _check_certificates(cert, "cert_auth.client_cert_path")
        _check_readable(key, "cert_auth.client_key_path")
        return CertAuth(_mount(block.cert_auth_mount_point, "cert_auth"), block.cert_auth_role_name, cert, key)
    if isinstance(block, AppRoleAuth):
        role_id = fill(block.approle_id, "VAULT_APPROLE_ID")
        secret_id = fill(block.approle_secret_id, "VAULT_APPROLE_SECRET_ID")
        if not role_id:
            raise PluginConfigError("approle_auth.approle_id", "is required (or set VAULT_APPROLE_ID)")
        if not secret_id:
            raise PluginConfigError("approle_auth.approle_secret_id", "is required (or set VAULT_APPROLE_SECRET_ID)")
        return AppRoleAuth(_mount(block.approle_auth_mount_point, "approle_auth"), role_id, secret_id)
    assert isinstance(block, K8sAuth)
    if not block.k8s_auth_role_name:
        raise PluginConfigError("k8s_auth.k8s_auth_role_name", "is required")
    if not block.token_path:
        raise PluginConfigError("k8s_auth.token_path", "is required")
    return K8sAuth(_mount(block.k8s_auth_mount_point, "k8s_auth"), block.k8s_auth_role_name, block.token_path)


def _mount(value: str, block: str) -> str:
    mount = value.strip("/")
    if not mount:
        raise PluginConfigError(f"{block}.{block}_mount_point", "must not be empty")
    return mount


def _check_readable(path: str, key: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise PluginConfigError(key, f"cannot read {path}: {err.strerror}") from None


def _check_certificates(path: str, key: str) -> None:
    data = _check_readable(path, key)
    try:
        pem_certificates(data)
    except ValueError:
        raise PluginConfigError(key, f"{path} holds no PEM certificate") from None
