"""KeyManager ``gcp_kms``: the server's keys are Cloud KMS CryptoKeys; they sign in KMS and never leave it.

Each SPIRE key ID is one CryptoKey in ``key_ring``, named ``spire-key-<UUID>-<key ID>`` and
labelled as SPIRE labels it (``spire-server-td``: SHA-1 of the trust domain name, since label
values allow no dots; ``spire-server-id``; ``spire-active``), so a restarted server, or a SPIRE
server given the same server ID, finds and keeps signing with the same keys. Generating a key
ID again adds a CryptoKeyVersion to its CryptoKey and destroys the version it replaces.

A background ``Upkeep`` (see ``upkeep``) stamps the keys in use and disposes of other servers'
stale ones, as SPIRE does.

Every answer Cloud KMS checksums (public key PEM, signature) is checked: a corrupted answer is
an error, never a key or a signature handed to the CA.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import google.auth
import google_crc32c
import requests
from cryptography.hazmat.primitives import serialization
from google.api_core import exceptions as api_exceptions
from google.api_core.client_options import ClientOptions
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import Credentials
from google.cloud import kms
from google.iam.v1 import iam_policy_pb2, policy_pb2  # type: ignore[import-untyped]
from google.oauth2 import service_account
from google.protobuf import field_mask_pb2, json_format
from pyspire.plugin import (
    CoreConfig,
    HashAlgorithm,
    Internal,
    InvalidArgument,
    KeyType,
    NotFound,
    PluginConfigError,
    PluginLogger,
    PublicKey,
    hookimpl,
    parse_plugin_data,
)
from pyspire.plugin.server_id import read_server_id, server_id_from_file

from pyspire_gcp_kms.config import GcpKmsConfig
from pyspire_gcp_kms.upkeep import Upkeep

__all__ = ["GcpKmsKeyManager"]

_SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
_PREFIX = "spire-key-"
_UUID_LENGTH = 36
_LABEL_TD = "spire-server-td"
_LABEL_SERVER_ID = "spire-server-id"
_LABEL_ACTIVE = "spire-active"
_PUBLIC_KEY_ATTEMPTS = 10

_Algorithm = kms.CryptoKeyVersion.CryptoKeyVersionAlgorithm
# SPIRE's choice: RSA keys sign RSASSA-PKCS1-v1_5 with SHA-256 (what X.509 signing asks for).
_ALGORITHMS: dict[KeyType, int] = {
    KeyType.EC_P256: _Algorithm.EC_SIGN_P256_SHA256,
    KeyType.EC_P384: _Algorithm.EC_SIGN_P384_SHA384,
    KeyType.RSA_2048: _Algorithm.RSA_SIGN_PKCS1_2048_SHA256,
    KeyType.RSA_4096: _Algorithm.RSA_SIGN_PKCS1_4096_SHA256,
}
_KEY_TYPES = {algorithm: key_type for key_type, algorithm in _ALGORITHMS.items()}
_EC_DIGEST = {KeyType.EC_P256: ("sha256", 32), KeyType.EC_P384: ("sha384", 48)}

# The REST transport lets requests' own errors through when Cloud KMS cannot be reached at all.
_GoogleErrors = (api_exceptions.GoogleAPIError, auth_exceptions.GoogleAuthError, requests.RequestException)


@dataclass(frozen=True)
class _Key:
    crypto_key: str
    version: str
    public: PublicKey


def _crc32c(data: bytes) -> int:
    return int(google_crc32c.value(data))


def _digest_for(key_type: KeyType, data: bytes, hash_algorithm: HashAlgorithm, rsa_pss: bool) -> dict[str, bytes]:
    """The ``Digest`` to send for signing ``data``; refuses what the key's algorithm cannot sign.

    A Cloud KMS EC key signs one digest size. ECDSA uses only the leftmost bits of a digest, as
    many as the curve order has (FIPS 186-5 section 6.4.1), so a longer digest cut to that size,
    or a shorter one padded on the left with zero bytes, gives the very signature ECDSA with
    the asked hash gives. PKCS #1 v1.5 names its hash inside the signature, so RSA keys sign
    SHA-256 only; RSASSA-PSS is refused, as SPIRE refuses it.
    """
    digest = hashlib.new(hash_algorithm.value, data).digest()
    if key_type.is_rsa:
        if rsa_pss:
            raise InvalidArgument("the only RSA signature scheme supported is RSASSA-PKCS1-v1_5")
        if hash_algorithm is not HashAlgorithm.SHA256:
            raise InvalidArgument(f"hash algorithm {hash_algorithm.value} not supported for RSA keys (SHA-256 only)")
        return {"sha256": digest}
    field, size = _EC_DIGEST[key_type]
    return {field: digest[:size].rjust(size, b"\x00")}


def _credentials(config: GcpKmsConfig) -> tuple[Credentials, str]:
    """The credentials to call Cloud KMS with, and the service account email they belong to ("" if unknown)."""
    try:
        if config.service_account_file:
            creds = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
                config.service_account_file, scopes=_SCOPES
            )
            return creds, creds.service_account_email
        default, _ = google.auth.default(scopes=_SCOPES)
    except (OSError, ValueError, auth_exceptions.GoogleAuthError) as err:
        raise PluginConfigError("service_account_file", f"failed to load Google credentials: {err}") from None
    email = getattr(default, "service_account_email", "")
    return default, email if isinstance(email, str) and "@" in email else ""


class GcpKmsKeyManager:
    """Server KeyManager ``gcp_kms``."""

    def __init__(self) -> None:
        self._keys: dict[str, _Key] = {}
        self._lock = threading.Lock()
        self._client: kms.KeyManagementServiceClient | None = None
        self._upkeep: Upkeep | None = None

    @hookimpl
    def validate(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        config = parse_plugin_data(GcpKmsConfig, plugin_data)
        config.check()
        config.key_policy()
        if config.key_identifier_file:
            read_server_id(config.key_identifier_file)

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig, logger: PluginLogger) -> None:
        config = parse_plugin_data(GcpKmsConfig, plugin_data)
        config.check()
        self._log = logger
        self._policy = config.key_policy()
        self._key_ring = config.key_ring
        self._server_id = config.key_identifier_value or server_id_from_file(config.key_identifier_file)
        logger.debug("Loaded server ID", extra={"server_id": self._server_id})
        self._td_hash = hashlib.sha1(core.trust_domain.name.encode(), usedforsecurity=False).hexdigest()
        credentials, self._email = _credentials(config)
        self._client = kms.KeyManagementServiceClient(
            credentials=credentials, transport="rest", client_options=ClientOptions(api_endpoint=config.kms_endpoint)
        )
        logger.debug("Fetching keys from Cloud KMS", extra={"key_ring": self._key_ring})
        try:
            keys = self._fetch_keys()
        except _GoogleErrors as err:
            raise Internal(f"failed to list SPIRE Server keys in Cloud KMS: {err}") from None
        self._keys = {key.public.id: key for key in keys}
        for key in keys:
            logger.debug("Cloud KMS key loaded", extra={"crypto_key_version_name": key.version})
        if self._upkeep is not None:
            self._upkeep.stop()
        self._upkeep = Upkeep(
            self._client,
            self._key_ring,
            labels=self._labels(),
            crypto_keys=lambda: [key.crypto_key for key in list(self._keys.values())],
            destroy=self._destroy,
            errors=_GoogleErrors,
            log=logger,
        )
        self._upkeep.start()

    def _kms(self) -> kms.KeyManagementServiceClient:
        if self._client is None:
            raise Internal("not configured")
        return self._client

    def _spire_key_id(self, crypto_key_name: str) -> str | None:
        """The SPIRE key ID in ``.../cryptoKeys/spire-key-<UUID>-<key ID>``."""
        crypto_key_id = crypto_key_name.rsplit("/", 1)[-1]
        if not crypto_key_id.startswith(_PREFIX):
            return None
        rest = crypto_key_id[len(_PREFIX) :]
        if len(rest) < _UUID_LENGTH + 2 or rest[_UUID_LENGTH] != "-":
            return None
        return rest[_UUID_LENGTH + 1 :]

    def _fetch_keys(self) -> list[_Key]:
        """This server's active CryptoKeys, found by their labels, each with its newest enabled version."""
        query = (
            f"labels.{_LABEL_TD} = {self._td_hash} AND labels.{_LABEL_SERVER_ID} = {self._server_id}"
            f" AND labels.{_LABEL_ACTIVE} = true"
        )
        keys = []
        for crypto_key in self._kms().list_crypto_keys(request={"parent": self._key_ring, "filter": query}):
            key_id = self._spire_key_id(crypto_key.name)
            if key_id is None:
                raise Internal(f'could not get SPIRE Key ID from CryptoKey "{crypto_key.name}"')
            versions = list(
                self._kms().list_crypto_key_versions(request={"parent": crypto_key.name, "filter": "state = ENABLED"})
            )
            if not versions:
                continue
            newest = max(versions, key=lambda version: int(version.name.rsplit("/", 1)[-1]))
            key_type = _KEY_TYPES.get(newest.algorithm)
            if key_type is None:
                raise Internal(f'unsupported algorithm {_Algorithm(newest.algorithm).name} of "{newest.name}"')
            keys.append(_Key(crypto_key.name, newest.name, PublicKey(key_id, key_type, self._public_key(newest.name))))
        return keys

    def _public_key(self, version: str) -> bytes:
        """The DER public key of a CryptoKeyVersion, waiting out its generation; checksum verified."""
        for attempt in range(_PUBLIC_KEY_ATTEMPTS):
            try:
                answer = self._kms().get_public_key(request={"name": version})
                break
            except api_exceptions.FailedPrecondition:
                # The version is still PENDING_GENERATION.
                if attempt + 1 == _PUBLIC_KEY_ATTEMPTS:
                    raise
                time.sleep(0.2 * (attempt + 1))
        pem = answer.pem.encode()
        if answer.pem_crc32c is None or _crc32c(pem) != answer.pem_crc32c:
            raise Internal(f'public key of "{version}" corrupted in transit (CRC32C mismatch)')
        public = serialization.load_pem_public_key(pem)
        return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    def _labels(self) -> dict[str, str]:
        return {_LABEL_TD: self._td_hash, _LABEL_SERVER_ID: self._server_id, _LABEL_ACTIVE: "true"}

    def _set_policy(self, crypto_key: str) -> None:
        """Give a new CryptoKey the ``key_policy_file`` policy, or SPIRE's default one.

        A CryptoKey that already has bindings keeps them (SPIRE logs and leaves them).
        """
        existing = self._kms().get_iam_policy(
            request=iam_policy_pb2.GetIamPolicyRequest(resource=crypto_key, options={"requested_policy_version": 3})
        )
        if existing.bindings:
            self._log.warning(
                "The CryptoKey already has a policy. No policy will be set.", extra={"crypto_key_name": crypto_key}
            )
            return
        if self._policy is not None:
            policy = json_format.ParseDict(self._policy, policy_pb2.Policy())
        else:
            if not self._email:
                raise Internal(
                    "failed to get current identity: the email of the authenticated service account is unknown "
                    "(set service_account_file, or key_policy_file to give the policy)"
                )
            policy = policy_pb2.Policy(version=3, etag=existing.etag)
            policy.bindings.add(role="roles/cloudkms.signerVerifier", members=[f"serviceAccount:{self._email}"])
        self._kms().set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(resource=crypto_key, policy=policy))

    @hookimpl
    def generate_key(self, key_id: str, key_type: KeyType) -> PublicKey:
        if not key_id:
            raise InvalidArgument("key id is required")
        with self._lock:
            previous = self._keys.get(key_id)
            try:
                key = self._add_version(previous, key_type) if previous else self._create_key(key_id, key_type)
            except _GoogleErrors as err:
                raise Internal(f"failed to generate key: {err}") from None
            self._keys[key_id] = key
        if previous is not None:
            self._destroy(previous.version)
        return key.public

    def _create_key(self, key_id: str, key_type: KeyType) -> _Key:
        crypto_key = self._kms().create_crypto_key(
            request={
                "parent": self._key_ring,
                "crypto_key_id": f"{_PREFIX}{uuid.uuid4()}-{key_id}",
                "crypto_key": {
                    "purpose": kms.CryptoKey.CryptoKeyPurpose.ASYMMETRIC_SIGN,
                    "version_template": {"algorithm": _ALGORITHMS[key_type]},
                    "labels": self._labels(),
                },
            }
        )
        self._log.debug("CryptoKey created", extra={"crypto_key_name": crypto_key.name})
        self._set_policy(crypto_key.name)
        version = f"{crypto_key.name}/cryptoKeyVersions/1"
        return _Key(crypto_key.name, version, PublicKey(key_id, key_type, self._public_key(version)))

    def _add_version(self, previous: _Key, key_type: KeyType) -> _Key:
        algorithm = _ALGORITHMS[key_type]
        if previous.public.type is not key_type:
            self._kms().update_crypto_key(
                request={
                    "crypto_key": {"name": previous.crypto_key, "version_template": {"algorithm": algorithm}},
                    "update_mask": field_mask_pb2.FieldMask(paths=["version_template.algorithm"]),
                }
            )
        version = self._kms().create_crypto_key_version(
            request={
                "parent": previous.crypto_key,
                "crypto_key_version": {"state": kms.CryptoKeyVersion.CryptoKeyVersionState.ENABLED},
            }
        )
        self._log.debug("CryptoKeyVersion added", extra={"crypto_key_version_name": version.name})
        return _Key(
            previous.crypto_key, version.name, PublicKey(previous.public.id, key_type, self._public_key(version.name))
        )

    def _destroy(self, version: str) -> None:
        """Schedule a replaced CryptoKeyVersion for destruction; a failure is logged, the new key stands."""
        try:
            self._kms().destroy_crypto_key_version(request={"name": version})
            self._log.debug("CryptoKeyVersion scheduled for destruction", extra={"crypto_key_version_name": version})
        except api_exceptions.NotFound:
            self._log.warning("CryptoKeyVersion not found", extra={"crypto_key_version_name": version})
        except _GoogleErrors as err:
            self._log.error(
                "It was not possible to schedule CryptoKeyVersion for destruction",
                extra={"crypto_key_version_name": version, "reason": str(err)},
            )

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
        digest = _digest_for(key.public.type, data, hash_algorithm, rsa_pss)
        try:
            answer = self._kms().asymmetric_sign(
                request={"name": key.version, "digest": digest, "digest_crc32c": _crc32c(next(iter(digest.values())))}
            )
        except _GoogleErrors as err:
            raise Internal(f"failed to sign: {err}") from None
        signature = bytes(answer.signature)
        if answer.signature_crc32c is None or _crc32c(signature) != answer.signature_crc32c:
            raise Internal("error signing: response corrupted in-transit")
        if not answer.verified_digest_crc32c:
            raise Internal("error signing: the digest was corrupted in transit to Cloud KMS")
        return signature

    @hookimpl
    def close(self) -> None:
        if self._upkeep is not None:
            self._upkeep.stop()
            self._upkeep = None
        if self._client is not None:
            self._client.transport.close()  # type: ignore[no-untyped-call]
            self._client = None
