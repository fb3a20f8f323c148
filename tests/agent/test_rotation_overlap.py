"""CA rotation with tiny lifetimes, watched from a workload (reliability case 23), on real daemons.

SPIRE's rotation suite: ``ca_ttl = 60s`` and ``default_x509_svid_ttl = 10s``, the workload
polling every 3 s. The next CA is prepared at half its predecessor's life and activated a
sixth before its end, so a workload sees it in its bundle before any SVID it is given is
signed by it, every SVID verifies against the bundle delivered with it, and none outlives the
CA that signed it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from cryptography import x509
from pyspire.spiffe import verify_x509_svid

from tests.agent.test_end_to_end import _entry
from tests.support.daemons import start_agent, start_server
from tests.support.waiting import eventually
from tests.support.workloads import x509_context

UID = os.getuid()
POLL_SECONDS = 3.0


def _key_id(certificate: x509.Certificate) -> str:
    return certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()


def _issuer_key_id(certificate: x509.Certificate) -> str:
    identifier = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    assert identifier is not None
    return identifier.hex()


@pytest.mark.slow
def test_with_a_one_minute_ca_every_svid_verifies_and_the_next_ca_is_trusted_before_it_signs(
    tmp_path: Path,
) -> None:
    server = start_server(tmp_path / "server", ca_ttl="60s", extra='default_x509_svid_ttl = "10s"')
    alias = "spiffe://example.org/node/rotation-overlap"
    agent = start_agent(tmp_path / "agent", server, server.join_token(alias))
    try:
        _entry(server, alias, "spiffe://example.org/rotating", f"unix:uid:{UID}")
        first = eventually(lambda: x509_context(agent))
        first_ca = _issuer_key_id(first.default_svid.leaf)
        trusted_since: dict[str, int] = {}  # authority key ID -> first poll whose bundle had it
        signing_since: dict[str, int] = {}  # authority key ID -> first poll whose SVID it signed
        poll = 0
        deadline = time.monotonic() + 100
        while len(signing_since) < 2:
            assert time.monotonic() < deadline, f"no second CA signed within 100 s: {signing_since}"
            context = x509_context(agent)
            svid = context.default_svid
            _, chains = verify_x509_svid(svid.chain, context.bundles)  # against the bundle delivered with it
            assert all(svid.leaf.not_valid_after_utc <= c.not_valid_after_utc for c in chains[0][1:])
            bundle = context.bundles.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
            assert bundle is not None
            for authority in bundle.x509_authorities:
                trusted_since.setdefault(_key_id(authority), poll)
            signing_since.setdefault(_issuer_key_id(svid.leaf), poll)
            poll += 1
            time.sleep(POLL_SECONDS)
        [next_ca] = set(signing_since) - {first_ca}
        # Published in the bundle at least one poll before the first SVID it signed.
        assert trusted_since[next_ca] < signing_since[next_ca], (trusted_since, signing_since)
        assert "Traceback" not in agent.log() + server.log()
    finally:
        agent.stop()
        server.stop()
