"""The server's signing authorities: an X.509 CA and a JWT key, each rotated in two slots.

Rotation follows SPIRE: the next authority is *prepared* (key generated in the other slot,
certificate signed, published in the bundle so every verifier learns it in time) when
``now > notAfter - min(lifetime/2, 30d)``, and *activated* when
``now > notAfter - min(lifetime/6, 7d)``; the previous one becomes *old* and stays in the
bundle until 24 hours after it expires. An operator can force each step
(prepare/activate) and retire an old authority (taint, then revoke).

Keys live in the KeyManager (slots ``x509-CA-A/B``, ``JWT-Signer-A/B``); everything else
about the authorities is kept in this server's CA journal in the datastore, found again at
start by matching the journal's certificates to the KeyManager's public keys. A disk
KeyManager therefore resumes the same CA after a restart; a memory one starts a new CA while
the old root stays published until it expires.
"""

from __future__ import annotations

import base64
import enum
import json
import logging
import secrets
import string
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from pyspire.crypto import KeyManagerSigner, build_csr, sign_certificate
from pyspire.crypto.templates import ca_certificate, root_ca_subject
from pyspire.plugin.errors import FailedPrecondition, Internal, NotFound, PluginError, Unimplemented
from pyspire.plugin.facades import DataStore, KeyManager, UpstreamAuthority
from pyspire.plugin.keys import KeyType, PublicKey
from pyspire.plugin.records import BundleRecord, CaJournal, JwtAuthority, X509Authority
from pyspire.plugin.upstream import JwtKey
from pyspire.server.ca.issuer import CertificateAuthority, JwtSigningKey, subject_key_id
from pyspire.spiffe import TrustDomain
from pyspire.telemetry.metrics import NO_METRICS, Metrics
from pyspire.telemetry.tracing import tracer

__all__ = ["AuthorityState", "CaManager", "CaSettings", "Status"]

_log = logging.getLogger(__name__)

BUNDLE_SAFETY_MARGIN = timedelta(hours=24)
"""Expired authorities stay in the bundle this long, so every SVID they signed has expired."""
PRUNE_INTERVAL = timedelta(hours=6)
_KID_ALPHABET = string.ascii_letters + string.digits


class Status(enum.Enum):
    """Where an authority is in its life."""

    PREPARED = "prepared"
    ACTIVE = "active"
    OLD = "old"


@dataclass(frozen=True)
class CaSettings:
    """What the CA manager needs from the server config."""

    trust_domain: TrustDomain
    ca_ttl: timedelta
    ca_key_type: KeyType
    jwt_key_type: KeyType
    ca_subject: x509.Name
    disable_jwt_svids: bool = False


@dataclass(frozen=True)
class AuthorityState:
    """An authority as the LocalAuthority API shows it."""

    authority_id: str
    expires_at: int
    upstream_authority_subject_key_id: str = ""


def prepare_at(not_before: datetime, not_after: datetime) -> datetime:
    """When the successor of an authority valid [not_before, not_after] is prepared."""
    return not_after - min((not_after - not_before) / 2, timedelta(days=30))


def activate_at(not_before: datetime, not_after: datetime) -> datetime:
    """When the successor of an authority valid [not_before, not_after] becomes active."""
    return not_after - min((not_after - not_before) / 6, timedelta(days=7))


@dataclass
class _X509Slot:
    authority: CertificateAuthority
    status: Status
    tainted: bool = False


@dataclass
class _JwtSlot:
    key: JwtSigningKey
    status: Status
    public_der: bytes
    not_before: datetime
    tainted: bool = False


@dataclass
class _State:
    x509: list[_X509Slot] = field(default_factory=list)
    jwt: list[_JwtSlot] = field(default_factory=list)
    journal_id: int = 0


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


class CaManager:
    """Owns the server's authorities; safe to call from several threads."""

    def __init__(
        self,
        settings: CaSettings,
        key_manager: KeyManager,
        datastore: DataStore,
        upstream: UpstreamAuthority | None = None,
        *,
        clock: Callable[[], float] = time.time,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        """Manage authorities for ``settings.trust_domain``; call :meth:`start` before use."""
        self._metrics = metrics
        self._settings = settings
        self._key_manager = key_manager
        self._datastore = datastore
        self._upstream = upstream
        self._clock = clock
        self._lock = threading.RLock()
        self._state = _State()
        self._last_prune = 0.0
        self._unforwarded: dict[str, JwtKey] = {}
        """Downstream (or own) JWT keys whose publication upstream failed: tried again each step."""
        self._listeners: list[Callable[[], None]] = []
        self._journal_unsaved = False
        """The authorities changed since the journal was last saved: each rotation step saves it again."""

    # --- reading ---------------------------------------------------------------------

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def _find_x509(self, status: Status) -> _X509Slot | None:
        return next((slot for slot in self._state.x509 if slot.status is status), None)

    def _find_jwt(self, status: Status) -> _JwtSlot | None:
        return next((slot for slot in self._state.jwt if slot.status is status), None)

    def active_x509(self) -> CertificateAuthority:
        """The X.509 CA that signs now."""
        slot = self._find_x509(Status.ACTIVE)
        if slot is None:
            raise FailedPrecondition("the server has no active X.509 CA yet")
        return slot.authority

    def active_jwt(self) -> JwtSigningKey | None:
        """The JWT key that signs now (None when JWT-SVIDs are disabled)."""
        slot = self._find_jwt(Status.ACTIVE)
        return slot.key if slot else None

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (in the rotating thread) after every change of authorities."""
        self._listeners.append(listener)

    def _notify(self) -> None:
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                _log.exception("CA change listener failed")

    # --- start and rotation ----------------------------------------------------------

    def start(self) -> None:
        """Resume from the journal or create the first authorities, then publish them."""
        with self._lock:
            self._load_journal()
            self.rotate()

    def rotate(self) -> bool:
        """One rotation step (the daemon calls it every 10 s); True when something changed."""
        with self._lock:
            now = self._now()
            changed = self._rotate_x509(now)
            if not self._settings.disable_jwt_svids:
                changed = self._rotate_jwt(now) or changed
            if self._clock() - self._last_prune >= PRUNE_INTERVAL.total_seconds():
                self._last_prune = self._clock()
                self.prune_bundle()
            journal_error: PluginError | None = None
            if changed or self._journal_unsaved:
                try:
                    self._save_journal()
                except PluginError as err:
                    # The authorities in use are kept: a restart before the next successful
                    # save would otherwise come back without them (SPIRE 1.15.2 retries too).
                    journal_error = err
        if changed:
            self._notify()
        if journal_error is not None:
            raise Internal(f"could not save the CA journal (retried at the next step): {journal_error.message}")
        return self._take_upstream_trust() or changed

    def _take_upstream_trust(self) -> bool:
        """Trust what the upstream trusts, and have it trust our JWT keys; True when the bundle changed.

        In a nested tree every JWT key must be known everywhere: keys travel down here, and
        up through ``publish_jwt_key``. This server publishes again, at every step, its own keys
        the upstream lacks and the downstream keys it failed to pass on (a publication lost to
        an outage is made good), but nothing else: a key revoked upstream must not come back
        from below. As in SPIRE, roots and keys are only ever added here; they leave with
        expiry or an operator's revoke. Outside the CA lock: a slow upstream must not hold up
        signing.
        """
        if self._upstream is None or not self._upstream.implements("upstream_trust"):
            return False
        try:
            trust = self._upstream.upstream_trust()
            added = self._add_to_bundle([_der(root) for root in trust.x509_roots], trust.jwt_keys)
            upstream_kids = {key.key_id for key in trust.jwt_keys}
            now = self._now()
            with self._lock:
                owed = [JwtKey(slot.key.kid, slot.public_der, slot.key.not_after) for slot in self._state.jwt]
                owed += self._unforwarded.values()
                self._unforwarded = {}
        except PluginError as err:
            _log.warning("Could not read what the upstream authority trusts; asking again later: %s", err)
            return False
        failed: PluginError | None = None
        for key in {k.key_id: k for k in owed}.values():
            if key.key_id not in upstream_kids and (key.expires_at is None or key.expires_at > now):
                try:
                    added = self.forward_jwt_key(key) or added
                except PluginError as err:
                    failed = err  # kept by forward_jwt_key for the next step
        if failed is not None:
            _log.warning("Could not publish JWT keys upstream; trying again later: %s", failed)
        return added

    def _add_to_bundle(self, roots: list[bytes], jwt_keys: tuple[JwtKey, ...] = ()) -> bool:
        """Add X.509 roots (DER) and JWT keys the bundle lacks, in one transaction."""
        added = False

        def add(current: BundleRecord | None) -> BundleRecord | None:
            nonlocal added
            record = current or BundleRecord(self._settings.trust_domain)
            present = {a.der for a in record.x509_authorities}
            new_roots = [X509Authority(der) for der in dict.fromkeys(roots) if der not in present]
            kids = {k.key_id for k in record.jwt_authorities}
            new_keys = [
                JwtAuthority(key.key_id, key.public_key_der, int(key.expires_at.timestamp()) if key.expires_at else 0)
                for key in {k.key_id: k for k in jwt_keys}.values()
                if key.key_id not in kids
            ]
            added = bool(new_roots or new_keys)
            if not added:
                return current
            return replace(
                record,
                x509_authorities=(*record.x509_authorities, *new_roots),
                jwt_authorities=(*record.jwt_authorities, *new_keys),
                sequence_number=record.sequence_number + 1,
            )

        self._datastore.modify_bundle(self._settings.trust_domain, add)
        return added

    def forward_jwt_key(self, key: JwtKey) -> bool:
        """Publish a JWT key upstream (when this server is nested).

        True when the keys the upstream answered with changed the bundle.
        """
        if self._upstream is None or not self._upstream.implements("publish_jwt_key"):
            return False
        try:
            return self._add_to_bundle([], self._upstream.publish_jwt_key(key))
        except Unimplemented:
            return False
        except PluginError:
            with self._lock:
                self._unforwarded[key.key_id] = key  # published again at the next rotation step
            raise

    def _rotate_x509(self, now: datetime) -> bool:
        active = self._find_x509(Status.ACTIVE)
        prepared = self._find_x509(Status.PREPARED)
        if active is None or now >= active.authority.not_after:
            if prepared is None or now >= prepared.authority.not_after:
                self._prepare_x509()
            self._activate_x509()
            return True
        certificate = active.authority
        if prepared is None and now >= prepare_at(certificate.not_before, certificate.not_after):
            self._prepare_x509()
            return True
        if prepared is not None and now >= activate_at(certificate.not_before, certificate.not_after):
            self._activate_x509()
            return True
        return False

    def _rotate_jwt(self, now: datetime) -> bool:
        active = self._find_jwt(Status.ACTIVE)
        prepared = self._find_jwt(Status.PREPARED)
        if active is None or now >= active.key.not_after:
            if prepared is None or now >= prepared.key.not_after:
                self._prepare_jwt()
            self._activate_jwt()
            return True
        if prepared is None and now >= prepare_at(active.not_before, active.key.not_after):
            self._prepare_jwt()
            return True
        if prepared is not None and now >= activate_at(active.not_before, active.key.not_after):
            self._activate_jwt()
            return True
        return False

    def _free_key_id(self, prefix: str, in_use: list[str]) -> str:
        """The slot not held by the active authority (the old one's slot is reused)."""
        return f"{prefix}B" if f"{prefix}A" in in_use else f"{prefix}A"

    # --- X.509 -----------------------------------------------------------------------

    def _prepare_x509(self) -> CertificateAuthority:
        with (
            self._metrics.call("ca", "manager", "x509_ca", "prepare"),
            tracer.start_as_current_span("ca.prepare_x509_ca"),
        ):
            return self._prepare_x509_ca()

    def _prepare_x509_ca(self) -> CertificateAuthority:
        active = self._find_x509(Status.ACTIVE)
        key_id = self._free_key_id("x509-CA-", [active.authority.key_id] if active else [])
        public = self._key_manager.generate_key(key_id, self._settings.ca_key_type)
        signer = KeyManagerSigner(self._key_manager, public)
        authority = self._mint_ca(signer, key_id)
        self._publish_x509(authority)
        self._state.x509 = [
            s for s in self._state.x509 if s.authority.key_id != key_id and s.status is not Status.PREPARED
        ]
        self._state.x509.append(_X509Slot(authority, Status.PREPARED))
        _log.info(
            "X509 CA prepared",
            extra={
                "local_authority_id": authority.authority_id,
                "expiration": authority.not_after.isoformat(),
                "self_signed": self._upstream is None,
            },
        )
        return authority

    def _mint_ca(self, signer: KeyManagerSigner, key_id: str) -> CertificateAuthority:
        trust_domain = self._settings.trust_domain
        if self._upstream is not None:
            csr = build_csr(signer, self._settings.ca_subject, trust_domain.id_string())
            minted = self._upstream.mint_x509_ca(csr, self._settings.ca_ttl)
            certificate = minted.ca_chain[0]
            if _public_der(certificate) != _public_der_of(signer):
                raise FailedPrecondition(
                    f"{self._upstream.prefix}: the CA certificate it returned is not for the server's key"
                )
            authority = CertificateAuthority(
                certificate, signer, key_id, tuple(minted.ca_chain[1:]), tuple(minted.upstream_roots)
            )
            if authority.not_after < certificate.not_valid_after_utc:
                _log.warning(
                    "The upstream CA outlives the chain above it: it is used, and signs, only until the chain ends",
                    extra={
                        "upstream_authority": self._upstream.prefix,
                        "ca_expires_at": certificate.not_valid_after_utc.isoformat(),
                        "chain_expires_at": authority.not_after.isoformat(),
                    },
                )
            return authority
        now = self._now()
        serial = x509.random_serial_number()
        builder = ca_certificate(
            subject=root_ca_subject(self._settings.ca_subject, serial),
            public_key=signer.public_key,  # type: ignore[arg-type]
            trust_domain_id=trust_domain.id_string(),
            now=now,
            not_after=now + self._settings.ca_ttl,
            serial_number=serial,
        )
        certificate = sign_certificate(builder, signer)
        return CertificateAuthority(certificate, signer, key_id, (), (certificate,))

    def _publish_x509(self, authority: CertificateAuthority) -> None:
        self._add_to_bundle([_der(root) for root in authority.upstream_roots])

    def _activate_x509(self) -> None:
        prepared = self._find_x509(Status.PREPARED)
        if prepared is None:
            raise FailedPrecondition("there is no prepared X.509 authority to activate")
        previous = self._find_x509(Status.ACTIVE)
        self._state.x509 = [slot for slot in self._state.x509 if slot.status is not Status.OLD]
        if previous is not None:
            previous.status = Status.OLD
        prepared.status = Status.ACTIVE
        authority = prepared.authority
        _log.info(
            "X509 CA activated",
            extra={"local_authority_id": authority.authority_id, "expiration": authority.not_after.isoformat()},
        )
        self._metrics.incr_counter(("ca", "manager", "x509_ca", "activate"))
        self._set_rotate_gauges()

    def _set_rotate_gauges(self) -> None:
        active = self._find_x509(Status.ACTIVE)
        if active is None:
            return
        expiration = active.authority.not_after
        labels = (("trust_domain_id", self._settings.trust_domain.name),)
        self._metrics.set_gauge(("manager", "x509_ca", "rotate", "expiration"), expiration.timestamp(), labels)
        ttl = (expiration - self._now()).total_seconds()
        self._metrics.set_gauge(("manager", "x509_ca", "rotate", "ttl"), ttl, labels)

    # --- JWT -------------------------------------------------------------------------

    def _prepare_jwt(self) -> JwtSigningKey:
        with (
            self._metrics.call("ca", "manager", "jwt_key", "prepare"),
            tracer.start_as_current_span("ca.prepare_jwt_key"),
        ):
            return self._prepare_jwt_key()

    def _prepare_jwt_key(self) -> JwtSigningKey:
        active = self._find_jwt(Status.ACTIVE)
        key_id = self._free_key_id("JWT-Signer-", [active.key.key_id] if active else [])
        public = self._key_manager.generate_key(key_id, self._settings.jwt_key_type)
        now = self._now()
        kid = "".join(secrets.choice(_KID_ALPHABET) for _ in range(32))
        key = JwtSigningKey(KeyManagerSigner(self._key_manager, public), key_id, kid, now + self._settings.ca_ttl)
        self._publish_jwt(kid, public, key.not_after)
        self._state.jwt = [s for s in self._state.jwt if s.key.key_id != key_id and s.status is not Status.PREPARED]
        self._state.jwt.append(_JwtSlot(key, Status.PREPARED, public.der, now))
        _log.info("JWT key prepared", extra={"local_authority_id": kid, "expiration": key.not_after.isoformat()})
        return key

    def _publish_jwt(self, kid: str, public: PublicKey, not_after: datetime) -> None:
        key = JwtKey(kid, public.der, not_after)
        self._add_to_bundle([], (key,))
        try:
            self.forward_jwt_key(key)  # the upstream's keys come back, and are trusted here too
        except PluginError as err:
            _log.warning("Could not publish the JWT key upstream: %s", err)

    def _activate_jwt(self) -> None:
        prepared = self._find_jwt(Status.PREPARED)
        if prepared is None:
            raise FailedPrecondition("there is no prepared JWT authority to activate")
        previous = self._find_jwt(Status.ACTIVE)
        self._state.jwt = [slot for slot in self._state.jwt if slot.status is not Status.OLD]
        if previous is not None:
            previous.status = Status.OLD
        prepared.status = Status.ACTIVE
        _log.info("JWT key activated", extra={"local_authority_id": prepared.key.kid})
        self._metrics.incr_counter(("manager", "jwt_key", "activate"))

    # --- journal ---------------------------------------------------------------------

    def _journal_document(self) -> dict[str, Any]:
        return {
            "x509": [
                {
                    "status": slot.status.value,
                    "key_id": slot.authority.key_id,
                    "tainted": slot.tainted,
                    "chain": [_b64(_der(c)) for c in (slot.authority.certificate, *slot.authority.chain)],
                    "roots": [_b64(_der(c)) for c in slot.authority.upstream_roots],
                }
                for slot in self._state.x509
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
                for slot in self._state.jwt
            ],
        }

    def _save_journal(self) -> None:
        active = self._find_x509(Status.ACTIVE)
        if active is None:
            return
        self._journal_unsaved = True
        data = json.dumps(self._journal_document()).encode()
        journal = self._datastore.set_ca_journal(CaJournal(self._state.journal_id, active.authority.authority_id, data))
        self._state.journal_id = journal.id
        self._journal_unsaved = False

    def _load_journal(self) -> None:
        keys = {key.id: key for key in self._key_manager.get_public_keys()}
        for journal in reversed(self._datastore.list_ca_journals()):
            state = self._restore(journal, keys)
            if state is not None:
                self._state = state
                _log.info("CA journal loaded", extra={"journal_id": journal.id})
                return

    def _restore(self, journal: CaJournal, keys: dict[str, PublicKey]) -> _State | None:
        try:
            document = json.loads(journal.data)
            state = _State(journal_id=journal.id)
            for item in document["x509"]:
                public = keys.get(item["key_id"])
                chain = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in item["chain"]]
                if public is None or _public_der(chain[0]) != public.der:
                    continue
                roots = tuple(x509.load_der_x509_certificate(base64.b64decode(c)) for c in item["roots"])
                signer = KeyManagerSigner(self._key_manager, public)
                authority = CertificateAuthority(chain[0], signer, item["key_id"], tuple(chain[1:]), roots)
                state.x509.append(_X509Slot(authority, Status(item["status"]), bool(item["tainted"])))
            for item in document["jwt"]:
                public = keys.get(item["key_id"])
                if public is None:
                    continue
                key = JwtSigningKey(
                    KeyManagerSigner(self._key_manager, public),
                    item["key_id"],
                    item["kid"],
                    datetime.fromtimestamp(item["not_after"], UTC),
                )
                state.jwt.append(
                    _JwtSlot(
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
        return (
            state if active is not None and active.authority.authority_id == journal.active_x509_authority_id else None
        )

    # --- bundle maintenance ----------------------------------------------------------

    def prune_bundle(self) -> None:
        """Drop authorities that expired more than 24 hours ago from the bundle."""
        with self._metrics.call("ca", "manager", "bundle", "prune"):
            if self._prune_bundle():
                self._metrics.incr_counter(("ca", "manager", "bundle", "pruned"))
                _log.debug("Expired certificates were successfully pruned from bundle")

    def _prune_bundle(self) -> bool:
        limit = self._now() - BUNDLE_SAFETY_MARGIN
        pruned = False

        def prune(current: BundleRecord | None) -> BundleRecord | None:
            nonlocal pruned
            if current is None:
                return None
            x509_kept = tuple(
                a
                for a in current.x509_authorities
                if x509.load_der_x509_certificate(a.der).not_valid_after_utc >= limit
            )
            jwt_kept = tuple(
                k for k in current.jwt_authorities if not k.expires_at or k.expires_at >= limit.timestamp()
            )
            if len(x509_kept) == len(current.x509_authorities) and len(jwt_kept) == len(current.jwt_authorities):
                return current
            if not x509_kept:
                return current  # never empty the bundle: that would make every SVID unverifiable
            pruned = True
            return replace(
                current,
                x509_authorities=x509_kept,
                jwt_authorities=jwt_kept,
                sequence_number=current.sequence_number + 1,
            )

        self._datastore.modify_bundle(self._settings.trust_domain, prune)
        return pruned

    # --- LocalAuthority operations ---------------------------------------------------

    def _x509_state(self, slot: _X509Slot | None) -> AuthorityState | None:
        if slot is None:
            return None
        upstream = "" if slot.authority.self_signed else subject_key_id(slot.authority.upstream_roots[0])
        return AuthorityState(slot.authority.authority_id, int(slot.authority.not_after.timestamp()), upstream)

    def x509_states(self) -> tuple[AuthorityState | None, AuthorityState | None, AuthorityState | None]:
        """(active, prepared, old) X.509 authorities."""
        with self._lock:
            return tuple(self._x509_state(self._find_x509(s)) for s in (Status.ACTIVE, Status.PREPARED, Status.OLD))  # type: ignore[return-value]

    def jwt_states(self) -> tuple[AuthorityState | None, AuthorityState | None, AuthorityState | None]:
        """(active, prepared, old) JWT authorities."""
        with self._lock:
            found = []
            for status in (Status.ACTIVE, Status.PREPARED, Status.OLD):
                slot = self._find_jwt(status)
                found.append(
                    None if slot is None else AuthorityState(slot.key.kid, int(slot.key.not_after.timestamp()))
                )
            return tuple(found)  # type: ignore[return-value]

    def prepare_x509(self) -> AuthorityState:
        """Prepare the next X.509 CA now (replacing a prepared one)."""
        with self._lock:
            authority = self._prepare_x509()
            self._save_journal()
        self._notify()
        state = self._x509_state(self._find_x509(Status.PREPARED))
        assert state is not None
        assert state.authority_id == authority.authority_id
        return state

    def activate_x509(self, authority_id: str) -> AuthorityState:
        """Activate the prepared X.509 CA, which must be ``authority_id``."""
        with self._lock:
            prepared = self._find_x509(Status.PREPARED)
            if prepared is None or prepared.authority.authority_id != authority_id:
                raise FailedPrecondition(f'"{authority_id}" is not the prepared X.509 authority')
            self._activate_x509()
            self._save_journal()
        self._notify()
        return self._x509_state(prepared)  # type: ignore[return-value]

    def taint_x509(self, authority_id: str) -> AuthorityState:
        """Mark the old X.509 CA tainted in the bundle: agents then replace what it signed."""
        with self._lock:
            old = self._require_old_x509(authority_id)
            if not old.authority.self_signed:
                raise FailedPrecondition(
                    "the X.509 authority is signed by an upstream authority: taint the upstream authority instead"
                )
            if old.tainted:
                raise FailedPrecondition(f'X.509 authority "{authority_id}" is already tainted')
            self._set_x509_taint(_der(old.authority.certificate))
            old.tainted = True
            self._save_journal()
        self._notify()
        return self._x509_state(old)  # type: ignore[return-value]

    def revoke_x509(self, authority_id: str) -> AuthorityState:
        """Remove the tainted old X.509 CA from the bundle."""
        with self._lock:
            old = self._require_old_x509(authority_id)
            if not old.tainted:
                raise FailedPrecondition(f'X.509 authority "{authority_id}" must be tainted before it is revoked')
            self._remove_x509(_der(old.authority.certificate))
            self._state.x509.remove(old)
            self._save_journal()
        self._notify()
        return self._x509_state(old)  # type: ignore[return-value]

    def _require_old_x509(self, authority_id: str) -> _X509Slot:
        old = self._find_x509(Status.OLD)
        if old is None or old.authority.authority_id != authority_id:
            raise NotFound(
                f'"{authority_id}" is not the old X.509 authority (only an old authority can be tainted or revoked)'
            )
        return old

    def _set_x509_taint(self, der: bytes) -> None:
        def taint(current: BundleRecord | None) -> BundleRecord | None:
            if current is None:
                return None
            authorities = tuple(replace(a, tainted=True) if a.der == der else a for a in current.x509_authorities)
            return replace(current, x509_authorities=authorities, sequence_number=current.sequence_number + 1)

        self._datastore.modify_bundle(self._settings.trust_domain, taint)

    def _remove_x509(self, der: bytes) -> None:
        def remove(current: BundleRecord | None) -> BundleRecord | None:
            if current is None:
                return None
            authorities = tuple(a for a in current.x509_authorities if a.der != der)
            return replace(current, x509_authorities=authorities, sequence_number=current.sequence_number + 1)

        self._datastore.modify_bundle(self._settings.trust_domain, remove)

    def _upstream_root(self, subject_key: str) -> bytes:
        active = self._find_x509(Status.ACTIVE)
        bundle = self._datastore.fetch_bundle(self._settings.trust_domain)
        for authority in bundle.x509_authorities if bundle else ():
            certificate = x509.load_der_x509_certificate(authority.der)
            if subject_key_id(certificate) == subject_key:
                if active is not None and certificate in active.authority.upstream_roots:
                    raise FailedPrecondition("the active X.509 CA chains to this upstream authority: rotate first")
                return authority.der
        raise NotFound(f'no upstream authority with subject key ID "{subject_key}" in the bundle')

    def taint_upstream(self, subject_key: str) -> str:
        """Taint an upstream root that the active CA no longer chains to."""
        if self._upstream is None:
            raise FailedPrecondition("no upstream authority is configured")
        with self._lock:
            self._set_x509_taint(self._upstream_root(subject_key))
        self._notify()
        return subject_key

    def revoke_upstream(self, subject_key: str) -> str:
        """Remove a (tainted) upstream root from the bundle."""
        if self._upstream is None:
            raise FailedPrecondition("no upstream authority is configured")
        with self._lock:
            der = self._upstream_root(subject_key)
            bundle = self._datastore.fetch_bundle(self._settings.trust_domain)
            if bundle is not None and not any(a.der == der and a.tainted for a in bundle.x509_authorities):
                raise FailedPrecondition("the upstream authority must be tainted before it is revoked")
            self._remove_x509(der)
        self._notify()
        return subject_key

    def prepare_jwt(self) -> AuthorityState:
        """Prepare the next JWT key now (replacing a prepared one)."""
        self._require_jwt_enabled()
        with self._lock:
            key = self._prepare_jwt()
            self._save_journal()
        self._notify()
        return AuthorityState(key.kid, int(key.not_after.timestamp()))

    def activate_jwt(self, kid: str) -> AuthorityState:
        """Activate the prepared JWT key, which must be ``kid``."""
        self._require_jwt_enabled()
        with self._lock:
            prepared = self._find_jwt(Status.PREPARED)
            if prepared is None or prepared.key.kid != kid:
                raise FailedPrecondition(f'"{kid}" is not the prepared JWT authority')
            self._activate_jwt()
            self._save_journal()
        self._notify()
        return AuthorityState(kid, int(prepared.key.not_after.timestamp()))

    def taint_jwt(self, kid: str) -> AuthorityState:
        """Mark the old JWT key tainted in the bundle."""
        with self._lock:
            old = self._require_old_jwt(kid)
            if old.tainted:
                raise FailedPrecondition(f'JWT authority "{kid}" is already tainted')
            self._modify_jwt(kid, lambda k: replace(k, tainted=True))
            old.tainted = True
            self._save_journal()
        self._notify()
        return AuthorityState(kid, int(old.key.not_after.timestamp()))

    def revoke_jwt(self, kid: str) -> AuthorityState:
        """Remove the tainted old JWT key from the bundle: tokens it signed stop validating."""
        with self._lock:
            old = self._require_old_jwt(kid)
            if not old.tainted:
                raise FailedPrecondition(f'JWT authority "{kid}" must be tainted before it is revoked')
            self._modify_jwt(kid, lambda k: None)
            self._state.jwt.remove(old)
            self._save_journal()
        self._notify()
        return AuthorityState(kid, int(old.key.not_after.timestamp()))

    def _require_jwt_enabled(self) -> None:
        if self._settings.disable_jwt_svids:
            raise FailedPrecondition("JWT-SVIDs are disabled on this server")

    def _require_old_jwt(self, kid: str) -> _JwtSlot:
        old = self._find_jwt(Status.OLD)
        if old is None or old.key.kid != kid:
            raise NotFound(f'"{kid}" is not the old JWT authority (only an old authority can be tainted or revoked)')
        return old

    def _modify_jwt(self, kid: str, change: Callable[[JwtAuthority], JwtAuthority | None]) -> None:
        def apply(current: BundleRecord | None) -> BundleRecord | None:
            if current is None:
                return None
            keys = []
            for key in current.jwt_authorities:
                if key.key_id == kid:
                    changed = change(key)
                    if changed is not None:
                        keys.append(changed)
                else:
                    keys.append(key)
            return replace(current, jwt_authorities=tuple(keys), sequence_number=current.sequence_number + 1)

        self._datastore.modify_bundle(self._settings.trust_domain, apply)


def _public_der(certificate: x509.Certificate) -> bytes:
    return certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _public_der_of(signer: KeyManagerSigner) -> bytes:
    return signer.public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def ca_subject_name(country: tuple[str, ...], organization: tuple[str, ...], common_name: str) -> x509.Name:
    """The X.509 subject of a self-signed CA from ``ca_subject`` settings."""
    attributes = [x509.NameAttribute(NameOID.COUNTRY_NAME, c) for c in country]
    attributes += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organization]
    if common_name:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)
