"""Authorized entries: direct children, node aliases, recursion, and a brute-force cross-check."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from pyspire.plugin.records import RegistrationEntry
from pyspire.plugin.selectors import Selector
from pyspire.server.cache.entries import EntryIndex
from pyspire.spiffe import SpiffeId

SERVER = SpiffeId.parse("spiffe://example.org/spire/server")
AGENT = SpiffeId.parse("spiffe://example.org/spire/agent/x509pop/a")


def sid(path: str) -> SpiffeId:
    return SpiffeId.parse(f"spiffe://example.org{path}")


def entry(entry_id: str, spiffe: str, parent: SpiffeId | str, *selectors: str) -> RegistrationEntry:
    parent_id = parent if isinstance(parent, SpiffeId) else sid(parent)
    return RegistrationEntry(
        entry_id, sid(spiffe), parent_id, tuple(Selector.parse(s) for s in selectors or ("unix:uid:1",))
    )


def ids(index: EntryIndex, agent: SpiffeId, *selectors: str) -> set[str]:
    return set(index.authorized(agent, frozenset(Selector.parse(s) for s in selectors)).by_id)


def test_direct_children_and_their_descendants() -> None:
    index = EntryIndex(SERVER)
    index.load(
        [
            entry("w1", "/web", AGENT),
            entry("w2", "/web/child", "/web"),
            entry("w3", "/web/child/grandchild", "/web/child"),
            entry("other", "/db", "/spire/agent/x509pop/b"),
        ]
    )
    assert ids(index, AGENT) == {"w1", "w2", "w3"}


def test_node_alias_needs_all_its_selectors() -> None:
    index = EntryIndex(SERVER)
    index.load(
        [
            entry("alias", "/cluster/prod", SERVER, "k8s_psat:cluster:prod", "k8s_psat:agent_ns:spire"),
            entry("app", "/app", "/cluster/prod"),
        ]
    )
    assert ids(index, AGENT, "k8s_psat:cluster:prod", "k8s_psat:agent_ns:spire", "k8s_psat:agent_sa:x") == {"app"}
    assert ids(index, AGENT, "k8s_psat:cluster:prod") == set()  # one selector missing
    assert ids(index, AGENT) == set()


def test_cycles_terminate_and_entries_appear_once() -> None:
    index = EntryIndex(SERVER)
    index.load([entry("a", "/a", AGENT), entry("b", "/b", "/a"), entry("c", "/a", "/b")])
    assert ids(index, AGENT) == {"a", "b", "c"}


def test_changes_move_entries_in_and_out() -> None:
    index = EntryIndex(SERVER)
    index.load([entry("a", "/a", AGENT), entry("b", "/b", "/a")])
    before = index.authorized(AGENT, frozenset())
    assert index.authorized(AGENT, frozenset()) is before  # reused while nothing changed
    index.upsert(entry("b", "/b", "/elsewhere"))
    assert ids(index, AGENT) == {"a"}
    index.remove("a")
    assert ids(index, AGENT) == set()
    index.upsert(entry("alias", "/group", SERVER, "x509pop:ca:1"))
    index.upsert(entry("c", "/c", "/group"))
    assert ids(index, AGENT, "x509pop:ca:1") == {"c"}
    index.remove("alias")
    assert ids(index, AGENT, "x509pop:ca:1") == set()


def test_entries_by_spiffe_id() -> None:
    index = EntryIndex(SERVER)
    index.load([entry("a", "/admin", AGENT), entry("b", "/admin", "/other"), entry("c", "/x", AGENT)])
    assert {e.id for e in index.by_spiffe_id(sid("/admin"))} == {"a", "b"}


paths = st.sampled_from(["/a", "/b", "/c", "/d", "/e"])
parents = st.sampled_from(["AGENT", "SERVER", "/a", "/b", "/c", "/d", "/other"])
selector_values = st.sets(st.sampled_from(["n:1", "n:2", "n:3"]), min_size=1, max_size=2)


def brute_force(entries: list[RegistrationEntry], agent_selectors: set[str]) -> set[str]:
    roots = {AGENT} | {
        e.spiffe_id for e in entries if e.parent_id == SERVER and {str(s) for s in e.selectors} <= agent_selectors
    }
    found: set[str] = set()
    frontier = set(roots)
    seen = set()
    while frontier:
        parent = frontier.pop()
        if parent in seen:
            continue
        seen.add(parent)
        for e in entries:
            if e.parent_id == parent:
                found.add(e.id)
                frontier.add(e.spiffe_id)
    return found


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(paths, parents, selector_values), max_size=12),
    st.sets(st.sampled_from(["n:1", "n:2", "n:3"])),
    st.lists(st.integers(min_value=0, max_value=11), max_size=4),
)
def test_index_matches_brute_force(
    specs: list[tuple[str, str, set[str]]], agent_selectors: set[str], removals: list[int]
) -> None:
    entries = []
    for number, (path, parent, selectors) in enumerate(specs):
        parent_id = AGENT if parent == "AGENT" else SERVER if parent == "SERVER" else sid(parent)
        entries.append(entry(f"e{number}", path, parent_id, *selectors))
    index = EntryIndex(SERVER)
    index.load(entries[: len(entries) // 2])
    for item in entries[len(entries) // 2 :]:
        index.upsert(item)
    for position in removals:
        if position < len(entries):
            index.remove(entries[position].id)
    remaining = [e for e in entries if index.get(e.id) is not None]
    assert ids(index, AGENT, *agent_selectors) == brute_force(remaining, agent_selectors)
