"""The administrative verbs: ``token``, ``bundle``, ``agent``, ``x509`` and ``jwt``.

Flags, defaults and output follow ``spire-server`` so that scripts written for SPIRE keep
working: ``token generate -ttl 600``, ``bundle show -format pem|spiffe``, ``agent evict
-spiffeID``, ``x509 mint -spiffeID -ttl -write`` and so on. Every verb talks to the running
server through its local admin socket.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf import wrappers_pb2
from grpclib.client import Channel
from grpclib.exceptions import GRPCError

from pyspire.bundle_messages import bundle_from_proto, bundle_to_proto
from pyspire.command_line import CliError, duration_seconds, integer, read_input, write_output
from pyspire.config.duration import parse_duration
from pyspire.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from pyspire.proto.spire.api.server.bundle.v1 import bundle_grpc, bundle_pb2
from pyspire.proto.spire.api.server.svid.v1 import svid_grpc, svid_pb2
from pyspire.proto.spire.api.types import types_pb2
from pyspire.server.cli.common import add_command, add_group, call, print_json
from pyspire.spiffe import Bundle, BundleError, SpiffeId, SpiffeIdError, TrustDomain

__all__ = ["register"]


def _spiffe_id(text: str | None, flag: str) -> types_pb2.SPIFFEID:
    if not text:
        raise CliError(f"{flag} must be specified")
    try:
        parsed = SpiffeId.parse(text)
    except SpiffeIdError as err:
        raise CliError(f"{flag}: {err}") from None
    return types_pb2.SPIFFEID(trust_domain=parsed.trust_domain.name, path=parsed.path)


def _id_text(proto: types_pb2.SPIFFEID) -> str:
    return f"spiffe://{proto.trust_domain}{proto.path}"


def _timestamp(seconds: int) -> str:
    """As Go prints a ``time.Time`` (SPIRE's CLI): local time, offset and zone name."""
    return datetime.fromtimestamp(seconds, UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S %z %Z")


# --- token ----------------------------------------------------------------------------


async def _token_generate(args: argparse.Namespace, channel: Channel) -> int:
    if args.ttl <= 0:
        raise CliError("-ttl must be a positive number of seconds")
    request = agent_pb2.CreateJoinTokenRequest(ttl=args.ttl)
    if args.spiffeID:
        request.agent_id.CopyFrom(_spiffe_id(args.spiffeID, "-spiffeID"))
    token = await call(agent_grpc.AgentStub(channel).CreateJoinToken, request)
    if args.output == "json":
        print_json(token)
        return 0
    print(f"Token: {token.value}")
    if not args.spiffeID:
        print("Warning: Missing SPIFFE ID.")
    return 0


# --- bundle ---------------------------------------------------------------------------


def _bundle_from_proto(proto: types_pb2.Bundle) -> Bundle:
    try:
        return bundle_from_proto(proto)
    except ValueError as err:
        raise CliError(f"the server returned a bundle that cannot be read: {err}") from None


def _print_bundle(proto: types_pb2.Bundle, output_format: str, output: str) -> None:
    if output == "json":
        print_json(proto)
        return
    bundle = _bundle_from_proto(proto)
    if output_format == "spiffe":
        print(json.dumps(bundle.to_spiffe_document(), indent=4))
    else:
        sys.stdout.write(bundle.marshal_x509_pem().decode())


async def _bundle_show(args: argparse.Namespace, channel: Channel) -> int:
    bundle = await call(bundle_grpc.BundleStub(channel).GetBundle, bundle_pb2.GetBundleRequest())
    _print_bundle(bundle, args.format, args.output)
    return 0


async def _bundle_list(args: argparse.Namespace, channel: Channel) -> int:
    stub = bundle_grpc.BundleStub(channel)
    if args.id:
        bundle = await call(
            stub.GetFederatedBundle, bundle_pb2.GetFederatedBundleRequest(trust_domain=_trust_domain(args.id))
        )
        _print_bundle(bundle, args.format, args.output)
        return 0
    bundles: list[types_pb2.Bundle] = []
    token = ""
    while True:
        reply = await call(stub.ListFederatedBundles, bundle_pb2.ListFederatedBundlesRequest(page_token=token))
        bundles.extend(reply.bundles)
        token = reply.next_page_token
        if not token:
            break
    if args.output == "json":
        print_json(bundle_pb2.ListFederatedBundlesResponse(bundles=bundles))
        return 0
    for index, bundle in enumerate(bundles):
        if index:
            print()
        rule = "*" * 40
        print(f"{rule}\n* {bundle.trust_domain}\n{rule}")
        _print_bundle(bundle, args.format, args.output)
    return 0


async def _bundle_count(args: argparse.Namespace, channel: Channel) -> int:
    reply = await call(bundle_grpc.BundleStub(channel).CountBundles, bundle_pb2.CountBundlesRequest())
    if args.output == "json":
        print_json(reply)
    else:
        print(f"{reply.count} bundle{'s' if reply.count != 1 else ''}")
    return 0


def _trust_domain(text: str) -> str:
    try:
        if text.startswith("spiffe://"):
            return SpiffeId.parse(text).trust_domain.name
        return TrustDomain.parse(text).name
    except SpiffeIdError as err:
        raise CliError(f"-id: {err}") from None


async def _bundle_set(args: argparse.Namespace, channel: Channel) -> int:
    trust_domain = TrustDomain.parse(_trust_domain(args.id)) if args.id else None
    if trust_domain is None:
        raise CliError("-id must be specified")
    data = read_input(args.path or "-", "-path")
    try:
        bundle = Bundle.parse(trust_domain, data) if args.format == "spiffe" else Bundle.parse_x509(trust_domain, data)
    except BundleError as err:
        raise CliError(f"unable to parse bundle data: {err}") from None
    proto = bundle_to_proto(bundle)
    reply = await call(
        bundle_grpc.BundleStub(channel).BatchSetFederatedBundle,
        bundle_pb2.BatchSetFederatedBundleRequest(bundle=[proto]),
    )
    result = reply.results[0]
    if result.status.code != 0:
        raise CliError(f"failed to set federated bundle: {result.status.message}")
    print("bundle set.")
    return 0


_DELETE_MODES = {
    "restrict": bundle_pb2.BatchDeleteFederatedBundleRequest.RESTRICT,
    "delete": bundle_pb2.BatchDeleteFederatedBundleRequest.DELETE,
    "dissociate": bundle_pb2.BatchDeleteFederatedBundleRequest.DISSOCIATE,
}


async def _bundle_delete(args: argparse.Namespace, channel: Channel) -> int:
    if not args.id:
        raise CliError("id is required")
    reply = await call(
        bundle_grpc.BundleStub(channel).BatchDeleteFederatedBundle,
        bundle_pb2.BatchDeleteFederatedBundleRequest(
            trust_domains=[_trust_domain(args.id)], mode=_DELETE_MODES[args.mode]
        ),
    )
    result = reply.results[0]
    if result.status.code != 0:
        raise CliError(f"failed to delete federated bundle {result.trust_domain!r}: {result.status.message}")
    print("bundle deleted.")
    return 0


# --- agent ----------------------------------------------------------------------------


def _print_agent(agent: types_pb2.Agent) -> None:
    """SPIRE's layout: a banned agent (it has no serial any more) shows ``Banned`` instead."""
    print(f"SPIFFE ID         : {_id_text(agent.id)}")
    print(f"Attestation type  : {agent.attestation_type}")
    print(f"Expiration time   : {_timestamp(agent.x509svid_expires_at)}")
    if agent.banned:
        print("Banned            : true")
    else:
        print(f"Serial number     : {agent.x509svid_serial_number}")
    print(f"Can re-attest     : {str(agent.can_reattest).lower()}")
    print()


_AGENT_MATCH = {
    "exact": types_pb2.SelectorMatch.MATCH_EXACT,
    "subset": types_pb2.SelectorMatch.MATCH_SUBSET,
    "superset": types_pb2.SelectorMatch.MATCH_SUPERSET,
    "any": types_pb2.SelectorMatch.MATCH_ANY,
}
_GO_TIME_LAYOUT = "%Y-%m-%d %H:%M:%S %z"


def _add_agent_filters(parser: argparse.ArgumentParser) -> None:
    """SPIRE's ``agent list`` and ``agent count`` filters."""
    parser.add_argument("-attestationType", default="", help="Filter by attestation type, like join_token or x509pop")
    parser.add_argument(
        "-banned", default="", help="'true': banned agents, 'false': not banned agents, other value will return all"
    )
    parser.add_argument(
        "-canReattest",
        default="",
        help="'true': agents that can reattest, 'false': agents that can't reattest, other value will return all",
    )
    parser.add_argument(
        "-expiresBefore", default="", help='Filter by expiration time (format: "2006-01-02 15:04:05 -0700 -07")'
    )
    parser.add_argument(
        "-selector", action="append", default=[], help="A colon-delimited type:value selector (repeatable)"
    )
    parser.add_argument(
        "-matchSelectorsOn",
        choices=tuple(_AGENT_MATCH),
        default="superset",
        help="The match mode used when filtering by selectors",
    )


def _tristate(text: str) -> wrappers_pb2.BoolValue | None:
    """SPIRE's -banned and -canReattest: 'true', 'false', or anything else for no filter."""
    return wrappers_pb2.BoolValue(value=text == "true") if text in ("true", "false") else None


def _agent_filter(args: argparse.Namespace) -> dict[str, Any]:
    """The ListAgents/CountAgents filter the flags ask for, checked as SPIRE's CLI checks them."""
    fields: dict[str, Any] = {"by_attestation_type": args.attestationType}
    for field, text in (("by_banned", args.banned), ("by_can_reattest", args.canReattest)):
        if (value := _tristate(text)) is not None:
            fields[field] = value
    if args.expiresBefore:
        text = args.expiresBefore
        # Go's layout ends with the zone's hours again ("-07"): datetime reads all but that.
        head, _, zone_hours = text.rpartition(" ")
        try:
            datetime.strptime(head, _GO_TIME_LAYOUT)
            if not (len(zone_hours) == 3 and zone_hours[0] in "+-" and zone_hours[1:].isdigit()):
                raise ValueError(zone_hours)
        except ValueError:
            raise CliError(
                f'date is not valid: "{text}" is not in the format "2006-01-02 15:04:05 -0700 -07"'
            ) from None
        fields["by_expires_before"] = text
    if args.selector:
        selectors = []
        for value in args.selector:
            kind, sep, rest = value.partition(":")
            if not sep or not kind or not rest:
                raise CliError(f'selector "{value}" must be formatted as type:value')
            selectors.append(types_pb2.Selector(type=kind, value=rest))
        fields["by_selector_match"] = types_pb2.SelectorMatch(
            selectors=selectors, match=_AGENT_MATCH[args.matchSelectorsOn]
        )
    return fields


async def _agent_list(args: argparse.Namespace, channel: Channel) -> int:
    stub = agent_grpc.AgentStub(channel)
    agents: list[types_pb2.Agent] = []
    token = ""
    wanted = agent_pb2.ListAgentsRequest.Filter(**_agent_filter(args))
    while True:
        reply = await call(
            stub.ListAgents, agent_pb2.ListAgentsRequest(filter=wanted, page_size=1000, page_token=token)
        )
        agents.extend(reply.agents)
        token = reply.next_page_token
        if not token:
            break
    if args.output == "json":
        print_json(agent_pb2.ListAgentsResponse(agents=agents))
        return 0
    if not agents:
        print("No attested agents found")
        return 0
    print(f"Found {len(agents)} attested agent{'s' if len(agents) != 1 else ''}:\n")
    for agent in agents:
        _print_agent(agent)
    return 0


async def _agent_show(args: argparse.Namespace, channel: Channel) -> int:
    agent = await call(
        agent_grpc.AgentStub(channel).GetAgent, agent_pb2.GetAgentRequest(id=_spiffe_id(args.spiffeID, "-spiffeID"))
    )
    if args.output == "json":
        print_json(agent)
        return 0
    print("Found an attested agent given its SPIFFE ID\n")
    _print_agent(agent)
    for selector in agent.selectors:  # show lists them, list does not (as SPIRE)
        print(f"Selectors         : {selector.type}:{selector.value}")
    return 0


async def _agent_count(args: argparse.Namespace, channel: Channel) -> int:
    wanted = agent_pb2.CountAgentsRequest.Filter(**_agent_filter(args))
    reply = await call(agent_grpc.AgentStub(channel).CountAgents, agent_pb2.CountAgentsRequest(filter=wanted))
    if args.output == "json":
        print_json(reply)
    else:
        print(f"{reply.count} attested agent{'s' if reply.count != 1 else ''}")
    return 0


async def _agent_evict(args: argparse.Namespace, channel: Channel) -> int:
    await call(
        agent_grpc.AgentStub(channel).DeleteAgent,
        agent_pb2.DeleteAgentRequest(id=_spiffe_id(args.spiffeID, "-spiffeID")),
    )
    print("Agent evicted successfully")
    return 0


async def _agent_ban(args: argparse.Namespace, channel: Channel) -> int:
    await call(
        agent_grpc.AgentStub(channel).BanAgent, agent_pb2.BanAgentRequest(id=_spiffe_id(args.spiffeID, "-spiffeID"))
    )
    print("Agent banned successfully")
    return 0


async def _agent_purge(args: argparse.Namespace, channel: Channel) -> int:
    try:
        expired_for = parse_duration(args.expiredFor)
    except ValueError as err:
        raise CliError(f"-expiredFor: {err}") from None
    stub = agent_grpc.AgentStub(channel)
    cutoff = datetime.now(UTC) - expired_for
    agents: list[types_pb2.Agent] = []
    token = ""
    # As SPIRE: only agents that can attest again are purged. Deleting one attested by a
    # join token or an instance document would make its spent evidence usable once more.
    reattestable = agent_pb2.ListAgentsRequest.Filter(by_can_reattest=wrappers_pb2.BoolValue(value=True))
    while True:
        request = agent_pb2.ListAgentsRequest(filter=reattestable, page_size=1000, page_token=token)
        reply = await call(stub.ListAgents, request)
        agents.extend(a for a in reply.agents if datetime.fromtimestamp(a.x509svid_expires_at, UTC) < cutoff)
        token = reply.next_page_token
        if not token:
            break
    if not agents:
        print("No agents to purge.")
        return 0
    if args.dryRun:
        print(f"Found {len(agents)} expired agent{'s' if len(agents) != 1 else ''}:\n")
        for agent in agents:
            print(f"SPIFFE ID         : {_id_text(agent.id)}")
        return 0
    failed = 0
    for agent in agents:
        try:
            await call(stub.DeleteAgent, agent_pb2.DeleteAgentRequest(id=agent.id))
        except GRPCError as err:
            failed += 1
            print(f"Failed to purge agent {_id_text(agent.id)}: {err.message}", file=sys.stderr)
    print(f"Purged {len(agents) - failed} expired agent{'s' if len(agents) - failed != 1 else ''}")
    return 1 if failed else 0


# --- x509 / jwt mint ------------------------------------------------------------------


async def _x509_mint(args: argparse.Namespace, channel: Channel) -> int:
    spiffe_id = _spiffe_id(args.spiffeID, "-spiffeID")
    ttl = duration_seconds(args.ttl, "-ttl") if args.ttl else 0
    private_key = ec.generate_private_key(ec.SECP256R1())
    # The SVID API takes the SPIFFE ID and DNS names from the CSR.
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(_id_text(spiffe_id))]
    for name in args.dns:
        try:
            sans.append(x509.DNSName(name))
        except ValueError:
            raise CliError(
                f'-dns "{name}": a DNS name must be ASCII (write internationalised names as A-labels)'
            ) from None
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(private_key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    reply = await call(svid_grpc.SVIDStub(channel).MintX509SVID, svid_pb2.MintX509SVIDRequest(csr=csr, ttl=ttl))
    bundle = await call(bundle_grpc.BundleStub(channel).GetBundle, bundle_pb2.GetBundleRequest())
    chain = b"".join(
        x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM) for der in reply.svid.cert_chain
    )
    key = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    roots = _bundle_from_proto(bundle).marshal_x509_pem()
    if args.write:
        directory = Path(args.write)
        write_output(directory / "svid.pem", chain, 0o644, "-write")
        write_output(directory / "key.pem", key, 0o600, "-write")
        write_output(directory / "bundle.pem", roots, 0o644, "-write")
        print(f"X509-SVID written to {directory / 'svid.pem'}")
        print(f"Private key written to {directory / 'key.pem'}")
        print(f"Root CAs written to {directory / 'bundle.pem'}")
        return 0
    if args.output == "json":
        # SPIRE prints a Go struct here, not a message: its own keys, in its own order, base64 DER.
        key_der = private_key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        minted = {
            "x509_svid": [base64.b64encode(der).decode() for der in reply.svid.cert_chain],
            "private_key": base64.b64encode(key_der).decode(),
            "root_cas": [base64.b64encode(authority.asn1).decode() for authority in bundle.x509_authorities],
        }
        print(json.dumps([minted], separators=(",", ":")))
        return 0
    print("X509-SVID:")
    sys.stdout.write(chain.decode())
    print("\nPrivate key:")
    sys.stdout.write(key.decode())
    print("\nRoot CAs:")
    sys.stdout.write(roots.decode())
    return 0


async def _jwt_mint(args: argparse.Namespace, channel: Channel) -> int:
    if not args.audience:
        raise CliError("at least one audience must be provided")
    request = svid_pb2.MintJWTSVIDRequest(
        id=_spiffe_id(args.spiffeID, "-spiffeID"),
        audience=args.audience,
        ttl=duration_seconds(args.ttl, "-ttl") if args.ttl else 0,
    )
    reply = await call(svid_grpc.SVIDStub(channel).MintJWTSVID, request)
    if args.write:
        write_output(Path(args.write), reply.svid.token.encode() + b"\n", 0o600, "-write")
        print(f"JWT-SVID written to {args.write}")
        return 0
    if args.output == "json":
        print_json(reply)
        return 0
    print(reply.svid.token)
    return 0


# --- registration ---------------------------------------------------------------------


def register(commands: Any) -> None:
    """Add the administrative command groups to the parser."""
    token = add_group(commands, "token", "Manage join tokens")
    generate = add_command(token, "generate", "Generates a join token", _token_generate)
    generate.add_argument("-ttl", type=integer(32), default=600, help="Token TTL in seconds")
    generate.add_argument("-spiffeID", default="", help="Additional SPIFFE ID to assign the token owner (optional)")

    bundle = add_group(commands, "bundle", "Manage trust bundles")
    for name, help_text, handler in (
        ("show", "Prints server CA bundle to stdout", _bundle_show),
        ("list", "Lists federated bundles", _bundle_list),
    ):
        parser = add_command(bundle, name, help_text, handler)
        parser.add_argument("-format", choices=("pem", "spiffe"), default="pem", help="The format to show the bundle")
        if name == "list":
            parser.add_argument("-id", default="", help="SPIFFE ID of the trust domain")
    add_command(bundle, "count", "Count bundles", _bundle_count)
    set_parser = add_command(bundle, "set", "Creates or updates federated bundle data", _bundle_set)
    set_parser.add_argument("-id", default="", help="SPIFFE ID of the trust domain")
    set_parser.add_argument("-path", default="", help="Path to the bundle data (stdin when empty)")
    set_parser.add_argument("-format", choices=("pem", "spiffe"), default="pem", help="The format of the bundle data")
    delete = add_command(bundle, "delete", "Deletes federated bundle data", _bundle_delete)
    delete.add_argument("-id", default="", help="SPIFFE ID of the trust domain")
    delete.add_argument("-mode", choices=tuple(_DELETE_MODES), default="restrict", help="Deletion mode")

    agent = add_group(commands, "agent", "Manage agents")
    _add_agent_filters(add_command(agent, "list", "Lists attested agents and their SPIFFE IDs", _agent_list))
    _add_agent_filters(add_command(agent, "count", "Count attested agents", _agent_count))
    purge = add_command(agent, "purge", "Purge re-attestable agents whose SVID expired a while ago", _agent_purge)
    purge.add_argument("-expiredFor", default="720h", help="Purge agents whose SVID expired longer ago than this")
    purge.add_argument("-dryRun", action="store_true", help="Show what would be purged without purging")
    for name, help_text, handler in (
        ("show", "Shows the details of an attested agent given its SPIFFE ID", _agent_show),
        ("evict", "Evicts an attested agent given its SPIFFE ID", _agent_evict),
        ("ban", "Ban an attested agent given its SPIFFE ID", _agent_ban),
    ):
        parser = add_command(agent, name, help_text, handler)
        parser.add_argument("-spiffeID", default="", help="The SPIFFE ID of the agent")

    x509_group = add_group(commands, "x509", "Mint X509-SVIDs")
    mint = add_command(x509_group, "mint", "Mints an X509-SVID", _x509_mint)
    mint.add_argument("-spiffeID", default="", help="SPIFFE ID of the X509-SVID")
    mint.add_argument("-ttl", default="", help="TTL of the X509-SVID")
    mint.add_argument("-dns", action="append", default=[], help="DNS name that will be included in SVID")
    mint.add_argument("-write", default="", help="Directory to write output to instead of stdout")

    jwt_group = add_group(commands, "jwt", "Mint JWT-SVIDs")
    jwt_mint = add_command(jwt_group, "mint", "Mints a JWT-SVID", _jwt_mint)
    jwt_mint.add_argument("-spiffeID", default="", help="SPIFFE ID of the JWT-SVID")
    jwt_mint.add_argument("-ttl", default="", help="TTL of the JWT-SVID")
    jwt_mint.add_argument("-audience", action="append", default=[], help="Audience claim (can be used more than once)")
    jwt_mint.add_argument("-write", default="", help="File to write token to instead of stdout")
