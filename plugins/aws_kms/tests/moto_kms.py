"""moto's server with the KMS behaviours the plugin relies on that moto 5 lacks.

Run as a script (``python moto_kms.py -H 127.0.0.1 -p PORT``): it adds to moto, after the KMS
API reference, then starts moto's own server unchanged otherwise.

- ``Sign`` with ``MessageType=DIGEST`` signs the digest given (moto hashes it again, as if it
  were ``RAW``), and refuses a digest whose length does not match the signing algorithm, as
  KMS does. The plugin sends digests, as SPIRE's does, so that no message is limited to KMS's
  4096 bytes of ``RAW``.
- ``RSASSA_PSS_*`` signatures use a salt as long as the digest (moto uses the longest salt).
- ``ListAliases`` returns each alias's ``CreationDate`` and ``LastUpdatedDate``, and
  ``UpdateAlias`` moves ``LastUpdatedDate``: SPIRE's disposal of stale aliases reads it.
- ``ScheduleKeyDeletion`` takes a key ARN as well as a key ID (moto fails on an ARN).
"""

from __future__ import annotations

import base64
import json
import sys
import time
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from moto.kms.exceptions import ValidationException
from moto.kms.models import KmsBackend
from moto.kms.responses import KmsResponse
from moto.server import main

_HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
_ALIAS_DATES: dict[tuple[str, str, str], tuple[float, float]] = {}
"""(account, region, alias name) -> (creation date, last updated date)."""


def _sign(self: KmsResponse) -> str:
    key_id = self._get_param("KeyId")
    message: bytes = self._get_param("Message")
    message_type = self._get_param("MessageType") or "RAW"
    algorithm: str = self._get_param("SigningAlgorithm")
    self._validate_key_id(key_id)
    key = self.kms_backend.describe_key(key_id)
    if algorithm not in key.signing_algorithms:
        raise ValidationException(f"signing algorithm {algorithm} is not valid for key {key.id}")
    digest_algorithm = _HASHES[algorithm[-3:]]()
    if message_type == "DIGEST":
        if len(message) != digest_algorithm.digest_size:
            raise ValidationException(
                f"Digest is invalid length for algorithm {algorithm}: expected {digest_algorithm.digest_size}"
            )
        hash_argument: Any = utils.Prehashed(digest_algorithm)
    else:
        hash_argument = digest_algorithm
    private_key = key.private_key.private_key
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        signature = private_key.sign(message, ec.ECDSA(hash_argument))
    else:
        assert isinstance(private_key, rsa.RSAPrivateKey)
        pad: padding.AsymmetricPadding = padding.PKCS1v15()
        if algorithm.startswith("RSASSA_PSS"):
            pad = padding.PSS(padding.MGF1(digest_algorithm), padding.PSS.DIGEST_LENGTH)
        signature = private_key.sign(message, pad, hash_argument)
    return json.dumps(
        {"KeyId": key.arn, "Signature": base64.b64encode(signature).decode(), "SigningAlgorithm": algorithm}
    )


_original_create_alias = KmsBackend.create_alias
_original_update_alias = KmsBackend.update_alias
_original_delete_alias = KmsBackend.delete_alias
_original_list_aliases = KmsResponse.list_aliases
_original_schedule_key_deletion = KmsBackend.schedule_key_deletion


def _schedule_key_deletion(self: KmsBackend, key_id: str, pending_window_in_days: int) -> float:
    return _original_schedule_key_deletion(self, self.get_key_id(key_id), pending_window_in_days)


def _create_alias(self: KmsBackend, target_key_id: str, alias_name: str) -> Any:
    alias = _original_create_alias(self, target_key_id, alias_name)
    now = time.time()
    _ALIAS_DATES[(self.account_id, self.region_name, alias_name)] = (now, now)
    return alias


def _update_alias(self: KmsBackend, target_key_id: str, alias_name: str) -> Any:
    alias = _original_update_alias(self, target_key_id, alias_name)
    created, _ = _ALIAS_DATES.get((self.account_id, self.region_name, alias_name), (time.time(), 0.0))
    _ALIAS_DATES[(self.account_id, self.region_name, alias_name)] = (created, time.time())
    return alias


def _delete_alias(self: KmsBackend, alias_name: str) -> None:
    _original_delete_alias(self, alias_name)
    _ALIAS_DATES.pop((self.account_id, self.region_name, alias_name), None)


def _list_aliases(self: KmsResponse) -> str:
    listing = json.loads(_original_list_aliases(self))
    backend = self.kms_backend
    for alias in listing["Aliases"]:
        dates = _ALIAS_DATES.get((backend.account_id, backend.region_name, alias["AliasName"]))
        if dates is not None:
            alias["CreationDate"], alias["LastUpdatedDate"] = dates
    return json.dumps(listing)


KmsResponse.sign = _sign  # type: ignore[method-assign]
KmsResponse.list_aliases = _list_aliases  # type: ignore[method-assign]
KmsBackend.create_alias = _create_alias  # type: ignore[method-assign]
KmsBackend.update_alias = _update_alias  # type: ignore[method-assign]
KmsBackend.delete_alias = _delete_alias  # type: ignore[method-assign]
KmsBackend.schedule_key_deletion = _schedule_key_deletion  # type: ignore[method-assign]

if __name__ == "__main__":
    main(sys.argv[1:])
