"""``entry create|show|update|delete|count`` with SPIRE's flags and ``-data`` JSON.

``-data`` takes the legacy ``common.RegistrationEntry`` JSON that ``spire-server entry create
-data`` reads (``{"entries": [{"spiffe_id": "spiffe://...", "parent_id": ..., "selectors":
[{"type": "unix", "value": "uid:1000"}], ...}]}``), from a file or ``-`` for stdin.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from google.protobuf import wrappers_pb2
from grpclib.client import Channel

from pyspire.command_line import CliError, integer, read_text
from pyspire.proto.spire.api.server.entry.v1 import entry_grpc, entry_pb2
from pyspire.proto.spire.api.types import types_pb2
from pyspire.server.cli.common import add_output, add_socket, call, go_code_name, print_json, run_async
from pyspire.spiffe import SpiffeId, SpiffeIdError, TrustDomain
from pyspire.spire_ids import SERVER_PATH

__all__ = ["register"]

_MATCH = {
    "exact": types_pb2.SelectorMatch.MATCH_EXACT,
    "subset": types_pb2.SelectorMatch.MATCH_SUBSET,
    "superset": types_pb2.SelectorMatch.MATCH_SUPERSET,
    "any": types_pb2.SelectorMatch.MATCH_ANY,
}
_FEDERATES_MATCH = {
    "exact": types_pb2.FederatesWithMatch.MATCH_EXACT,
    "subset": types_pb2.FederatesWithMatch.MATCH_SUBSET,
    "superset": types_pb2.FederatesWithMatch.MATCH_SUPERSET,
    "any": types_pb2.FederatesWithMatch.MATCH_ANY,
}


def _id(text: str, flag: str) -> types_pb2.SPIFFEID:
    try:
        spiffe_id = SpiffeId.parse(text)
    except SpiffeIdError as err:
        raise CliError(f"{flag}: {err}") from None
    return types_pb2.SPIFFEID(trust_domain=spiffe_id.trust_domain.name, path=spiffe_id.path)


def _selectors(values: list[str]) -> list[types_pb2.Selector]:
    found = []
    for value in values:
        kind, sep, rest = value.partition(":")
        if not sep or not kind or not rest:
            raise CliError(f'selector "{value}" must be formatted as type:value')
        found.append(types_pb2.Selector(type=kind, value=rest))
    return found


def _trust_domain_name(value: str) -> str:
    try:
        return TrustDomain.parse(value).name
    except SpiffeIdError as err:
        raise CliError(f'federated trust domain "{value}": {err}') from None


def _entry_from_flags(args: argparse.Namespace, server_id: str | None) -> types_pb2.Entry:
    if not args.spiffeID:
        raise CliError("a SPIFFE ID is required (-spiffeID)")
    if args.node and args.parentID:
        raise CliError("-node and -parentID are mutually exclusive")
    if not args.node and not args.parentID:
        raise CliError("a parent ID is required if the node flag is not set (-parentID)")
    if not args.selector:
        raise CliError("at least one selector is required (-selector)")
    if args.node and args.federatesWith:
        raise CliError("node entries cannot federate (-node with -federatesWith)")
    spiffe = _id(args.spiffeID, "-spiffeID")
    parent = (
        _id(args.parentID, "-parentID")
        if args.parentID
        else types_pb2.SPIFFEID(trust_domain=spiffe.trust_domain, path=SERVER_PATH)
    )
    entry = types_pb2.Entry(
        id=args.entryID or "",
        spiffe_id=spiffe,
        parent_id=parent,
        selectors=_selectors(args.selector),
        x509_svid_ttl=args.x509SVIDTTL,
        jwt_svid_ttl=args.jwtSVIDTTL,
        federates_with=[_trust_domain_name(v) for v in args.federatesWith or []],
        admin=args.admin,
        downstream=args.downstream,
        expires_at=args.entryExpiry,
        dns_names=args.dns or [],
        store_svid=args.storeSVID,
        hint=args.hint or "",
    )
    if args.disableX509SVIDPrefetch or args.jwtSVIDIncludeJTI:
        entry.additional_attributes.CopyFrom(
            types_pb2.Entry.AdditionalAttributes(
                disable_x509_svid_prefetch=args.disableX509SVIDPrefetch, jwt_svid_include_jti=args.jwtSVIDIncludeJTI
            )
        )
    return entry


def _entries_from_data(source: str) -> list[types_pb2.Entry]:
    text = read_text(source, "-data")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        raise CliError(f"-data: not valid JSON: {err}") from None
    if not isinstance(document, dict) or not isinstance(document.get("entries"), list):
        raise CliError('-data: expected an object {"entries": [...]}')
    entries = []
    for index, item in enumerate(document["entries"]):
        if not isinstance(item, dict):
            raise CliError(f"-data: entry {index} is not an object")
        try:
            entry = types_pb2.Entry(
                id=str(item.get("entry_id", "")),
                spiffe_id=_id(str(item.get("spiffe_id", "")), f"-data entry {index} spiffe_id"),
                parent_id=_id(str(item.get("parent_id", "")), f"-data entry {index} parent_id"),
                selectors=[types_pb2.Selector(type=s["type"], value=s["value"]) for s in item.get("selectors") or []],
                x509_svid_ttl=int(item.get("x509_svid_ttl", 0)),
                jwt_svid_ttl=int(item.get("jwt_svid_ttl", 0)),
                federates_with=[_trust_domain_name(str(td)) for td in item.get("federates_with") or []],
                admin=bool(item.get("admin", False)),
                downstream=bool(item.get("downstream", False)),
                expires_at=int(item.get("entryExpiry", 0)),
                dns_names=list(item.get("dns_names") or []),
                store_svid=bool(item.get("store_svid", False)),
                hint=str(item.get("hint", "")),
            )
            attributes = item.get("additional_attributes")
            if attributes is not None:
                # SPIRE's RegistrationEntry JSON: {"disable_x509_svid_prefetch": .., "jwt_svid_include_jti": ..}
                entry.additional_attributes.CopyFrom(
                    types_pb2.Entry.AdditionalAttributes(
                        disable_x509_svid_prefetch=bool(attributes.get("disable_x509_svid_prefetch", False)),
                        jwt_svid_include_jti=bool(attributes.get("jwt_svid_include_jti", False)),
                    )
                )
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise CliError(f"-data: entry {index} is malformed: {err}") from None
        entries.append(entry)
    return entries


def _print_entry(entry: types_pb2.Entry, file: TextIO | None = None) -> None:
    def ttl(value: int) -> str:
        return str(value) if value else "default"

    rows = [
        ("Entry ID", entry.id or "(none)"),
        ("SPIFFE ID", f"spiffe://{entry.spiffe_id.trust_domain}{entry.spiffe_id.path}"),
        ("Parent ID", f"spiffe://{entry.parent_id.trust_domain}{entry.parent_id.path}"),
        ("Revision", str(entry.revision_number)),
    ]
    if entry.downstream:
        rows.append(("Downstream", "true"))
    rows += [("X509-SVID TTL", ttl(entry.x509_svid_ttl)), ("JWT-SVID TTL", ttl(entry.jwt_svid_ttl))]
    if entry.expires_at:
        rows.append(("Expiration time", _expiry(entry.expires_at)))
    rows += [("Selector", f"{s.type}:{s.value}") for s in entry.selectors]
    rows += [("FederatesWith", td) for td in entry.federates_with]
    rows += [("DNS name", name) for name in entry.dns_names]
    if entry.admin:
        rows.append(("Admin", "true"))
    if entry.store_svid:
        rows.append(("StoreSvid", "true"))
    if entry.hint:
        rows.append(("Hint", entry.hint))
    out = file or sys.stdout
    for label, value in rows:
        print(f"{label:<17}: {value}", file=out)
    print(file=out)


def _expiry(seconds: int) -> str:
    """An entry's expiry as a date, or as seconds when no date can show it (years past 9999)."""
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return f"{seconds} seconds after the Unix epoch"


def _creation_flags(parser: argparse.ArgumentParser, *, update: bool) -> None:
    parser.add_argument(
        "-entryID", default="", help="The registration entry ID" + (" (required)" if update else " (optional)")
    )
    parser.add_argument("-spiffeID", default="", help="The SPIFFE ID that this record represents")
    parser.add_argument("-parentID", default="", help="The SPIFFE ID of this record's parent")
    parser.add_argument(
        "-selector",
        action="append",
        default=[],
        help="A colon-delimited type:value selector. Can be used more than once",
    )
    parser.add_argument(
        "-node", action="store_true", help="If set, this entry will be applied to matching nodes rather than workloads"
    )
    parser.add_argument(
        "-x509SVIDTTL",
        type=integer(32),
        default=0,
        help="The lifetime, in seconds, for x509-SVIDs issued based on this registration entry",
    )
    parser.add_argument(
        "-jwtSVIDTTL",
        type=integer(32),
        default=0,
        help="The lifetime, in seconds, for JWT-SVIDs issued based on this registration entry",
    )
    parser.add_argument(
        "-federatesWith",
        action="append",
        default=[],
        help="A trust domain to federate with. Can be used more than once",
    )
    parser.add_argument(
        "-admin",
        action="store_true",
        help="If set, the SPIFFE ID in this entry will be granted access to the Server APIs",
    )
    parser.add_argument(
        "-downstream",
        action="store_true",
        help="A boolean value that, when set, indicates that the entry describes a downstream SPIRE server",
    )
    parser.add_argument(
        "-storeSVID",
        action="store_true",
        help=(
            "A boolean value that, when set, indicates that the resulting issued SVID "
            "from this entry must be stored through an SVIDStore plugin"
        ),
    )
    parser.add_argument(
        "-entryExpiry",
        type=integer(64),
        default=0,
        help="An expiry, from epoch in seconds, for the resulting registration entry to be pruned",
    )
    parser.add_argument(
        "-dns",
        action="append",
        default=[],
        help="A DNS name that will be included in SVIDs issued based on this entry. Can be used more than once",
    )
    parser.add_argument(
        "-hint", default="", help="The entry hint, used to disambiguate entries with the same SPIFFE ID"
    )
    parser.add_argument(
        "-disableX509SVIDPrefetch",
        action="store_true",
        help="If set, the agent mints the X509-SVID only when a workload asks for it",
    )
    parser.add_argument("-jwtSVIDIncludeJTI", action="store_true", help="If set, JWT-SVIDs carry a unique jti claim")
    parser.add_argument(
        "-data",
        default="",
        help="Path to a file containing registration JSON (optional). If set to '-', read the JSON from stdin.",
    )
    add_socket(parser)
    add_output(parser)


def _status(status: types_pb2.Status) -> str:
    """A refused item's status as SPIRE's CLI shows it: ``code: NotFound, msg: "..."``."""
    return f"code: {go_code_name(status.code)}, msg: {json.dumps(status.message, ensure_ascii=False)}"


def _print_batch(
    reply: entry_pb2.BatchCreateEntryResponse | entry_pb2.BatchUpdateEntryResponse, output: str, verb: str
) -> int:
    """The answer to ``entry create|update``: as JSON (exit 0 whatever the items' fate, as SPIRE),
    or the entries done on stdout and each refused one on stderr, failing the command."""
    if output == "json":
        print_json(reply)
        return 0
    for result in reply.results:
        if result.status.code == 0:
            _print_entry(result.entry)
    failed = [result for result in reply.results if result.status.code != 0]
    for result in failed:
        print(f"Failed to {verb} the following entry ({_status(result.status)}):", file=sys.stderr)
        if result.HasField("entry"):
            _print_entry(result.entry, sys.stderr)
    if failed:
        raise CliError(f"failed to {verb} one or more entries")
    return 0


async def _create(args: argparse.Namespace, channel: Channel) -> int:
    entries = _entries_from_data(args.data) if args.data else [_entry_from_flags(args, None)]
    reply = await call(
        entry_grpc.EntryStub(channel).BatchCreateEntry, entry_pb2.BatchCreateEntryRequest(entries=entries)
    )
    return _print_batch(reply, args.output, "create")


async def _update(args: argparse.Namespace, channel: Channel) -> int:
    entries = _entries_from_data(args.data) if args.data else [_entry_from_flags(args, None)]
    if any(not entry.id for entry in entries):
        raise CliError("an entry ID is required (-entryID)")
    reply = await call(
        entry_grpc.EntryStub(channel).BatchUpdateEntry, entry_pb2.BatchUpdateEntryRequest(entries=entries)
    )
    return _print_batch(reply, args.output, "update")


def _filter(args: argparse.Namespace) -> entry_pb2.ListEntriesRequest.Filter:
    filter_ = entry_pb2.ListEntriesRequest.Filter()
    if args.spiffeID:
        filter_.by_spiffe_id.CopyFrom(_id(args.spiffeID, "-spiffeID"))
    if args.parentID:
        filter_.by_parent_id.CopyFrom(_id(args.parentID, "-parentID"))
    if args.selector:
        filter_.by_selectors.CopyFrom(
            types_pb2.SelectorMatch(selectors=_selectors(args.selector), match=_MATCH[args.matchSelectorsOn])
        )
    if args.federatesWith:
        filter_.by_federates_with.CopyFrom(
            types_pb2.FederatesWithMatch(
                trust_domains=[_trust_domain_name(td) for td in args.federatesWith],
                match=_FEDERATES_MATCH[args.matchFederatesWithOn],
            )
        )
    if args.hint:
        filter_.by_hint.CopyFrom(wrappers_pb2.StringValue(value=args.hint))
    if args.downstream:
        filter_.by_downstream.CopyFrom(wrappers_pb2.BoolValue(value=True))
    return filter_


def _filter_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-spiffeID", default="", help="The Entry SPIFFE ID")
    parser.add_argument("-parentID", default="", help="The Parent ID of the records to show")
    parser.add_argument(
        "-selector",
        action="append",
        default=[],
        help="A colon-delimited type:value selector. Can be used more than once",
    )
    parser.add_argument(
        "-federatesWith",
        action="append",
        default=[],
        help="SPIFFE ID of a trust domain an entry is federate with. Can be used more than once",
    )
    parser.add_argument(
        "-matchSelectorsOn",
        choices=tuple(_MATCH),
        default="superset",
        help="The match mode used when filtering by selectors",
    )
    parser.add_argument(
        "-matchFederatesWithOn",
        choices=tuple(_MATCH),
        default="superset",
        help="The match mode used when filtering by federates with",
    )
    parser.add_argument(
        "-downstream",
        action="store_true",
        help="A boolean value that, when set, indicates that the entry describes a downstream SPIRE server",
    )
    parser.add_argument("-hint", default="", help="The Hint of the records to show")
    add_socket(parser)
    add_output(parser)


async def _show(args: argparse.Namespace, channel: Channel) -> int:
    stub = entry_grpc.EntryStub(channel)
    if args.entryID:
        entries = [await call(stub.GetEntry, entry_pb2.GetEntryRequest(id=args.entryID))]
    else:
        entries, token = [], ""
        while True:
            reply = await call(
                stub.ListEntries, entry_pb2.ListEntriesRequest(filter=_filter(args), page_size=1000, page_token=token)
            )
            entries.extend(reply.entries)
            token = reply.next_page_token
            if not token:
                break
    if args.output == "json":
        print_json(entry_pb2.ListEntriesResponse(entries=entries))
        return 0
    print(f"Found {len(entries)} {'entry' if len(entries) == 1 else 'entries'}")
    for entry in sorted(entries, key=lambda e: (e.spiffe_id.path, e.id)):
        _print_entry(entry)
    return 0


async def _count(args: argparse.Namespace, channel: Channel) -> int:
    request = entry_pb2.CountEntriesRequest()
    request.filter.CopyFrom(entry_pb2.CountEntriesRequest.Filter.FromString(_filter(args).SerializeToString()))
    reply = await call(entry_grpc.EntryStub(channel).CountEntries, request)
    if args.output == "json":
        print_json(reply)
    else:
        print(f"{reply.count} registration {'entry' if reply.count == 1 else 'entries'}")
    return 0


def _ids_from_file(source: str) -> list[str]:
    """The ``{"ids": [...]}`` document of ``entry delete -file`` (``-`` for stdin)."""
    try:
        document = json.loads(read_text(source, "-file"))
    except json.JSONDecodeError as err:
        raise CliError(f"-file: not valid JSON: {err}") from None
    ids = document.get("ids", []) if isinstance(document, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise CliError('-file: expected an object {"ids": ["<entry ID>", ...]}')
    return ids


async def _delete(args: argparse.Namespace, channel: Channel) -> int:
    ids = [args.entryID] if args.entryID else []
    if args.file:
        ids += _ids_from_file(args.file)
    if not ids:
        raise CliError("an entry ID is required (-entryID)")
    reply = await call(entry_grpc.EntryStub(channel).BatchDeleteEntry, entry_pb2.BatchDeleteEntryRequest(ids=ids))
    if args.output == "json":
        print_json(reply)
        return 0
    succeeded = [result for result in reply.results if result.status.code == 0]
    failed = [result for result in reply.results if result.status.code != 0]
    for result in succeeded:
        print(f"Deleted entry with ID: {result.id}")
    if succeeded:
        print("\n")
    for result in failed:
        print(f"Failed to delete entry with ID {result.id} ({_status(result.status)})", file=sys.stderr)
    if failed:
        print("\n")
        if succeeded:
            print(f"Deleted {len(succeeded)} entries successfully, but failed to delete {len(failed)} entries", end="")
        else:
            print(f"Failed to delete {len(failed)} entries", end="")
        raise CliError("failed to delete one or more entries")
    print(f"Deleted {len(succeeded)} entries successfully", end="")
    return 0


def register(commands: Any) -> None:
    """Add ``entry`` and its verbs."""
    entry = commands.add_parser("entry", help="Manage registration entries").add_subparsers(
        dest="verb", metavar="<verb>", required=True
    )
    create = entry.add_parser("create", help="Creates registration entries")
    _creation_flags(create, update=False)
    create.set_defaults(handler=run_async(_create))
    update = entry.add_parser("update", help="Updates registration entries")
    _creation_flags(update, update=True)
    update.set_defaults(handler=run_async(_update))
    show = entry.add_parser("show", help="Displays configured registration entries")
    show.add_argument("-entryID", default="", help="The Entry ID of the records to show")
    _filter_flags(show)
    show.set_defaults(handler=run_async(_show))
    count = entry.add_parser("count", help="Count registration entries")
    _filter_flags(count)
    count.set_defaults(handler=run_async(_count))
    delete = entry.add_parser("delete", help="Deletes registration entries")
    delete.add_argument("-entryID", default="", help="The Registration Entry ID of the record to delete")
    delete.add_argument(
        "-file",
        default="",
        help="Path to a file containing a JSON {\"ids\": [...]} list of entry IDs. If set to '-', read from stdin.",
    )
    add_socket(delete)
    add_output(delete)
    delete.set_defaults(handler=run_async(_delete))
