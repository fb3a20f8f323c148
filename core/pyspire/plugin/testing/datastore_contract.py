"""The DataStore contract: every promise of :mod:`pyspire.plugin.hookspecs.datastore`.

Subclass it and provide a ``datastore`` fixture that yields a configured
:class:`~pyspire.plugin.facades.DataStore` on an empty database::

    class TestMyStore(DataStoreContract):
        @pytest.fixture
        def datastore(self, tmp_path): ...

The suite runs the hooks from several threads at once where the contract is about
concurrency (join tokens, uniqueness, read-modify-write, event ordering).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from pyspire.plugin.errors import AlreadyExists, FailedPrecondition, NotFound
from pyspire.plugin.facades import DataStore
from pyspire.plugin.records import (
    AttestedNode,
    BundleDeleteMode,
    BundleRecord,
    CaJournal,
    ChangeKind,
    EntryFilter,
    FederationRelationship,
    JoinToken,
    JwtAuthority,
    MatchBehavior,
    NodeFilter,
    Page,
    RegistrationEntry,
    X509Authority,
)
from pyspire.plugin.selectors import Selector
from pyspire.spiffe import SpiffeId, TrustDomain

__all__ = ["DataStoreContract"]

TD = TrustDomain("example.org")
FED = TrustDomain("partner.test")


def sid(path: str) -> SpiffeId:
    """A SPIFFE ID in the test trust domain."""
    return SpiffeId.parse(f"spiffe://example.org{path}")


def entry(path: str, parent: str = "/spire/agent/x509pop/a", *selectors: str, **fields: Any) -> RegistrationEntry:
    """A registration entry for ``path`` under ``parent`` with ``type:value`` selectors."""
    return RegistrationEntry(
        id=fields.pop("id", ""),
        spiffe_id=sid(path),
        parent_id=sid(parent),
        selectors=tuple(Selector.parse(s) for s in (selectors or ("unix:uid:1000",))),
        **fields,
    )


def node(path: str, *selectors: str, **fields: Any) -> AttestedNode:
    """An attested node with ``type:value`` selectors."""
    values: dict[str, Any] = {
        "attestation_type": "x509pop",
        "cert_serial_number": "1",
        "cert_not_after": 2_000_000_000,
        "can_reattest": True,
    }
    values.update(fields)
    return AttestedNode(spiffe_id=sid(path), selectors=tuple(Selector.parse(s) for s in selectors), **values)


def run_threads(count: int, work: Callable[[int], object]) -> list[object]:
    """Run ``work(i)`` in ``count`` threads started together; collect results or exceptions."""
    results: list[object] = [None] * count
    barrier = threading.Barrier(count)

    def target(index: int) -> None:
        barrier.wait()
        try:
            results[index] = work(index)
        except Exception as err:
            results[index] = err

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


class DataStoreContract:
    """Reusable tests of a DataStore implementation (provide the ``datastore`` fixture)."""

    # --- bundles -----------------------------------------------------------------------

    def test_bundle_create_fetch_and_duplicate(self, datastore: DataStore) -> None:
        bundle = BundleRecord(
            TD, (X509Authority(b"\x30\x03\x02\x01\x01"),), (JwtAuthority("k1", b"key", 99, True),), 300, 4
        )
        assert datastore.create_bundle(bundle) == bundle
        assert datastore.fetch_bundle(TD) == bundle
        assert datastore.fetch_bundle(FED) is None
        with pytest.raises(AlreadyExists):
            datastore.create_bundle(bundle)
        assert datastore.count_bundles() == 1

    def test_set_bundle_inserts_then_replaces(self, datastore: DataStore) -> None:
        first = BundleRecord(FED, sequence_number=1)
        datastore.set_bundle(first)
        second = replace(first, sequence_number=2)
        datastore.set_bundle(second)
        assert datastore.fetch_bundle(FED) == second

    def test_bundles_are_listed_in_pages(self, datastore: DataStore) -> None:
        for name in ("a.test", "b.test", "c.test"):
            datastore.set_bundle(BundleRecord(TrustDomain(name)))
        first, token = datastore.list_bundles(Page(size=2))
        rest, end = datastore.list_bundles(Page(size=2, token=token))
        assert [b.trust_domain.name for b in first + rest] == ["a.test", "b.test", "c.test"]
        assert token
        assert end == ""

    def test_concurrent_bundle_modifications_all_land(self, datastore: DataStore) -> None:
        datastore.create_bundle(BundleRecord(TD))

        def append(index: int) -> object:
            def add(current: BundleRecord | None) -> BundleRecord | None:
                assert current is not None
                authority = X509Authority(bytes([index]) * 8)
                return replace(current, x509_authorities=(*current.x509_authorities, authority))

            return datastore.modify_bundle(TD, add)

        results = run_threads(8, append)
        assert not [r for r in results if isinstance(r, Exception)]
        stored = datastore.fetch_bundle(TD)
        assert stored is not None
        assert {a.der for a in stored.x509_authorities} == {bytes([i]) * 8 for i in range(8)}

    def test_modify_bundle_that_changes_nothing_writes_nothing(self, datastore: DataStore) -> None:
        datastore.create_bundle(BundleRecord(TD))
        before = datastore.last_change_sequence()
        assert datastore.modify_bundle(TD, lambda current: current) == BundleRecord(TD)
        assert datastore.modify_bundle(FED, lambda current: None) is None
        assert datastore.last_change_sequence() == before

    def test_delete_bundle_modes(self, datastore: DataStore) -> None:
        datastore.create_bundle(BundleRecord(FED))
        (created,) = datastore.create_registration_entries([entry("/web", federates_with=(FED,))])
        with pytest.raises(FailedPrecondition):
            datastore.delete_bundle(FED, BundleDeleteMode.RESTRICT)
        datastore.delete_bundle(FED, BundleDeleteMode.DISSOCIATE)
        dissociated = datastore.fetch_registration_entry(created.entry.id)
        assert dissociated is not None
        assert dissociated.federates_with == ()
        assert dissociated.revision_number == 1
        datastore.create_bundle(BundleRecord(FED))
        (other,) = datastore.create_registration_entries([entry("/db", federates_with=(FED,))])
        datastore.delete_bundle(FED, BundleDeleteMode.DELETE)
        assert datastore.fetch_registration_entry(other.entry.id) is None
        assert datastore.fetch_bundle(FED) is None
        with pytest.raises(NotFound):
            datastore.delete_bundle(FED, BundleDeleteMode.DELETE)

    # --- registration entries ----------------------------------------------------------

    def test_batch_create_assigns_ids_and_reports_duplicates(self, datastore: DataStore) -> None:
        before = int(time.time())
        results = datastore.create_registration_entries(
            [
                entry("/a"),
                entry("/b", "/spire/agent/x509pop/a", "unix:uid:1", "unix:gid:2"),
                entry("/a"),
                entry("/b", "/spire/agent/x509pop/a", "unix:gid:2", "unix:uid:1"),
            ]
        )
        assert [r.created for r in results] == [True, True, False, False]
        assert results[2].entry == results[0].entry  # a duplicate reports the entry that exists
        assert results[3].entry.id == results[1].entry.id  # selector order does not matter
        for result in results[:2]:
            assert result.entry.id
            assert result.entry.created_at >= before
            assert result.entry.revision_number == 0
        again = datastore.create_registration_entries([entry("/a", id="custom-id")])
        assert not again[0].created
        assert again[0].entry.id == results[0].entry.id

    def test_entry_with_a_taken_id_is_not_created(self, datastore: DataStore) -> None:
        datastore.create_registration_entries([entry("/a", id="fixed")])
        (result,) = datastore.create_registration_entries([entry("/other", id="fixed")])
        assert not result.created
        assert str(result.entry.spiffe_id) == "spiffe://example.org/a"

    def test_unknown_federated_trust_domain_fails_the_whole_batch(self, datastore: DataStore) -> None:
        with pytest.raises(FailedPrecondition, match=r"partner\.test"):
            datastore.create_registration_entries([entry("/ok"), entry("/bad", federates_with=(FED,))])
        assert datastore.count_registration_entries() == 0
        assert datastore.list_change_events(0, 100) == []

    def test_concurrent_creation_of_one_entry_creates_it_once(self, datastore: DataStore) -> None:
        results = run_threads(8, lambda _: datastore.create_registration_entries([entry("/race")])[0])
        assert not [r for r in results if isinstance(r, Exception)], results
        assert sum(1 for r in results if getattr(r, "created", False)) == 1
        assert datastore.count_registration_entries() == 1

    def test_entry_fields_round_trip(self, datastore: DataStore) -> None:
        datastore.create_bundle(BundleRecord(FED))
        full = entry(
            "/full",
            "/spire/server",
            "k8s:ns:prod",
            "k8s:sa:web",
            x509_svid_ttl=60,
            jwt_svid_ttl=30,
            federates_with=(FED,),
            admin=True,
            downstream=True,
            expires_at=2_000_000_000,
            dns_names=("web.example.org", "web"),
            store_svid=True,
            hint="external",
            disable_x509_svid_prefetch=True,
            jwt_svid_include_jti=True,
        )
        (created,) = datastore.create_registration_entries([full])
        fetched = datastore.fetch_registration_entry(created.entry.id)
        assert fetched == replace(full.normalized(), id=created.entry.id, created_at=created.entry.created_at)
        assert datastore.fetch_registration_entries([created.entry.id, "missing"]) == [fetched]

    def _seed_for_filters(self, datastore: DataStore) -> dict[str, str]:
        datastore.create_bundle(BundleRecord(FED))
        datastore.create_bundle(BundleRecord(TrustDomain("other.test")))
        specs = {
            "a": entry("/a", "/p1", "t:1", hint="h1"),
            "ab": entry("/ab", "/p1", "t:1", "t:2", downstream=True, federates_with=(FED,)),
            "abc": entry("/abc", "/p2", "t:1", "t:2", "t:3", federates_with=(FED, TrustDomain("other.test"))),
            "c": entry("/c", "/p2", "t:3", hint="h1"),
        }
        results = datastore.create_registration_entries(list(specs.values()))
        return {name: result.entry.id for name, result in zip(specs, results, strict=True)}

    @pytest.mark.parametrize(
        ("selectors", "behavior", "expected"),
        [
            (("t:1", "t:2"), MatchBehavior.EXACT, {"ab"}),
            (("t:1", "t:2"), MatchBehavior.SUBSET, {"a", "ab"}),
            (("t:1", "t:2"), MatchBehavior.SUPERSET, {"ab", "abc"}),
            (("t:2", "t:3"), MatchBehavior.ANY, {"ab", "abc", "c"}),
            ((), MatchBehavior.SUPERSET, {"a", "ab", "abc", "c"}),
            ((), MatchBehavior.EXACT, set()),
        ],
    )
    def test_entry_selector_filters(
        self, datastore: DataStore, selectors: tuple[str, ...], behavior: MatchBehavior, expected: set[str]
    ) -> None:
        ids = self._seed_for_filters(datastore)
        entry_filter = EntryFilter(by_selectors=(tuple(Selector.parse(s) for s in selectors), behavior))
        found, _ = datastore.list_registration_entries(entry_filter)
        assert {e.id for e in found} == {ids[name] for name in expected}
        assert datastore.count_registration_entries(entry_filter) == len(expected)

    @pytest.mark.parametrize(
        ("domains", "behavior", "expected"),
        [
            (("partner.test",), MatchBehavior.EXACT, {"ab"}),
            (("partner.test",), MatchBehavior.SUBSET, {"a", "ab", "c"}),
            (("partner.test",), MatchBehavior.SUPERSET, {"ab", "abc"}),
            (("other.test",), MatchBehavior.ANY, {"abc"}),
        ],
    )
    def test_entry_federation_filters(
        self, datastore: DataStore, domains: tuple[str, ...], behavior: MatchBehavior, expected: set[str]
    ) -> None:
        ids = self._seed_for_filters(datastore)
        entry_filter = EntryFilter(by_federates_with=(tuple(TrustDomain(d) for d in domains), behavior))
        found, _ = datastore.list_registration_entries(entry_filter)
        assert {e.id for e in found} == {ids[name] for name in expected}

    def test_entry_field_filters_and_paging(self, datastore: DataStore) -> None:
        ids = self._seed_for_filters(datastore)

        def names(entry_filter: EntryFilter) -> set[str]:
            found, _ = datastore.list_registration_entries(entry_filter)
            return {name for name, entry_id in ids.items() if entry_id in {e.id for e in found}}

        assert names(EntryFilter(by_spiffe_id=sid("/ab"))) == {"ab"}
        assert names(EntryFilter(by_parent_id=sid("/p2"))) == {"abc", "c"}
        assert names(EntryFilter(by_hint="h1")) == {"a", "c"}
        assert names(EntryFilter(by_downstream=True)) == {"ab"}
        assert names(EntryFilter(by_parent_id=sid("/p2"), by_hint="h1")) == {"c"}
        assert datastore.count_registration_entries(EntryFilter(by_parent_id=sid("/p1"))) == 2
        pages, token = [], ""
        while True:
            page, token = datastore.list_registration_entries(EntryFilter(), Page(size=3, token=token))
            pages.append([e.id for e in page])
            if not token:
                break
        flat = [entry_id for page in pages for entry_id in page]
        assert flat == sorted(ids.values())
        assert all(len(page) <= 3 for page in pages)

    def test_update_entry(self, datastore: DataStore) -> None:
        (one, two) = datastore.create_registration_entries([entry("/one"), entry("/two")])
        changed = replace(one.entry, x509_svid_ttl=99, hint="new", created_at=1, revision_number=42)
        updated = datastore.update_registration_entry(changed)
        assert updated.revision_number == 1
        assert updated.created_at == one.entry.created_at
        assert datastore.fetch_registration_entry(one.entry.id) == updated
        with pytest.raises(AlreadyExists):
            datastore.update_registration_entry(replace(two.entry, spiffe_id=sid("/one")))
        with pytest.raises(NotFound):
            datastore.update_registration_entry(replace(one.entry, id="missing"))
        with pytest.raises(FailedPrecondition):
            datastore.update_registration_entry(replace(one.entry, federates_with=(FED,)))

    def test_delete_and_prune_entries(self, datastore: DataStore) -> None:
        (keep, expired, gone) = datastore.create_registration_entries(
            [entry("/keep"), entry("/expired", expires_at=1000), entry("/gone")]
        )
        assert datastore.delete_registration_entry(gone.entry.id) == gone.entry
        assert datastore.delete_registration_entry(gone.entry.id) is None
        assert datastore.prune_registration_entries(2000) == 1
        assert {e.id for e in datastore.list_registration_entries()[0]} == {keep.entry.id}
        assert expired.entry.id not in {e.id for e in datastore.list_registration_entries()[0]}

    # --- attested nodes ----------------------------------------------------------------

    def test_node_create_fetch_and_duplicate(self, datastore: DataStore) -> None:
        agent = node("/spire/agent/x509pop/a", "x509pop:subject:cn:a", "x509pop:ca:fingerprint:f")
        datastore.create_attested_node(agent)
        fetched = datastore.fetch_attested_node(agent.spiffe_id)
        assert fetched is not None
        assert set(fetched.selectors) == set(agent.selectors)
        with pytest.raises(AlreadyExists):
            datastore.create_attested_node(agent)
        assert datastore.fetch_attested_node(sid("/spire/agent/x509pop/none")) is None

    def test_a_node_read_at_once_answers_as_fetch_would(self, datastore: DataStore) -> None:
        # The optional hook the server calls on its event loop for every agent call: when it
        # answers, it must be the committed state fetch_attested_node would return.
        agent = node("/spire/agent/x509pop/a", "x509pop:subject:cn:a")

        def agrees() -> None:
            read = datastore.read_attested_node_at_once(agent.spiffe_id)
            if read is not None:
                assert read.node == datastore.fetch_attested_node(agent.spiffe_id)

        agrees()
        datastore.create_attested_node(agent)
        agrees()
        datastore.modify_attested_node(
            agent.spiffe_id, lambda n: replace(n, cert_serial_number="", new_cert_serial_number="")
        )
        agrees()
        datastore.delete_attested_node(agent.spiffe_id)
        agrees()

    def test_a_node_read_on_the_loop_answers_as_fetch_would(self, datastore: DataStore) -> None:
        # The optional coroutine the server awaits for every agent call when the read at once
        # gave no answer: when it answers, it is the committed state of that moment. One loop
        # for the whole test, as the server has one; the writes block it briefly.
        agent = node("/spire/agent/x509pop/a", "x509pop:subject:cn:a")

        async def agrees() -> None:
            read = await datastore.read_attested_node_on_loop(agent.spiffe_id)
            if read is not None:
                assert read.node == datastore.fetch_attested_node(agent.spiffe_id)

        async def scenario() -> None:
            await agrees()
            datastore.create_attested_node(agent)
            await agrees()
            datastore.modify_attested_node(
                agent.spiffe_id, lambda n: replace(n, cert_serial_number="", new_cert_serial_number="")
            )
            await agrees()
            datastore.delete_attested_node(agent.spiffe_id)
            await agrees()

        asyncio.run(scenario())

    def test_node_filters(self, datastore: DataStore) -> None:
        datastore.create_attested_node(node("/spire/agent/x509pop/a", "x:1", "x:2", cert_not_after=100))
        datastore.create_attested_node(
            node("/spire/agent/join_token/b", "x:1", attestation_type="join_token", can_reattest=False)
        )
        datastore.create_attested_node(
            node("/spire/agent/x509pop/c", "x:3", cert_serial_number="", new_cert_serial_number="")
        )

        def paths(node_filter: NodeFilter) -> set[str]:
            return {n.spiffe_id.path.rsplit("/", 1)[1] for n in datastore.list_attested_nodes(node_filter)[0]}

        assert paths(NodeFilter()) == {"a", "b", "c"}
        assert paths(NodeFilter(by_attestation_type="join_token")) == {"b"}
        assert paths(NodeFilter(by_banned=True)) == {"c"}
        assert paths(NodeFilter(by_banned=False)) == {"a", "b"}
        assert paths(NodeFilter(by_can_reattest=False)) == {"b"}
        assert paths(NodeFilter(by_expires_before=101)) == {"a"}
        assert paths(NodeFilter(by_selectors=((Selector("x", "1"),), MatchBehavior.SUPERSET))) == {"a", "b"}
        assert paths(NodeFilter(by_selectors=((Selector("x", "1"),), MatchBehavior.EXACT))) == {"b"}
        assert datastore.count_attested_nodes(NodeFilter(by_banned=False)) == 2

    def test_modify_node_promotes_serials_atomically(self, datastore: DataStore) -> None:
        agent = node("/spire/agent/x509pop/a", "x:1")
        datastore.create_attested_node(agent)
        renewed = datastore.modify_attested_node(
            agent.spiffe_id,
            lambda n: replace(n, new_cert_serial_number="2", new_cert_not_after=3, selectors=(Selector("x", "9"),)),
        )
        assert renewed.new_cert_serial_number == "2"
        fetched = datastore.fetch_attested_node(agent.spiffe_id)
        assert fetched == renewed
        with pytest.raises(NotFound):
            datastore.modify_attested_node(sid("/spire/agent/x509pop/none"), lambda n: n)
        # the node-selector index follows the modification
        found = datastore.list_attested_nodes(NodeFilter(by_selectors=((Selector("x", "9"),), MatchBehavior.ANY)))[0]
        assert [n.spiffe_id for n in found] == [agent.spiffe_id]

    def test_delete_and_prune_nodes(self, datastore: DataStore) -> None:
        datastore.create_attested_node(node("/spire/agent/x509pop/expired", cert_not_after=10))
        datastore.create_attested_node(node("/spire/agent/join_token/tofu", cert_not_after=10, can_reattest=False))
        datastore.create_attested_node(node("/spire/agent/x509pop/banned", cert_not_after=10, cert_serial_number=""))
        datastore.create_attested_node(node("/spire/agent/x509pop/live", cert_not_after=10**10))
        assert datastore.prune_attested_nodes(100, include_non_reattestable=False) == 1
        assert datastore.prune_attested_nodes(100, include_non_reattestable=True) == 1
        remaining = {n.spiffe_id.path for n in datastore.list_attested_nodes()[0]}
        assert remaining == {"/spire/agent/x509pop/banned", "/spire/agent/x509pop/live"}
        deleted = datastore.delete_attested_node(sid("/spire/agent/x509pop/live"))
        assert deleted is not None
        assert datastore.delete_attested_node(sid("/spire/agent/x509pop/live")) is None

    # --- join tokens -------------------------------------------------------------------

    def test_join_token_is_taken_exactly_once_under_concurrency(self, datastore: DataStore) -> None:
        datastore.create_join_token(JoinToken("t-1", 2_000_000_000))
        with pytest.raises(AlreadyExists):
            datastore.create_join_token(JoinToken("t-1", 5))
        results = run_threads(20, lambda _: datastore.take_join_token("t-1"))
        assert not [r for r in results if isinstance(r, Exception)], results
        assert [r for r in results if r is not None] == [JoinToken("t-1", 2_000_000_000)]
        assert datastore.take_join_token("t-1") is None

    def test_expired_token_is_still_returned_and_prune_removes_old_ones(self, datastore: DataStore) -> None:
        datastore.create_join_token(JoinToken("old", 10))
        datastore.create_join_token(JoinToken("older", 5))
        datastore.create_join_token(JoinToken("new", 10**10))
        assert datastore.prune_join_tokens(7) == 1
        assert datastore.take_join_token("old") == JoinToken("old", 10)
        assert datastore.take_join_token("older") is None

    # --- federation relationships ------------------------------------------------------

    def test_federation_relationships(self, datastore: DataStore) -> None:
        web = FederationRelationship(FED, "https://partner.test/bundle", "https_web")
        spiffe = FederationRelationship(
            TrustDomain("other.test"),
            "https://other.test/b",
            "https_spiffe",
            SpiffeId.parse("spiffe://other.test/spire/server"),
        )
        datastore.create_federation_relationship(web)
        datastore.create_federation_relationship(spiffe)
        with pytest.raises(AlreadyExists):
            datastore.create_federation_relationship(web)
        assert datastore.fetch_federation_relationship(TrustDomain("other.test")) == spiffe
        listed, _ = datastore.list_federation_relationships()
        assert listed == [spiffe, web]
        moved = replace(web, bundle_endpoint_url="https://partner.test/v2")
        datastore.update_federation_relationship(moved)
        assert datastore.fetch_federation_relationship(FED) == moved
        datastore.delete_federation_relationship(FED)
        assert datastore.fetch_federation_relationship(FED) is None
        with pytest.raises(NotFound):
            datastore.delete_federation_relationship(FED)
        with pytest.raises(NotFound):
            datastore.update_federation_relationship(moved)

    # --- CA journals -------------------------------------------------------------------

    def test_ca_journals(self, datastore: DataStore) -> None:
        stored = datastore.set_ca_journal(CaJournal(0, "ski-a", b"journal-1"))
        assert stored.id > 0
        replaced = datastore.set_ca_journal(replace(stored, active_x509_authority_id="ski-b", data=b"journal-2"))
        assert datastore.fetch_ca_journal("ski-b") == replaced
        assert datastore.fetch_ca_journal("ski-a") is None
        other = datastore.set_ca_journal(CaJournal(0, "ski-c", b"x" * 100_000))
        assert datastore.list_ca_journals() == [replaced, other]
        datastore.delete_ca_journal(stored.id)
        assert datastore.list_ca_journals() == [other]

    # --- change events -----------------------------------------------------------------

    def test_each_change_produces_an_event(self, datastore: DataStore) -> None:
        datastore.create_bundle(BundleRecord(TD))
        (created,) = datastore.create_registration_entries([entry("/a")])
        datastore.create_attested_node(node("/spire/agent/x509pop/a"))
        datastore.create_federation_relationship(FederationRelationship(FED, "https://p/b", "https_web"))
        datastore.delete_registration_entry(created.entry.id)
        events = datastore.list_change_events(0, 100)
        assert [(e.kind, e.key) for e in events] == [
            (ChangeKind.BUNDLE, "example.org"),
            (ChangeKind.ENTRY, created.entry.id),
            (ChangeKind.NODE, "spiffe://example.org/spire/agent/x509pop/a"),
            (ChangeKind.FEDERATION, "partner.test"),
            (ChangeKind.ENTRY, created.entry.id),
        ]
        assert [e.sequence for e in events] == list(range(1, 6))
        assert datastore.last_change_sequence() == 5
        assert datastore.list_change_events(3, 1)[0].sequence == 4

    def test_events_appear_in_commit_order_under_concurrent_writers(self, datastore: DataStore) -> None:
        """A follower reading "after n" never misses an event committed later below n."""
        seen: list[int] = []
        stop = threading.Event()

        def follow() -> None:
            last = 0
            while not stop.is_set():
                for event in datastore.list_change_events(last, 1000):
                    seen.append(event.sequence)
                    last = event.sequence

        follower = threading.Thread(target=follow)
        follower.start()
        try:
            run_threads(6, lambda i: [datastore.create_registration_entries([entry(f"/w{i}/{n}")]) for n in range(15)])
        finally:
            time.sleep(0.2)
            stop.set()
            follower.join()
        for event in datastore.list_change_events(seen[-1] if seen else 0, 10_000):
            seen.append(event.sequence)
        assert sorted(seen) == list(range(1, 91))
        assert seen == sorted(seen)

    def test_prune_change_events(self, datastore: DataStore) -> None:
        datastore.create_bundle(BundleRecord(TD))
        assert datastore.prune_change_events(int(time.time()) + 10) == 1
        assert datastore.list_change_events(0, 10) == []
        assert datastore.last_change_sequence() == 1
