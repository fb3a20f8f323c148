"""The Bundle and TrustDomain APIs, differentially: federated bundles and federation relationships.

Every case uses trust domains of its own (``<case>-N.test``), so listings are filtered to them
after the fact; the server's own bundle differs between the two servers (their own keys) and is
compared only in shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pyspire.proto.spire.api.server.bundle.v1 import bundle_grpc, bundle_pb2
from pyspire.proto.spire.api.server.trustdomain.v1 import trustdomain_grpc, trustdomain_pb2
from pyspire.proto.spire.api.types import types_pb2 as types

from tests.support.daemons import ServerDaemon
from tests.support.differential import Case, Side, assert_same_answers
from tests.support.pki import make_ca

CASES: dict[str, Case] = {}
_CA = make_ca(name="differential federated root")
_OTHER_CA = make_ca(name="differential second root")
_JWT_KEY = (
    ec.generate_private_key(ec.SECP256R1())
    .public_key()
    .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
)


def case(function: Case) -> Case:
    CASES[function.__name__] = function
    return function


def der(issued: Any) -> bytes:
    return bytes(issued.certificate.public_bytes(serialization.Encoding.DER))


def bundle(trust_domain: str, *roots: Any, **fields: Any) -> types.Bundle:
    return types.Bundle(
        trust_domain=trust_domain,
        x509_authorities=[types.X509Certificate(asn1=der(root)) for root in (roots or (_CA,))],
        **fields,
    )


def bundles(side: Side) -> bundle_grpc.BundleStub:
    return bundle_grpc.BundleStub(side.channel)


def relationships(side: Side) -> trustdomain_grpc.TrustDomainStub:
    return trustdomain_grpc.TrustDomainStub(side.channel)


# --- federated bundles ------------------------------------------------------------------


@case
async def batch_create_federated_bundles_per_item(side: Side) -> None:
    request = bundle_pb2.BatchCreateFederatedBundleRequest(
        bundle=[
            bundle("fbc-1.test"),
            bundle("fbc-1.test"),
            bundle("example.org"),
            bundle("Bad_TD"),
            bundle("spiffe://fbc-2.test"),
            types.Bundle(trust_domain="fbc-3.test"),
            types.Bundle(trust_domain="fbc-4.test", x509_authorities=[types.X509Certificate(asn1=b"not DER")]),
            bundle(
                "fbc-5.test",
                jwt_authorities=[types.JWTKey(public_key=_JWT_KEY, key_id="kid-1", expires_at=4102444800)],
                refresh_hint=60,
                sequence_number=7,
            ),
            types.Bundle(
                trust_domain="fbc-6.test",
                jwt_authorities=[types.JWTKey(public_key=_JWT_KEY, key_id="")],
            ),
            types.Bundle(
                trust_domain="fbc-7.test",
                jwt_authorities=[types.JWTKey(public_key=b"junk", key_id="kid")],
            ),
            types.Bundle(trust_domain=""),
        ]
    )
    await side.call(bundles(side).BatchCreateFederatedBundle, request)


@case
async def create_federated_bundles_with_output_masks(side: Side) -> None:
    for number, mask in enumerate((types.BundleMask(), types.BundleMask(refresh_hint=True, sequence_number=True))):
        request = bundle_pb2.BatchCreateFederatedBundleRequest(
            bundle=[bundle(f"fbm-{number}.test", refresh_hint=30)], output_mask=mask
        )
        await side.call(bundles(side).BatchCreateFederatedBundle, request)


@case
async def get_federated_bundle(side: Side) -> None:
    await side.call(
        bundles(side).BatchCreateFederatedBundle,
        bundle_pb2.BatchCreateFederatedBundleRequest(bundle=[bundle("fbg.test")]),
    )
    for name in ("fbg.test", "missing.test", "example.org", "Bad_TD", "", "spiffe://fbg.test"):
        await side.call(bundles(side).GetFederatedBundle, bundle_pb2.GetFederatedBundleRequest(trust_domain=name))
    await side.call(
        bundles(side).GetFederatedBundle,
        bundle_pb2.GetFederatedBundleRequest(trust_domain="fbg.test", output_mask=types.BundleMask()),
    )


@case
async def batch_update_federated_bundles_per_item(side: Side) -> None:
    await side.call(
        bundles(side).BatchCreateFederatedBundle,
        bundle_pb2.BatchCreateFederatedBundleRequest(bundle=[bundle("fbu-1.test"), bundle("fbu-2.test")]),
    )
    request = bundle_pb2.BatchUpdateFederatedBundleRequest(
        bundle=[
            bundle("fbu-1.test", _CA, _OTHER_CA, refresh_hint=90),
            bundle("fbu-missing.test"),
            bundle("example.org"),
            bundle("Bad_TD"),
            types.Bundle(trust_domain="fbu-2.test", refresh_hint=5),
        ]
    )
    await side.call(bundles(side).BatchUpdateFederatedBundle, request)
    masked = bundle_pb2.BatchUpdateFederatedBundleRequest(
        bundle=[bundle("fbu-2.test", _OTHER_CA, refresh_hint=45)],
        input_mask=types.BundleMask(refresh_hint=True),
    )
    await side.call(bundles(side).BatchUpdateFederatedBundle, masked)
    await side.call(bundles(side).GetFederatedBundle, bundle_pb2.GetFederatedBundleRequest(trust_domain="fbu-2.test"))


@case
async def batch_set_federated_bundles_per_item(side: Side) -> None:
    request = bundle_pb2.BatchSetFederatedBundleRequest(
        bundle=[bundle("fbs-1.test"), bundle("fbs-1.test", _OTHER_CA), bundle("example.org"), bundle("Bad_TD")]
    )
    await side.call(bundles(side).BatchSetFederatedBundle, request)


@case
async def batch_delete_federated_bundles_per_item(side: Side) -> None:
    await side.call(
        bundles(side).BatchCreateFederatedBundle,
        bundle_pb2.BatchCreateFederatedBundleRequest(bundle=[bundle("fbd-1.test"), bundle("fbd-2.test")]),
    )
    mode = bundle_pb2.BatchDeleteFederatedBundleRequest
    for names, chosen in (
        (["fbd-1.test", "fbd-missing.test", "example.org", "Bad_TD", ""], mode.RESTRICT),
        (["fbd-2.test", "fbd-2.test"], mode.DELETE),
    ):
        await side.call(
            bundles(side).BatchDeleteFederatedBundle,
            bundle_pb2.BatchDeleteFederatedBundleRequest(trust_domains=names, mode=chosen),
        )


@case
async def list_federated_bundles_in_pages(side: Side) -> None:
    await side.call(
        bundles(side).BatchCreateFederatedBundle,
        bundle_pb2.BatchCreateFederatedBundleRequest(bundle=[bundle(f"fbl-{i}.test") for i in range(3)]),
    )
    seen: list[str] = []
    token = ""
    for _ in range(50):
        reply = await side.call(
            bundles(side).ListFederatedBundles,
            bundle_pb2.ListFederatedBundlesRequest(page_size=2, page_token=token, output_mask=types.BundleMask()),
            record=False,
        )
        if reply is None:
            break
        seen += [b.trust_domain for b in reply.bundles]
        token = reply.next_page_token
        if not token:
            break
    side.note("listed", sorted(name for name in seen if name.startswith("fbl-")))
    await side.call(
        bundles(side).ListFederatedBundles, bundle_pb2.ListFederatedBundlesRequest(page_size=-1), record=False
    )


@case
async def own_bundle_shape_and_masks(side: Side) -> None:
    for mask in (None, types.BundleMask(), types.BundleMask(refresh_hint=True)):
        reply = await side.call(bundles(side).GetBundle, bundle_pb2.GetBundleRequest(output_mask=mask), record=False)
        assert reply is not None
        side.note(
            "own bundle",
            {
                "trust_domain": reply.trust_domain,
                "x509 authorities": len(reply.x509_authorities),
                "jwt authorities": len(reply.jwt_authorities),
                "refresh_hint": reply.refresh_hint,
                "sequence_number set": reply.sequence_number > 0,
            },
        )


# --- federation relationships ---------------------------------------------------------------


def web(trust_domain: str, url: str = "") -> types.FederationRelationship:
    return types.FederationRelationship(
        trust_domain=trust_domain,
        bundle_endpoint_url=url or f"https://{trust_domain}:8443/bundle",
        https_web=types.HTTPSWebProfile(),
    )


def spiffe(trust_domain: str, endpoint_id: str, with_bundle: bool = True) -> types.FederationRelationship:
    return types.FederationRelationship(
        trust_domain=trust_domain,
        bundle_endpoint_url=f"https://{trust_domain}:8443/bundle",
        https_spiffe=types.HTTPSSPIFFEProfile(endpoint_spiffe_id=endpoint_id),
        trust_domain_bundle=bundle(trust_domain) if with_bundle else None,
    )


@case
async def batch_create_federation_relationships_per_item(side: Side) -> None:
    request = trustdomain_pb2.BatchCreateFederationRelationshipRequest(
        federation_relationships=[
            web("frc-1.test"),
            web("example.org"),
            web("Bad_TD"),
            web("frc-2.test", "http://frc-2.test/bundle"),
            web("frc-3.test", "not a url"),
            types.FederationRelationship(trust_domain="frc-4.test", bundle_endpoint_url="https://frc-4.test/"),
            spiffe("frc-5.test", "spiffe://frc-5.test/spire/server"),
            spiffe("frc-6.test", "not-a-spiffe-id"),
            spiffe("frc-7.test", "spiffe://frc-7.test/spire/server", with_bundle=False),
            types.FederationRelationship(
                trust_domain="frc-8.test",
                bundle_endpoint_url="https://frc-8.test/",
                https_web=types.HTTPSWebProfile(),
                trust_domain_bundle=bundle("other.test"),
            ),
        ]
    )
    await side.call(relationships(side).BatchCreateFederationRelationship, request)
    again = trustdomain_pb2.BatchCreateFederationRelationshipRequest(federation_relationships=[web("frc-1.test")])
    await side.call(
        relationships(side).BatchCreateFederationRelationship,
        again,
        documented="Errors SPIRE passes on from its database",
    )


@case
async def get_update_and_delete_federation_relationships(side: Side) -> None:
    stub = relationships(side)
    await side.call(
        stub.BatchCreateFederationRelationship,
        trustdomain_pb2.BatchCreateFederationRelationshipRequest(
            federation_relationships=[web("fru-1.test"), web("fru-2.test")]
        ),
    )
    for name in ("fru-1.test", "missing.test", "Bad_TD", ""):
        await side.call(
            stub.GetFederationRelationship, trustdomain_pb2.GetFederationRelationshipRequest(trust_domain=name)
        )
    await side.call(
        stub.GetFederationRelationship,
        trustdomain_pb2.GetFederationRelationshipRequest(
            trust_domain="fru-1.test", output_mask=types.FederationRelationshipMask()
        ),
    )
    await side.call(
        stub.BatchUpdateFederationRelationship,
        trustdomain_pb2.BatchUpdateFederationRelationshipRequest(
            federation_relationships=[
                web("fru-1.test", "https://fru-1.test/new"),
                spiffe("fru-2.test", "spiffe://fru-2.test/spire/server"),
            ]
        ),
    )
    await side.call(
        stub.BatchUpdateFederationRelationship,
        trustdomain_pb2.BatchUpdateFederationRelationshipRequest(federation_relationships=[web("fru-missing.test")]),
        documented="Errors SPIRE passes on from its database",
    )
    await side.call(
        stub.BatchUpdateFederationRelationship,
        trustdomain_pb2.BatchUpdateFederationRelationshipRequest(
            federation_relationships=[web("fru-1.test", "https://fru-1.test/masked")],
            input_mask=types.FederationRelationshipMask(),
        ),
    )
    await side.call(
        stub.GetFederationRelationship, trustdomain_pb2.GetFederationRelationshipRequest(trust_domain="fru-1.test")
    )
    await side.call(
        stub.BatchDeleteFederationRelationship,
        trustdomain_pb2.BatchDeleteFederationRelationshipRequest(
            trust_domains=["fru-1.test", "fru-1.test", "missing.test", "Bad_TD", ""]
        ),
    )


@case
async def refresh_bundle_of_unknown_relationship(side: Side) -> None:
    for name in ("missing.test", "Bad_TD", ""):
        await side.call(relationships(side).RefreshBundle, trustdomain_pb2.RefreshBundleRequest(trust_domain=name))


def _cases() -> list[Any]:
    return [pytest.param(function, id=name) for name, function in CASES.items()]


@pytest.mark.parametrize("corpus_case", _cases())
async def test_bundle_and_trust_domain_apis_answer_as_spire_does(
    corpus_case: Callable[[Side], Any], server_pair: dict[str, ServerDaemon]
) -> None:
    await assert_same_answers(corpus_case, {name: daemon.socket_path for name, daemon in server_pair.items()})
