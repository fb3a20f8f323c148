"""The wire contracts: stubs are fresh, field numbers are SPIRE's, the Workload API interoperates."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2
from google.protobuf.descriptor import FieldDescriptor
from grpclib.server import Server
from pyspire.proto.generate import check
from pyspire.proto.spiffe.workload import service
from pyspire.proto.spiffe.workload import workload_pb2 as ours
from pyspire.proto.spire.api.agent.delegatedidentity.v1 import delegatedidentity_pb2 as delegated_pb2
from pyspire.proto.spire.api.server.agent.v1 import agent_pb2
from pyspire.proto.spire.api.server.bundle.v1 import bundle_pb2
from pyspire.proto.spire.api.server.entry.v1 import entry_pb2
from pyspire.proto.spire.api.server.svid.v1 import svid_pb2
from pyspire.proto.spire.api.types import types_pb2
from spiffe._proto import workload_pb2 as theirs


def test_committed_stubs_are_fresh() -> None:
    assert check() == [], "run: python -m pyspire.proto.generate"


# (message, field, number) transcribed from the reference inventory (§3.1, §3.2, §4), which
# lists SPIRE's api-sdk field numbers: any drift here breaks SPIRE tooling and agents.
FIELD_NUMBERS = [
    (agent_pb2.AttestAgentRequest, "params", 1),
    (agent_pb2.AttestAgentRequest, "challenge_response", 2),
    (agent_pb2.AttestAgentRequest.Params, "data", 1),
    (agent_pb2.AttestAgentRequest.Params, "params", 2),
    (agent_pb2.AttestAgentResponse, "result", 1),
    (agent_pb2.AttestAgentResponse, "challenge", 2),
    (agent_pb2.AttestAgentResponse.Result, "svid", 1),
    (agent_pb2.AttestAgentResponse.Result, "reattestable", 2),
    (agent_pb2.AgentX509SVIDParams, "csr", 1),
    (agent_pb2.RenewAgentRequest, "params", 1),
    (agent_pb2.RenewAgentResponse, "svid", 1),
    (agent_pb2.CreateJoinTokenRequest, "ttl", 1),
    (agent_pb2.CreateJoinTokenRequest, "token", 2),
    (agent_pb2.CreateJoinTokenRequest, "agent_id", 3),
    (agent_pb2.PostStatusRequest, "current_bundle_serial", 1),
    (agent_pb2.PostStatusRequest, "agent_version", 2),
    (agent_pb2.ListAgentsRequest.Filter, "by_attestation_type", 1),
    (agent_pb2.ListAgentsRequest.Filter, "by_selector_match", 2),
    (agent_pb2.ListAgentsRequest.Filter, "by_banned", 3),
    (agent_pb2.ListAgentsRequest.Filter, "by_can_reattest", 4),
    (agent_pb2.ListAgentsRequest.Filter, "by_expires_before", 5),
    (agent_pb2.ListAgentsRequest, "filter", 1),
    (agent_pb2.ListAgentsRequest, "output_mask", 2),
    (agent_pb2.ListAgentsRequest, "page_size", 3),
    (agent_pb2.ListAgentsRequest, "page_token", 4),
    (agent_pb2.ListAgentsResponse, "agents", 1),
    (agent_pb2.ListAgentsResponse, "next_page_token", 2),
    (agent_pb2.GetAgentRequest, "id", 1),
    (agent_pb2.GetAgentRequest, "output_mask", 2),
    (svid_pb2.BatchNewX509SVIDRequest, "params", 1),
    (svid_pb2.NewX509SVIDParams, "entry_id", 1),
    (svid_pb2.NewX509SVIDParams, "csr", 2),
    (svid_pb2.BatchNewX509SVIDResponse, "results", 1),
    (svid_pb2.BatchNewX509SVIDResponse.Result, "status", 1),
    (svid_pb2.BatchNewX509SVIDResponse.Result, "svid", 2),
    (svid_pb2.NewJWTSVIDRequest, "entry_id", 1),
    (svid_pb2.NewJWTSVIDRequest, "audience", 2),
    (svid_pb2.NewJWTSVIDResponse, "svid", 1),
    (svid_pb2.MintX509SVIDRequest, "csr", 1),
    (svid_pb2.MintX509SVIDRequest, "ttl", 2),
    (svid_pb2.MintX509SVIDResponse, "svid", 1),
    (svid_pb2.MintJWTSVIDRequest, "id", 1),
    (svid_pb2.MintJWTSVIDRequest, "audience", 2),
    (svid_pb2.MintJWTSVIDRequest, "ttl", 3),
    (svid_pb2.NewDownstreamX509CARequest, "csr", 1),
    (svid_pb2.NewDownstreamX509CARequest, "preferred_ttl", 2),
    (svid_pb2.NewDownstreamX509CAResponse, "ca_cert_chain", 1),
    (svid_pb2.NewDownstreamX509CAResponse, "x509_authorities", 2),
    (svid_pb2.NewWITSVIDParams, "entry_id", 1),
    (svid_pb2.NewWITSVIDParams, "public_key", 2),
    (svid_pb2.NewWITSVIDParams, "signing_algorithm", 3),
    (entry_pb2.GetAuthorizedEntriesRequest, "output_mask", 1),
    (entry_pb2.GetAuthorizedEntriesResponse, "entries", 1),
    (entry_pb2.SyncAuthorizedEntriesRequest, "output_mask", 1),
    (entry_pb2.SyncAuthorizedEntriesRequest, "ids", 2),
    (entry_pb2.SyncAuthorizedEntriesResponse, "entry_revisions", 1),
    (entry_pb2.SyncAuthorizedEntriesResponse, "entries", 2),
    (entry_pb2.SyncAuthorizedEntriesResponse, "more", 3),
    (entry_pb2.EntryRevision, "id", 1),
    (entry_pb2.EntryRevision, "revision_number", 2),
    (entry_pb2.EntryRevision, "created_at", 3),
    (entry_pb2.ListEntriesRequest.Filter, "by_spiffe_id", 1),
    (entry_pb2.ListEntriesRequest.Filter, "by_parent_id", 2),
    (entry_pb2.ListEntriesRequest.Filter, "by_selectors", 3),
    (entry_pb2.ListEntriesRequest.Filter, "by_federates_with", 4),
    (entry_pb2.ListEntriesRequest.Filter, "by_hint", 5),
    (entry_pb2.ListEntriesRequest.Filter, "by_downstream", 6),
    (entry_pb2.ListEntriesRequest, "filter", 1),
    (entry_pb2.ListEntriesRequest, "output_mask", 2),
    (entry_pb2.ListEntriesRequest, "page_size", 3),
    (entry_pb2.ListEntriesRequest, "page_token", 4),
    (entry_pb2.BatchCreateEntryRequest, "entries", 1),
    (entry_pb2.BatchCreateEntryRequest, "output_mask", 2),
    (entry_pb2.BatchUpdateEntryRequest, "entries", 1),
    (entry_pb2.BatchUpdateEntryRequest, "input_mask", 2),
    (entry_pb2.BatchUpdateEntryRequest, "output_mask", 3),
    (entry_pb2.BatchDeleteEntryRequest, "ids", 1),
    (entry_pb2.BatchDeleteEntryResponse.Result, "status", 1),
    (entry_pb2.BatchDeleteEntryResponse.Result, "id", 2),
    (types_pb2.Entry, "id", 1),
    (types_pb2.Entry, "spiffe_id", 2),
    (types_pb2.Entry, "parent_id", 3),
    (types_pb2.Entry, "selectors", 4),
    (types_pb2.Entry, "x509_svid_ttl", 5),
    (types_pb2.Entry, "federates_with", 6),
    (types_pb2.Entry, "admin", 7),
    (types_pb2.Entry, "downstream", 8),
    (types_pb2.Entry, "expires_at", 9),
    (types_pb2.Entry, "dns_names", 10),
    (types_pb2.Entry, "revision_number", 11),
    (types_pb2.Entry, "store_svid", 12),
    (types_pb2.Entry, "jwt_svid_ttl", 13),
    (types_pb2.Entry, "hint", 14),
    (types_pb2.Entry, "created_at", 15),
    (types_pb2.Entry, "additional_attributes", 16),
    (types_pb2.Entry.AdditionalAttributes, "disable_x509_svid_prefetch", 1),
    (types_pb2.Entry.AdditionalAttributes, "jwt_svid_include_jti", 2),
    (types_pb2.EntryMask, "spiffe_id", 2),
    (types_pb2.EntryMask, "additional_attributes", 16),
    (types_pb2.Selector, "type", 1),
    (types_pb2.Selector, "value", 2),
    (types_pb2.SelectorMatch, "selectors", 1),
    (types_pb2.SelectorMatch, "match", 2),
    (types_pb2.FederatesWithMatch, "trust_domains", 1),
    (types_pb2.FederatesWithMatch, "match", 2),
    (types_pb2.SPIFFEID, "trust_domain", 1),
    (types_pb2.SPIFFEID, "path", 2),
    (types_pb2.Bundle, "trust_domain", 1),
    (types_pb2.Bundle, "x509_authorities", 2),
    (types_pb2.Bundle, "jwt_authorities", 3),
    (types_pb2.Bundle, "refresh_hint", 4),
    (types_pb2.Bundle, "sequence_number", 5),
    (types_pb2.Bundle, "wit_authorities", 6),
    (types_pb2.X509Certificate, "asn1", 1),
    (types_pb2.X509Certificate, "tainted", 2),
    (types_pb2.JWTKey, "public_key", 1),
    (types_pb2.JWTKey, "key_id", 2),
    (types_pb2.JWTKey, "expires_at", 3),
    (types_pb2.JWTKey, "tainted", 4),
    (types_pb2.BundleMask, "x509_authorities", 2),
    (types_pb2.BundleMask, "wit_authorities", 6),
    (types_pb2.X509SVID, "cert_chain", 1),
    (types_pb2.X509SVID, "id", 2),
    (types_pb2.X509SVID, "expires_at", 3),
    (types_pb2.X509SVID, "hint", 4),
    (types_pb2.JWTSVID, "token", 1),
    (types_pb2.JWTSVID, "id", 2),
    (types_pb2.JWTSVID, "expires_at", 3),
    (types_pb2.JWTSVID, "issued_at", 4),
    (types_pb2.JWTSVID, "hint", 5),
    (types_pb2.Agent, "id", 1),
    (types_pb2.Agent, "attestation_type", 2),
    (types_pb2.Agent, "x509svid_serial_number", 3),
    (types_pb2.Agent, "x509svid_expires_at", 4),
    (types_pb2.Agent, "selectors", 5),
    (types_pb2.Agent, "banned", 6),
    (types_pb2.Agent, "can_reattest", 7),
    (types_pb2.Agent, "agent_version", 8),
    (types_pb2.AgentMask, "attestation_type", 2),
    (types_pb2.AgentMask, "agent_version", 8),
    (types_pb2.AttestationData, "type", 1),
    (types_pb2.AttestationData, "payload", 2),
    (types_pb2.FederationRelationship, "trust_domain", 1),
    (types_pb2.FederationRelationship, "bundle_endpoint_url", 2),
    (types_pb2.FederationRelationship, "https_web", 3),
    (types_pb2.FederationRelationship, "https_spiffe", 4),
    (types_pb2.FederationRelationship, "trust_domain_bundle", 5),
    (types_pb2.HTTPSSPIFFEProfile, "endpoint_spiffe_id", 1),
    (types_pb2.FederationRelationshipMask, "bundle_endpoint_url", 1),
    (types_pb2.FederationRelationshipMask, "bundle_endpoint_profile", 2),
    (types_pb2.FederationRelationshipMask, "trust_domain_bundle", 3),
    (types_pb2.JoinToken, "value", 1),
    (types_pb2.JoinToken, "expires_at", 2),
    (types_pb2.Status, "code", 1),
    (types_pb2.Status, "message", 2),
    (types_pb2.PermissionDeniedDetails, "reason", 1),
    (types_pb2.Logger, "current_level", 1),
    (types_pb2.Logger, "launch_level", 2),
    # spire-api-sdk proto/spire/api/agent/delegatedidentity/v1
    (delegated_pb2.X509SVIDWithKey, "x509_svid", 1),
    (delegated_pb2.X509SVIDWithKey, "x509_svid_key", 2),
    (delegated_pb2.SubscribeToX509SVIDsRequest, "selectors", 1),
    (delegated_pb2.SubscribeToX509SVIDsRequest, "pid", 2),
    (delegated_pb2.SubscribeToX509SVIDsResponse, "x509_svids", 1),
    (delegated_pb2.SubscribeToX509SVIDsResponse, "federates_with", 2),
    (delegated_pb2.SubscribeToX509BundlesResponse, "ca_certificates", 1),
    (delegated_pb2.FetchJWTSVIDsRequest, "audience", 1),
    (delegated_pb2.FetchJWTSVIDsRequest, "selectors", 2),
    (delegated_pb2.FetchJWTSVIDsRequest, "pid", 3),
    (delegated_pb2.FetchJWTSVIDsResponse, "svids", 1),
    (delegated_pb2.SubscribeToJWTBundlesResponse, "bundles", 1),
    (ours.X509SVIDResponse, "svids", 1),
    (ours.X509SVIDResponse, "crl", 2),
    (ours.X509SVIDResponse, "federated_bundles", 3),
    (ours.X509SVID, "spiffe_id", 1),
    (ours.X509SVID, "x509_svid", 2),
    (ours.X509SVID, "x509_svid_key", 3),
    (ours.X509SVID, "bundle", 4),
    (ours.X509SVID, "hint", 5),
    (ours.X509BundlesResponse, "crl", 1),
    (ours.X509BundlesResponse, "bundles", 2),
    (ours.JWTSVIDRequest, "audience", 1),
    (ours.JWTSVIDRequest, "spiffe_id", 2),
    (ours.JWTSVIDResponse, "svids", 1),
    (ours.JWTSVID, "spiffe_id", 1),
    (ours.JWTSVID, "svid", 2),
    (ours.JWTSVID, "hint", 3),
    (ours.JWTBundlesResponse, "bundles", 1),
    (ours.ValidateJWTSVIDRequest, "audience", 1),
    (ours.ValidateJWTSVIDRequest, "svid", 2),
    (ours.ValidateJWTSVIDResponse, "spiffe_id", 1),
    (ours.ValidateJWTSVIDResponse, "claims", 2),
]


@pytest.mark.parametrize(
    ("message", "field", "number"), FIELD_NUMBERS, ids=[f"{m.DESCRIPTOR.full_name}.{f}" for m, f, _ in FIELD_NUMBERS]
)
def test_field_numbers_are_spires(message: type, field: str, number: int) -> None:
    assert message.DESCRIPTOR.fields_by_name[field].number == number  # type: ignore[attr-defined]


def test_enum_values_are_spires() -> None:
    reason = types_pb2.PermissionDeniedDetails.Reason
    assert [reason.Name(i) for i in range(6)] == [
        "UNKNOWN",
        "AGENT_EXPIRED",
        "AGENT_NOT_ATTESTED",
        "AGENT_NOT_ACTIVE",
        "AGENT_BANNED",
        "AGENT_MUST_REATTEST",
    ]
    mode = bundle_pb2.BatchDeleteFederatedBundleRequest.Mode
    assert (mode.Value("RESTRICT"), mode.Value("DELETE"), mode.Value("DISSOCIATE")) == (0, 1, 2)
    match = types_pb2.SelectorMatch.MatchBehavior
    assert [match.Name(i) for i in range(4)] == ["MATCH_EXACT", "MATCH_SUBSET", "MATCH_SUPERSET", "MATCH_ANY"]
    assert types_pb2.Entry.DESCRIPTOR.fields_by_name["additional_attributes"].has_presence


# Service, RPC -> (client streams, server streams), from the inventory's per-service tables.
RPCS = {
    "spire.api.server.agent.v1.Agent": {
        "CountAgents": (False, False),
        "ListAgents": (False, False),
        "GetAgent": (False, False),
        "DeleteAgent": (False, False),
        "BanAgent": (False, False),
        "AttestAgent": (True, True),
        "RenewAgent": (False, False),
        "CreateJoinToken": (False, False),
        "PostStatus": (False, False),
    },
    "spire.api.server.entry.v1.Entry": {
        "CountEntries": (False, False),
        "ListEntries": (False, False),
        "GetEntry": (False, False),
        "BatchCreateEntry": (False, False),
        "BatchUpdateEntry": (False, False),
        "BatchDeleteEntry": (False, False),
        "GetAuthorizedEntries": (False, False),
        "SyncAuthorizedEntries": (True, True),
    },
    "spire.api.server.bundle.v1.Bundle": dict.fromkeys(
        [
            "CountBundles",
            "GetBundle",
            "AppendBundle",
            "PublishJWTAuthority",
            "PublishWITAuthority",
            "ListFederatedBundles",
            "GetFederatedBundle",
            "BatchCreateFederatedBundle",
            "BatchUpdateFederatedBundle",
            "BatchSetFederatedBundle",
            "BatchDeleteFederatedBundle",
        ],
        (False, False),
    ),
    "spire.api.agent.delegatedidentity.v1.DelegatedIdentity": {
        "SubscribeToX509SVIDs": (False, True),
        "SubscribeToX509Bundles": (False, True),
        "FetchJWTSVIDs": (False, False),
        "SubscribeToJWTBundles": (False, True),
    },
    "spire.api.server.svid.v1.SVID": dict.fromkeys(
        [
            "MintX509SVID",
            "MintJWTSVID",
            "MintWITSVID",
            "BatchNewX509SVID",
            "NewJWTSVID",
            "BatchNewWITSVID",
            "NewDownstreamX509CA",
        ],
        (False, False),
    ),
}


@pytest.mark.parametrize("service_name", sorted(RPCS))
def test_services_have_spires_rpcs(service_name: str) -> None:
    module = {
        "Agent": agent_pb2,
        "Entry": entry_pb2,
        "Bundle": bundle_pb2,
        "SVID": svid_pb2,
        "DelegatedIdentity": delegated_pb2,
    }[service_name.rsplit(".", 1)[1]]
    descriptor = module.DESCRIPTOR.services_by_name[service_name.rsplit(".", 1)[1]]
    assert descriptor.full_name == service_name
    found = {m.name: (m.client_streaming, m.server_streaming) for m in descriptor.methods}
    assert found == RPCS[service_name]


def test_workload_api_paths_are_unpackaged() -> None:
    mapping = service.SpiffeWorkloadAPIBase.__mapping__  # the routing table builder
    assert sorted(service.METHODS) == sorted(
        [
            "FetchX509SVID",
            "FetchX509Bundles",
            "FetchJWTSVID",
            "FetchJWTBundles",
            "ValidateJWTSVID",
            "FetchWITSVID",
            "FetchWITBundles",
        ]
    )
    assert service.path("FetchX509SVID") == "/SpiffeWorkloadAPI/FetchX509SVID"
    assert callable(mapping)
    claims = ours.ValidateJWTSVIDResponse.DESCRIPTOR.fields_by_name["claims"]
    assert claims.message_type.full_name == struct_pb2.Struct.DESCRIPTOR.full_name
    assert ours.X509SVID.DESCRIPTOR.fields_by_name["x509_svid"].type == FieldDescriptor.TYPE_BYTES


SIDE_BY_SIDE = """
from pyspire.proto.spiffe.workload import workload_pb2 as ours
from spiffe._proto import workload_pb2 as theirs
a = ours.X509SVIDResponse(svids=[ours.X509SVID(spiffe_id="spiffe://example.org/w", x509_svid=b"c", x509_svid_key=b"k",
    bundle=b"b", hint="h")], federated_bundles={"spiffe://other.org": b"f"})
b = theirs.X509SVIDResponse.FromString(a.SerializeToString())
assert b.svids[0].spiffe_id == "spiffe://example.org/w" and b.svids[0].hint == "h"
assert dict(b.federated_bundles) == {"spiffe://other.org": b"f"}
req = theirs.JWTSVIDRequest(audience=["x"], spiffe_id="spiffe://example.org/w")
assert ours.JWTSVIDRequest.FromString(req.SerializeToString()).audience == ["x"]
resp = ours.ValidateJWTSVIDResponse(spiffe_id="spiffe://example.org/w")
resp.claims.update({"aud": ["x"], "exp": 5.0})
back = theirs.ValidateJWTSVIDResponse.FromString(resp.SerializeToString())
assert back.claims["exp"] == 5.0
print("ok")
"""


@pytest.mark.parametrize("order", ["pyspire-first", "py-spiffe-first"])
def test_pyspire_and_py_spiffe_messages_live_side_by_side(order: str) -> None:
    """Both register Workload API messages; neither import may break the other."""
    code = SIDE_BY_SIDE
    if order == "py-spiffe-first":
        lines = code.strip().splitlines()
        code = "\n".join([lines[1], lines[0], *lines[2:]])
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_grpcio_client_reaches_a_grpclib_server_at_the_unpackaged_path(tmp_path: Path) -> None:
    """A grpcio client (as py-spiffe uses) calls the standard's path and gets our answer."""

    class Answer(service.SpiffeWorkloadAPIBase):
        async def FetchX509SVID(self, stream):  # type: ignore[no-untyped-def]
            await stream.recv_message()
            await stream.send_message(ours.X509SVIDResponse(svids=[ours.X509SVID(spiffe_id="spiffe://example.org/w")]))

        FetchX509Bundles = FetchJWTSVID = FetchJWTBundles = ValidateJWTSVID = FetchWITSVID = FetchWITBundles = (
            FetchX509SVID
        )

    socket_path = tmp_path / "api.sock"

    async def scenario() -> str:
        server = Server([Answer()])
        await server.start(path=str(socket_path))
        try:

            def call() -> str:
                with grpc.insecure_channel(f"unix://{socket_path}") as channel:
                    method = channel.unary_stream(
                        "/SpiffeWorkloadAPI/FetchX509SVID",
                        request_serializer=theirs.X509SVIDRequest.SerializeToString,
                        response_deserializer=theirs.X509SVIDResponse.FromString,
                    )
                    first = next(iter(method(theirs.X509SVIDRequest(), metadata=[("workload.spiffe.io", "true")])))
                    return first.svids[0].spiffe_id

            return await asyncio.to_thread(call)
        finally:
            server.close()
            await server.wait_closed()

    assert asyncio.run(scenario()) == "spiffe://example.org/w"
