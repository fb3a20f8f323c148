"""TrustDomain listings and the Bundle API's own-bundle calls, differentially, one request per case.

Complements test_bundle_and_federation_api.py (created, updated and deleted relationships and
federated bundles): paging and masks of ListFederationRelationships, CountBundles, and
AppendBundle's refusals (its successes change each server's own bundle, compared in shape).
"""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pyspire.proto.spire.api.server.bundle.v1 import bundle_grpc, bundle_pb2
from pyspire.proto.spire.api.server.trustdomain.v1 import trustdomain_grpc, trustdomain_pb2
from pyspire.proto.spire.api.types import types_pb2 as types

from tests.support.daemons import ServerDaemon
from tests.support.differential import Side, assert_same_answers
from tests.support.pki import make_ca

_ROOT = make_ca(name="appended root").certificate.public_bytes(serialization.Encoding.DER)
_KEY = (
    ec.generate_private_key(ec.SECP256R1())
    .public_key()
    .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
)


def _relationship(name: str) -> types.FederationRelationship:
    return types.FederationRelationship(
        trust_domain=name, bundle_endpoint_url=f"https://{name}/bundle", https_web=types.HTTPSWebProfile()
    )


async def _listed(side: Side, page_size: int, mask: types.FederationRelationshipMask | None = None) -> None:
    stub = trustdomain_grpc.TrustDomainStub(side.channel)
    names: list[str] = []
    pages: list[int] = []
    token = ""
    for _ in range(20):
        request = trustdomain_pb2.ListFederationRelationshipsRequest(
            page_size=page_size, page_token=token, output_mask=mask
        )
        reply = await side.call(stub.ListFederationRelationships, request, record=False)
        if reply is None:
            await side.call(stub.ListFederationRelationships, request)
            return
        shown = [r for r in reply.federation_relationships if r.trust_domain.startswith("tdl-")]
        names += [r.trust_domain for r in shown]
        if shown:
            pages.append(len(shown))
            side.note("fields", sorted(f.name for f, _ in shown[0].ListFields()))
        token = reply.next_page_token
        if not token:
            break
    side.note("listed", {"names": sorted(names), "pages": pages})


LIST_CASES: dict[str, tuple[int, types.FederationRelationshipMask | None]] = {
    "unpaged": (0, None),
    "pages of 2": (2, None),
    "pages of 5": (5, None),
    "negative page size": (-1, None),
    "empty mask": (0, types.FederationRelationshipMask()),
    "url only": (0, types.FederationRelationshipMask(bundle_endpoint_url=True)),
}


@pytest.mark.parametrize("name", LIST_CASES)
async def test_list_federation_relationships_as_spire_does(name: str, server_pair: dict[str, ServerDaemon]) -> None:
    async def case(side: Side) -> None:
        stub = trustdomain_grpc.TrustDomainStub(side.channel)
        request = trustdomain_pb2.BatchCreateFederationRelationshipRequest(
            federation_relationships=[_relationship(f"tdl-{i}.test") for i in range(3)]
        )
        await side.call(stub.BatchCreateFederationRelationship, request, record=False)
        await _listed(side, *LIST_CASES[name])

    await assert_same_answers(case, {n: daemon.socket_path for n, daemon in server_pair.items()})


APPEND_CASES: dict[str, bundle_pb2.AppendBundleRequest] = {
    "nothing": bundle_pb2.AppendBundleRequest(),
    "a root": bundle_pb2.AppendBundleRequest(x509_authorities=[types.X509Certificate(asn1=_ROOT)]),
    "the same root again": bundle_pb2.AppendBundleRequest(x509_authorities=[types.X509Certificate(asn1=_ROOT)]),
    "not DER": bundle_pb2.AppendBundleRequest(x509_authorities=[types.X509Certificate(asn1=b"junk")]),
    "a JWT key": bundle_pb2.AppendBundleRequest(
        jwt_authorities=[types.JWTKey(public_key=_KEY, key_id="appended", expires_at=4102444800)]
    ),
    "a JWT key without ID": bundle_pb2.AppendBundleRequest(jwt_authorities=[types.JWTKey(public_key=_KEY)]),
    "a JWT key that is junk": bundle_pb2.AppendBundleRequest(
        jwt_authorities=[types.JWTKey(public_key=b"junk", key_id="junk")]
    ),
    "masked": bundle_pb2.AppendBundleRequest(
        x509_authorities=[types.X509Certificate(asn1=_ROOT)], output_mask=types.BundleMask()
    ),
}


def _bundle_shape(reply: types.Bundle) -> dict[str, Any]:
    return {
        "trust_domain": reply.trust_domain,
        "x509": len(reply.x509_authorities),
        "jwt": sorted(k.key_id for k in reply.jwt_authorities if k.key_id == "appended"),
        "jwt count": len(reply.jwt_authorities),
        "sequence set": reply.sequence_number > 0,
    }


@pytest.mark.parametrize("name", APPEND_CASES)
async def test_append_bundle_as_spire_does(name: str, server_pair: dict[str, ServerDaemon]) -> None:
    async def case(side: Side) -> None:
        stub = bundle_grpc.BundleStub(side.channel)
        reply = await side.call(stub.AppendBundle, APPEND_CASES[name], record=False)
        if reply is None:
            await side.call(stub.AppendBundle, APPEND_CASES[name])
        else:
            side.note("appended", _bundle_shape(reply))

    await assert_same_answers(case, {n: daemon.socket_path for n, daemon in server_pair.items()})


async def test_count_bundles_as_spire_does(server_pair: dict[str, ServerDaemon]) -> None:
    async def case(side: Side) -> None:
        stub = bundle_grpc.BundleStub(side.channel)
        before = await side.call(stub.CountBundles, bundle_pb2.CountBundlesRequest(), record=False)
        created = bundle_pb2.BatchCreateFederatedBundleRequest(
            bundle=[types.Bundle(trust_domain="tdc.test", x509_authorities=[types.X509Certificate(asn1=_ROOT)])]
        )
        await side.call(stub.BatchCreateFederatedBundle, created, record=False)
        after = await side.call(stub.CountBundles, bundle_pb2.CountBundlesRequest(), record=False)
        side.note("counted one more", (after.count - before.count) if after and before else None)

    await assert_same_answers(case, {n: daemon.socket_path for n, daemon in server_pair.items()})
