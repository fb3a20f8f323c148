"""Mutual TLS between two workloads of a real pyspire-agent through SVID rotations, an agent restart and a CA rotation.

The scenario and its checks are in tests/support/mtls_rotation.py (the spire-agent variant
reuses them); here it runs against pyspire's own server and agent.
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path

import pytest
from cryptography import x509
from pyspire.spiffe import Backoff, JwtSource, TrustDomain, WorkloadApiError, X509Source, tls

from tests.support.identities import SERVER, pick, start_deployment
from tests.support.mtls_rotation import (
    EchoServer,
    connect,
    expected_refusal,
    issuer_key_id,
    refused_by_each_authorizer,
    rotate_svids,
    start_pair,
)
from tests.support.waiting import eventually
from tests.support.workloads import register_this_process
from tests.support.x509_material import HandSetSource

LEGACY = "spiffe://example.org/legacy"
EXAMPLE = TrustDomain.parse("example.org")


def _authorities(source: X509Source) -> list[str]:
    bundle = source.get_bundle_for_trust_domain(EXAMPLE)
    assert bundle is not None
    return sorted(
        a.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()
        for a in bundle.x509_authorities
    )


@pytest.mark.slow
def test_mtls_through_svid_rotations_an_agent_restart_and_a_ca_rotation(tmp_path: Path) -> None:
    # 16 s SVIDs (backdated 10 s, renewed at half their life): a new one every 3 to 4 seconds.
    deployment = start_deployment(tmp_path, "-x509SVIDTTL", "16")
    try:
        # An identity whose SVID lives an hour: kept from before the CA rotation, it shows the
        # old authority's end.
        register_this_process(deployment.server, deployment.alias, LEGACY, "-hint", "legacy")
        # Reconnecting within a second or two (go-spiffe's backoff reaches 4 s): the agent's
        # restart must fit in what is left of the last 16 s SVIDs on a loaded machine too.
        backoff = Backoff(initial=0.5, maximum=2)
        with (
            deployment.source("server", backoff) as server_source,
            deployment.source("client", backoff) as client_source,
            deployment.source("intruder", backoff) as intruder_source,
            X509Source(deployment.agent.address, timeout=30, picker=pick("legacy"), backoff=backoff) as legacy_source,
            JwtSource(deployment.agent.address, backoff=backoff) as jwt_source,
        ):
            pair = start_pair(server_source, client_source)
            legacy_server = EchoServer(tls.server_context(server_source, tls.authorize_id(LEGACY)))
            try:
                # 1. Five SVID rotations on each side, every handshake on the newest SVIDs.
                rotate_svids(pair, 5, timeout=120)

                # 2. The agent restarts mid-run: the last good material serves meanwhile.
                generations = server_source.generation, client_source.generation
                token = jwt_source.fetch_svid("billing").token
                assert deployment.agent.stop() == 0
                for _ in range(3):
                    pair.exchange()
                    time.sleep(0.2)
                assert str(jwt_source.validate(token, "billing").spiffe_id) == SERVER  # the kept JWT bundles
                with pytest.raises((WorkloadApiError, OSError)):
                    jwt_source.fetch_svid("billing")
                deployment.agent.start()
                rotate_svids(pair, 2, timeout=90)
                assert server_source.generation > generations[0]
                assert client_source.generation > generations[1]
                assert str(eventually(lambda: jwt_source.fetch_svid("billing")).spiffe_id) == SERVER

                # 3. The CA rotates: prepare, activate, taint, revoke.
                old_ca = deployment.server.x509_authority_id()
                new_ca = deployment.server.x509_authority_id("prepare", "Prepared")
                pair.exchange_until(
                    lambda: len(_authorities(server_source)) == len(_authorities(legacy_source)) == 2,
                    60,
                    "the prepared CA published",
                )
                legacy = HandSetSource(legacy_source.svid, legacy_source.bundles)  # old CA's SVID, both CAs trusted
                assert issuer_key_id(legacy.svid.leaf) == old_ca.lower()
                legacy_client = tls.client_context(legacy, tls.authorize_id(SERVER))
                deployment.server.cli("localauthority", "x509", "activate", "-authorityID", new_ca)
                deployment.server.cli("localauthority", "x509", "taint", "-authorityID", old_ca)
                pair.exchange_until(
                    lambda: {issuer_key_id(s.svid.leaf) for s in (server_source, client_source)} == {new_ca.lower()},
                    90,
                    "SVIDs of the new CA on both sides",
                )
                pair.exchange()
                connect(legacy_client, legacy_server.address)  # still trusted: its CA is still in the bundle
                deployment.server.cli("localauthority", "x509", "revoke", "-authorityID", old_ca)
                pair.exchange_until(
                    lambda: _authorities(server_source) == [new_ca.lower()], 60, "the old CA out of the bundle"
                )
                refusals_before = len(legacy_server.refusals)
                with pytest.raises((ssl.SSLError, OSError)):
                    connect(legacy_client, legacy_server.address)
                deadline = time.monotonic() + 10
                while len(legacy_server.refusals) == refusals_before and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert isinstance(legacy_server.refusals[-1], ssl.SSLCertVerificationError)
                pair.exchange()

                # 4. A peer with the wrong SPIFFE ID, refused by each authorizer.
                refusals = refused_by_each_authorizer(pair, intruder_source)
                assert sorted(refusals) == ["authorize_id", "authorize_member_of", "authorize_one_of"]
                for name, error in refusals.items():
                    assert expected_refusal(name, error), f"{name}: {error!r}"

                assert pair.server.refusals == []
                server_count, client_count = pair.observed.distinct()
                assert server_count >= 8
                assert client_count >= 8
            finally:
                legacy_server.close()
                pair.server.close()
    finally:
        deployment.agent.stop()
        deployment.server.stop()
