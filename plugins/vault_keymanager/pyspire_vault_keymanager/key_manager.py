"""KeyManager ``hashicorp_vault``: the server's keys are transit keys; they sign in Vault and never leave it.

At configure time the plugin logs in (any of the vault UpstreamAuthority's four auth
methods, renewed the same way), lists the transit mount's keys and keeps those named for
this server (see :mod:`pyspire_vault_keymanager.naming`), so a restarted server, or a SPIRE
server with the same server ID, signs with the same keys. Two keys for one slot mean a
rotation was cut short: the newer is used, the older deleted.

``generate_key`` creates a new non-exportable key (Vault's automatic rotation off: the
server rotates), reads its public key back, and only then replaces the slot's key, whose
deletion is queued. Public keys are cached, so ``get_public_key(s)`` call nobody;
``sign_data`` is one ``sign`` call pinned to the key version whose public key the server
published.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import hvac
import hvac.exceptions
from cryptography.hazmat.primitives import serialization
from pyspire.plugin import (
    CoreConfig,
    HashAlgorithm,
    Internal,
    InvalidArgument,
    KeyType,
    NotFound,
    PermissionDenied,
    PluginLogger,
    PublicKey,
    hookimpl,
)
from pyspire.plugin.server_id import read_server_id
from pyspire_vault_upstream.session import VaultSession

from pyspire_vault_keymanager.config import load_key_manager_settings, server_id
from pyspire_vault_keymanager.deletion import Deleter
from pyspire_vault_keymanager.naming import KeyNames, check_key_id
from pyspire_vault_keymanager.signing import TRANSIT_KEY_TYPES, signing_request

__all__ = ["HashicorpVaultKeyManager"]

_KEY_TYPES = {transit: key_type for key_type, transit in TRANSIT_KEY_TYPES.items()}


@dataclass(frozen=True)
class _Key:
    name: str
    version: int
    created: datetime
    public: PublicKey


def _vault_time(text: str) -> datetime:
    """Vault's RFC 3339 times carry nanoseconds; Python's parser takes microseconds at most."""
    found = re.fullmatch(r"([^.]+)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    if found is None:
        raise ValueError(f'"{text}" is not an RFC 3339 time')
    whole, fraction, zone = found.groups()
    micro = f".{fraction[:6]}" if fraction else ""
    return datetime.fromisoformat(whole + micro + ("+00:00" if zone == "Z" else zone))


class HashicorpVaultKeyManager:
    """Server KeyManager ``hashicorp_vault``."""

    def __init__(self) -> None:
        self._keys: dict[str, _Key] = {}
        self._lock = threading.Lock()
        self._session: VaultSession | None = None
        self._deleter: Deleter | None = None
        self._transit = ""

    @hookimpl
    def validate(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        settings = load_key_manager_settings(plugin_data)
        if settings.key_identifier_file:
            read_server_id(settings.key_identifier_file)

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig, logger: PluginLogger) -> None:
        settings = load_key_manager_settings(plugin_data)
        identifier = server_id(settings)
        logger.debug("Loaded server id", extra={"server_id": identifier})
        if settings.vault.insecure_skip_verify:
            logger.warning("insecure_skip_verify is set: Vault's TLS certificate is not verified")
        self.close()
        self._log = logger
        self._transit = settings.transit_engine_path
        self._names = KeyNames(identifier)
        self._session = VaultSession(settings.vault)
        self._deleter = Deleter(self._delete, logger)
        try:
            self._keys = self._fetch_keys()
        except BaseException:
            self.close()  # a refused start leaves no worker thread or Vault connection behind
            raise

    # --- Vault calls -----------------------------------------------------------------------

    def _call(self, action: str, request: Any) -> Any:
        assert self._session is not None
        try:
            return self._session.call(action, request)
        except PermissionDenied as err:
            raise PermissionDenied(
                f"{err} (the token's policy must allow create, read, update, "
                f'delete and list on "{self._transit}/keys/*" and update on "{self._transit}/sign/*": '
                "see the plugin's README)"
            ) from None

    def _list_names(self) -> list[str]:
        mount = self._transit

        def list_keys(client: hvac.Client) -> Any:
            try:
                return client.secrets.transit.list_keys(mount_point=mount)
            except hvac.exceptions.InvalidPath as err:
                if not err.errors:  # Vault's answer to listing an empty mount: 404 without errors
                    return {"data": {"keys": []}}
                raise

        answer = self._call(f"listing the keys of {mount}/keys", list_keys)
        names = (answer.get("data") or {}).get("keys") if isinstance(answer, dict) else None
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise Internal(f"listing the keys of {mount}/keys: the answer has no list of key names")
        return names

    def _read_key(self, name: str, key_id: str) -> _Key:
        mount = self._transit
        action = f'reading the key "{name}" at {mount}/keys'
        answer = self._call(action, lambda client: client.secrets.transit.read_key(name=name, mount_point=mount))
        data: Any = answer.get("data") if isinstance(answer, dict) else None
        try:
            transit_type = data["type"]
            version = int(data["latest_version"])
            latest = data["keys"][str(version)]
            der = serialization.load_pem_public_key(latest["public_key"].encode()).public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            created = _vault_time(latest["creation_time"])
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            problem = f"{type(err).__name__}: {err}"
            raise Internal(f"{action}: the answer does not describe a signing key ({problem})") from None
        key_type = _KEY_TYPES.get(transit_type) if isinstance(transit_type, str) else None
        if key_type is None:
            raise Internal(f'{action}: unsupported key type "{transit_type}"')
        return _Key(name, version, created, PublicKey(key_id, key_type, der))

    def _delete(self, name: str) -> None:
        mount = self._transit
        self._call(
            f'allowing the deletion of "{name}"',
            lambda client: client.secrets.transit.update_key_configuration(
                name=name, deletion_allowed=True, mount_point=mount
            ),
        )
        self._call(f'deleting "{name}"', lambda client: client.secrets.transit.delete_key(name=name, mount_point=mount))

    def _fetch_keys(self) -> dict[str, _Key]:
        """This server's keys, one per key ID: the newest where a cut-short rotation left two."""
        keys: dict[str, _Key] = {}
        for name in self._list_names():
            key_id = self._names.key_id(name)
            if key_id is None:
                continue
            key = self._read_key(name, key_id)
            kept = keys.get(key_id)
            if kept is not None:
                stale, key = (kept, key) if key.created > kept.created else (key, kept)
                self._log.warning("Stale key found on startup, scheduling for deletion", extra={"key_name": stale.name})
                assert self._deleter is not None
                self._deleter.schedule(stale.name)
            keys[key_id] = key
        for key in keys.values():
            self._log.debug("Key loaded", extra={"key_id": key.public.id, "key_name": key.name})
        return keys

    # --- hooks -----------------------------------------------------------------------------

    @hookimpl
    def generate_key(self, key_id: str, key_type: KeyType) -> PublicKey:
        problem = check_key_id(key_id)
        if problem is not None:
            raise InvalidArgument(problem)
        if self._session is None:
            raise Internal("not configured")
        name = self._names.new_name(key_id)
        mount = self._transit
        self._call(
            f'creating the key "{name}" at {mount}/keys',
            lambda client: client.secrets.transit.create_key(
                name=name,
                key_type=TRANSIT_KEY_TYPES[key_type],
                exportable=False,
                auto_rotate_period="0",
                mount_point=mount,
            ),
        )
        key = self._read_key(name, key_id)
        if key.public.type is not key_type:
            raise Internal(f'Vault made "{name}" a {key.public.type.value} key, not {key_type.value}')
        with self._lock:
            previous = self._keys.get(key_id)
            self._keys[key_id] = key
        if previous is not None and self._deleter is not None:
            self._deleter.schedule(previous.name)
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
        request = signing_request(key.public.type, data, hash_algorithm, rsa_pss)
        mount = self._transit
        action = f'signing with the key "{key.name}" at {mount}/sign'
        answer = self._call(
            action,
            lambda client: client.secrets.transit.sign_data(
                name=key.name,
                hash_input=base64.b64encode(request.digest).decode(),
                key_version=key.version,
                hash_algorithm=request.hash_algorithm,
                prehashed=True,
                signature_algorithm=request.signature_algorithm,
                marshaling_algorithm="asn1",
                salt_length=request.salt_length,
                mount_point=mount,
            ),
        )
        signature = (answer.get("data") or {}).get("signature") if isinstance(answer, dict) else None
        prefix = f"vault:v{key.version}:"
        if not isinstance(signature, str) or not signature.startswith(prefix):
            raise Internal(f"{action}: the answer has no signature of key version {key.version}")
        try:
            return base64.b64decode(signature[len(prefix) :], validate=True)
        except ValueError:
            raise Internal(f"{action}: the signature is not base64") from None

    @hookimpl
    def close(self) -> None:
        if self._deleter is not None:
            self._deleter.stop()
            self._deleter = None
        if self._session is not None:
            self._session.close()
            self._session = None
