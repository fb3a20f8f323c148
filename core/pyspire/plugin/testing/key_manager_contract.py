"""The KeyManager contract: what the server and agent rely on from every key manager."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import InvalidArgument, NotFound, Unimplemented
from pyspire.plugin.facades import KeyManager
from pyspire.plugin.keys import HashAlgorithm, KeyType
from pyspire.plugin.testing.base import PluginContract, assert_deliberate
from pyspire.plugin.types import Role

__all__ = ["KeyManagerContract", "PersistentKeyManagerContract"]

_HASHES: dict[HashAlgorithm, Callable[[], hashes.HashAlgorithm]] = {
    HashAlgorithm.SHA256: hashes.SHA256,
    HashAlgorithm.SHA384: hashes.SHA384,
    HashAlgorithm.SHA512: hashes.SHA512,
}


def _verify(public_der: bytes, signature: bytes, data: bytes, hash_algorithm: HashAlgorithm, pss: bool) -> None:
    key = serialization.load_der_public_key(public_der)
    digest = _HASHES[hash_algorithm]()
    if isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(signature, data, ec.ECDSA(digest))
    elif isinstance(key, rsa.RSAPublicKey):
        pad = padding.PSS(padding.MGF1(digest), padding.PSS.DIGEST_LENGTH) if pss else padding.PKCS1v15()
        key.verify(signature, data, pad, digest)
    else:
        raise AssertionError(f"unexpected key type {type(key).__name__}")


class KeyManagerContract(PluginContract):
    """Subclass as ``TestMyKeyManager(KeyManagerContract)`` and set the class attributes.

    Override the ``plugin_data`` fixture to configure the plugin; set ``role = "agent"`` for
    an agent key manager. A key manager that keeps keys across restarts subclasses
    :class:`PersistentKeyManagerContract` instead.
    """

    role: ClassVar[Role] = "server"
    plugin_type: ClassVar[str] = "KeyManager"
    persistent: ClassVar[bool] = False
    """Whether keys outlive the plugin instance (set by PersistentKeyManagerContract)."""
    key_types: ClassVar[Sequence[KeyType]] = (KeyType.EC_P256, KeyType.EC_P384, KeyType.RSA_2048)
    """RSA-4096 generation takes seconds; add it in a subclass when it matters."""

    def load(self, plugin_data: Mapping[str, Any], core_config: CoreConfig) -> KeyManager:
        """Load the plugin through the catalog."""
        handle = super().load(plugin_data, core_config)
        assert isinstance(handle, KeyManager)
        return handle

    @pytest.fixture
    def key_manager(self, plugin_data: Mapping[str, Any], core_config: CoreConfig) -> Iterator[KeyManager]:
        """The configured plugin; closed after the test."""
        handle = self.load(plugin_data, core_config)
        yield handle
        handle.close()

    def test_generated_keys_sign_verifiably(self, key_manager: KeyManager) -> None:
        for key_type in self.key_types:
            public = key_manager.generate_key(f"key-{key_type.value}", key_type)
            assert public.type is key_type
            assert public.id == f"key-{key_type.value}"
            for hash_algorithm in HashAlgorithm:
                for pss in (False, True) if key_type.is_rsa else (False,):
                    data = os.urandom(64)
                    signature = key_manager.sign_data(public.id, data, hash_algorithm, rsa_pss=pss)
                    _verify(public.der, signature, data, hash_algorithm, pss)
                    with pytest.raises(InvalidSignature):
                        _verify(public.der, signature, data + b"x", hash_algorithm, pss)

    def test_public_key_matches_generated_key(self, key_manager: KeyManager) -> None:
        generated = key_manager.generate_key("a", KeyType.EC_P256)
        assert key_manager.get_public_key("a") == generated
        assert len(generated.fingerprint) == 64

    def test_unknown_key_is_none(self, key_manager: KeyManager) -> None:
        assert key_manager.get_public_key("never-generated") is None

    def test_signing_with_unknown_key_is_not_found(self, key_manager: KeyManager) -> None:
        with pytest.raises(NotFound, match="never-generated") as raised:
            key_manager.sign_data("never-generated", b"data")
        assert_deliberate(raised.value, key_manager)

    def test_empty_key_id_is_refused(self, key_manager: KeyManager) -> None:
        with pytest.raises(InvalidArgument):
            key_manager.generate_key("", KeyType.EC_P256)

    def test_generating_again_replaces_the_key(self, key_manager: KeyManager) -> None:
        first = key_manager.generate_key("slot", KeyType.EC_P256)
        second = key_manager.generate_key("slot", KeyType.EC_P256)
        assert first.der != second.der
        assert key_manager.get_public_key("slot") == second
        data = b"rotated"
        _verify(second.der, key_manager.sign_data("slot", data), data, HashAlgorithm.SHA256, False)

    def test_all_keys_are_listed(self, key_manager: KeyManager) -> None:
        made = {key_manager.generate_key(f"k{i}", KeyType.EC_P256) for i in range(3)}
        assert made <= set(key_manager.get_public_keys())

    def test_concurrent_generation_keeps_every_key(
        self, key_manager: KeyManager, plugin_data: Mapping[str, Any], core_config: CoreConfig
    ) -> None:
        threads = [
            threading.Thread(target=key_manager.generate_key, args=(f"t{i}", KeyType.EC_P256)) for i in range(16)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        expected = {f"t{i}" for i in range(16)}
        assert expected <= {key.id for key in key_manager.get_public_keys()}
        if self.persistent:
            reloaded = self.load(plugin_data, core_config)
            assert expected <= {key.id for key in reloaded.get_public_keys()}

    def test_private_keys_are_exported_only_by_agent_key_managers(self, key_manager: KeyManager) -> None:
        key_manager.generate_key("svid", KeyType.EC_P256)
        if self.role == "server":
            with pytest.raises(Unimplemented):
                key_manager.export_private_key("svid")
        else:
            exported = serialization.load_der_private_key(key_manager.export_private_key("svid"), password=None)
            public = exported.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            assert public == key_manager.get_public_key("svid").der  # type: ignore[union-attr]


class PersistentKeyManagerContract(KeyManagerContract):
    """The contract plus persistence: keys survive a reload and their files are private.

    Override ``key_files`` to list the files that hold keys (they must be mode 0600).
    """

    persistent: ClassVar[bool] = True

    def key_files(self, plugin_data: Mapping[str, Any]) -> list[Path]:
        """Files the key manager keeps keys in (for the permission check)."""
        raise NotImplementedError("a persistent key manager must say which files hold its keys")

    def test_keys_survive_a_restart(
        self, key_manager: KeyManager, plugin_data: Mapping[str, Any], core_config: CoreConfig
    ) -> None:
        before = key_manager.generate_key("kept", KeyType.EC_P256)
        reloaded = self.load(plugin_data, core_config)
        assert reloaded.get_public_key("kept") == before
        data = b"after restart"
        _verify(before.der, reloaded.sign_data("kept", data), data, HashAlgorithm.SHA256, False)

    def test_key_files_are_private(self, key_manager: KeyManager, plugin_data: Mapping[str, Any]) -> None:
        key_manager.generate_key("private", KeyType.EC_P256)
        files = self.key_files(plugin_data)
        assert files, "a persistent key manager must say which files hold its keys"
        for path in files:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, f"{path} is not 0600"
