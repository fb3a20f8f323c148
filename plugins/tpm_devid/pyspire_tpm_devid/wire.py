"""The messages of SPIRE's ``tpm_devid`` exchange: JSON objects of base64 byte strings.

SPIRE marshals Go structs with ``encoding/json``, so every ``[]byte`` is standard base64
(padded) and field names are the Go field names. Either half of pyspire therefore talks to
SPIRE's other half. Three messages:

- the attestation payload (agent to server): the DevID chain, the DevID, EK and AK public
  areas, the EK certificate, and the AK's certification of the DevID key;
- the challenge (server to agent): a nonce for the DevID key to sign, and a credential
  wrapped for the AK under the EK;
- the answer (agent to server): the nonce's signature and the unwrapped credential.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AttestationData",
    "Challenge",
    "ChallengeAnswer",
    "WireError",
    "read_answer",
    "read_attestation_data",
    "read_challenge",
]


class WireError(ValueError):
    """A message is not the JSON object its step expects."""


@dataclass(frozen=True)
class AttestationData:
    devid_chain: tuple[bytes, ...]
    devid_public: bytes
    ek_certificate: bytes
    ek_public: bytes
    ak_public: bytes
    certify_info: bytes
    certify_signature: bytes

    def encode(self) -> bytes:
        return _dump(
            {
                "DevIDCert": [_b64(item) for item in self.devid_chain],
                "DevIDPub": _b64(self.devid_public),
                "EKCert": _b64(self.ek_certificate),
                "EKPub": _b64(self.ek_public),
                "AKPub": _b64(self.ak_public),
                "CertifiedDevID": _b64(self.certify_info),
                "CertificationSignature": _b64(self.certify_signature),
            }
        )


@dataclass(frozen=True)
class Challenge:
    nonce: bytes
    credential: bytes
    secret: bytes

    def encode(self) -> bytes:
        return _dump(
            {
                "DevID": _b64(self.nonce),
                "CredActivation": {"Credential": _b64(self.credential), "Secret": _b64(self.secret)},
            }
        )


@dataclass(frozen=True)
class ChallengeAnswer:
    nonce_signature: bytes
    credential: bytes

    def encode(self) -> bytes:
        return _dump({"DevID": _b64(self.nonce_signature), "CredActivation": _b64(self.credential)})


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _dump(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


def _load(data: bytes) -> dict[str, Any]:
    try:
        message = json.loads(data)
    except (ValueError, RecursionError) as err:
        raise WireError(f"not JSON: {err}") from None
    if not isinstance(message, dict):
        raise WireError("not a JSON object")
    return message


def _bytes(message: dict[str, Any], key: str) -> bytes:
    """A base64 field; absent or null is empty, as Go decodes a nil slice."""
    value = message.get(key)
    if value is None:
        return b""
    if not isinstance(value, str):
        raise WireError(f"{key} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise WireError(f"{key} is not valid base64") from None


def read_attestation_data(data: bytes) -> AttestationData:
    message = _load(data)
    chain = message.get("DevIDCert")
    if chain is None:
        chain = []
    if not isinstance(chain, list):
        raise WireError("DevIDCert is not a list")
    certificates = tuple(_bytes({"DevIDCert": item}, "DevIDCert") for item in chain)
    return AttestationData(
        certificates,
        _bytes(message, "DevIDPub"),
        _bytes(message, "EKCert"),
        _bytes(message, "EKPub"),
        _bytes(message, "AKPub"),
        _bytes(message, "CertifiedDevID"),
        _bytes(message, "CertificationSignature"),
    )


def read_challenge(data: bytes) -> Challenge | None:
    """The server's challenge; None for its credential part when the server sent none."""
    message = _load(data)
    activation = message.get("CredActivation")
    if activation is None:
        return None
    if not isinstance(activation, dict):
        raise WireError("CredActivation is not an object")
    return Challenge(_bytes(message, "DevID"), _bytes(activation, "Credential"), _bytes(activation, "Secret"))


def read_answer(data: bytes) -> ChallengeAnswer:
    message = _load(data)
    return ChallengeAnswer(_bytes(message, "DevID"), _bytes(message, "CredActivation"))
