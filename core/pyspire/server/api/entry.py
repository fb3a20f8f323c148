"""SPIRE's Entry service: registration entries, and the entries authorized to an agent.

GetAuthorizedEntries and SyncAuthorizedEntries are answered from the in-memory entry index
with no datastore query; the protobuf messages an agent receives are built once per index
generation and reused by every unchanged sync. SyncAuthorizedEntries follows SPIRE's
protocol: up to 500 entries are sent whole; more are announced as pages of (id, revision)
with ``more`` set, after which the agent asks for the entries it lacks by ID.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from pyspire.plugin.errors import AlreadyExists, FailedPrecondition, NotFound
from pyspire.plugin.records import CreatedEntry, EntryFilter, MatchBehavior, Page, RegistrationEntry
from pyspire.proto.spire.api.server.entry.v1 import entry_grpc, entry_pb2
from pyspire.proto.spire.api.types import types_pb2
from pyspire.rpc_stream import ApiStream
from pyspire.server.api.auth import Caller, rpc
from pyspire.server.api.convert import (
    InvalidInput,
    InvalidRecord,
    entry_from_proto,
    entry_to_proto,
    entry_update_from_proto,
    match_from_proto,
    member_id_from_proto,
    selectors_from_proto,
    workload_id_from_proto,
)
from pyspire.server.api.entry_rules import entry_problem
from pyspire.server.api.errors import status_message
from pyspire.server.cache.entries import AuthorizedEntries
from pyspire.server.context import ServerContext
from pyspire.spiffe import SpiffeIdError, TrustDomain

__all__ = ["ENTRY_PAGE_SIZE", "EntryService"]

ENTRY_PAGE_SIZE = 500
MAX_LIST_PAGE = 1000
_SERVICE = "/spire.api.server.entry.v1.Entry/"


def _invalid(err: object) -> GRPCError:
    return GRPCError(Status.INVALID_ARGUMENT, str(err))


def _entry_filter(
    proto: entry_pb2.ListEntriesRequest.Filter | entry_pb2.CountEntriesRequest.Filter, trust_domain: TrustDomain
) -> EntryFilter:
    """A list or count filter, refused as SPIRE refuses it (the message names the filter)."""
    by_spiffe_id = by_parent_id = None
    try:
        if proto.HasField("by_parent_id"):
            by_parent_id = member_id_from_proto(proto.by_parent_id, trust_domain, "parent ID")
    except InvalidInput as err:
        raise _invalid(f"malformed parent ID filter: {err.reason}") from None
    try:
        if proto.HasField("by_spiffe_id"):
            by_spiffe_id = workload_id_from_proto(proto.by_spiffe_id, trust_domain)
    except InvalidInput as err:
        raise _invalid(f"malformed SPIFFE ID filter: {err.reason}") from None
    by_selectors = None
    if proto.HasField("by_selectors"):
        try:
            selectors = selectors_from_proto(proto.by_selectors.selectors)
        except InvalidInput as err:
            raise _invalid(f"malformed selectors filter: {err}") from None
        if not selectors:
            raise _invalid("malformed selectors filter: empty selector set")
        by_selectors = (selectors, _match(proto.by_selectors.match))
    by_federates = None
    if proto.HasField("by_federates_with"):
        try:
            domains = tuple(TrustDomain.parse(name) for name in proto.by_federates_with.trust_domains)
        except SpiffeIdError as err:
            raise _invalid(f"malformed federates with filter: {err.reason}") from None
        if not domains:
            raise _invalid("malformed federates with filter: empty trust domain set")
        by_federates = (domains, _match(proto.by_federates_with.match))
    return EntryFilter(
        by_spiffe_id=by_spiffe_id,
        by_parent_id=by_parent_id,
        by_selectors=by_selectors,
        by_federates_with=by_federates,
        # An empty hint filters nothing in SPIRE (its datastore ignores an empty string).
        by_hint=proto.by_hint.value or None,
        # Likewise by_downstream false: SPIRE lists downstream entries and the others then.
        by_downstream=True if proto.by_downstream.value else None,
    )


def _match(value: int) -> MatchBehavior:
    try:
        return match_from_proto(value)
    except InvalidInput as err:
        raise _invalid(f"malformed filter: {err}") from None


def _create_result(code: Status, message: str) -> entry_pb2.BatchCreateEntryResponse.Result:
    return entry_pb2.BatchCreateEntryResponse.Result(status=status_message(code, message))


def _created_result(
    wanted: RegistrationEntry, outcome: CreatedEntry | FailedPrecondition, mask: types_pb2.EntryMask | None
) -> entry_pb2.BatchCreateEntryResponse.Result:
    """One entry's result as SPIRE gives it: created, similar to one that exists, or refused."""
    if isinstance(outcome, FailedPrecondition):
        # SPIRE reports a missing federated bundle as an internal error of its datastore.
        return _create_result(Status.INTERNAL, f"failed to create entry: {outcome.message}")
    if not outcome.created and not _similar(wanted, outcome.entry):
        # Only the ID is shared: that is a conflict, not the entry the caller asked for.
        return _create_result(Status.ALREADY_EXISTS, f'failed to create entry: entry ID "{wanted.id}" is taken')
    code, message = (Status.OK, "OK") if outcome.created else (Status.ALREADY_EXISTS, "similar entry already exists")
    answered = entry_to_proto(outcome.entry, mask)
    # SPIRE's create answer lists the DNS names sorted (it stores and serves them as given).
    answered.dns_names.sort()
    return entry_pb2.BatchCreateEntryResponse.Result(status=status_message(code, message), entry=answered)


def _similar(wanted: RegistrationEntry, existing: RegistrationEntry) -> bool:
    """SPIRE's "similar entry": the same SPIFFE ID, parent ID and selectors."""
    ours = wanted.normalized()
    return (ours.spiffe_id, ours.parent_id, ours.selectors) == (
        existing.spiffe_id,
        existing.parent_id,
        existing.normalized().selectors,
    )


@dataclass
class _AgentView:
    generation: int
    mask: bytes
    messages: list[types_pb2.Entry]
    by_id: dict[str, types_pb2.Entry]
    sorted_ids: list[str]


class EntryService(entry_grpc.EntryBase):
    """The Entry service (``spire.api.server.entry.v1.Entry``)."""

    def __init__(self, ctx: ServerContext) -> None:
        """Serve with the server's shared parts."""
        self.ctx = ctx
        self._views: dict[Any, _AgentView] = {}

    # --- the agents' view --------------------------------------------------------------

    def _view(self, caller: Caller, mask: types_pb2.EntryMask | None) -> _AgentView:
        """The caller's authorized entries as protobuf messages, rebuilt only after a change."""
        node = caller.agent
        assert node is not None
        authorized: AuthorizedEntries = self.ctx.entries.authorized(
            node.spiffe_id, self.ctx.nodes.selectors(node.spiffe_id)
        )
        mask_key = mask.SerializeToString(deterministic=True) if mask is not None else b""
        cached = self._views.get(node.spiffe_id)
        if cached is not None and cached.generation == authorized.generation and cached.mask == mask_key:
            return cached
        messages = [entry_to_proto(entry, mask) for entry in authorized.entries]
        by_id = {message.id: message for message in messages}
        view = _AgentView(authorized.generation, mask_key, messages, by_id, sorted(by_id))
        if len(self._views) > 4 * max(len(self.ctx.nodes), 64):
            self._views.clear()  # agents that left: forget their views
        self._views[node.spiffe_id] = view
        return view

    @rpc(_SERVICE + "GetAuthorizedEntries")
    async def GetAuthorizedEntries(
        self,
        stream: ApiStream[entry_pb2.GetAuthorizedEntriesRequest, entry_pb2.GetAuthorizedEntriesResponse],
        caller: Caller,
    ) -> None:
        request = await stream.request()
        view = self._view(caller, request.output_mask if request.HasField("output_mask") else None)
        await stream.send_message(entry_pb2.GetAuthorizedEntriesResponse(entries=view.messages))

    @rpc(_SERVICE + "SyncAuthorizedEntries")
    async def SyncAuthorizedEntries(
        self,
        stream: ApiStream[entry_pb2.SyncAuthorizedEntriesRequest, entry_pb2.SyncAuthorizedEntriesResponse],
        caller: Caller,
    ) -> None:
        request = await stream.recv_message()
        if request is None:
            return
        if request.ids:
            raise _invalid("specifying IDs on initial request is not supported")
        mask = request.output_mask if request.HasField("output_mask") else None
        if mask is not None and not mask.revision_number:
            raise _invalid("revision number cannot be masked")
        view = self._view(caller, mask)
        if len(view.messages) <= ENTRY_PAGE_SIZE:
            await stream.send_message(entry_pb2.SyncAuthorizedEntriesResponse(entries=view.messages))
            return
        revisions = [
            entry_pb2.EntryRevision(id=m.id, revision_number=m.revision_number, created_at=m.created_at)
            for m in view.messages
        ]
        for start in range(0, len(revisions), ENTRY_PAGE_SIZE):
            page = revisions[start : start + ENTRY_PAGE_SIZE]
            await stream.send_message(
                entry_pb2.SyncAuthorizedEntriesResponse(
                    entry_revisions=page, more=start + ENTRY_PAGE_SIZE < len(revisions)
                )
            )
        while True:
            try:
                request = await stream.recv_message()
            except StreamTerminatedError:
                return
            if request is None:
                return
            wanted = [view.by_id[i] for i in sorted(set(request.ids)) if i in view.by_id]
            for start in range(0, max(len(wanted), 1), ENTRY_PAGE_SIZE):
                entries = wanted[start : start + ENTRY_PAGE_SIZE]
                await stream.send_message(
                    entry_pb2.SyncAuthorizedEntriesResponse(entries=entries, more=start + ENTRY_PAGE_SIZE < len(wanted))
                )

    # --- administration ----------------------------------------------------------------

    @rpc(_SERVICE + "CountEntries")
    async def CountEntries(
        self, stream: ApiStream[entry_pb2.CountEntriesRequest, entry_pb2.CountEntriesResponse], caller: Caller
    ) -> None:
        request = await stream.request()
        count = await self.ctx.call(
            self.ctx.datastore.count_registration_entries, _entry_filter(request.filter, self.ctx.trust_domain)
        )
        await stream.send_message(entry_pb2.CountEntriesResponse(count=count))

    @rpc(_SERVICE + "ListEntries")
    async def ListEntries(
        self, stream: ApiStream[entry_pb2.ListEntriesRequest, entry_pb2.ListEntriesResponse], caller: Caller
    ) -> None:
        request = await stream.request()
        # As SPIRE: a page size of zero or less asks for every entry, and the token is ignored.
        page = Page(min(request.page_size, MAX_LIST_PAGE), request.page_token) if request.page_size > 0 else Page()
        entries, token = await self.ctx.call(
            self.ctx.datastore.list_registration_entries, _entry_filter(request.filter, self.ctx.trust_domain), page
        )
        mask = request.output_mask if request.HasField("output_mask") else None
        await stream.send_message(
            entry_pb2.ListEntriesResponse(entries=[entry_to_proto(e, mask) for e in entries], next_page_token=token)
        )

    @rpc(_SERVICE + "GetEntry")
    async def GetEntry(self, stream: ApiStream[entry_pb2.GetEntryRequest, types_pb2.Entry], caller: Caller) -> None:
        request = await stream.request()
        if not request.id:
            raise _invalid("missing ID")
        entry = await self.ctx.call(self.ctx.datastore.fetch_registration_entry, request.id)
        if entry is None:
            raise GRPCError(Status.NOT_FOUND, "entry not found")
        await stream.send_message(
            entry_to_proto(entry, request.output_mask if request.HasField("output_mask") else None)
        )

    @rpc(_SERVICE + "BatchCreateEntry")
    async def BatchCreateEntry(
        self, stream: ApiStream[entry_pb2.BatchCreateEntryRequest, entry_pb2.BatchCreateEntryResponse], caller: Caller
    ) -> None:
        request = await stream.request()
        mask = request.output_mask if request.HasField("output_mask") else None
        results: list[entry_pb2.BatchCreateEntryResponse.Result | None] = [None] * len(request.entries)
        valid: list[tuple[int, RegistrationEntry]] = []
        for index, proto in enumerate(request.entries):
            try:
                entry = entry_from_proto(proto, self.ctx.trust_domain)
            except InvalidRecord as err:
                results[index] = _create_result(Status.INVALID_ARGUMENT, f"failed to create entry: {err}")
                continue
            except InvalidInput as err:
                results[index] = _create_result(Status.INVALID_ARGUMENT, f"failed to convert entry: {err}")
                continue
            problem = entry_problem(entry, new=True)
            if problem is not None:
                results[index] = _create_result(Status.INVALID_ARGUMENT, f"failed to create entry: {problem}")
                continue
            valid.append((index, entry))
        outcomes = await self._create(valid)
        for (index, entry), outcome in zip(valid, outcomes, strict=True):
            results[index] = _created_result(entry, outcome, mask)
        if any(isinstance(outcome, CreatedEntry) and outcome.created for outcome in outcomes):
            await self.ctx.wrote()
        await stream.send_message(entry_pb2.BatchCreateEntryResponse(results=[r for r in results if r is not None]))

    async def _create(self, valid: list[tuple[int, RegistrationEntry]]) -> list[CreatedEntry | FailedPrecondition]:
        """Each entry's outcome: in one datastore write, or one by one when the batch is refused.

        The datastore refuses a whole batch when an entry federates with a trust domain it
        holds no bundle for; SPIRE answers each entry on its own, so the others still go in.
        """
        entries = [entry for _, entry in valid]
        if not entries:
            return []
        try:
            return list(await self.ctx.call(self.ctx.datastore.create_registration_entries, entries))
        except FailedPrecondition:
            if len(entries) == 1:
                raise
        outcomes: list[CreatedEntry | FailedPrecondition] = []
        for entry in entries:
            try:
                outcomes.extend(await self.ctx.call(self.ctx.datastore.create_registration_entries, [entry]))
            except FailedPrecondition as err:
                outcomes.append(err)
        return outcomes

    @rpc(_SERVICE + "BatchUpdateEntry")
    async def BatchUpdateEntry(
        self, stream: ApiStream[entry_pb2.BatchUpdateEntryRequest, entry_pb2.BatchUpdateEntryResponse], caller: Caller
    ) -> None:
        request = await stream.request()
        input_mask = request.input_mask if request.HasField("input_mask") else None
        output_mask = request.output_mask if request.HasField("output_mask") else None
        results = []
        changed = False
        for proto in request.entries:
            result = entry_pb2.BatchUpdateEntryResponse.Result()
            try:
                existing = None
                if proto.id:
                    existing = await self.ctx.call(self.ctx.datastore.fetch_registration_entry, proto.id)
                if existing is None:
                    # SPIRE's words for a missing and for an empty ID alike.
                    result.status.CopyFrom(status_message(Status.NOT_FOUND, "failed to update entry"))
                else:
                    merged = entry_update_from_proto(existing, proto, input_mask, self.ctx.trust_domain)
                    problem = entry_problem(merged, new=False)
                    if problem is not None:
                        result.status.CopyFrom(
                            status_message(Status.INVALID_ARGUMENT, f"failed to update entry: {problem}")
                        )
                    else:
                        updated = await self.ctx.call(self.ctx.datastore.update_registration_entry, merged)
                        changed = True
                        result.status.CopyFrom(status_message(Status.OK, "OK"))
                        result.entry.CopyFrom(entry_to_proto(updated, output_mask))
            except InvalidRecord as err:
                result.status.CopyFrom(status_message(Status.INVALID_ARGUMENT, f"failed to update entry: {err}"))
            except InvalidInput as err:
                result.status.CopyFrom(status_message(Status.INVALID_ARGUMENT, f"failed to convert entry: {err}"))
            except AlreadyExists as err:
                result.status.CopyFrom(status_message(Status.ALREADY_EXISTS, err.message))
            except (NotFound, FailedPrecondition) as err:
                result.status.CopyFrom(
                    status_message(Status.INVALID_ARGUMENT, f"failed to update entry: {err.message}")
                )
            results.append(result)
        if changed:
            await self.ctx.wrote()
        await stream.send_message(entry_pb2.BatchUpdateEntryResponse(results=results))

    @rpc(_SERVICE + "BatchDeleteEntry")
    async def BatchDeleteEntry(
        self, stream: ApiStream[entry_pb2.BatchDeleteEntryRequest, entry_pb2.BatchDeleteEntryResponse], caller: Caller
    ) -> None:
        request = await stream.request()
        results = []
        deleted_any = False
        for entry_id in request.ids:
            if not entry_id:
                results.append(
                    entry_pb2.BatchDeleteEntryResponse.Result(
                        status=status_message(Status.INVALID_ARGUMENT, "missing entry ID")
                    )
                )
                continue
            deleted = await self.ctx.call(self.ctx.datastore.delete_registration_entry, entry_id)
            deleted_any = deleted_any or deleted is not None
            status = status_message(Status.OK, "OK") if deleted else status_message(Status.NOT_FOUND, "entry not found")
            results.append(entry_pb2.BatchDeleteEntryResponse.Result(status=status, id=entry_id))
        if deleted_any:
            await self.ctx.wrote()
        await stream.send_message(entry_pb2.BatchDeleteEntryResponse(results=results))
