"""``federation create|show|list|update|delete|refresh``: SPIRE's verbs for federation relationships.

A relationship says where a partner trust domain's bundle endpoint is and how to
authenticate it. For ``https_spiffe`` the partner's bundle must be known before the first
fetch: give it with ``-trustDomainBundlePath`` (or set it with ``bundle set``). ``create`` and
``update`` also take many relationships at once from ``-data`` (a file, or ``-`` for stdin) in
SPIRE's JSON shape, ``{"federationRelationships": [{"trustDomain": ..., "bundleEndpointURL": ...,
"bundleEndpointProfile": ..., "endpointSPIFFEID": ..., "trustDomainBundle": ...,
"trustDomainBundleFormat": ...}]}``; the server answers each item, and each failure is shown
with what was sent.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any, TextIO

from grpclib.client import Channel

from pyspire.bundle_messages import bundle_to_proto
from pyspire.command_line import CliError, read_input, read_text
from pyspire.proto.spire.api.server.trustdomain.v1 import trustdomain_grpc
from pyspire.proto.spire.api.server.trustdomain.v1 import trustdomain_pb2 as pb
from pyspire.proto.spire.api.types import types_pb2
from pyspire.server.cli.common import add_command, add_group, call, go_code_name, print_json
from pyspire.spiffe import Bundle, BundleError, SpiffeId, SpiffeIdError, TrustDomain

__all__ = ["register"]


def _trust_domain(text: str, flag: str) -> TrustDomain:
    if not text:
        raise CliError(f"{flag} must be specified")
    try:
        return SpiffeId.parse(text).trust_domain if text.startswith("spiffe://") else TrustDomain.parse(text)
    except SpiffeIdError as err:
        raise CliError(f"{flag}: {err}") from None


@dataclass
class _Relationship:
    """One relationship as the operator gave it: by flags, or as an item of the ``-data`` JSON."""

    trust_domain: str = ""
    bundle_endpoint_url: str = ""
    bundle_endpoint_profile: str = ""
    endpoint_spiffe_id: str = ""
    bundle: bytes | None = None
    bundle_format: str = ""
    bundle_source: str = ""


_DATA_KEYS = {
    "trustdomain": "trust_domain",
    "bundleendpointurl": "bundle_endpoint_url",
    "bundleendpointprofile": "bundle_endpoint_profile",
    "endpointspiffeid": "endpoint_spiffe_id",
    "trustdomainbundleformat": "bundle_format",
}
"""The ``-data`` item keys (``trustDomain``, ``bundleEndpointURL``...), matched regardless of case as Go's JSON does."""


def _bundle(relationship: _Relationship, trust_domain_text: str) -> types_pb2.Bundle:
    """The relationship's bundle, for ``trust_domain_text`` (SPIRE's: the endpoint's trust domain for https_spiffe)."""
    assert relationship.bundle is not None
    try:
        trust_domain = TrustDomain.parse(trust_domain_text)
    except SpiffeIdError as err:
        raise CliError(f"{relationship.bundle_source}: the bundle's trust domain: {err}") from None
    try:
        if relationship.bundle_format == "pem":
            bundle = Bundle.parse_x509(trust_domain, relationship.bundle)
        elif relationship.bundle_format == "spiffe":
            bundle = Bundle.parse(trust_domain, relationship.bundle)
        else:
            raise CliError(f'{relationship.bundle_source}: bundle format "{relationship.bundle_format}" is unsupported')
    except BundleError as err:
        raise CliError(f"{relationship.bundle_source}: cannot read the bundle: {err}") from None
    return bundle_to_proto(bundle)


def _to_proto(relationship: _Relationship, where: str) -> types_pb2.FederationRelationship:
    """The API's relationship; the trust domain is left to the server to check per item, as SPIRE's CLI does."""
    if not relationship.trust_domain:
        raise CliError(f"{where}trust domain is required")
    if not relationship.bundle_endpoint_url:
        raise CliError(f"{where}bundle endpoint URL is required")
    proto = types_pb2.FederationRelationship(
        trust_domain=relationship.trust_domain, bundle_endpoint_url=relationship.bundle_endpoint_url
    )
    bundle_trust_domain = relationship.trust_domain
    if relationship.bundle_endpoint_profile == "https_web":
        proto.https_web.CopyFrom(types_pb2.HTTPSWebProfile())
    elif relationship.bundle_endpoint_profile == "https_spiffe":
        if not relationship.endpoint_spiffe_id:
            raise CliError(f"{where}endpoint SPIFFE ID is required if 'https_spiffe' endpoint profile is set")
        try:
            endpoint = SpiffeId.parse(relationship.endpoint_spiffe_id)
        except SpiffeIdError as err:
            raise CliError(f"{where}cannot parse bundle endpoint SPIFFE ID: {err}") from None
        bundle_trust_domain = endpoint.trust_domain.name
        proto.https_spiffe.CopyFrom(types_pb2.HTTPSSPIFFEProfile(endpoint_spiffe_id=relationship.endpoint_spiffe_id))
    else:
        raise CliError(
            f'{where}unknown bundle endpoint profile type: "{relationship.bundle_endpoint_profile}"'
            " (https_web or https_spiffe)"
        )
    if relationship.bundle is not None:
        proto.trust_domain_bundle.CopyFrom(_bundle(relationship, bundle_trust_domain))
    return proto


def _from_flags(args: argparse.Namespace) -> _Relationship:
    relationship = _Relationship(
        trust_domain=args.trustDomain,
        bundle_endpoint_url=args.bundleEndpointURL,
        bundle_endpoint_profile=args.bundleEndpointProfile,
        endpoint_spiffe_id=args.endpointSpiffeID,
        bundle_format=args.trustDomainBundleFormat,
        bundle_source="-trustDomainBundlePath",
    )
    if args.trustDomainBundlePath:
        relationship.bundle = read_input(args.trustDomainBundlePath, "-trustDomainBundlePath")
    return relationship


def _data_item(index: int, item: Any) -> _Relationship:
    where = f"-data: relationship {index}"
    if not isinstance(item, dict):
        raise CliError(f"{where} is not an object")
    relationship = _Relationship(bundle_source=f"{where} trustDomainBundle")
    raw_bundle: Any = None
    for key, value in item.items():
        folded = key.lower()
        if folded == "trustdomainbundle":
            raw_bundle = value
            continue
        if folded not in _DATA_KEYS:
            raise CliError(f'{where}: unknown key "{key}"')
        if value is None:
            continue
        if not isinstance(value, str):
            raise CliError(f'{where}: "{key}" must be a string')
        setattr(relationship, _DATA_KEYS[folded], value)
    if raw_bundle is not None:
        if relationship.bundle_format == "pem":
            if not isinstance(raw_bundle, str):
                raise CliError(f"{where}: trustDomainBundle in the pem format must be a string of PEM certificates")
            relationship.bundle = raw_bundle.encode()
        else:
            relationship.bundle = json.dumps(raw_bundle).encode()
    return relationship


def _from_data(source: str) -> list[_Relationship]:
    try:
        document = json.loads(read_text(source, "-data"))
    except json.JSONDecodeError as err:
        raise CliError(f"-data: not valid JSON: {err}") from None
    if not isinstance(document, dict):
        raise CliError('-data: expected an object {"federationRelationships": [...]}')
    items = next((value for key, value in document.items() if key.lower() == "federationrelationships"), None) or []
    if not isinstance(items, list):
        raise CliError("-data: federationRelationships must be a list")
    return [_data_item(index, item) for index, item in enumerate(items)]


def _requested(args: argparse.Namespace) -> list[types_pb2.FederationRelationship]:
    """What to create or update: the ``-data`` file's relationships, or the one the flags describe."""
    if not args.data:
        return [_to_proto(_from_flags(args), "")]
    flags = (args.trustDomain, args.bundleEndpointURL, args.bundleEndpointProfile, args.endpointSpiffeID)
    if any(flags) or args.trustDomainBundlePath or args.trustDomainBundleFormat != "pem":
        raise CliError("cannot use other flags to specify relationship fields when 'data' flag is set")
    return [_to_proto(item, f"-data: relationship {index}: ") for index, item in enumerate(_from_data(args.data))]


def _print_relationship(relationship: types_pb2.FederationRelationship, file: TextIO | None = None) -> None:
    lines = [
        f"Trust domain              : {relationship.trust_domain}",
        f"Bundle endpoint URL       : {relationship.bundle_endpoint_url}",
    ]
    profile = relationship.WhichOneof("bundle_endpoint_profile")
    if profile == "https_spiffe":
        lines.append("Bundle endpoint profile   : https_spiffe")
        lines.append(f"Endpoint SPIFFE ID        : {relationship.https_spiffe.endpoint_spiffe_id}")
    elif profile == "https_web":
        lines.append("Bundle endpoint profile   : https_web")
    print("\n".join(lines), file=file or sys.stdout)


async def _create_or_update(args: argparse.Namespace, channel: Channel) -> int:
    stub = trustdomain_grpc.TrustDomainStub(channel)
    requested = _requested(args)
    verb = "update" if args.update else "create"
    if args.update:
        reply: Any = await call(
            stub.BatchUpdateFederationRelationship,
            pb.BatchUpdateFederationRelationshipRequest(federation_relationships=requested),
        )
    else:
        reply = await call(
            stub.BatchCreateFederationRelationship,
            pb.BatchCreateFederationRelationshipRequest(federation_relationships=requested),
        )
    if args.output == "json":
        print_json(reply)
        return 0
    failed = [(index, result) for index, result in enumerate(reply.results) if result.status.code != 0]
    for result in reply.results:
        if result.status.code == 0:
            print()
            _print_relationship(result.federation_relationship)
    for index, result in failed:
        # The API leaves a failed item's relationship out of its result: show what was sent.
        # The blank line before it goes to stdout, as SPIRE's does.
        print()
        print(
            f"Failed to {verb} the following federation relationship"
            f" (code: {go_code_name(result.status.code)}, msg: {json.dumps(result.status.message)}):",
            file=sys.stderr,
        )
        _print_relationship(requested[index] if index < len(requested) else result.federation_relationship, sys.stderr)
    if failed:
        raise CliError(f"failed to {verb} one or more federation relationships")
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
    print(f"Found a federation relationship with trust domain {args.trustDomain}:", end="\n\n")
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
    print(f"Found {len(found)} federation relationship{'s' if len(found) != 1 else ''}")
    for relationship in found:
        print()
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
            "-bundleEndpointProfile", default="", help='Endpoint profile type (either "https_web" or "https_spiffe")'
        )
        parser.add_argument("-endpointSpiffeID", default="", help="SPIFFE ID of the endpoint (https_spiffe)")
        parser.add_argument("-trustDomainBundlePath", default="", help="Path to the trust domain's bundle")
        parser.add_argument(
            "-trustDomainBundleFormat", default="pem", help='The format of the bundle data ("pem" or "spiffe")'
        )
        parser.add_argument(
            "-data",
            default="",
            help="Path to a file containing federation relationships in JSON format (optional); '-' reads stdin",
        )
    show = verb("show", "Shows a dynamic federation relationship", _show)
    show.add_argument("-trustDomain", default="", help="The trust domain name of the relationship")
    verb("list", "Lists all dynamic federation relationships", _list)
    for name, help_text, handler in (
        ("delete", "Deletes a dynamic federation relationship", _delete),
        ("refresh", "Refreshes the bundle from the specified federated trust domain", _refresh),
    ):
        verb(name, help_text, handler).add_argument("-id", default="", help="SPIFFE ID of the trust domain")
