"""py-spiffe, an independent Workload API client, against a real agent with rotating SVIDs."""

from __future__ import annotations

import os
import threading
import time
from datetime import timedelta
from pathlib import Path

from spiffe import JwtSource, JwtSvid, WorkloadApiClient, X509Source

from tests.agent.test_end_to_end import _entry
from tests.support.daemons import start_agent, start_server
from tests.support.waiting import eventually
from tests.support.workloads import x509_context

UID = os.getuid()


def test_x509_and_jwt_sources_follow_rotation(tmp_path: Path) -> None:
    server = start_server(tmp_path / "server")
    alias = "spiffe://example.org/node/interop"
    agent = start_agent(tmp_path / "agent", server, server.join_token(alias))
    try:
        _entry(server, alias, "spiffe://example.org/myservice", f"unix:uid:{UID}", extra=("-x509SVIDTTL", "5"))
        time.sleep(1.1)  # a later created_at: /myservice stays first
        _entry(server, alias, "spiffe://example.org/myservice2", f"unix:uid:{UID}", extra=("-x509SVIDTTL", "5"))
        _entry(server, alias, "spiffe://example.org/not-for-me", f"unix:uid:{UID + 4242}")
        eventually(lambda: len(x509_context(agent).svids) == 2)

        updates = threading.Event()
        with X509Source(socket_path=agent.address, timeout_in_seconds=20) as source:
            first = source.get_x509_context().default_svid
            assert str(first.spiffe_id) == "spiffe://example.org/myservice"
            # The source keeps only its picked SVID; the client shows them all, in SPIRE's order.
            with WorkloadApiClient(agent.address) as client:
                ids = [str(s.spiffe_id) for s in client.fetch_x509_context().x509_svids]
            assert ids == ["spiffe://example.org/myservice", "spiffe://example.org/myservice2"]
            source.subscribe_for_updates(updates.set)
            # 5 s SVIDs rotate at half-life: the source must receive new ones by itself.
            assert updates.wait(15), "no rotated SVID reached the X509Source"
            rotated = eventually(
                lambda: (
                    (svid := source.get_x509_context().default_svid).leaf.serial_number != first.leaf.serial_number
                    and svid
                )
            )
            assert str(rotated.spiffe_id) == "spiffe://example.org/myservice"
            bundle = source.get_bundle_for_trust_domain(rotated.spiffe_id.trust_domain)
            assert bundle is not None
            assert rotated.leaf.not_valid_after_utc - rotated.leaf.not_valid_before_utc <= timedelta(seconds=16)

        with JwtSource(socket_path=agent.address, timeout_in_seconds=20) as jwt_source:
            svid = jwt_source.fetch_svid(audience={"payments"})
            assert str(svid.spiffe_id) == "spiffe://example.org/myservice"
            jwt_bundle = jwt_source.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
            assert jwt_bundle is not None
            validated = JwtSvid.parse_and_validate(svid.token, jwt_bundle, {"payments"})
            assert str(validated.spiffe_id) == "spiffe://example.org/myservice"
    finally:
        agent.stop()
        server.stop()
