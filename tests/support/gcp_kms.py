"""A small Cloud KMS (REST v1) for tests, written from the API reference, that really signs.

It serves what ``google-cloud-kms``'s REST transport asks of the asymmetric-signing part of
the API: CryptoKeys (create, get, list with ``labels.K = V AND ...`` filters (``!=``, ``<``, ``>`` too), patch), their
versions (create, list by state, destroy), public keys, ``asymmetricSign`` (with the CRC32C
checksums Cloud KMS computes) and the CryptoKey IAM policy; plus an OAuth token endpoint so a
service account file whose ``token_uri`` points here authenticates for real. Requests without
the token it issued are refused, as Google refuses them. Keys are real: a signature verifies
with the public key the fake returns.

Faults for the tests: ``fail`` maps a method (``asymmetricSign``, ``create``, ...) to an HTTP
status it answers with; ``corrupt_signatures`` flips a byte of each signature after the
checksum is computed, as a corrupting network would.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any

import google_crc32c
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from google.cloud import kms

from tests.support.google_api import ApiError, GoogleRestFake

__all__ = ["FakeKms"]

_KEY_RING = r"projects/[^/]+/locations/[^/]+/keyRings/[^/]+"


def _enum_name(value: object, enum: Any) -> str:
    """An enum field as its name: the REST transport sends ``enum-encoding=int``."""
    return enum(value).name if isinstance(value, int) else str(value)


def _crc(data: bytes) -> str:
    return str(google_crc32c.value(data))


def _new_private_key(algorithm: str) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    if algorithm == "EC_SIGN_P256_SHA256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "EC_SIGN_P384_SHA384":
        return ec.generate_private_key(ec.SECP384R1())
    size = re.fullmatch(r"RSA_SIGN_PKCS1_(2048|3072|4096)_SHA256", algorithm)
    if size is None:
        raise ValueError(f"algorithm {algorithm} is not served by this fake")
    return rsa.generate_private_key(public_exponent=65537, key_size=int(size.group(1)))


@dataclass
class _Version:
    name: str
    algorithm: str
    private: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    state: str = "ENABLED"

    def json(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "algorithm": self.algorithm, "protectionLevel": "SOFTWARE"}


@dataclass
class _CryptoKey:
    name: str
    algorithm: str
    labels: dict[str, str]
    versions: list[_Version] = field(default_factory=list)
    policy: dict[str, Any] = field(default_factory=dict)

    def json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "purpose": "ASYMMETRIC_SIGN",
            "labels": dict(self.labels),
            "versionTemplate": {"algorithm": self.algorithm, "protectionLevel": "SOFTWARE"},
        }

    def add_version(self) -> _Version:
        version = _Version(f"{self.name}/cryptoKeyVersions/{len(self.versions) + 1}", self.algorithm,
                           _new_private_key(self.algorithm))  # fmt: skip
        self.versions.append(version)
        return version


def _clause_holds(actual: str | None, op: str, value: str) -> bool:
    if op in ("=", "!="):
        return (actual == value) == (op == "=")
    if actual is None:  # a missing label is neither less nor greater than anything
        return False
    # Label values are strings; SPIRE's Unix-time stamps compare as numbers.
    left, right = (int(actual), int(value)) if actual.isdigit() and value.isdigit() else (actual, value)
    return left < right if op == "<" else left > right


def _matches(labels: dict[str, str], query: str) -> bool:
    """``labels.K = V`` / ``!=`` / ``<`` / ``>`` clauses joined by AND, as SPIRE's filters are."""
    if not query:
        return True
    for clause in query.split(" AND "):
        found = re.fullmatch(r"\s*labels\.([\w-]+)\s*(!=|=|<|>)\s*(\S+)\s*", clause)
        if found is None:
            raise ApiError(400, f"unsupported filter clause {clause!r}")
        key, op, value = found.groups()
        if not _clause_holds(labels.get(key), op, value):
            return False
    return True


class FakeKms(GoogleRestFake):
    """The fake Cloud KMS on 127.0.0.1; ``url`` is its ``api_endpoint``."""

    def __init__(self) -> None:
        self.key_rings: set[str] = set()
        self.keys: dict[str, _CryptoKey] = {}
        self.fail: dict[str, int] = {}
        self.corrupt_signatures = False
        super().__init__()

    # The API.

    def dispatch(self, method: str, path: str, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        verb = path.rsplit(":", 1)[1] if ":" in path.rsplit("/", 1)[-1] else ""
        resource = path.removesuffix(f":{verb}") if verb else path
        operation = verb or {"POST": "create", "GET": "get", "PATCH": "patch"}.get(method, method)
        if operation in self.fail:
            raise ApiError(self.fail[operation], f"injected failure of {operation}")
        if found := re.fullmatch(f"({_KEY_RING})/cryptoKeys", resource):
            ring = found.group(1)
            if ring not in self.key_rings:
                raise ApiError(404, f"KeyRing {ring} not found.")
            if method == "POST":
                return self._create_key(ring, query.get("cryptoKeyId", ""), body)
            listed = [key.json() for key in self.keys.values()
                      if key.name.startswith(ring + "/") and _matches(key.labels, query.get("filter", ""))]  # fmt: skip
            return {"cryptoKeys": listed, "totalSize": len(listed)}
        if found := re.fullmatch(f"({_KEY_RING}/cryptoKeys/[^/]+)(/cryptoKeyVersions)?", resource):
            key = self._key(found.group(1))
            if verb == "getIamPolicy":
                return key.policy or {"version": 1, "etag": "ACAB"}
            if verb == "setIamPolicy":
                key.policy = body["policy"]
                return key.policy
            if found.group(2) and method == "POST":
                return key.add_version().json()
            if found.group(2):
                state = re.fullmatch(r"\s*state\s*=\s*(\w+)\s*", query.get("filter", "") or "state = ANY")
                versions = [v.json() for v in key.versions if state is None or state.group(1) in ("ANY", v.state)]
                return {"cryptoKeyVersions": versions, "totalSize": len(versions)}
            if method == "PATCH":
                for mask in query.get("updateMask", "").split(","):
                    if mask == "labels":
                        key.labels = dict(body.get("labels", {}))
                    elif mask == "versionTemplate.algorithm" or mask == "version_template.algorithm":
                        key.algorithm = _enum_name(
                            body["versionTemplate"]["algorithm"], kms.CryptoKeyVersion.CryptoKeyVersionAlgorithm
                        )
                    else:
                        raise ApiError(400, f"unsupported update mask {mask!r}")
            return key.json()
        if found := re.fullmatch(f"({_KEY_RING}/cryptoKeys/[^/]+)/cryptoKeyVersions/(\\d+)(/publicKey)?", resource):
            version = self._version(found.group(1), int(found.group(2)))
            if found.group(3):
                return self._public_key(version)
            if verb == "asymmetricSign":
                return self._sign(version, body)
            if verb == "destroy":
                if version.state != "ENABLED" and version.state != "DISABLED":
                    raise ApiError(412, f"{version.name} is in state {version.state}")
                version.state = "DESTROY_SCHEDULED"
                return version.json() | {"destroyTime": "2030-01-01T00:00:00Z"}
            return version.json()
        raise ApiError(404, f"no such resource {path}")

    def _key(self, name: str) -> _CryptoKey:
        key = self.keys.get(name)
        if key is None:
            raise ApiError(404, f"CryptoKey {name} not found.")
        return key

    def _version(self, key_name: str, number: int) -> _Version:
        versions = self._key(key_name).versions
        if not 1 <= number <= len(versions):
            raise ApiError(404, f"CryptoKeyVersion {key_name}/cryptoKeyVersions/{number} not found.")
        return versions[number - 1]

    def _create_key(self, ring: str, key_id: str, body: dict[str, Any]) -> dict[str, Any]:
        if not re.fullmatch(r"[a-zA-Z0-9_-]{1,63}", key_id):
            raise ApiError(400, f"invalid cryptoKeyId {key_id!r}")
        name = f"{ring}/cryptoKeys/{key_id}"
        if name in self.keys:
            raise ApiError(409, f"CryptoKey {name} already exists.")
        if _enum_name(body.get("purpose"), kms.CryptoKey.CryptoKeyPurpose) != "ASYMMETRIC_SIGN":
            raise ApiError(400, "this fake serves ASYMMETRIC_SIGN keys only")
        algorithm = _enum_name(body["versionTemplate"]["algorithm"], kms.CryptoKeyVersion.CryptoKeyVersionAlgorithm)
        key = _CryptoKey(name, algorithm, dict(body.get("labels", {})))
        key.add_version()
        self.keys[name] = key
        return key.json()

    @staticmethod
    def _public_key(version: _Version) -> dict[str, Any]:
        if version.state != "ENABLED":
            raise ApiError(412, f"{version.name} is not enabled, current state is: {version.state}.")
        pem = version.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return {"pem": pem.decode(), "algorithm": version.algorithm, "pemCrc32c": _crc(pem), "name": version.name}

    def _sign(self, version: _Version, body: dict[str, Any]) -> dict[str, Any]:
        if version.state != "ENABLED":
            raise ApiError(412, f"{version.name} is not enabled, current state is: {version.state}.")
        want = "sha384" if version.algorithm.endswith("SHA384") else "sha256"
        digests = body.get("digest", {})
        if set(digests) != {want}:
            raise ApiError(400, f"The request digest type does not match the key algorithm {version.algorithm}")
        digest = base64.b64decode(digests[want])
        verified = "digestCrc32c" in body and body["digestCrc32c"] == _crc(digest)
        prehashed = utils.Prehashed(hashes.SHA384() if want == "sha384" else hashes.SHA256())
        if isinstance(version.private, ec.EllipticCurvePrivateKey):
            signature = version.private.sign(digest, ec.ECDSA(prehashed))
        else:
            signature = version.private.sign(digest, padding.PKCS1v15(), prehashed)
        checksum = _crc(signature)
        if self.corrupt_signatures:
            signature = bytes([signature[0] ^ 1]) + signature[1:]
        return {"signature": base64.b64encode(signature).decode(), "signatureCrc32c": checksum,
                "verifiedDigestCrc32c": verified, "name": version.name}  # fmt: skip
