"""``localauthority x509|jwt show|prepare|activate|taint|revoke`` and ``upstreamauthority taint|revoke``.

The forced-rotation verbs of SPIRE: prepare a new authority, activate it, taint the old one
(agents re-issue what it signed) and finally revoke it (it leaves the bundle). Each step is
refused by the server when it would break verification (revoking the active authority...).
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from grpclib.client import Channel

from pyspire.command_line import CliError
from pyspire.proto.spire.api.server.localauthority.v1 import localauthority_grpc
from pyspire.proto.spire.api.server.localauthority.v1 import localauthority_pb2 as pb
from pyspire.server.cli.common import add_output, add_socket, call, print_json, run_async

__all__ = ["register"]

_KINDS = {"x509": ("X509", "X.509"), "jwt": ("JWT", "JWT")}


def _print_state(label: str, state: pb.AuthorityState | None, kind: str) -> None:
    print(f"{label}:")
    if state is None or not state.authority_id:
        print(f"  No {label[0].lower()}{label[1:]} found")
        return
    print(f"  Authority ID: {state.authority_id}")
    expires = datetime.fromtimestamp(state.expires_at, UTC).strftime("%Y-%m-%d %H:%M:%S +0000 UTC")
    print(f"  Expires at: {expires}")
    if kind != "x509":
        return
    if state.upstream_authority_subject_key_id:
        print(f"  Upstream authority Subject Key ID: {state.upstream_authority_subject_key_id}")
    else:
        print("  Upstream authority ID: No upstream authority")


def _handler(kind: str, verb: str) -> Any:
    rpc_kind, shown = _KINDS[kind]

    async def run(args: argparse.Namespace, channel: Channel) -> int:
        stub = localauthority_grpc.LocalAuthorityStub(channel)
        if verb == "show":
            reply = await call(
                getattr(stub, f"Get{rpc_kind}AuthorityState"), getattr(pb, f"Get{rpc_kind}AuthorityStateRequest")()
            )
            if args.output == "json":
                print_json(reply)
                return 0
            for index, (label, field) in enumerate((("Active", "active"), ("Prepared", "prepared"), ("Old", "old"))):
                if index:
                    print()
                state = getattr(reply, field) if reply.HasField(field) else None
                _print_state(f"{label} {shown} authority", state, kind)
            return 0
        if verb == "prepare":
            reply = await call(
                getattr(stub, f"Prepare{rpc_kind}Authority"), getattr(pb, f"Prepare{rpc_kind}AuthorityRequest")()
            )
            state, label = reply.prepared_authority, "Prepared"
        else:
            if not args.authorityID:
                raise CliError("an authority ID is required")
            method = {"activate": "Activate", "taint": "Taint", "revoke": "Revoke"}[verb]
            request = getattr(pb, f"{method}{rpc_kind}AuthorityRequest")(authority_id=args.authorityID)
            reply = await call(getattr(stub, f"{method}{rpc_kind}Authority"), request)
            field = {"activate": "activated_authority", "taint": "tainted_authority", "revoke": "revoked_authority"}[
                verb
            ]
            state, label = (
                getattr(reply, field),
                {"activate": "Activated", "taint": "Tainted", "revoke": "Revoked"}[verb],
            )
        if args.output == "json":
            print_json(reply)
        else:
            _print_state(f"{label} {shown} authority", state, kind)
        return 0

    return run


def _upstream_handler(verb: str) -> Any:
    async def run(args: argparse.Namespace, channel: Channel) -> int:
        if not args.subjectKeyID:
            raise CliError("the subject key ID of the upstream authority is required")
        stub = localauthority_grpc.LocalAuthorityStub(channel)
        reply: pb.TaintX509UpstreamAuthorityResponse | pb.RevokeX509UpstreamAuthorityResponse
        if verb == "taint":
            reply = await call(
                stub.TaintX509UpstreamAuthority, pb.TaintX509UpstreamAuthorityRequest(subject_key_id=args.subjectKeyID)
            )
        else:
            reply = await call(
                stub.RevokeX509UpstreamAuthority,
                pb.RevokeX509UpstreamAuthorityRequest(subject_key_id=args.subjectKeyID),
            )
        if args.output == "json":
            print_json(reply)
        else:
            print(f"{'Tainted' if verb == 'taint' else 'Revoked'} X.509 upstream authority:")
            print(f"  Subject Key ID: {reply.upstream_authority_subject_key_id}")
        return 0

    return run


def register(commands: Any) -> None:
    """Add ``localauthority`` and ``upstreamauthority`` to the parser."""
    local = commands.add_parser("localauthority", help="Manage the server's local authorities (forced rotation)")
    kinds = local.add_subparsers(dest="localauthority_kind", metavar="<x509|jwt>", required=True)
    for kind in _KINDS:
        verbs = kinds.add_parser(kind, help=f"Manage {_KINDS[kind][1]} authorities").add_subparsers(
            dest=f"localauthority_{kind}_verb", metavar="<command>", required=True
        )
        for verb in ("show", "prepare", "activate", "taint", "revoke"):
            parser = verbs.add_parser(verb, help=f"{verb.capitalize()} the {_KINDS[kind][1]} authority")
            if verb in ("activate", "taint", "revoke"):
                parser.add_argument("-authorityID", default="", help="The authority ID (subject key ID or key ID)")
            add_socket(parser)
            add_output(parser)
            parser.set_defaults(handler=run_async(_handler(kind, verb)))
    upstream = commands.add_parser("upstreamauthority", help="Manage upstream X.509 authorities")
    verbs = upstream.add_subparsers(dest="upstreamauthority_verb", metavar="<command>", required=True)
    for verb in ("taint", "revoke"):
        parser = verbs.add_parser(verb, help=f"{verb.capitalize()} an upstream X.509 authority")
        parser.add_argument("-subjectKeyID", default="", help="The subject key ID of the upstream authority")
        add_socket(parser)
        add_output(parser)
        parser.set_defaults(handler=run_async(_upstream_handler(verb)))
