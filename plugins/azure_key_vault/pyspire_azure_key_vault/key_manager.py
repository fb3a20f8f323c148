"""KeyManager ``azure_key_vault``: the server's keys are Key Vault keys; they sign in Key Vault and never leave it.

Each SPIRE key ID is one key in the vault of ``key_vault_uri``, named
``spire-key-<UUID>-<key ID>`` and tagged as SPIRE tags it (``spire-server-td``: the trust
domain name; ``spire-server-id``: the server ID), so a restarted server, or a SPIRE server
given the same server ID, finds and keeps signing with the same keys. Generating a key ID
again creates a new key (a new UUID) and deletes the one it replaces (see :mod:`.upkeep`).

The server ID is ``key_identifier_value``, or the UUID kept in ``key_identifier_file``. Key
Vault is reached with the app registration's secret (``tenant_id``, ``app_id``,
``app_secret``, ``subscription_id``), or Azure's default credential chain.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import AzureError
from azure.keyvault.keys import KeyClient, KeyVaultKey
from azure.keyvault.keys.crypto import CryptographyClient
from pyspire.plugin import (
    CoreConfig,
    FailedPrecondition,
    HashAlgorithm,
    Internal,
    InvalidArgument,
    NotFound,
    PluginLogger,
    PublicKey,
    hookimpl,
    parse_plugin_data,
)
from pyspire.plugin import KeyType as SpireKeyType
from pyspire.plugin.server_id import read_server_id, server_id_from_file
from pyspire_azure_common.credentials import credential, environment_authority

from pyspire_azure_key_vault.config import AzureKeyVaultConfig
from pyspire_azure_key_vault.keys import (
    create_key_arguments,
    der_signature,
    jwk_field,
    key_type_of,
    public_key_der,
    signing_request,
)
from pyspire_azure_key_vault.upkeep import KEY_OPERATIONS, TAG_SERVER_ID, TAG_TRUST_DOMAIN, KeyVersion, Upkeep

__all__ = ["AzureKeyVaultKeyManager"]

_PREFIX = "spire-key-"
_UUID_LENGTH = 36


@dataclass(frozen=True)
class _Key:
    name: str
    version: str
    public: PublicKey
    signer: CryptographyClient


def _spire_key_id(name: str) -> str | None:
    """The SPIRE key ID in ``spire-key-<UUID>-<key ID>``, or None for a name not of that form."""
    start = len(_PREFIX) + _UUID_LENGTH + 1
    if not name.startswith(_PREFIX) or len(name) <= start:
        return None
    return name[start:]


class AzureKeyVaultKeyManager:
    """Server KeyManager ``azure_key_vault``."""

    def __init__(self) -> None:
        self._keys: dict[str, _Key] = {}
        self._lock = threading.Lock()
        self._client: KeyClient | None = None
        self._upkeep: Upkeep | None = None

    @hookimpl
    def validate(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        config = parse_plugin_data(AzureKeyVaultConfig, plugin_data)
        config.check()
        if config.key_identifier_file:
            read_server_id(config.key_identifier_file)

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig, logger: PluginLogger) -> None:
        config = parse_plugin_data(AzureKeyVaultConfig, plugin_data)
        config.check()
        self._log = logger
        server_id = config.key_identifier_value or server_id_from_file(config.key_identifier_file)
        logger.debug("Loaded server id", extra={"server_id": server_id})
        self._tags = {TAG_TRUST_DOMAIN: core.trust_domain.name, TAG_SERVER_ID: server_id}
        if config.app_credentials:
            login = credential(
                config.tenant_id, secret=(config.app_id, config.app_secret), authority=environment_authority()
            )
        else:
            login = credential(None, authority=environment_authority())
        self.close()
        self._client = KeyClient(config.key_vault_uri, login)
        logger.debug("Fetching keys from Azure Key Vault", extra={"key_vault_uri": config.key_vault_uri})
        try:
            keys = self._fetch_keys()
        except AzureError as err:
            raise Internal(f"failed while listing keys: {err}") from None
        self._keys = {key.public.id: key for key in keys}
        for key in keys:
            logger.debug("Key loaded", extra={"key_name": key.name, "key_version": key.version})
        self._upkeep = Upkeep(self._client, core.trust_domain.name, server_id, self._in_use, logger)
        self._upkeep.start()

    def _vault(self) -> KeyClient:
        if self._client is None:
            raise Internal("not configured")
        return self._client

    def _in_use(self) -> list[KeyVersion]:
        return [(key.name, key.version) for key in list(self._keys.values())]

    def _fetch_keys(self) -> list[_Key]:
        """This server's keys, found by their tags, each at its current version."""
        keys = []
        for item in self._vault().list_properties_of_keys():
            tags = item.tags or {}
            if tags.get(TAG_TRUST_DOMAIN) != self._tags[TAG_TRUST_DOMAIN]:
                continue
            if tags.get(TAG_SERVER_ID) != self._tags[TAG_SERVER_ID]:
                continue
            key_id = _spire_key_id(item.name or "")
            if key_id is None:
                self._log.warning("Could not get SPIRE Key ID from key", extra={"key_name": item.name})
                continue
            bundle = self._vault().get_key(item.name or "")
            if not bundle.properties.enabled:
                # Something outside the plugin disabled the key: refuse to start rather than
                # silently replace a CA key, so it can be undone.
                raise FailedPrecondition(f'found disabled SPIRE key: "{bundle.id}", name: "{bundle.name}"')
            keys.append(self._entry(key_id, bundle))
        return keys

    def _entry(self, key_id: str, bundle: KeyVaultKey) -> _Key:
        key_type = key_type_of(bundle.key)
        if key_type is None:
            raise Internal(f'unsupported key spec of key "{bundle.id}": {jwk_field(bundle.key, "kty")}')
        version = bundle.properties.version or ""
        public = PublicKey(key_id, key_type, public_key_der(bundle.key, key_type))
        signer = self._vault().get_cryptography_client(bundle.name, key_version=version)
        return _Key(bundle.name, version, public, signer)

    @hookimpl
    def generate_key(self, key_id: str, key_type: SpireKeyType) -> PublicKey:
        if not key_id:
            raise InvalidArgument("key id is required")
        with self._lock:
            try:
                bundle = self._vault().create_key(
                    f"{_PREFIX}{uuid.uuid4()}-{key_id}",
                    key_operations=KEY_OPERATIONS,
                    tags=self._tags,
                    **create_key_arguments(key_type),  # type: ignore[arg-type]
                )
            except AzureError as err:
                raise Internal(f"failed to create key: {err}") from None
            self._log.debug("Key created", extra={"key_id": bundle.id, "algorithm": jwk_field(bundle.key, "kty")})
            key = self._entry(key_id, bundle)
            previous = self._keys.get(key_id)
            self._keys[key_id] = key
        if previous is not None and self._upkeep is not None:
            self._upkeep.schedule_deletion(previous.name)
        return key.public

    @hookimpl
    def get_public_key(self, key_id: str) -> PublicKey | None:
        key = self._keys.get(key_id)
        return None if key is None else key.public

    @hookimpl
    def get_public_keys(self) -> list[PublicKey]:
        return [key.public for key in list(self._keys.values())]

    @hookimpl
    def sign_data(self, key_id: str, data: bytes, hash_algorithm: HashAlgorithm, rsa_pss: bool) -> bytes:
        key = self._keys.get(key_id)
        if key is None:
            raise NotFound(f'key "{key_id}" not found')
        algorithm, digest = signing_request(key.public.type, data, hash_algorithm, rsa_pss)
        try:
            answer = key.signer.sign(algorithm, digest)  # type: ignore[arg-type]
        except AzureError as err:
            raise Internal(f"failed to sign: {err}") from None
        return der_signature(key.public.type, answer.signature)

    @hookimpl
    def close(self) -> None:
        if self._upkeep is not None:
            self._upkeep.stop()
            self._upkeep = None
        if self._client is not None:
            self._client.close()
            self._client = None
