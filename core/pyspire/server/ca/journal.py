"""The CA journal: this server's authorities as saved in the datastore, and found again at start.

Keys stay in the KeyManager; the journal records everything else (each slot's status, taint,
certificate chain and roots, the JWT key's ``kid`` and lifetime) as one JSON document keyed by
the active X.509 authority. At start the newest journal whose certificates match the
KeyManager's public keys is resumed, so a disk KeyManager keeps its CA across a restart and a
memory one starts afresh.
"""

from __future__ import annotations

import base64
import json
import logging
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pyspire.crypto import KeyManagerSigner
from pyspire.plugin.facades import DataStore, KeyManager
from pyspire.plugin.keys import PublicKey
from pyspire.plugin.records import CaJournal
from pyspire.server.ca.issuer import CertificateAuthority, JwtSigningKey
from pyspire.server.ca.slots import CaState, JwtSlot, Status, X509Slot

__all__ = ["load_journal", "public_der", "save_journal"]

_log = logging.getLogger(__name__)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def public_der(certificate: x509.Certificate) -> bytes:
    """The SubjectPublicKeyInfo of ``certificate`` (what a KeyManager's key is matched by)."""
    return certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _document(state: CaState) -> dict[str, Any]:
    return {
        "x509": [
            {
                "status": slot.status.value,
                "key_id": slot.authority.key_id,
                "tainted": slot.tainted,
                "chain": [_b64(_der(c)) for c in (slot.authority.certificate, *slot.authority.chain)],
                "roots": [_b64(_der(c)) for c in slot.authority.upstream_roots],
            }
            for slot in state.x509
        ],
        "jwt": [
            {
                "status": slot.status.value,
                "key_id": slot.key.key_id,
                "kid": slot.key.kid,
                "tainted": slot.tainted,
                "not_before": int(slot.not_before.timestamp()),
                "not_after": int(slot.key.not_after.timestamp()),
            }
            for slot in state.jwt
        ],
    }


def save_journal(datastore: DataStore, state: CaState) -> None:
    """Save ``state`` (once it has an active X.509 authority); records the journal's ID in it."""
    active = state.find_x509(Status.ACTIVE)
    if active is None:
        return
    data = json.dumps(_document(state)).encode()
    journal = datastore.set_ca_journal(CaJournal(state.journal_id, active.authority.authority_id, data))
    state.journal_id = journal.id


def load_journal(datastore: DataStore, key_manager: KeyManager) -> CaState | None:
    """The newest journal that the KeyManager's keys can resume, or None."""
    keys = {key.id: key for key in key_manager.get_public_keys()}
    for journal in reversed(datastore.list_ca_journals()):
        state = _restore(journal, keys, key_manager)
        if state is not None:
            _log.info("CA journal loaded", extra={"journal_id": journal.id})
            return state
    return None


def _restore(journal: CaJournal, keys: dict[str, PublicKey], key_manager: KeyManager) -> CaState | None:
    try:
        document = json.loads(journal.data)
        state = CaState(journal_id=journal.id)
        for item in document["x509"]:
            public = keys.get(item["key_id"])
            chain = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in item["chain"]]
            if public is None or public_der(chain[0]) != public.der:
                continue
            roots = tuple(x509.load_der_x509_certificate(base64.b64decode(c)) for c in item["roots"])
            signer = KeyManagerSigner(key_manager, public)
            authority = CertificateAuthority(chain[0], signer, item["key_id"], tuple(chain[1:]), roots)
            state.x509.append(X509Slot(authority, Status(item["status"]), bool(item["tainted"])))
        for item in document["jwt"]:
            public = keys.get(item["key_id"])
            if public is None:
                continue
            key = JwtSigningKey(
                KeyManagerSigner(key_manager, public),
                item["key_id"],
                item["kid"],
                datetime.fromtimestamp(item["not_after"], UTC),
            )
            state.jwt.append(
                JwtSlot(
                    key,
                    Status(item["status"]),
                    public.der,
                    datetime.fromtimestamp(item["not_before"], UTC),
                    bool(item["tainted"]),
                )
            )
    except (KeyError, ValueError, TypeError) as err:
        _log.warning("Ignoring an unreadable CA journal %s: %s", journal.id, err)
        return None
    active = next((s for s in state.x509 if s.status is Status.ACTIVE), None)
    return state if active is not None and active.authority.authority_id == journal.active_x509_authority_id else None
