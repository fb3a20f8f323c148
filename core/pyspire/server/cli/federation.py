"""``federation create|show|list|update|delete|refresh``: SPIRE's verbs for federation relationships.

A relationship says where a partner trust domain's bundle endpoint is and how to
authenticate it. For ``https_spiffe`` the partner's bundle must be known before the first
fetch: give it with ``-trustDomainBundlePath`` (or set it with ``bundle set``).
"""

from __future__ import annotations

import argparse
from typing import Any

from grpclib.client import Channel

from pyspire.bundle_messages import bundle_to_proto
from pyspire.command_line import CliError, read_input
from pyspire.proto.spire.api.server.trustdomain.v1 import trustdomain_grpc
from pyspire.proto.spire.api.server.trustdomain.v1 import trustdomain_pb2 as pb
from pyspire.proto.spire.api.types import types_pb2
from pyspire.server.cli.common import add_command, add_group, call, print_json
from pyspire.spiffe import Bundle, BundleError, SpiffeId, SpiffeIdError, TrustDomain

__all__ = ["register"]


def _trust_domain(text: str, flag: str) -> TrustDomain:
    if not text:
        raise CliError(f"{flag} must be specified")
    try:
        return SpiffeId.parse(text).trust_domain if text.startswith("spiffe://") else TrustDomain.parse(text)
    except SpiffeIdError as err:
        raise CliError(f"{flag}: {err}") from None


def _relationship(args: argparse.Namespace) -> types_pb2.FederationRelationship:
    trust_domain = _trust_domain(args.trustDomain, "-trustDomain")
    if not args.bundleEndpointURL:
        raise CliError("-bundleEndpointURL must be specified")
    proto = types_pb2.FederationRelationship(trust_domain=trust_domain.name, bundle_endpoint_url=args.bundleEndpointURL)
    if args.bundleEndpointProfile == "https_spiffe":
        if not args.endpointSpiffeID:
            raise CliError("-endpointSpiffeID is required with the https_spiffe profile")
        try:
            SpiffeId.parse(args.endpointSpiffeID)
        except SpiffeIdError as err:
            raise CliError(f"-endpointSpiffeID: {err}") from None
        proto.https_spiffe.CopyFrom(types_pb2.HTTPSSPIFFEProfile(endpoint_spiffe_id=args.endpointSpiffeID))
    else:
        if args.endpointSpiffeID:
            raise CliError("-endpointSpiffeID is only for the https_spiffe profile")
        proto.https_web.CopyFrom(types_pb2.HTTPSWebProfile())
    if args.trustDomainBundlePath:
        data = read_input(args.trustDomainBundlePath, "-trustDomainBundlePath")
        try:
            bundle = (
                Bundle.parse(trust_domain, data)
                if args.trustDomainBundleFormat == "spiffe"
                else Bundle.parse_x509(trust_domain, data)
            )
        except BundleError as err:
            raise CliError(f"cannot read the bundle in {args.trustDomainBundlePath}: {err}") from None
        proto.trust_domain_bundle.CopyFrom(bundle_to_proto(bundle))
    return proto


def _print_relationship(relationship: types_pb2.FederationRelationship) -> None:
    print(f"Trust domain              : {relationship.trust_domain}")
    print(f"Bundle endpoint URL       : {relationship.bundle_endpoint_url}")
    if relationship.WhichOneof("bundle_endpoint_profile") == "https_spiffe":
        print("Bundle endpoint profile   : https_spiffe")
        print(f"Endpoint SPIFFE ID        : {relationship.https_spiffe.endpoint_spiffe_id}")
    else:
        print("Bundle endpoint profile   : https_web")
    print()


async def _create_or_update(args: argparse.Namespace, channel: Channel) -> int:
    stub = trustdomain_grpc.TrustDomainStub(channel)
    relationship = _relationship(args)
    if args.update:
        reply: Any = await call(
            stub.BatchUpdateFederationRelationship,
            pb.BatchUpdateFederationRelationshipRequest(federation_relationships=[relationship]),
        )
    else:
        reply = await call(
            stub.BatchCreateFederationRelationship,
            pb.BatchCreateFederationRelationshipRequest(federation_relationships=[relationship]),
        )
    result = reply.results[0]
    if result.status.code != 0:
        verb = "update" if args.update else "create"
        raise CliError(f"failed to {verb} federation relationship: {result.status.message}")
    if args.output == "json":
        print_json(reply)
        return 0
    _print_relationship(result.federation_relationship)
    return 0


async def _show(args: argparse.Namespace, channel: Channel) -> int:
    trust_domain = _trust_domain(args.trustDomain, "-trustDomain")
    relationship = await call(
        trustdomain_grpc.TrustDomainStub(channel).GetFederationRelationship,
        pb.GetFederationRelationshipRequest(trust_domain=trust_domain.name),
    )
    if args.output == "json":
        print_json(relationship)
        return 0
    print("Found a federation relationship with trust domain", trust_domain, end="\n\n")
    _print_relationship(relationship)
    return 0


async def _list(args: argparse.Namespace, channel: Channel) -> int:
    stub = trustdomain_grpc.TrustDomainStub(channel)
    found: list[types_pb2.FederationRelationship] = []
    token = ""
    while True:
        reply = await call(stub.ListFederationRelationships, pb.ListFederationRelationshipsRequest(page_token=token))
        found.extend(reply.federation_relationships)
        token = reply.next_page_token
        if not token:
            break
    if args.output == "json":
        print_json(pb.ListFederationRelationshipsResponse(federation_relationships=found))
        return 0
    print(f"Found {len(found)} federation relationship{'s' if len(found) != 1 else ''}", end="\n\n")
    for relationship in found:
        _print_relationship(relationship)
    return 0


async def _delete(args: argparse.Namespace, channel: Channel) -> int:
    trust_domain = _trust_domain(args.id, "-id")
    reply = await call(
        trustdomain_grpc.TrustDomainStub(channel).BatchDeleteFederationRelationship,
        pb.BatchDeleteFederationRelationshipRequest(trust_domains=[trust_domain.name]),
    )
    result = reply.results[0]
    if result.status.code != 0:
        raise CliError(f"failed to delete federation relationship: {result.status.message}")
    print("federation relationship deleted.")
    return 0


async def _refresh(args: argparse.Namespace, channel: Channel) -> int:
    trust_domain = _trust_domain(args.id, "-id")
    await call(
        trustdomain_grpc.TrustDomainStub(channel).RefreshBundle,
        pb.RefreshBundleRequest(trust_domain=trust_domain.name),
    )
    print("Bundle refreshed")
    return 0


def register(commands: Any) -> None:
    """Add ``federation`` and its verbs to the parser."""
    group = add_group(commands, "federation", "Manage federation relationships")

    def verb(name: str, help_text: str, handler: Any) -> argparse.ArgumentParser:
        return add_command(group, name, help_text, handler)

    for name, help_text, update in (
        ("create", "Creates a dynamic federation relationship with a foreign trust domain", False),
        ("update", "Updates a dynamic federation relationship with a foreign trust domain", True),
    ):
        parser = verb(name, help_text, _create_or_update)
        parser.set_defaults(update=update)
        parser.add_argument("-trustDomain", default="", help="Name of the trust domain to federate with")
        parser.add_argument("-bundleEndpointURL", default="", help="URL of the SPIFFE bundle endpoint")
        parser.add_argument(
            "-bundleEndpointProfile", choices=("https_spiffe", "https_web"), default="https_spiffe", help="Profile"
        )
        parser.add_argument("-endpointSpiffeID", default="", help="SPIFFE ID of the endpoint (https_spiffe)")
        parser.add_argument("-trustDomainBundlePath", default="", help="Path to the trust domain's bundle")
        parser.add_argument(
            "-trustDomainBundleFormat", choices=("pem", "spiffe"), default="pem", help="Format of that bundle"
        )
    show = verb("show", "Shows a dynamic federation relationship", _show)
    show.add_argument("-trustDomain", default="", help="The trust domain name of the relationship")
    verb("list", "Lists all dynamic federation relationships", _list)
    for name, help_text, handler in (
        ("delete", "Deletes a dynamic federation relationship", _delete),
        ("refresh", "Refreshes the bundle from the specified federated trust domain", _refresh),
    ):
        verb(name, help_text, handler).add_argument("-id", default="", help="SPIFFE ID of the trust domain")
