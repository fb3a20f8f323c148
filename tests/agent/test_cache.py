"""The agent's workload cache: rotation timing, LRU eviction, matching and order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives import serialization
from pyspire.agent.cache import IssuedSvid, WorkloadCache, WorkloadEntry
from pyspire.plugin.selectors import Selector
from pyspire.spiffe import SpiffeId, TrustDomain

from tests.support.pki import make_ca, make_leaf

TD = TrustDomain.parse("example.org")
CA = make_ca()


def entry(name: str, *selectors: str, created_at: int = 0, revision: int = 0) -> WorkloadEntry:
    return WorkloadEntry(
        id=name,
        spiffe_id=SpiffeId.from_segments(TD, name),
        parent_id=SpiffeId.from_segments(TD, "node"),
        selectors=frozenset(Selector.parse(s) for s in selectors),
        federates_with=(),
        hint="",
        revision=revision,
        created_at=created_at,
    )


def svid(lifetime: timedelta = timedelta(hours=1), revision: int = 0) -> IssuedSvid:
    leaf = make_leaf(CA, lifetime=lifetime)
    der = leaf.key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return IssuedSvid(revision, (leaf.certificate,), leaf.key, der)


def test_rotation_at_half_life_or_availability_target() -> None:
    held = svid(timedelta(days=4))
    start = held.not_before
    assert not held.due(start + timedelta(days=1))
    assert held.due(start + timedelta(days=2, minutes=1))
    # With a 3-day availability target the SVID rotates once less than 3 days are left.
    assert held.due(held.not_after - timedelta(days=3) + timedelta(seconds=1), timedelta(days=3))
    assert not held.due(start + timedelta(hours=12), timedelta(days=3))


def test_entry_matches_only_with_all_its_selectors() -> None:
    web = entry("web", "unix:uid:1000", "unix:gid:1000")
    assert web.matches(
        frozenset({Selector.parse("unix:uid:1000"), Selector.parse("unix:gid:1000"), Selector.parse("unix:user:x")})
    )
    assert not web.matches(frozenset({Selector.parse("unix:uid:1000")}))
    assert not entry("none").matches(frozenset({Selector.parse("unix:uid:1000")}))


def test_identities_are_ordered_oldest_entry_first() -> None:
    cache = WorkloadCache(TD)
    cache.set_entries(
        [
            entry("b", "unix:uid:1", created_at=20),
            entry("a", "unix:uid:1", created_at=10),
            entry("c", "unix:uid:1", created_at=10),
        ]
    )
    cache.put_svids({name: svid() for name in "abc"})
    ids = [i.entry.id for i in cache.identities(frozenset({Selector.parse("unix:uid:1")}))]
    assert ids == ["a", "c", "b"]


def test_lru_evicts_only_unsubscribed_svids_and_mints_for_subscribers() -> None:
    cache = WorkloadCache(TD, x509_max=2)
    cache.set_entries([entry(n, f"unix:uid:{i}", created_at=i) for i, n in enumerate("abcd")])
    assert [e.id for e in cache.entries_needing_svids()] == ["a", "b"]  # room for two
    cache.put_svids({"a": svid(), "b": svid()})
    with cache.subscription(frozenset({Selector.parse("unix:uid:3")})):
        assert cache.wanted.is_set()  # d has no SVID: the manager syncs at once
        assert [e.id for e in cache.entries_needing_svids()] == ["d"]
        cache.put_svids({"d": svid()})
        assert cache.svid_count() == 2  # "a", the least recently used, went
        assert cache.identities(frozenset({Selector.parse("unix:uid:3")}))
        assert not cache.identities(frozenset({Selector.parse("unix:uid:0")}))


def test_changed_entries_and_removed_entries() -> None:
    cache = WorkloadCache(TD)
    cache.set_entries([entry("a", "unix:uid:1", revision=1)])
    cache.put_svids({"a": svid(revision=1)})
    assert cache.entries_needing_svids() == []
    cache.set_entries([entry("a", "unix:uid:1", revision=2)])
    assert [e.id for e in cache.entries_needing_svids()] == ["a"]
    generation = cache.generation
    cache.set_entries([])
    assert cache.generation > generation
    assert cache.svid_count() == 0


def test_jwt_svids_are_reused_until_half_life() -> None:
    from pyspire.agent.cache import CachedJwtSvid  # noqa: PLC0415

    cache = WorkloadCache(TD)
    sid = SpiffeId.from_segments(TD, "jwt")
    now = datetime.now(UTC)
    cache.put_jwt(sid, ("b", "a"), CachedJwtSvid("fresh", now - timedelta(minutes=1), now + timedelta(minutes=4)))
    assert cache.cached_jwt(sid, ("a", "b")) is not None  # audience order does not matter
    cache.put_jwt(sid, ("x",), CachedJwtSvid("old", now - timedelta(minutes=3), now + timedelta(minutes=2)))
    assert cache.cached_jwt(sid, ("x",)) is None
