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

This module decides (rotation, the operator's steps); the parts it decides with are SPIRE's
seams: :mod:`~pyspire.server.ca.slots` (the authorities in their slots, and when a successor is
due), :mod:`~pyspire.server.ca.journal` (saving and resuming them),
:mod:`~pyspire.server.ca.bundle_edits` (each change to the bundle) and
:mod:`~pyspire.server.ca.upstream_sync` (the exchanges with an UpstreamAuthority).
"""

from __future__ import annotations

import logging
import secrets
import string
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import NoReturn

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from pyspire.crypto import KeyManagerSigner, sign_certificate
from pyspire.crypto.templates import ca_certificate, root_ca_subject
from pyspire.plugin.errors import FailedPrecondition, Internal, InvalidArgument, NotFound, PluginError
from pyspire.plugin.facades import DataStore, KeyManager, UpstreamAuthority
from pyspire.plugin.keys import KeyType, PublicKey
from pyspire.plugin.upstream import JwtKey
from pyspire.server.ca.bundle_edits import BundleEdits
from pyspire.server.ca.issuer import CertificateAuthority, JwtSigningKey, subject_key_id
from pyspire.server.ca.journal import load_journal, save_journal
from pyspire.server.ca.slots import CaState, JwtSlot, Status, X509Slot, activate_at, free_key_id, prepare_at
from pyspire.server.ca.upstream_sync import UpstreamSync
from pyspire.spiffe import TrustDomain
from pyspire.telemetry.metrics import NO_METRICS, Metrics
from pyspire.telemetry.tracing import start_span

__all__ = ["AuthorityState", "CaManager", "CaSettings", "Status", "activate_at", "ca_subject_name", "prepare_at"]

_log = logging.getLogger(__name__)

BUNDLE_SAFETY_MARGIN = timedelta(hours=24)
"""Expired authorities stay in the bundle this long, so every SVID they signed has expired."""
PRUNE_INTERVAL = timedelta(hours=6)
_KID_ALPHABET = string.ascii_letters + string.digits


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
        self._state = CaState()
        self._last_prune = 0.0
        self._bundle = BundleEdits(datastore, settings.trust_domain)
        self._upstream_sync = None if upstream is None else UpstreamSync(upstream, self._bundle)
        self._listeners: list[Callable[[], None]] = []
        self._journal_unsaved = False
        """The authorities changed since the journal was last saved: each rotation step saves it again."""

    # --- reading ---------------------------------------------------------------------

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def _find_x509(self, status: Status) -> X509Slot | None:
        return self._state.find_x509(status)

    def _find_jwt(self, status: Status) -> JwtSlot | None:
        return self._state.find_jwt(status)

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
        """Trust what the upstream trusts, and have it trust our JWT keys (see :mod:`upstream_sync`)."""
        if self._upstream_sync is None:
            return False

        def own_keys() -> list[JwtKey]:
            with self._lock:
                return [JwtKey(slot.key.kid, slot.public_der, slot.key.not_after) for slot in self._state.jwt]

        return self._upstream_sync.take_trust(own_keys, self._now())

    def forward_jwt_key(self, key: JwtKey) -> bool:
        """Publish a JWT key upstream (when this server is nested).

        True when the keys the upstream answered with changed the bundle.
        """
        if self._upstream_sync is None:
            return False
        return self._upstream_sync.forward_jwt_key(key)

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

    # --- X.509 -----------------------------------------------------------------------

    def _prepare_x509(self) -> CertificateAuthority:
        with (
            self._metrics.call("ca", "manager", "x509_ca", "prepare"),
            start_span("ca.prepare_x509_ca"),
        ):
            return self._prepare_x509_ca()

    def _prepare_x509_ca(self) -> CertificateAuthority:
        active = self._find_x509(Status.ACTIVE)
        key_id = free_key_id("x509-CA-", [active.authority.key_id] if active else [])
        public = self._key_manager.generate_key(key_id, self._settings.ca_key_type)
        signer = KeyManagerSigner(self._key_manager, public)
        authority = self._mint_ca(signer, key_id)
        self._publish_x509(authority)
        self._state.x509 = [
            s for s in self._state.x509 if s.authority.key_id != key_id and s.status is not Status.PREPARED
        ]
        self._state.x509.append(X509Slot(authority, Status.PREPARED))
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
        if self._upstream_sync is not None:
            return self._upstream_sync.mint_x509_ca(
                signer, key_id, self._settings.ca_subject, trust_domain, self._settings.ca_ttl
            )
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
        self._bundle.add([_der(root) for root in authority.upstream_roots])

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
            start_span("ca.prepare_jwt_key"),
        ):
            return self._prepare_jwt_key()

    def _prepare_jwt_key(self) -> JwtSigningKey:
        active = self._find_jwt(Status.ACTIVE)
        key_id = free_key_id("JWT-Signer-", [active.key.key_id] if active else [])
        public = self._key_manager.generate_key(key_id, self._settings.jwt_key_type)
        now = self._now()
        kid = "".join(secrets.choice(_KID_ALPHABET) for _ in range(32))
        key = JwtSigningKey(KeyManagerSigner(self._key_manager, public), key_id, kid, now + self._settings.ca_ttl)
        self._publish_jwt(kid, public, key.not_after)
        self._state.jwt = [s for s in self._state.jwt if s.key.key_id != key_id and s.status is not Status.PREPARED]
        self._state.jwt.append(JwtSlot(key, Status.PREPARED, public.der, now))
        _log.info("JWT key prepared", extra={"local_authority_id": kid, "expiration": key.not_after.isoformat()})
        return key

    def _publish_jwt(self, kid: str, public: PublicKey, not_after: datetime) -> None:
        key = JwtKey(kid, public.der, not_after)
        self._bundle.add([], (key,))
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

    def _save_journal(self) -> None:
        self._journal_unsaved = True
        save_journal(self._datastore, self._state)
        self._journal_unsaved = False

    def _load_journal(self) -> None:
        state = load_journal(self._datastore, self._key_manager)
        if state is not None:
            self._state = state

    # --- bundle maintenance ----------------------------------------------------------

    def prune_bundle(self) -> None:
        """Drop authorities that expired more than 24 hours ago from the bundle."""
        with self._metrics.call("ca", "manager", "bundle", "prune"):
            if self._prune_bundle():
                self._metrics.incr_counter(("ca", "manager", "bundle", "pruned"))
                _log.debug("Expired certificates were successfully pruned from bundle")

    def _prune_bundle(self) -> bool:
        return self._bundle.prune(self._now() - BUNDLE_SAFETY_MARGIN)

    # --- LocalAuthority operations ---------------------------------------------------

    def _x509_state(self, slot: X509Slot | None) -> AuthorityState | None:
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
                _refuse_activation(authority_id, self._x509_ids(Status.OLD))
            self._activate_x509()
            self._save_journal()
        self._notify()
        return self._x509_state(prepared)  # type: ignore[return-value]

    def taint_x509(self, authority_id: str) -> AuthorityState:
        """Mark the old X.509 CA tainted in the bundle: agents then replace what it signed."""
        if self.has_upstream:
            raise FailedPrecondition("local authority can't be tainted if there is an upstream authority")
        with self._lock:
            _check_taint(authority_id, self._x509_ids(Status.ACTIVE), self._x509_ids(Status.PREPARED))
            old = self._find_x509(Status.OLD)
            if old is None or old.authority.authority_id != authority_id:
                raise InvalidArgument("unexpected authority ID")
            if old.tainted:
                raise Internal("failed to taint X.509 authority: root CA is already tainted")
            self._bundle.taint_x509(_der(old.authority.certificate))
            old.tainted = True
            self._save_journal()
        self._notify()
        return self._x509_state(old)  # type: ignore[return-value]

    def revoke_x509(self, authority_id: str) -> AuthorityState:
        """Remove the tainted old X.509 CA from the bundle."""
        if self.has_upstream:
            raise FailedPrecondition("local authority can't be revoked if there is an upstream authority")
        with self._lock:
            if authority_id in self._x509_ids(Status.ACTIVE):
                raise InvalidArgument("invalid authority ID: unable to use current authority")
            old = self._find_x509(Status.OLD)
            if old is None or old.authority.authority_id != authority_id:
                raise InvalidArgument("invalid authority ID: only Old local authority can be revoked")
            if not old.tainted:
                raise Internal("failed to revoke X.509 authority: it is not possible to revoke an untainted root CA")
            self._bundle.remove_x509(_der(old.authority.certificate))
            self._state.x509.remove(old)
            self._save_journal()
        self._notify()
        return self._x509_state(old)  # type: ignore[return-value]

    def _x509_ids(self, status: Status) -> tuple[str, ...]:
        slot = self._find_x509(status)
        return () if slot is None else (slot.authority.authority_id,)

    def _jwt_ids(self, status: Status) -> tuple[str, ...]:
        slot = self._find_jwt(status)
        return () if slot is None else (slot.key.kid,)

    def _upstream_root(self, subject_key: str) -> bytes:
        active = self._find_x509(Status.ACTIVE)
        bundle = self._bundle.fetch()
        for authority in bundle.x509_authorities if bundle else ():
            certificate = x509.load_der_x509_certificate(authority.der)
            if subject_key_id(certificate) == subject_key:
                if active is not None and certificate in active.authority.upstream_roots:
                    raise FailedPrecondition("the active X.509 CA chains to this upstream authority: rotate first")
                return authority.der
        raise NotFound(f'no upstream authority with subject key ID "{subject_key}" in the bundle')

    @property
    def has_upstream(self) -> bool:
        """Whether an UpstreamAuthority signs this server's CA (the upstream calls need one)."""
        return self._upstream is not None

    def taint_upstream(self, subject_key: str) -> str:
        """Taint an upstream root that the active CA no longer chains to."""
        if self._upstream is None:
            raise FailedPrecondition("no upstream authority is configured")
        with self._lock:
            self._bundle.taint_x509(self._upstream_root(subject_key))
        self._notify()
        return subject_key

    def revoke_upstream(self, subject_key: str) -> str:
        """Remove a (tainted) upstream root from the bundle."""
        if self._upstream is None:
            raise FailedPrecondition("no upstream authority is configured")
        with self._lock:
            der = self._upstream_root(subject_key)
            bundle = self._bundle.fetch()
            if bundle is not None and not any(a.der == der and a.tainted for a in bundle.x509_authorities):
                raise FailedPrecondition("the upstream authority must be tainted before it is revoked")
            self._bundle.remove_x509(der)
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
                _refuse_activation(kid, self._jwt_ids(Status.OLD))
            self._activate_jwt()
            self._save_journal()
        self._notify()
        return AuthorityState(kid, int(prepared.key.not_after.timestamp()))

    def taint_jwt(self, kid: str) -> AuthorityState:
        """Mark the old JWT key tainted in the bundle."""
        with self._lock:
            _check_taint(kid, self._jwt_ids(Status.ACTIVE), self._jwt_ids(Status.PREPARED))
            old = self._find_jwt(Status.OLD)
            if old is None or old.key.kid != kid:
                raise InvalidArgument("unexpected authority ID")
            if old.tainted:
                raise Internal("failed to taint JWT authority: key is already tainted")
            self._bundle.modify_jwt(kid, lambda k: replace(k, tainted=True))
            old.tainted = True
            self._save_journal()
        self._notify()
        return AuthorityState(kid, int(old.key.not_after.timestamp()))

    def revoke_jwt(self, kid: str) -> AuthorityState:
        """Remove the tainted old JWT key from the bundle: tokens it signed stop validating."""
        with self._lock:
            if kid in self._jwt_ids(Status.ACTIVE):
                raise InvalidArgument("invalid authority ID: unable to use current authority")
            if kid in self._jwt_ids(Status.PREPARED):
                raise InvalidArgument("invalid authority ID: unable to use a prepared key")
            old = self._find_jwt(Status.OLD)
            if old is None or old.key.kid != kid:
                raise InvalidArgument("invalid authority ID: no JWT authority found with provided authority ID")
            if not old.tainted:
                raise Internal("failed to revoke JWT authority: it is not possible to revoke an untainted key")
            self._bundle.modify_jwt(kid, lambda k: None)
            self._state.jwt.remove(old)
            self._save_journal()
        self._notify()
        return AuthorityState(kid, int(old.key.not_after.timestamp()))

    def _require_jwt_enabled(self) -> None:
        if self._settings.disable_jwt_svids:
            raise FailedPrecondition("JWT-SVIDs are disabled on this server")


def _refuse_activation(authority_id: str, old_ids: tuple[str, ...]) -> NoReturn:
    """Why ``authority_id`` (not the prepared authority) cannot be activated, in SPIRE's words."""
    if authority_id in old_ids:
        raise Internal("only Prepared authorities can be activated: unsupported local authority status: OLD")
    raise InvalidArgument("unexpected authority ID")


def _check_taint(authority_id: str, active_ids: tuple[str, ...], prepared_ids: tuple[str, ...]) -> None:
    """Refuse, in SPIRE's words, to taint the active or the prepared authority."""
    if authority_id in active_ids:
        raise InvalidArgument("unable to taint current local authority")
    if authority_id in prepared_ids:
        raise InvalidArgument("only Old local authorities can be tainted: unsupported local authority status: PREPARED")


def ca_subject_name(country: tuple[str, ...], organization: tuple[str, ...], common_name: str) -> x509.Name:
    """The X.509 subject of a self-signed CA from ``ca_subject`` settings."""
    attributes = [x509.NameAttribute(NameOID.COUNTRY_NAME, c) for c in country]
    attributes += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organization]
    if common_name:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)
