"""The built-in KeyManagers ``memory`` and ``disk``, for the server and the agent.

Both hold keys as ``cryptography`` objects in this process; ``disk`` also keeps them in one
JSON file written atomically with mode 0600, and reloads it on start so that a restarted
server keeps its CA (the CA journal matches keys by public key) and a restarted agent keeps
its SVID without attesting again. ``memory`` loses everything on exit: a server then makes a
new CA, an agent must re-attest.

Plugin data (as SPIRE's): server ``disk`` takes ``keys_path`` (the file); agent ``disk``
takes ``directory`` (the file is ``keys.json`` in it). ``memory`` takes nothing.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from pyspire.files import atomic_write, ensure_private_dir
from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import Internal, InvalidArgument, NotFound, PluginConfigError
from pyspire.plugin.keys import HashAlgorithm, KeyType, PublicKey
from pyspire.plugin.markers import hookimpl
from pyspire.plugin.plugin_data import parse_plugin_data

__all__ = ["AgentDiskKeyManager", "AgentMemoryKeyManager", "DiskKeyManager", "MemoryKeyManager", "signs_in_process"]

_log = logging.getLogger(__name__)

_PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_HASHES: Mapping[HashAlgorithm, Callable[[], hashes.HashAlgorithm]] = {
    HashAlgorithm.SHA256: hashes.SHA256,
    HashAlgorithm.SHA384: hashes.SHA384,
    HashAlgorithm.SHA512: hashes.SHA512,
}


def _generate(key_type: KeyType) -> _PrivateKey:
    if key_type is KeyType.EC_P256:
        return ec.generate_private_key(ec.SECP256R1())
    if key_type is KeyType.EC_P384:
        return ec.generate_private_key(ec.SECP384R1())
    size = 2048 if key_type is KeyType.RSA_2048 else 4096
    return rsa.generate_private_key(public_exponent=65537, key_size=size)


def _key_type_of(private_key: object) -> KeyType:
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        curves = {"secp256r1": KeyType.EC_P256, "secp384r1": KeyType.EC_P384}
        if private_key.curve.name in curves:
            return curves[private_key.curve.name]
    elif isinstance(private_key, rsa.RSAPrivateKey) and private_key.key_size in (2048, 4096):
        return KeyType.RSA_2048 if private_key.key_size == 2048 else KeyType.RSA_4096
    raise ValueError(f"unsupported key ({type(private_key).__name__})")


@dataclass(frozen=True)
class _Entry:
    private_key: _PrivateKey
    public: PublicKey


def _entry(key_id: str, private_key: _PrivateKey) -> _Entry:
    der = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _Entry(private_key, PublicKey(key_id, _key_type_of(private_key), der))


def signs_in_process(plugin: object) -> bool:
    """Whether ``plugin`` is the server's ``memory`` or ``disk`` KeyManager itself.

    Those sign with a key in this process and no I/O. A subclass is not taken on trust: it
    may do anything in ``sign_data``.
    """
    return type(plugin) in (MemoryKeyManager, DiskKeyManager)


class _InProcessKeyManager:
    """Keys in a dict guarded by a lock (hooks run in worker threads)."""

    def __init__(self) -> None:
        self._keys: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def _persist(self) -> None:
        """Store the keys durably; the in-memory manager keeps nothing."""

    @hookimpl
    def generate_key(self, key_id: str, key_type: KeyType) -> PublicKey:
        if not key_id:
            raise InvalidArgument("key ID must not be empty")
        entry = _entry(key_id, _generate(key_type))
        with self._lock:
            previous = self._keys.get(key_id)
            self._keys[key_id] = entry
            try:
                self._persist()
            except BaseException:
                # Never report a key that is not stored: undo, then fail.
                if previous is None:
                    del self._keys[key_id]
                else:
                    self._keys[key_id] = previous
                raise
        return entry.public

    @hookimpl
    def get_public_key(self, key_id: str) -> PublicKey | None:
        entry = self._keys.get(key_id)
        return None if entry is None else entry.public

    @hookimpl
    def get_public_keys(self) -> list[PublicKey]:
        return [entry.public for entry in list(self._keys.values())]

    @hookimpl
    def sign_data(self, key_id: str, data: bytes, hash_algorithm: HashAlgorithm, rsa_pss: bool) -> bytes:
        entry = self._keys.get(key_id)
        if entry is None:
            raise NotFound(f'no key with ID "{key_id}"')
        digest = _HASHES[hash_algorithm]()
        key = entry.private_key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(data, ec.ECDSA(digest))
        if rsa_pss:
            pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=padding.PSS.DIGEST_LENGTH)
            return key.sign(data, pss, digest)
        return key.sign(data, padding.PKCS1v15(), digest)

    def _export(self, key_id: str) -> bytes:
        entry = self._keys.get(key_id)
        if entry is None:
            raise NotFound(f'no key with ID "{key_id}"')
        return entry.private_key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


@dataclass(frozen=True)
class _NoConfig:
    """``memory`` takes no plugin data."""


class MemoryKeyManager(_InProcessKeyManager):
    """Server KeyManager ``memory``: keys live and die with the process."""

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        parse_plugin_data(_NoConfig, plugin_data)


class AgentMemoryKeyManager(MemoryKeyManager):
    """Agent KeyManager ``memory``: the agent re-attests after every restart."""

    @hookimpl
    def export_private_key(self, key_id: str) -> bytes:
        return self._export(key_id)


@dataclass(frozen=True)
class _ServerDiskConfig:
    keys_path: Path


@dataclass(frozen=True)
class _AgentDiskConfig:
    directory: Path


class DiskKeyManager(_InProcessKeyManager):
    """Server KeyManager ``disk``: keys in ``keys_path``, reloaded on start."""

    FORMAT_VERSION = 1
    _path: Path

    @hookimpl
    def validate(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        config = parse_plugin_data(_ServerDiskConfig, plugin_data)
        self._check(config.keys_path, "keys_path")

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        config = parse_plugin_data(_ServerDiskConfig, plugin_data)
        self._open(config.keys_path, "keys_path")

    @classmethod
    def _check(cls, path: Path, key: str) -> None:
        """Configure's refusal of an unreadable key file, without creating anything."""
        try:
            cls._load(path)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as err:
            raise PluginConfigError(key, f"cannot load keys from {path}: {err}") from err

    def _open(self, path: Path, key: str) -> None:
        self._path = path
        try:
            ensure_private_dir(path.parent)
        except OSError as err:
            raise PluginConfigError(key, f"cannot create directory {path.parent}: {err.strerror}") from err
        try:
            self._keys = self._load(path)
        except FileNotFoundError:
            self._keys = {}
        except (OSError, ValueError) as err:
            # Never start over on a file we cannot read: that would throw away a CA key.
            raise PluginConfigError(key, f"cannot load keys from {path}: {err}") from err
        mode = stat.S_IMODE(os.stat(path).st_mode) if path.exists() else 0
        if mode & 0o077:
            _log.warning("Key file %s has mode %o; it should be 0600", path, mode)

    @classmethod
    def _load(cls, path: Path) -> dict[str, _Entry]:
        document = json.loads(path.read_bytes())
        if not isinstance(document, dict) or document.get("version") != cls.FORMAT_VERSION:
            raise ValueError(f"not a pyspire key file (expected version {cls.FORMAT_VERSION})")
        keys: dict[str, _Entry] = {}
        for key_id, encoded in document.get("keys", {}).items():
            try:
                private_key = serialization.load_der_private_key(base64.b64decode(encoded), password=None)
            except (ValueError, TypeError, UnsupportedAlgorithm) as err:
                raise ValueError(f'key "{key_id}" is corrupt: {err}') from err
            if not isinstance(private_key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
                raise ValueError(f'key "{key_id}" has an unsupported type')
            keys[key_id] = _entry(key_id, private_key)
        return keys

    def _persist(self) -> None:
        document = {
            "version": self.FORMAT_VERSION,
            "keys": {
                key_id: base64.b64encode(
                    entry.private_key.private_bytes(
                        serialization.Encoding.DER,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    )
                ).decode("ascii")
                for key_id, entry in sorted(self._keys.items())
            },
        }
        try:
            atomic_write(self._path, json.dumps(document, indent=1).encode())
        except OSError as err:
            raise Internal(f"cannot write {self._path}: {err.strerror}") from err


class AgentDiskKeyManager(DiskKeyManager):
    """Agent KeyManager ``disk``: keys in ``<directory>/keys.json``."""

    FILE_NAME = "keys.json"

    @hookimpl
    def validate(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        config = parse_plugin_data(_AgentDiskConfig, plugin_data)
        self._check(config.directory / self.FILE_NAME, "directory")

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        config = parse_plugin_data(_AgentDiskConfig, plugin_data)
        self._open(config.directory / self.FILE_NAME, "directory")

    @hookimpl
    def export_private_key(self, key_id: str) -> bytes:
        return self._export(key_id)
