"""Typed handles on loaded plugins: the only way the daemons call a plugin.

Each handle wraps one configured plugin and its pluggy manager. Core code writes
``catalog.key_manager.sign_data(...)``, never ``pm.hook.sign_data(**kw)``: the handle checks
what the plugin returned, and turns whatever it raised into a :class:`PluginError` whose
message starts with the plugin, as SPIRE's do (``keymanager(disk): ...``).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import pluggy
from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from pyspire.plugin.attestation import AttestationResult, Challenge
from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import Internal, PluginConfigError, PluginError, Unimplemented
from pyspire.plugin.keys import HashAlgorithm, KeyType, PublicKey
from pyspire.plugin.logger import plugin_logger
from pyspire.plugin.records import (
    AttestedNode,
    BundleDeleteMode,
    BundleRecord,
    CaJournal,
    ChangeEvent,
    CreatedEntry,
    EntryFilter,
    FederationRelationship,
    JoinToken,
    NodeFilter,
    NodeReadAtOnce,
    Page,
    RegistrationEntry,
)
from pyspire.plugin.selectors import Selector
from pyspire.plugin.upstream import JwtKey, UpstreamTrust, UpstreamX509Ca

if TYPE_CHECKING:
    from pyspire.spiffe import Bundle, SpiffeId, TrustDomain, X509Svid

__all__ = [
    "SERVER_OWNED_EXTENSIONS",
    "AgentNodeAttestor",
    "BundlePublisher",
    "CredentialComposer",
    "DataStore",
    "HookObserver",
    "KeyManager",
    "Notifier",
    "PluginHandle",
    "ServerNodeAttestor",
    "SvidStore",
    "UpstreamAuthority",
    "WorkloadAttestor",
]

_log = logging.getLogger(__name__)

A = TypeVar("A")
R = TypeVar("R")

SERVER_OWNED_EXTENSIONS: Mapping[x509.ObjectIdentifier, str] = {
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME: "subjectAltName",
    ExtensionOID.BASIC_CONSTRAINTS: "basicConstraints",
    ExtensionOID.KEY_USAGE: "keyUsage",
    ExtensionOID.EXTENDED_KEY_USAGE: "extendedKeyUsage",
    ExtensionOID.SUBJECT_KEY_IDENTIFIER: "subjectKeyIdentifier",
    ExtensionOID.AUTHORITY_KEY_IDENTIFIER: "authorityKeyIdentifier",
}
"""Extensions of a workload X509-SVID that only the server sets (a CredentialComposer may not)."""

HookObserver = Callable[["PluginHandle", str], AbstractContextManager[object]]
"""Called around every hook call after configuration (metrics and traces): ``observer(handle, hook)``."""


class _CallerCallback(Generic[A, R]):
    """A function the core hands a plugin to call back (a datastore's update), kept apart.

    What the core's own function raises is the core's decision (an agent banned meanwhile, a
    bundle already holding the key), not a plugin failure: it must reach the core as raised,
    neither prefixed with the plugin's name nor turned into INTERNAL by :meth:`PluginHandle._call`.
    Used as a context manager around the hook call, which re-raises the callback's exception
    when the plugin's error was caused by it.
    """

    def __init__(self, function: Callable[[A], R]) -> None:
        self._function = function
        self._raised: BaseException | None = None

    def __call__(self, value: A) -> R:
        try:
            return self._function(value)
        except Exception as err:
            self._raised = err
            raise

    def __enter__(self) -> Callable[[A], R]:
        return self

    def __exit__(self, kind: object, error: BaseException | None, traceback: object) -> None:
        seen: set[int] = set()
        cause = error
        while cause is not None and self._raised is not None and id(cause) not in seen:
            if cause is self._raised:
                raise self._raised from None
            seen.add(id(cause))
            cause = cause.__cause__ or cause.__context__


class PluginHandle:
    """One configured plugin: its name, type and instance, callable through its hooks.

    ``type_name`` is SPIRE's name for the plugin's type, as written in config
    (``KeyManager``); errors are prefixed ``keymanager(<name>)``, once.
    """

    def __init__(self, name: str, instance: object, manager: pluggy.PluginManager, type_name: str) -> None:
        self.name = name
        self.instance = instance
        self.type_name = type_name
        self._manager = manager
        self.prefix = f"{type_name.lower()}({name})"
        self.observer: HookObserver | None = None
        """Watches every hook call once set (the daemon sets it after loading its catalog)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {type(self.instance).__qualname__}>"

    def implements(self, hook: str) -> bool:
        """Whether the plugin implements the optional hook ``hook``."""
        return bool(getattr(self._manager.hook, hook).get_hookimpls())

    def prefixed(self, message: str) -> str:
        """``message`` behind the plugin's prefix, exactly once.

        Plugins say what went wrong and the core says which plugin: a message that already
        starts with the plugin's name (``x509pop: ...``, as older plugins write them) is not
        prefixed a second time.
        """
        return f"{self.prefix}: {message.removeprefix(f'{self.name}: ')}"

    def observe(self, observer: Callable[[str, BaseException | None], None]) -> None:
        """Call ``observer(hook, error)`` after every hook call: ``error`` is what it raised, or None.

        For watching a plugin's health from its outcomes (the server reports a datastore whose
        writes fail); the observer runs in the calling thread and must not raise.
        """

        def before(hook_name: str, hook_impls: object, kwargs: object) -> None:
            pass

        def after(outcome: pluggy.Result[Any], hook_name: str, hook_impls: object, kwargs: object) -> None:
            observer(hook_name, outcome.exception)

        self._manager.add_hookcall_monitoring(before, after)

    def _call(self, hook: str, **kwargs: Any) -> Any:
        observer = self.observer
        if observer is None:
            return self._invoke(hook, **kwargs)
        with observer(self, hook):
            return self._invoke(hook, **kwargs)

    def _invoke(self, hook: str, **kwargs: Any) -> Any:
        caller = getattr(self._manager.hook, hook)
        if not caller.get_hookimpls():
            raise Unimplemented(f"{self.prefix}: does not implement {hook}")
        try:
            return caller(**kwargs)
        except PluginError as err:
            raise type(err)(self.prefixed(err.message)) from err
        except PluginConfigError:
            raise
        except Exception as err:
            # A plugin bug must not take the daemon down nor pass as success: fail closed.
            _log.exception("%s: %s raised unexpectedly", self.prefix, hook)
            raise Internal(self.prefixed(f"{hook} failed: {err}")) from err

    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        """Hand the plugin its configuration and its logger (see the ``configure`` hook)."""
        self._call("configure", plugin_data=plugin_data, core=core, logger=plugin_logger(self.type_name, self.name))

    def validate(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        """Have the plugin check its configuration without side effects (see the ``validate`` hook)."""
        self._call("validate", plugin_data=plugin_data, core=core)

    def close(self) -> None:
        """Let the plugin release its resources; errors are logged, never raised."""
        if not self.implements("close"):
            return
        try:
            self._manager.hook.close()
        except Exception:
            _log.exception("%s: close failed", self.prefix)

    def _expect(self, hook: str, value: Any, expected: type | tuple[type, ...]) -> Any:
        if not isinstance(value, expected):
            raise Internal(
                f"{self.prefix}: {hook} returned {type(value).__name__}, expected "
                + (expected.__name__ if isinstance(expected, type) else " or ".join(t.__name__ for t in expected))
            )
        return value


class ServerNodeAttestor(PluginHandle):
    """A server NodeAttestor (see :mod:`pyspire.plugin.hookspecs.server_node_attestor`)."""

    def attest(self, payload: bytes, challenge: Challenge, client_ip: str = "") -> AttestationResult:
        """Verify ``payload`` from an agent at ``client_ip``; the returned selectors are still plain values."""
        result: AttestationResult = self._expect(
            "attest_node",
            self._call("attest_node", payload=payload, challenge=challenge, client_ip=client_ip),
            AttestationResult,
        )
        if not all(isinstance(value, str) and value for value in result.selector_values):
            raise Internal(f"{self.prefix}: attest_node returned an empty or non-string selector value")
        return result

    def selectors(self, result: AttestationResult) -> tuple[Selector, ...]:
        """The result's selector values as selectors of this plugin's type."""
        return tuple(Selector(self.name, value) for value in result.selector_values)


class AgentNodeAttestor(PluginHandle):
    """An agent NodeAttestor (see :mod:`pyspire.plugin.hookspecs.agent_node_attestor`)."""

    def payload(self) -> bytes:
        """This node's attestation evidence."""
        return bytes(self._expect("attestation_payload", self._call("attestation_payload"), (bytes, bytearray)))

    def answer_challenge(self, challenge: bytes) -> bytes:
        """The plugin's answer to a server challenge."""
        answer = self._call("answer_challenge", challenge=challenge)
        return bytes(self._expect("answer_challenge", answer, (bytes, bytearray)))


class WorkloadAttestor(PluginHandle):
    """A WorkloadAttestor (see :mod:`pyspire.plugin.hookspecs.workload_attestor`)."""

    def attest(self, pid: int) -> tuple[Selector, ...]:
        """The selectors this plugin finds for process ``pid``."""
        answer = self._call("attest_workload", pid=pid)
        if answer is None or isinstance(answer, (str, bytes)):
            raise Internal(f"{self.prefix}: attest_workload must return a sequence of non-empty strings")
        # Taken once: a plugin that yields its values must not be read empty the second time.
        values = tuple(answer)
        if not all(isinstance(value, str) and value for value in values):
            raise Internal(f"{self.prefix}: attest_workload must return a sequence of non-empty strings")
        return tuple(Selector(self.name, value) for value in values)


class KeyManager(PluginHandle):
    """A KeyManager (see :mod:`pyspire.plugin.hookspecs.key_manager`)."""

    def generate_key(self, key_id: str, key_type: KeyType) -> PublicKey:
        """Create (or replace) the key ``key_id``."""
        key = self._call("generate_key", key_id=key_id, key_type=key_type)
        return self._check_key("generate_key", key, key_id)

    def get_public_key(self, key_id: str) -> PublicKey | None:
        """The key ``key_id``, or None."""
        key = self._call("get_public_key", key_id=key_id)
        return None if key is None else self._check_key("get_public_key", key, key_id)

    def get_public_keys(self) -> tuple[PublicKey, ...]:
        """All keys the plugin holds."""
        keys = self._call("get_public_keys")
        return tuple(self._check_key("get_public_keys", key, None) for key in keys)

    def sign_data(
        self,
        key_id: str,
        data: bytes,
        hash_algorithm: HashAlgorithm = HashAlgorithm.SHA256,
        *,
        rsa_pss: bool = False,
    ) -> bytes:
        """Sign ``data`` with ``key_id`` (DER ECDSA, or RSA PKCS#1 v1.5 / PSS)."""
        signature = self._call("sign_data", key_id=key_id, data=data, hash_algorithm=hash_algorithm, rsa_pss=rsa_pss)
        return bytes(self._expect("sign_data", signature, (bytes, bytearray)))

    def export_private_key(self, key_id: str) -> bytes:
        """The PKCS#8 DER private key ``key_id`` (agent TLS only; see the hook)."""
        return bytes(self._expect("export_private_key", self._call("export_private_key", key_id=key_id), bytes))

    def _check_key(self, hook: str, key: Any, key_id: str | None) -> PublicKey:
        key = self._expect(hook, key, PublicKey)
        if key_id is not None and key.id != key_id:
            raise Internal(f"{self.prefix}: {hook} returned key {key.id!r} for {key_id!r}")
        return key  # type: ignore[no-any-return]


class UpstreamAuthority(PluginHandle):
    """An UpstreamAuthority (see :mod:`pyspire.plugin.hookspecs.upstream_authority`)."""

    def mint_x509_ca(self, csr: bytes, preferred_ttl: timedelta) -> UpstreamX509Ca:
        """Have the upstream sign the server's CA request."""
        minted = self._expect(
            "mint_x509_ca",
            self._call("mint_x509_ca", csr=csr, preferred_ttl=preferred_ttl),
            UpstreamX509Ca,
        )
        if not minted.ca_chain or not all(isinstance(cert, x509.Certificate) for cert in minted.ca_chain):
            raise Internal(f"{self.prefix}: mint_x509_ca returned an empty or invalid CA chain")
        if not minted.upstream_roots:
            raise Internal(f"{self.prefix}: mint_x509_ca returned no upstream roots")
        return minted  # type: ignore[no-any-return]

    def publish_jwt_key(self, jwt_key: JwtKey) -> tuple[JwtKey, ...]:
        """Publish a JWT key upstream; raises Unimplemented if the plugin cannot."""
        return tuple(self._call("publish_jwt_key", jwt_key=jwt_key))

    def upstream_trust(self) -> UpstreamTrust:
        """The upstream's current roots and JWT keys (plugins that implement it)."""
        trust = self._expect("upstream_trust", self._call("upstream_trust"), UpstreamTrust)
        if not all(isinstance(root, x509.Certificate) for root in trust.x509_roots) or not all(
            isinstance(key, JwtKey) for key in trust.jwt_keys
        ):
            raise Internal(f"{self.prefix}: upstream_trust returned something other than certificates and JWT keys")
        return trust  # type: ignore[no-any-return]


class Notifier(PluginHandle):
    """A Notifier (see :mod:`pyspire.plugin.hookspecs.notifier`)."""

    def notify_bundle_loaded(self, bundle: Bundle) -> None:
        """Tell the plugin the server started with ``bundle`` (plugins that implement it)."""
        self._call("notify_bundle_loaded", bundle=bundle)

    def notify_bundle_updated(self, bundle: Bundle) -> None:
        """Tell the plugin the bundle changed."""
        self._call("notify_bundle_updated", bundle=bundle)


class BundlePublisher(PluginHandle):
    """A BundlePublisher (see :mod:`pyspire.plugin.hookspecs.bundle_publisher`)."""

    def publish_bundle(self, bundle: Bundle) -> None:
        """Publish the bundle."""
        self._call("publish_bundle", bundle=bundle)


class CredentialComposer(PluginHandle):
    """A CredentialComposer (see :mod:`pyspire.plugin.hookspecs.credential_composer`)."""

    def compose_workload_x509_svid(
        self,
        spiffe_id: SpiffeId,
        subject: x509.Name,
        extensions: tuple[x509.Extension[x509.ExtensionType], ...],
    ) -> tuple[x509.Name, tuple[x509.Extension[x509.ExtensionType], ...]]:
        """The subject and extra extensions for a workload X509-SVID."""
        if not self.implements("compose_workload_x509_svid"):
            return subject, extensions
        new_subject, new_extensions = self._call(
            "compose_workload_x509_svid",
            spiffe_id=spiffe_id,
            subject=subject,
            extensions=extensions,
        )
        composed = tuple(new_extensions)
        if not all(isinstance(extension, x509.Extension) for extension in composed):
            raise Internal(f"{self.prefix}: compose_workload_x509_svid returned something other than extensions")
        owned = sorted({SERVER_OWNED_EXTENSIONS[e.oid] for e in composed if e.oid in SERVER_OWNED_EXTENSIONS})
        if owned:
            # A second SubjectAlternativeName could carry another SPIFFE ID: fail closed.
            raise Internal(f"{self.prefix}: compose_workload_x509_svid may not set {', '.join(owned)}")
        return self._expect("compose_workload_x509_svid", new_subject, x509.Name), composed

    def compose_workload_jwt_svid(self, spiffe_id: SpiffeId, claims: Mapping[str, Any]) -> Mapping[str, Any]:
        """The claims of a workload JWT-SVID."""
        if not self.implements("compose_workload_jwt_svid"):
            return claims
        composed = self._call("compose_workload_jwt_svid", spiffe_id=spiffe_id, claims=claims)
        return self._expect("compose_workload_jwt_svid", composed, Mapping)  # type: ignore[no-any-return]


class SvidStore(PluginHandle):
    """An SVIDStore (see :mod:`pyspire.plugin.hookspecs.svid_store`)."""

    def put_x509_svid(
        self,
        svid: X509Svid,
        bundle: Bundle,
        federated_bundles: Mapping[TrustDomain, Bundle],
        metadata: Sequence[str],
    ) -> None:
        """Store an SVID."""
        self._call("put_x509_svid", svid=svid, bundle=bundle, federated_bundles=federated_bundles, metadata=metadata)

    def delete_x509_svid(self, metadata: Sequence[str]) -> None:
        """Remove a stored SVID."""
        self._call("delete_x509_svid", metadata=metadata)


class DataStore(PluginHandle):
    """The DataStore (see :mod:`pyspire.plugin.hookspecs.datastore`): one method per hook.

    Methods are synchronous and may block on the database: call them from a worker thread
    (all but ``read_attested_node_at_once`` and ``read_attested_node_on_loop``, made for the
    event loop).
    """

    # bundles
    def fetch_bundle(self, trust_domain: TrustDomain) -> BundleRecord | None:
        """The bundle of ``trust_domain``, or None."""
        return self._optional("fetch_bundle", BundleRecord, trust_domain=trust_domain)

    def list_bundles(self, page: Page = Page()) -> tuple[list[BundleRecord], str]:
        """A page of bundles and the next page token."""
        return self._page("list_bundles", BundleRecord, page=page)

    def count_bundles(self) -> int:
        """How many bundles are stored."""
        return int(self._call("count_bundles"))

    def create_bundle(self, bundle: BundleRecord) -> BundleRecord:
        """Store a new bundle."""
        return self._required("create_bundle", BundleRecord, bundle=bundle)

    def set_bundle(self, bundle: BundleRecord) -> BundleRecord:
        """Store or replace a bundle."""
        return self._required("set_bundle", BundleRecord, bundle=bundle)

    def modify_bundle(
        self, trust_domain: TrustDomain, update: Callable[[BundleRecord | None], BundleRecord | None]
    ) -> BundleRecord | None:
        """Read-modify-write one bundle atomically; what ``update`` raises reaches the caller as raised."""
        with _CallerCallback(update) as callback:
            return self._optional("modify_bundle", BundleRecord, trust_domain=trust_domain, update=callback)

    def delete_bundle(self, trust_domain: TrustDomain, mode: BundleDeleteMode = BundleDeleteMode.RESTRICT) -> None:
        """Delete a bundle."""
        self._call("delete_bundle", trust_domain=trust_domain, mode=mode)

    # registration entries
    def create_registration_entries(self, entries: Sequence[RegistrationEntry]) -> list[CreatedEntry]:
        """Create entries in one transaction."""
        results = list(self._call("create_registration_entries", entries=entries))
        if len(results) != len(entries) or not all(isinstance(r, CreatedEntry) for r in results):
            raise Internal(f"{self.prefix}: create_registration_entries must return one CreatedEntry per entry")
        return results

    def fetch_registration_entry(self, entry_id: str) -> RegistrationEntry | None:
        """One entry, or None."""
        return self._optional("fetch_registration_entry", RegistrationEntry, entry_id=entry_id)

    def fetch_registration_entries(self, entry_ids: Sequence[str]) -> list[RegistrationEntry]:
        """The existing entries among ``entry_ids``."""
        return self._list("fetch_registration_entries", RegistrationEntry, entry_ids=entry_ids)

    def list_registration_entries(
        self, entry_filter: EntryFilter = EntryFilter(), page: Page = Page()
    ) -> tuple[list[RegistrationEntry], str]:
        """A page of matching entries and the next page token."""
        return self._page("list_registration_entries", RegistrationEntry, entry_filter=entry_filter, page=page)

    def count_registration_entries(self, entry_filter: EntryFilter = EntryFilter()) -> int:
        """How many entries match."""
        return int(self._call("count_registration_entries", entry_filter=entry_filter))

    def update_registration_entry(self, entry: RegistrationEntry) -> RegistrationEntry:
        """Replace an entry."""
        return self._required("update_registration_entry", RegistrationEntry, entry=entry)

    def delete_registration_entry(self, entry_id: str) -> RegistrationEntry | None:
        """Delete an entry; the deleted entry or None."""
        return self._optional("delete_registration_entry", RegistrationEntry, entry_id=entry_id)

    def prune_registration_entries(self, expires_before: int) -> int:
        """Delete expired entries; how many."""
        return int(self._call("prune_registration_entries", expires_before=expires_before))

    # attested nodes
    def create_attested_node(self, node: AttestedNode) -> AttestedNode:
        """Store a newly attested node."""
        return self._required("create_attested_node", AttestedNode, node=node)

    def fetch_attested_node(self, spiffe_id: SpiffeId) -> AttestedNode | None:
        """One node, or None."""
        return self._optional("fetch_attested_node", AttestedNode, spiffe_id=spiffe_id)

    def read_attested_node_at_once(self, spiffe_id: SpiffeId) -> NodeReadAtOnce | None:
        """One node read without waiting (call it on the event loop), or None: then ``fetch_attested_node``.

        A store without the hook, or whose read fails, answers None; the worker-thread read
        that follows reports the failure.
        """
        if not self.implements("read_attested_node_at_once"):
            return None
        try:
            return self._optional("read_attested_node_at_once", NodeReadAtOnce, spiffe_id=spiffe_id)
        except PluginError:
            return None

    async def read_attested_node_on_loop(self, spiffe_id: SpiffeId) -> NodeReadAtOnce | None:
        """One node read by the store's coroutine on this event loop, or None: then ``fetch_attested_node``.

        Timed as the read, not as the hook call that hands over the coroutine. Whatever goes
        wrong answers None, as for ``read_attested_node_at_once``: the worker-thread read that
        follows reports it.
        """
        hook = "read_attested_node_on_loop"
        if not self.implements(hook):
            return None
        observer = self.observer
        with nullcontext() if observer is None else observer(self, hook):
            try:
                read = self._invoke(hook, spiffe_id=spiffe_id)
                if read is None:
                    return None
                if not inspect.isawaitable(read):
                    raise Internal(self.prefixed(f"{hook} must return a coroutine or None"))
                found = await read
                return None if found is None else cast(NodeReadAtOnce, self._expect(hook, found, NodeReadAtOnce))
            except PluginError:
                return None
            except Exception:
                _log.exception("%s: %s raised unexpectedly", self.prefix, hook)
                return None

    def list_attested_nodes(
        self, node_filter: NodeFilter = NodeFilter(), page: Page = Page()
    ) -> tuple[list[AttestedNode], str]:
        """A page of matching nodes and the next page token."""
        return self._page("list_attested_nodes", AttestedNode, node_filter=node_filter, page=page)

    def count_attested_nodes(self, node_filter: NodeFilter = NodeFilter()) -> int:
        """How many nodes match."""
        return int(self._call("count_attested_nodes", node_filter=node_filter))

    def modify_attested_node(self, spiffe_id: SpiffeId, update: Callable[[AttestedNode], AttestedNode]) -> AttestedNode:
        """Read-modify-write one node atomically; what ``update`` raises reaches the caller as raised."""
        with _CallerCallback(update) as callback:
            return self._required("modify_attested_node", AttestedNode, spiffe_id=spiffe_id, update=callback)

    def delete_attested_node(self, spiffe_id: SpiffeId) -> AttestedNode | None:
        """Delete a node; the deleted node or None."""
        return self._optional("delete_attested_node", AttestedNode, spiffe_id=spiffe_id)

    def prune_attested_nodes(self, expired_before: int, include_non_reattestable: bool) -> int:
        """Delete nodes whose SVIDs expired; how many."""
        return int(
            self._call(
                "prune_attested_nodes", expired_before=expired_before, include_non_reattestable=include_non_reattestable
            )
        )

    # join tokens
    def create_join_token(self, token: JoinToken) -> None:
        """Store a join token."""
        self._call("create_join_token", token=token)

    def take_join_token(self, token: str) -> JoinToken | None:
        """Consume a join token (exactly one caller gets it)."""
        return self._optional("take_join_token", JoinToken, token=token)

    def prune_join_tokens(self, expires_before: int) -> int:
        """Delete expired tokens; how many."""
        return int(self._call("prune_join_tokens", expires_before=expires_before))

    # federation relationships
    def create_federation_relationship(self, relationship: FederationRelationship) -> FederationRelationship:
        """Store a relationship."""
        return self._required("create_federation_relationship", FederationRelationship, relationship=relationship)

    def fetch_federation_relationship(self, trust_domain: TrustDomain) -> FederationRelationship | None:
        """One relationship, or None."""
        return self._optional("fetch_federation_relationship", FederationRelationship, trust_domain=trust_domain)

    def list_federation_relationships(self, page: Page = Page()) -> tuple[list[FederationRelationship], str]:
        """A page of relationships and the next page token."""
        return self._page("list_federation_relationships", FederationRelationship, page=page)

    def update_federation_relationship(self, relationship: FederationRelationship) -> FederationRelationship:
        """Replace a relationship."""
        return self._required("update_federation_relationship", FederationRelationship, relationship=relationship)

    def delete_federation_relationship(self, trust_domain: TrustDomain) -> None:
        """Delete a relationship."""
        self._call("delete_federation_relationship", trust_domain=trust_domain)

    # CA journals
    def set_ca_journal(self, journal: CaJournal) -> CaJournal:
        """Insert or replace a journal."""
        return self._required("set_ca_journal", CaJournal, journal=journal)

    def fetch_ca_journal(self, active_x509_authority_id: str) -> CaJournal | None:
        """The journal of an active X.509 authority, or None."""
        return self._optional("fetch_ca_journal", CaJournal, active_x509_authority_id=active_x509_authority_id)

    def list_ca_journals(self) -> list[CaJournal]:
        """All journals."""
        return self._list("list_ca_journals", CaJournal)

    def delete_ca_journal(self, journal_id: int) -> None:
        """Delete a journal."""
        self._call("delete_ca_journal", journal_id=journal_id)

    # change events
    def list_change_events(self, after_sequence: int, limit: int) -> list[ChangeEvent]:
        """Events after ``after_sequence``, in order."""
        return self._list("list_change_events", ChangeEvent, after_sequence=after_sequence, limit=limit)

    def last_change_sequence(self) -> int:
        """The newest committed event's sequence."""
        return int(self._call("last_change_sequence"))

    def prune_change_events(self, created_before: int) -> int:
        """Delete old events; how many."""
        return int(self._call("prune_change_events", created_before=created_before))

    # result checks
    def _required(self, hook: str, expected: type[R], **kwargs: Any) -> R:
        return cast(R, self._expect(hook, self._call(hook, **kwargs), expected))

    def _optional(self, hook: str, expected: type[R], **kwargs: Any) -> R | None:
        value = self._call(hook, **kwargs)
        return None if value is None else cast(R, self._expect(hook, value, expected))

    def _list(self, hook: str, expected: type[R], **kwargs: Any) -> list[R]:
        values = list(self._call(hook, **kwargs))
        if not all(isinstance(value, expected) for value in values):
            raise Internal(f"{self.prefix}: {hook} returned something other than {expected.__name__} records")
        return values

    def _page(self, hook: str, expected: type[R], **kwargs: Any) -> tuple[list[R], str]:
        items, token = self._call(hook, **kwargs)
        items = list(items)
        if not all(isinstance(item, expected) for item in items) or not isinstance(token, str):
            raise Internal(f"{self.prefix}: {hook} must return ({expected.__name__} records, next page token)")
        return items, token
