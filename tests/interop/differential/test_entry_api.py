"""The Entry API, differentially: the same requests to spire-server and pyspire-server, the same answers.

Every case names its entries under its own path (``/<case>/...``) and its selectors with its
own values, so the filters of one case never match another's entries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from google.protobuf.wrappers_pb2 import BoolValue, StringValue
from pyspire.proto.spire.api.server.entry.v1 import entry_grpc, entry_pb2
from pyspire.proto.spire.api.types import types_pb2 as types

from tests.support.daemons import ServerDaemon
from tests.support.differential import Case, Side, assert_same_answers

TD = "example.org"
CASES: dict[str, Case] = {}


def case(function: Case) -> Case:
    CASES[function.__name__] = function
    return function


def sid(path: str, trust_domain: str = TD) -> types.SPIFFEID:
    return types.SPIFFEID(trust_domain=trust_domain, path=path)


def entry(tag: str, name: str, *selectors: str, parent: str = "", **fields: Any) -> types.Entry:
    """An entry of case ``tag``: SPIFFE ID /<tag>/<name>, parent /<tag>/node unless given, unix selectors."""
    chosen = selectors or (f"uid:{tag}-{name}",)
    return types.Entry(
        spiffe_id=sid(f"/{tag}/{name}"),
        parent_id=sid(parent or f"/{tag}/node"),
        selectors=[types.Selector(type="unix", value=value) for value in chosen],
        **fields,
    )


def stub(side: Side) -> entry_grpc.EntryStub:
    return entry_grpc.EntryStub(side.channel)


async def create(side: Side, *entries: types.Entry, mask: types.EntryMask | None = None) -> list[str]:
    """BatchCreateEntry; the IDs of the entries created (in order, '' for a refused one)."""
    request = entry_pb2.BatchCreateEntryRequest(entries=entries, output_mask=mask)
    reply = await side.call(stub(side).BatchCreateEntry, request)
    return [result.entry.id for result in reply.results] if reply else []


async def list_all(side: Side, page_size: int, **filter_fields: Any) -> dict[str, Any]:
    """Every page of ListEntries: the sizes of the pages and the entries' SPIFFE ID paths, sorted.

    The order of entries is not compared: SPIRE lists in creation order, pyspire in entry-ID
    order (docs/compatibility.md, "Entry lists: order, last page, page tokens").
    """
    paths: list[str] = []
    sizes: list[int] = []
    token = ""
    for _ in range(50):
        request = entry_pb2.ListEntriesRequest(
            filter=entry_pb2.ListEntriesRequest.Filter(**filter_fields), page_size=page_size, page_token=token
        )
        reply = await side.call(stub(side).ListEntries, request, "ListEntries page", record=False)
        if reply is None:
            return {"error": "refused"}
        paths += [e.spiffe_id.path for e in reply.entries]
        if (
            reply.entries
        ):  # SPIRE ends with an empty page, pyspire does not ("Entry lists: order, last page, page tokens")
            sizes.append(len(reply.entries))
        token = reply.next_page_token
        if not token:
            break
    return {"page sizes": sizes, "entries": sorted(paths)}


def _by_path(path: str) -> entry_pb2.ListEntriesRequest:
    return entry_pb2.ListEntriesRequest(filter=entry_pb2.ListEntriesRequest.Filter(by_spiffe_id=sid(path)))


# --- BatchCreateEntry ---------------------------------------------------------------------


@case
async def create_one_entry_with_every_field(side: Side) -> None:
    await create(
        side,
        entry(
            "full",
            "workload",
            "uid:1000",
            "gid:1000",
            x509_svid_ttl=600,
            jwt_svid_ttl=300,
            admin=True,
            downstream=True,
            dns_names=["full.example.org", "alt.example.org"],
            expires_at=4102444800,
            hint="external",
            store_svid=False,
        ),
    )
    (entry_id,) = [
        e.id for e in (await side.call(stub(side).ListEntries, _by_path("/full/workload"), record=False)).entries
    ]
    await side.call(stub(side).GetEntry, entry_pb2.GetEntryRequest(id=entry_id))


def _bad_entries(tag: str) -> list[types.Entry]:
    good = entry(tag, "good")
    no_parent = types.Entry(spiffe_id=sid(f"/{tag}/no-parent"), selectors=good.selectors)
    no_spiffe_id = types.Entry(parent_id=sid(f"/{tag}/node"), selectors=good.selectors)
    return [
        good,
        no_parent,
        no_spiffe_id,
        types.Entry(spiffe_id=sid(f"/{tag}/no-selectors"), parent_id=sid(f"/{tag}/node")),
        entry(tag, "empty-selector-type", parent="")
        if False
        else types.Entry(
            spiffe_id=sid(f"/{tag}/empty-type"),
            parent_id=sid(f"/{tag}/node"),
            selectors=[types.Selector(type="", value="uid:1")],
        ),
        types.Entry(
            spiffe_id=sid(f"/{tag}/empty-value"),
            parent_id=sid(f"/{tag}/node"),
            selectors=[types.Selector(type="unix", value="")],
        ),
        types.Entry(spiffe_id=sid("no-slash"), parent_id=sid(f"/{tag}/node"), selectors=good.selectors),
        types.Entry(spiffe_id=sid(f"/{tag}/trailing/"), parent_id=sid(f"/{tag}/node"), selectors=good.selectors),
        types.Entry(spiffe_id=sid(f"/{tag}/x", "Bad_TD"), parent_id=sid(f"/{tag}/node"), selectors=good.selectors),
        types.Entry(spiffe_id=sid(f"/{tag}/y", "other.org"), parent_id=sid(f"/{tag}/node"), selectors=good.selectors),
        entry(tag, "negative-x509-ttl", x509_svid_ttl=-1),
        entry(tag, "negative-jwt-ttl", jwt_svid_ttl=-5),
        entry(tag, "bad-federation", federates_with=["spiffe://"]),
        entry(tag, "federates-with-unknown", federates_with=["unknown.org"]),
        good,
    ]


@case
async def batch_create_answers_per_item(side: Side) -> None:
    await create(side, *_bad_entries("batch"))


async def forget(side: Side, *paths: str) -> None:
    """Delete, unrecorded, the entries of ``paths`` (what a documented difference left on one server only)."""
    ids: list[str] = []
    for path in paths:
        listed = await side.call(stub(side).ListEntries, _by_path(path), record=False)
        ids += [e.id for e in listed.entries] if listed else []
    if ids:
        await side.call(stub(side).BatchDeleteEntry, entry_pb2.BatchDeleteEntryRequest(ids=ids), record=False)


@case
async def create_with_a_name_that_is_not_a_dns_name(side: Side) -> None:
    request = entry_pb2.BatchCreateEntryRequest(entries=[entry("dns", "bad", dns_names=["not a dns name"])])
    await side.call(stub(side).BatchCreateEntry, request, documented="DNS names of an entry")
    await forget(side, "/dns/bad")


@case
async def create_with_output_masks(side: Side) -> None:
    await create(side, entry("mask", "none"), mask=types.EntryMask())
    await create(
        side, entry("mask", "some"), mask=types.EntryMask(spiffe_id=True, selectors=True, revision_number=True)
    )
    await create(side, entry("mask", "dup"))
    await create(side, entry("mask", "dup"), mask=types.EntryMask())


@case
async def create_with_chosen_ids(side: Side) -> None:
    await create(
        side,
        entry("ids", "plain", id="my-entry-id.1_2-3"),
        entry("ids", "long", id="x" * 256),
        entry("ids", "max", id="y" * 255),
        entry("ids", "space", id="has space"),
        entry("ids", "slash", id="a/b"),
        entry("ids", "unicode", id="entrée"),
    )
    # Both refuse an ID that is taken (ALREADY_EXISTS, no entry); SPIRE's message is its database's.
    request = entry_pb2.BatchCreateEntryRequest(entries=[entry("ids", "again", id="my-entry-id.1_2-3")])
    reply = await side.call(stub(side).BatchCreateEntry, request, documented="Errors SPIRE passes on from its database")
    assert reply is not None
    (result,) = reply.results
    side.note("taken ID", [result.status.code, result.HasField("entry")])


@case
async def create_with_selector_forms(side: Side) -> None:
    request = entry_pb2.BatchCreateEntryRequest(entries=[entry("sel", "dup-selectors", "uid:1", "uid:1")])
    await side.call(stub(side).BatchCreateEntry, request, documented="An entry's selectors are a set")
    await forget(side, "/sel/dup-selectors")
    await create(
        side,
        entry("sel", "colon-less", "nocolon"),
        entry("sel", "k8s", parent=""),
        types.Entry(
            spiffe_id=sid("/sel/other-type"),
            parent_id=sid("/sel/node"),
            selectors=[types.Selector(type="k8s", value="ns:default"), types.Selector(type="unix", value="uid:0")],
        ),
    )


@case
async def create_node_alias_and_server_parent(side: Side) -> None:
    await create(
        side,
        types.Entry(
            spiffe_id=sid("/alias/node-set"),
            parent_id=sid("/spire/server"),
            selectors=[types.Selector(type="join_token", value="alias-token")],
        ),
        types.Entry(
            spiffe_id=sid("/spire/agent/join_token/tok"),
            parent_id=sid("/spire/server"),
            selectors=[types.Selector(type="unix", value="uid:1")],
        ),
        types.Entry(
            spiffe_id=sid("/alias/parent-is-other-td"),
            parent_id=sid("/spire/server", "other.org"),
            selectors=[types.Selector(type="unix", value="uid:1")],
        ),
    )


# --- GetEntry ---------------------------------------------------------------------------


@case
async def get_entry_found_missing_and_masked(side: Side) -> None:
    (entry_id,) = await create(side, entry("get", "one", dns_names=["get.example.org"]))
    entries = stub(side)
    await side.call(entries.GetEntry, entry_pb2.GetEntryRequest(id=entry_id))
    await side.call(entries.GetEntry, entry_pb2.GetEntryRequest(id=entry_id, output_mask=types.EntryMask()))
    await side.call(
        entries.GetEntry, entry_pb2.GetEntryRequest(id=entry_id, output_mask=types.EntryMask(dns_names=True))
    )
    await side.call(entries.GetEntry, entry_pb2.GetEntryRequest(id="no-such-entry"))
    await side.call(entries.GetEntry, entry_pb2.GetEntryRequest(id=""))


# --- BatchUpdateEntry -------------------------------------------------------------------


async def update(
    side: Side, *entries: types.Entry, input_mask: types.EntryMask | None = None, mask: types.EntryMask | None = None
) -> None:
    request = entry_pb2.BatchUpdateEntryRequest(entries=entries, input_mask=input_mask, output_mask=mask)
    await side.call(stub(side).BatchUpdateEntry, request)


@case
async def update_with_and_without_input_mask(side: Side) -> None:
    (first, second) = await create(side, entry("upd", "a", x509_svid_ttl=100), entry("upd", "b", hint="b"))
    changed = entry("upd", "a", "uid:2", id=first, x509_svid_ttl=200, hint="new")
    await update(side, changed, input_mask=types.EntryMask(selectors=True))
    await update(side, changed, input_mask=types.EntryMask(x509_svid_ttl=True, hint=True))
    # No input mask: every field is taken from the request.
    await update(side, entry("upd", "b", id=second))
    await side.call(stub(side).GetEntry, entry_pb2.GetEntryRequest(id=second))
    await update(side, changed, input_mask=types.EntryMask(), mask=types.EntryMask(revision_number=True))


@case
async def batch_update_answers_per_item(side: Side) -> None:
    (first,) = await create(side, entry("updbad", "a"))
    await update(
        side,
        entry("updbad", "a", "uid:9", id=first),
        entry("updbad", "missing", id="no-such-entry"),
        types.Entry(id=first, spiffe_id=sid("bad-path"), parent_id=sid("/updbad/node")),
        types.Entry(id=first),
        entry("updbad", "x", id=""),
        entry("updbad", "a", id=first, x509_svid_ttl=-3),
        input_mask=types.EntryMask(selectors=True, spiffe_id=True, x509_svid_ttl=True),
    )
    await update(side, types.Entry(id=first), input_mask=types.EntryMask(selectors=True))
    await update(side, types.Entry(id=first), input_mask=types.EntryMask(parent_id=True))
    request = entry_pb2.BatchUpdateEntryRequest(
        entries=[types.Entry(id=first, dns_names=["bad name"])], input_mask=types.EntryMask(dns_names=True)
    )
    await side.call(stub(side).BatchUpdateEntry, request, documented="DNS names of an entry")


@case
async def update_to_a_duplicate_of_another_entry(side: Side) -> None:
    (first, second) = await create(side, entry("upddup", "a", "uid:1"), entry("upddup", "b", "uid:2"))
    await update(
        side,
        entry("upddup", "a", "uid:2", id=second),
        input_mask=types.EntryMask(spiffe_id=True, selectors=True),
    )
    assert first


# --- BatchDeleteEntry -------------------------------------------------------------------


@case
async def batch_delete_answers_per_item(side: Side) -> None:
    (first, second) = await create(side, entry("del", "a"), entry("del", "b"))
    request = entry_pb2.BatchDeleteEntryRequest(ids=[first, "no-such-entry", "", first, second])
    await side.call(stub(side).BatchDeleteEntry, request)
    await side.call(stub(side).BatchDeleteEntry, entry_pb2.BatchDeleteEntryRequest())


# --- ListEntries and CountEntries -------------------------------------------------------


def by_parent(tag: str) -> dict[str, Any]:
    return {"by_parent_id": sid(f"/{tag}/node")}


@case
async def list_pages_and_page_sizes(side: Side) -> None:
    await create(side, *(entry("page", f"e{i}") for i in range(5)))
    side.note("one page", await list_all(side, 0, **by_parent("page")))
    side.note("pages of 2", await list_all(side, 2, **by_parent("page")))
    side.note("pages of 5", await list_all(side, 5, **by_parent("page")))
    unpaged = await side.call(stub(side).ListEntries, entry_pb2.ListEntriesRequest(page_size=-1), record=False)
    side.note("page size -1", (len(unpaged.entries), unpaged.next_page_token) if unpaged else None)
    await side.call(
        stub(side).ListEntries,
        entry_pb2.ListEntriesRequest(page_size=2, page_token="not-a-token"),
        documented="Entry lists: order, last page, page tokens",
    )


def selector_filter(match: int, *values: str) -> types.SelectorMatch:
    return types.SelectorMatch(selectors=[types.Selector(type="unix", value=v) for v in values], match=match)


def federates_filter(match: int, *domains: str) -> types.FederatesWithMatch:
    return types.FederatesWithMatch(trust_domains=domains, match=match)


async def _filter_entries(side: Side) -> None:
    await create(
        side,
        entry("flt", "ab", "uid:flt-a", "uid:flt-b", hint="h1"),
        entry("flt", "a", "uid:flt-a", downstream=True),
        entry("flt", "b", "uid:flt-b", parent="/flt/other-node", hint="h1"),
        entry("flt", "abc", "uid:flt-a", "uid:flt-b", "uid:flt-c"),
    )


@case
async def list_and_count_with_every_filter(side: Side) -> None:
    await _filter_entries(side)
    match = types.SelectorMatch
    filters: list[tuple[str, dict[str, Any]]] = [
        ("spiffe id", {"by_spiffe_id": sid("/flt/ab")}),
        ("parent id", {"by_parent_id": sid("/flt/other-node")}),
        ("hint", {"by_hint": StringValue(value="h1")}),
        ("empty hint", {"by_hint": StringValue(value="")}),
        ("downstream", {"by_downstream": BoolValue(value=True)}),
        ("not downstream", {"by_downstream": BoolValue(value=False), **by_parent("flt")}),
    ]
    for name, number in (("exact", match.MATCH_EXACT), ("subset", match.MATCH_SUBSET)):
        filters.append((f"selectors {name}", {"by_selectors": selector_filter(number, "uid:flt-a", "uid:flt-b")}))
    for name, number in (("superset", match.MATCH_SUPERSET), ("any", match.MATCH_ANY)):
        filters.append((f"selectors {name}", {"by_selectors": selector_filter(number, "uid:flt-a", "uid:flt-b")}))
        filters.append((f"selectors {name} one", {"by_selectors": selector_filter(number, "uid:flt-c")}))
    filters.append(("selectors and parent", {"by_selectors": selector_filter(3, "uid:flt-a"), **by_parent("flt")}))
    for name, fields in filters:
        side.note(f"list by {name}", await list_all(side, 0, **fields))
        count = await side.call(
            stub(side).CountEntries,
            entry_pb2.CountEntriesRequest(filter=entry_pb2.CountEntriesRequest.Filter(**fields)),
            f"count by {name}",
        )
        assert count is None or count.count >= 0


@case
async def list_with_invalid_filters(side: Side) -> None:
    invalid: list[dict[str, Any]] = [
        {"by_spiffe_id": sid("no-slash")},
        {"by_spiffe_id": sid("/x", "")},
        {"by_parent_id": sid("/x", "Bad_TD")},
        {"by_selectors": types.SelectorMatch()},
        {"by_selectors": types.SelectorMatch(selectors=[types.Selector(type="", value="x")])},
        {"by_selectors": types.SelectorMatch(selectors=[types.Selector(type="unix", value="")])},
        {"by_federates_with": types.FederatesWithMatch()},
        {"by_federates_with": federates_filter(0, "spiffe://")},
    ]
    for fields in invalid:
        await side.call(
            stub(side).ListEntries, entry_pb2.ListEntriesRequest(filter=entry_pb2.ListEntriesRequest.Filter(**fields))
        )
        await side.call(
            stub(side).CountEntries,
            entry_pb2.CountEntriesRequest(filter=entry_pb2.CountEntriesRequest.Filter(**fields)),
        )
    for fields in ({"by_selectors": selector_filter(7, "uid:1")}, {"by_federates_with": federates_filter(9, "a.org")}):
        await side.call(
            stub(side).ListEntries,
            entry_pb2.ListEntriesRequest(filter=entry_pb2.ListEntriesRequest.Filter(**fields)),
            documented="Filters SPIRE's datastore fails on",
        )


@case
async def list_with_output_masks(side: Side) -> None:
    await create(side, entry("lmask", "one", dns_names=["d.example.org"]))
    for mask in (types.EntryMask(), types.EntryMask(selectors=True, dns_names=True)):
        request = entry_pb2.ListEntriesRequest(
            filter=entry_pb2.ListEntriesRequest.Filter(**by_parent("lmask")), output_mask=mask
        )
        await side.call(stub(side).ListEntries, request)


@case
async def unpaged_lists_hold_every_entry(side: Side) -> None:
    many = [entry("many", f"e{i}") for i in range(1100)]
    for start in range(0, len(many), 500):
        await create(side, *many[start : start + 500], mask=types.EntryMask())
    listed = await side.call(
        stub(side).ListEntries,
        entry_pb2.ListEntriesRequest(filter=entry_pb2.ListEntriesRequest.Filter(**by_parent("many"))),
        record=False,
    )
    side.note("unpaged", (len(listed.entries), listed.next_page_token) if listed else None)


@case
async def count_every_entry(side: Side) -> None:
    await side.call(stub(side).CountEntries, entry_pb2.CountEntriesRequest())


def _cases() -> list[Any]:
    return [pytest.param(function, id=name) for name, function in CASES.items()]


@pytest.mark.parametrize("corpus_case", _cases())
async def test_entry_api_answers_as_spire_does(
    corpus_case: Callable[[Side], Any], server_pair: dict[str, ServerDaemon]
) -> None:
    await assert_same_answers(corpus_case, {name: daemon.socket_path for name, daemon in server_pair.items()})
