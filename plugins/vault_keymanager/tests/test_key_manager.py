"""hashicorp_vault against a real OpenBao server: SPIRE's key names, restarts, rotation, refusals."""

from __future__ import annotations

import stat
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from pyspire.plugin import KeyType
from pyspire.plugin.errors import CatalogError
from pyspire.plugin.facades import KeyManager
from pyspire.plugin.testing import load_plugin, make_core_config, validate_plugin

from plugins.vault_keymanager.tests.conftest import Transit
from tests.support.free_port import free_port


class Loaded:
    """Plugins loaded during a test, all closed at its end."""

    def __init__(self, transit: Transit, tmp_path: Path) -> None:
        self.transit = transit
        self.tmp_path = tmp_path
        self.handles: list[KeyManager] = []

    def __call__(self, **plugin_data: Any) -> KeyManager:
        handle = load_plugin(
            "server",
            "KeyManager",
            "hashicorp_vault",
            self.transit.plugin_data(self.tmp_path, **plugin_data),
            make_core_config(self.tmp_path / "data"),
        )
        assert isinstance(handle, KeyManager)
        self.handles.append(handle)
        return handle


@pytest.fixture
def load(transit: Transit, tmp_path: Path) -> Iterator[Loaded]:
    loaded = Loaded(transit, tmp_path)
    yield loaded
    for handle in loaded.handles:
        handle.close()


def verify(public_der: bytes, signature: bytes, data: bytes, pss: bool = False) -> None:
    key = serialization.load_der_public_key(public_der)
    if isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    else:
        assert isinstance(key, rsa.RSAPublicKey)
        pad = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH) if pss else padding.PKCS1v15()
        key.verify(signature, data, pad, hashes.SHA256())


def spki(pem: bytes) -> bytes:
    return serialization.load_pem_public_key(pem).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.slow
def test_rsa_4096_keys_sign_verifiably(load: Loaded) -> None:
    manager = load()
    public = manager.generate_key("rsa", KeyType.RSA_4096)
    assert serialization.load_der_public_key(public.der).key_size == 4096  # type: ignore[union-attr]
    for pss in (False, True):
        verify(public.der, manager.sign_data("rsa", b"message", rsa_pss=pss), b"message", pss)


def test_keys_carry_spire_names_and_the_public_key_vault_holds(load: Loaded, transit: Transit, tmp_path: Path) -> None:
    manager = load()
    public = manager.generate_key("x509-CA-A", KeyType.EC_P256)
    server_id = (tmp_path / "server_id").read_text()
    assert str(uuid.UUID(server_id)) == server_id
    assert stat.S_IMODE((tmp_path / "server_id").stat().st_mode) == 0o600
    (name,) = transit.names()
    prefix, suffix = f"{server_id}-", "-x509-CA-A"
    assert name.startswith(prefix)
    assert name.endswith(suffix)
    uuid.UUID(name[len(prefix) : -len(suffix)])
    assert spki(transit.public_pem(name)) == public.der
    key = transit.admin().secrets.transit.read_key(name=name, mount_point=transit.mount)["data"]
    assert key["type"] == "ecdsa-p256"
    assert key["exportable"] is False


def test_a_restarted_plugin_finds_every_key_again(load: Loaded) -> None:
    made = (
        {
            key_type: load.handles[0].generate_key(f"slot-{key_type.value}", key_type)
            for key_type in (KeyType.EC_P256, KeyType.EC_P384, KeyType.RSA_2048)
        }
        if load()
        else {}
    )
    load.handles[0].close()
    reloaded = load()
    assert set(reloaded.get_public_keys()) == set(made.values())
    for public in made.values():
        assert reloaded.get_public_key(public.id) == public
        verify(public.der, reloaded.sign_data(public.id, b"after restart"), b"after restart")


def test_rotation_replaces_the_key_and_deletes_the_old_one_in_vault(load: Loaded, transit: Transit) -> None:
    manager = load()
    first = manager.generate_key("JWT-Signer-A", KeyType.EC_P256)
    (old_name,) = transit.names()
    second = manager.generate_key("JWT-Signer-A", KeyType.EC_P384)
    assert second.type is KeyType.EC_P384
    assert second.der != first.der
    manager.close()  # waits for the queued deletion to finish
    (new_name,) = transit.names()
    assert new_name != old_name
    assert new_name.endswith("-JWT-Signer-A")
    assert load().get_public_key("JWT-Signer-A") == second


def test_a_rotation_cut_short_keeps_the_newer_key_and_deletes_the_older(load: Loaded, transit: Transit) -> None:
    server_id = str(uuid.uuid4())
    older = f"{server_id}-{uuid.uuid4()}-x509-CA-B"
    newer = f"{server_id}-{uuid.uuid4()}-x509-CA-B"
    for name in (older, newer):
        transit.admin().secrets.transit.create_key(name=name, key_type="ecdsa-p256", mount_point=transit.mount)
    manager = load(key_identifier_value=server_id)
    assert manager.get_public_key("x509-CA-B").der == spki(transit.public_pem(newer))  # type: ignore[union-attr]
    manager.close()
    assert transit.names() == [newer]


def test_other_servers_and_other_keys_in_the_mount_are_left_alone(load: Loaded, transit: Transit) -> None:
    admin = transit.admin().secrets.transit
    others = [f"{uuid.uuid4()}-{uuid.uuid4()}-x509-CA-A", "unrelated", "server-a-not-a-uuid-x509-CA-A"]
    for name in others:
        admin.create_key(name=name, key_type="ecdsa-p256", mount_point=transit.mount)
    manager = load(key_identifier_value="server-a")
    assert list(manager.get_public_keys()) == []
    manager.generate_key("x509-CA-A", KeyType.EC_P256)
    manager.generate_key("x509-CA-A", KeyType.EC_P256)
    manager.close()
    assert set(others) <= set(transit.names())
    assert len(transit.names()) == len(others) + 1


def test_the_transit_path_comes_from_the_environment_when_the_file_has_none(
    load: Loaded, transit: Transit, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("VAULT_TRANSIT_ENGINE_PATH", transit.mount)
    data = transit.plugin_data(tmp_path)
    del data["transit_engine_path"]
    handle = load_plugin("server", "KeyManager", "hashicorp_vault", data, make_core_config(tmp_path / "data"))
    try:
        handle.generate_key("a", KeyType.EC_P256)  # type: ignore[attr-defined]
    finally:
        handle.close()
    assert len(transit.names()) == 1


def test_approle_login_signs_like_a_token(load: Loaded, transit: Transit) -> None:
    admin = transit.admin()
    mount = f"approle-{transit.name}"
    admin.sys.enable_auth_method("approle", path=mount)
    admin.write(f"auth/{mount}/role/spire", token_policies=transit.policy, token_no_default_policy=True)
    role_id = admin.read(f"auth/{mount}/role/spire/role-id")["data"]["role_id"]
    secret_id = admin.write(f"auth/{mount}/role/spire/secret-id")["data"]["secret_id"]
    manager = load(
        token_auth=None,
        approle_auth={"approle_auth_mount_point": mount, "approle_id": role_id, "approle_secret_id": secret_id},
    )
    public = manager.generate_key("a", KeyType.EC_P256)
    verify(public.der, manager.sign_data("a", b"data"), b"data")


def test_a_token_without_transit_permissions_is_refused_at_start(transit: Transit, tmp_path: Path) -> None:
    transit.admin().sys.create_or_update_policy(
        f"lookup-{transit.name}", 'path "auth/token/lookup-self" { capabilities = ["read"] }'
    )
    data = transit.plugin_data(tmp_path, token_auth={"token": transit.token([f"lookup-{transit.name}"])})
    with pytest.raises(CatalogError) as raised:
        load_plugin("server", "KeyManager", "hashicorp_vault", data, make_core_config(tmp_path / "data"))
    message = str(raised.value)
    assert f"listing the keys of {transit.mount}/keys: refused: " in message
    assert "permission denied" in message
    assert f'"{transit.mount}/sign/*"' in message
    assert "\n" not in message


def test_a_refused_start_leaves_no_deletion_worker_running(transit: Transit, tmp_path: Path) -> None:
    transit.admin().sys.create_or_update_policy(
        f"lookup-{transit.name}", 'path "auth/token/lookup-self" { capabilities = ["read"] }'
    )
    data = transit.plugin_data(tmp_path, token_auth={"token": transit.token([f"lookup-{transit.name}"])})

    def workers() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "hashicorp_vault-deletion"}

    before = workers()
    with pytest.raises(CatalogError):
        load_plugin("server", "KeyManager", "hashicorp_vault", data, make_core_config(tmp_path / "data"))
    assert workers() <= before


def test_unreachable_vault_is_one_clear_error(transit: Transit, tmp_path: Path) -> None:
    data = transit.plugin_data(tmp_path, vault_addr=f"https://127.0.0.1:{free_port()}")
    with pytest.raises(CatalogError, match=r"keymanager\(hashicorp_vault\): logging in \(token_auth\): cannot reach"):
        load_plugin("server", "KeyManager", "hashicorp_vault", data, make_core_config(tmp_path / "data"))


def test_bad_key_ids_are_refused(load: Loaded) -> None:
    manager = load()
    for bad in ("", "a/b", "ends-", "spaced id"):
        with pytest.raises(Exception, match="key id"):
            manager.generate_key(bad, KeyType.EC_P256)


@pytest.mark.parametrize(
    ("plugin_data", "refusal"),
    [
        ({"vault_addr": "https://vault:8200", "token_auth": {"token": "t"}}, 'key "key_identifier_file": one of'),
        (
            {"key_identifier_value": "a", "key_identifier_file": "/x", "token_auth": {"token": "t"}},
            'key "key_identifier_value": only one of',
        ),
        ({"key_identifier_value": "a/b", "token_auth": {"token": "t"}}, r'key "key_identifier_value": .* cannot start'),
        (
            {"key_identifier_value": "a", "transit_engine_path": "/", "token_auth": {"token": "t"}},
            "transit_engine_path",
        ),
        ({"key_identifier_value": "a", "token_auth": {"token": "t"}}, 'key "vault_addr": is required'),
        (
            {"key_identifier_value": "a", "vault_addr": "https://v", "token_auth": {}},
            'key "token_auth.token": is required',
        ),
        ({"key_identifier_value": "a", "vault_addr": "https://v"}, "one auth method is required"),
        (
            {
                "key_identifier_value": "a",
                "vault_addr": "https://v",
                "token_auth": {"token": "t"},
                "pki_mount_point": "p",
            },
            "pki_mount_point",
        ),
    ],
)
def test_configuration_errors_name_the_key(
    plugin_data: dict[str, Any], refusal: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("VAULT_ADDR", "VAULT_TOKEN", "VAULT_TRANSIT_ENGINE_PATH"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(CatalogError, match=refusal):
        validate_plugin("server", "KeyManager", "hashicorp_vault", plugin_data, make_core_config(tmp_path))


def test_a_key_identifier_file_without_a_uuid_is_refused(tmp_path: Path) -> None:
    (tmp_path / "server_id").write_text("not a uuid")
    data = {"key_identifier_file": str(tmp_path / "server_id"), "vault_addr": "https://v", "token_auth": {"token": "t"}}
    with pytest.raises(CatalogError, match=r'key "key_identifier_file": .* does not hold a server ID'):
        validate_plugin("server", "KeyManager", "hashicorp_vault", data, make_core_config(tmp_path))
