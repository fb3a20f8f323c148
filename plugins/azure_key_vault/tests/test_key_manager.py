"""azure_key_vault's behaviour against the fake Key Vault: SPIRE's names and tags, rotation, disposal, errors."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.keyvault.keys import KeyClient
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pyspire.plugin import HashAlgorithm, KeyType
from pyspire.plugin.errors import CatalogError
from pyspire.plugin.facades import KeyManager
from pyspire.plugin.logger import plugin_logger
from pyspire.plugin.testing import load_plugin, make_core_config, validate_plugin
from pyspire.spiffe import TrustDomain
from pyspire_azure_common.credentials import credential
from pyspire_azure_key_vault.upkeep import Upkeep

from tests.support.azure_key_vault import APP_ID, APP_SECRET, TENANT_ID, FakeKeyVault
from tests.support.waiting import eventually

_NAME = re.compile(r"spire-key-[0-9a-f-]{36}-(.+)")


class Loaded:
    """Plugins loaded during a test, all closed at its end."""

    def __init__(self, vault: FakeKeyVault, tmp_path: Path) -> None:
        self.vault = vault
        self.tmp_path = tmp_path
        self.handles: list[KeyManager] = []

    def __call__(self, trust_domain: str = "example.org", **keys: Any) -> KeyManager:
        data = self.vault.plugin_data(**keys)
        if "key_identifier_value" not in data:
            data.setdefault("key_identifier_file", str(self.tmp_path / "server_id"))
        core = make_core_config(self.tmp_path / "data", TrustDomain(trust_domain))
        handle = load_plugin("server", "KeyManager", "azure_key_vault", data, core)
        assert isinstance(handle, KeyManager)
        self.handles.append(handle)
        return handle


@pytest.fixture
def load(vault: FakeKeyVault, tmp_path: Path) -> Iterator[Loaded]:
    loaded = Loaded(vault, tmp_path)
    yield loaded
    for handle in loaded.handles:
        handle.close()


def names_for(vault: FakeKeyVault, key_id: str) -> list[str]:
    return [name for name in vault.keys if (m := _NAME.fullmatch(name)) and m.group(1) == key_id]


def test_keys_get_spires_name_tags_and_operations(load: Loaded, vault: FakeKeyVault, tmp_path: Path) -> None:
    made = load().generate_key("x509-CA-A", KeyType.RSA_2048)
    (name,) = names_for(vault, "x509-CA-A")
    key = vault.current(name)
    server_id = (tmp_path / "server_id").read_text()
    assert key.tags == {"spire-server-td": "example.org", "spire-server-id": server_id}
    assert key.operations == ["sign", "verify"]
    assert vault.public_der(name) == made.der
    assert isinstance(key.private, rsa.RSAPrivateKey)
    assert key.private.key_size == 2048


def test_rsa_4096_keys_sign_pss(load: Loaded) -> None:
    made = load().generate_key("big", KeyType.RSA_4096)
    assert made.type is KeyType.RSA_4096
    signature = load().sign_data("big", b"data", HashAlgorithm.SHA512, rsa_pss=True)
    public = made.load()
    assert isinstance(public, rsa.RSAPublicKey)
    pss = padding.PSS(padding.MGF1(hashes.SHA512()), 64)
    public.verify(signature, b"data", pss, hashes.SHA512())


def test_rotation_makes_a_new_key_and_deletes_the_old_one(load: Loaded, vault: FakeKeyVault) -> None:
    manager = load(key_identifier_value="server-a")
    manager.generate_key("x509-CA-A", KeyType.EC_P256)
    (old,) = names_for(vault, "x509-CA-A")
    rotated = manager.generate_key("x509-CA-A", KeyType.EC_P384)
    eventually(lambda: old in vault.deleted)
    (new,) = names_for(vault, "x509-CA-A")
    assert new != old
    assert vault.public_der(new) == rotated.der
    assert load(key_identifier_value="server-a").get_public_key("x509-CA-A") == rotated


def test_servers_with_other_ids_or_domains_do_not_see_each_others_keys(load: Loaded) -> None:
    a_key = load(key_identifier_value="server-a").generate_key("x509-CA-A", KeyType.EC_P256)
    assert not load(key_identifier_value="server-b").get_public_keys()
    assert not load(trust_domain="example.com", key_identifier_value="server-a").get_public_keys()
    assert load(key_identifier_value="server-a").get_public_key("x509-CA-A") == a_key


def test_a_disabled_key_stops_the_server_from_starting(load: Loaded, vault: FakeKeyVault) -> None:
    load(key_identifier_value="server-a").generate_key("x509-CA-A", KeyType.EC_P256)
    (name,) = names_for(vault, "x509-CA-A")
    vault.current(name).enabled = False
    with pytest.raises(CatalogError, match="found disabled SPIRE key"):
        load(key_identifier_value="server-a")


def test_key_vault_errors_are_reported(load: Loaded, vault: FakeKeyVault) -> None:
    manager = load()
    manager.generate_key("k", KeyType.EC_P256)
    vault.fail["sign"] = 403
    with pytest.raises(Exception, match=r"failed to sign: .*refused by the test"):
        manager.sign_data("k", b"data")
    vault.fail["create"] = 403
    with pytest.raises(Exception, match="failed to create key"):
        manager.generate_key("k2", KeyType.EC_P256)
    vault.fail["list"] = 403
    with pytest.raises(CatalogError, match="failed while listing keys"):
        load()


def test_a_wrong_app_secret_is_an_error(load: Loaded) -> None:
    with pytest.raises(CatalogError, match="failed while listing keys"):
        load(app_secret="wrong")


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"key_vault_uri": ""}, 'key "key_vault_uri": configuration is missing the Key Vault URI'),
        ({"key_vault_uri": "http://vault.example"}, 'key "key_vault_uri": .* is not an https:// URL'),
        ({"tenant_id": ""}, 'key "tenant_id": invalid configuration, missing tenant id'),
        ({"subscription_id": ""}, 'key "subscription_id": invalid configuration, missing subscription id'),
        ({"app_id": ""}, 'key "app_id": invalid configuration, missing application id'),
        ({"app_secret": ""}, 'key "app_secret": invalid configuration, missing app secret'),
        ({"use_msi": True}, 'key "use_msi": was removed in SPIRE 1.10'),
        ({"key_identifier_value": "x" * 257}, 'key "key_identifier_value": Key identifier must not be longer'),
        ({"key_identifier_value": "a", "key_identifier_file": "/f"}, "at the same time"),
        ({"key_identifier_file": ""}, "requires a key identifier file or a key identifier value"),
    ],
)
def test_bad_config_is_refused_naming_the_key(
    vault: FakeKeyVault, tmp_path: Path, keys: dict[str, Any], message: str
) -> None:
    data = {**vault.plugin_data(key_identifier_file=str(tmp_path / "id")), **keys}
    data = {key: value for key, value in data.items() if not (key == "key_identifier_file" and value == "")}
    with pytest.raises(CatalogError, match=message):
        validate_plugin("server", "KeyManager", "azure_key_vault", data, make_core_config(tmp_path / "data"))


@pytest.fixture
def client(vault: FakeKeyVault) -> Iterator[KeyClient]:
    login = credential(TENANT_ID, secret=(APP_ID, APP_SECRET), authority=vault.url)
    with KeyClient(vault.url, login) as key_client:
        yield key_client


def test_another_servers_stale_keys_are_disposed_of(load: Loaded, vault: FakeKeyVault, client: KeyClient) -> None:
    load(key_identifier_value="server-a").generate_key("x509-CA-A", KeyType.EC_P256)
    load(key_identifier_value="server-b").generate_key("x509-CA-A", KeyType.EC_P256)
    load(trust_domain="example.org2", key_identifier_value="server-c").generate_key("x509-CA-A", KeyType.EC_P256)
    for versions in vault.keys.values():
        versions[-1].updated -= int(timedelta(days=15).total_seconds())
    stale = next(name for name, v in vault.keys.items() if v[-1].tags["spire-server-id"] == "server-a")
    upkeep = Upkeep(client, "example.org", "server-b", list, plugin_logger("KeyManager", "azure_key_vault"))
    upkeep.start()
    try:
        upkeep.dispose_stale_keys(datetime.now(UTC))
        eventually(lambda: stale in vault.deleted)
    finally:
        upkeep.stop()
    # Only the other server's key in the same trust domain went.
    assert vault.deleted == [stale]


def test_refresh_moves_the_updated_time_of_keys_in_use(load: Loaded, vault: FakeKeyVault, client: KeyClient) -> None:
    load(key_identifier_value="server-a").generate_key("x509-CA-A", KeyType.EC_P256)
    (name,) = names_for(vault, "x509-CA-A")
    key = vault.current(name)
    key.updated -= 3600
    before = key.updated
    in_use = [(name, key.version)]
    Upkeep(
        client, "example.org", "server-a", lambda: in_use, plugin_logger("KeyManager", "azure_key_vault")
    ).refresh_keys()
    assert key.updated > before
    assert key.operations == ["sign", "verify"]
