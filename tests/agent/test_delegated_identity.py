"""SPIRE's DelegatedIdentity API on the agent's admin socket (``authorized_delegates``).

The expected outcomes are SPIRE's (tests/interop/test_delegated_identity_vs_spire.py runs the
same scenario against a real spire-agent and compares).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from pyspire.config.daemon_config import load_agent_config
from pyspire.proto.spire.api.agent.delegatedidentity.v1 import delegatedidentity_grpc
from pyspire.proto.spire.api.agent.delegatedidentity.v1 import delegatedidentity_pb2 as pb
from pyspire.spiffe import Bundle, JwtSvid, TrustDomain

from tests.support import delegated
from tests.support.daemons import AgentDaemon, ServerDaemon, start_agent, start_server
from tests.support.pki import make_ca
from tests.support.waiting import eventually

UID = os.getuid()
NO_IDENTITY = ("PERMISSION_DENIED", "no identity issued")
NOT_LISTED = ("PERMISSION_DENIED", "caller not configured as an authorized delegate")
EITHER = ("INVALID_ARGUMENT", "must provide either selectors or non-zero PID, but not both")

# What SPIRE v1.13 answers in delegated.scenario (read from its agent, checked against it in the interop test).
EXPECTED = {
    "caller without entry": NO_IDENTITY,
    "caller not listed": NOT_LISTED,
    "x509 by selectors": {
        # admin and downstream entries are never handed to a delegate
        "svids": [("spiffe://example.org/workload", "primary", 1, True)],
        "federates_with": ["spiffe://partner.test"],
    },
    "x509 matching nothing": {"svids": [], "federates_with": []},
    "x509 neither selectors nor pid": EITHER,
    "x509 selectors and pid": EITHER,
    "x509 selector without type": ("INVALID_ARGUMENT", "could not parse provided selectors"),
    "x509 by pid": {
        "svids": [
            ("spiffe://example.org/delegate", "", 1, True),
            ("spiffe://example.org/not-a-delegate", "", 1, True),
        ],
        "federates_with": [],
    },
    "jwt without audience": ("INVALID_ARGUMENT", "audience must be specified"),
    "jwt by selectors": [
        ("spiffe://example.org/admin-workload", "", True),
        ("spiffe://example.org/downstream-workload", "", True),
        ("spiffe://example.org/workload", "primary", True),
    ],
    "jwt matching nothing": NO_IDENTITY,
    "x509 bundles": ["spiffe://example.org", "spiffe://partner.test"],
    "jwt bundles": ["spiffe://example.org", "spiffe://partner.test"],
}


def delegating_agent(tmp_path: Path, server: ServerDaemon) -> tuple[AgentDaemon, Path, str]:
    admin = tmp_path / "agent-admin" / "admin.sock"
    alias = f"spiffe://example.org/node/{uuid.uuid4()}"
    agent = start_agent(
        tmp_path / "agent",
        server,
        server.join_token(alias),
        extra=f'admin_socket_path = "{admin}"\n    authorized_delegates = ["{delegated.DELEGATE}"]',
    )
    return agent, admin, alias


@pytest.mark.slow
def test_delegated_identity_answers_as_spire_does(tmp_path: Path) -> None:
    partner = make_ca("partner.test", name="partner root")
    partner_pem = tmp_path / "partner.pem"
    partner_pem.write_bytes(partner.certificate.public_bytes(serialization.Encoding.PEM))
    server = start_server(tmp_path / "server")
    agent, admin, alias = delegating_agent(tmp_path, server)
    try:
        found = delegated.scenario(server, admin, alias, UID, partner_pem)
        assert found == EXPECTED

        # What was summarised is real: the SVID verifies against the server's bundle, the
        # JWT-SVID against the JWKS the delegate was given, the key is the SVID's.
        response = delegated.x509_svids(admin, delegated.WORKLOAD).responses[0]
        svid = response.x509_svids[0]
        leaf = x509.load_der_x509_certificate(svid.x509_svid.cert_chain[0])
        own = Bundle.parse_x509(TrustDomain.parse("example.org"), server.bundle_pem().encode())
        bundles = delegated.x509_bundles(admin).responses[0].ca_certificates
        assert bundles["spiffe://example.org"] == own.marshal_x509_der()
        assert leaf.verify_directly_issued_by(own.x509_authorities[0]) is None
        assert svid.x509_svid.expires_at == int(leaf.not_valid_after_utc.timestamp())
        key = serialization.load_der_private_key(svid.x509_svid_key, None)
        assert key.public_key() == leaf.public_key()
        token = delegated.jwt_svids(admin, ["delegated-aud"], delegated.WORKLOAD).responses[0].svids[0].token
        jwks = delegated.jwt_bundles(admin).responses[0].bundles["spiffe://example.org"]
        jwt_bundle = Bundle.parse_jwks(TrustDomain.parse("example.org"), jwks)
        assert JwtSvid.parse_and_validate(token, jwt_bundle, ["delegated-aud"]).spiffe_id is not None
    finally:
        agent.stop()
        server.stop()


@pytest.mark.slow
def test_a_stream_ends_when_the_delegate_loses_its_entry(tmp_path: Path) -> None:
    """Authorization is checked again on every change: a revoked delegate's stream ends at once."""
    server = start_server(tmp_path / "server")
    agent, admin, alias = delegating_agent(tmp_path, server)
    try:
        out = server.cli(
            "entry", "create", "-parentID", alias, "-spiffeID", delegated.DELEGATE, "-selector", f"unix:uid:{UID}"
        ).stdout
        entry_id = out.split("Entry ID         : ", 1)[1].split()[0]
        server.cli(
            "entry",
            "create",
            "-parentID",
            alias,
            "-spiffeID",
            "spiffe://example.org/w",
            "-selector",
            delegated.WORKLOAD,
        )

        def served() -> bool:
            # Refused (no responses) until the agent's next sync brings it the delegate's entry.
            outcome = delegated.x509_svids(admin, delegated.WORKLOAD)
            return outcome.status == "OK" and bool(outcome.responses[0].x509_svids)

        eventually(served)

        async def follow() -> tuple[int, GRPCError]:
            channel = Channel(path=str(admin))
            seen = 0
            try:
                stub = delegatedidentity_grpc.DelegatedIdentityStub(channel)
                async with stub.SubscribeToX509SVIDs.open(timeout=30) as stream:
                    await stream.send_message(
                        pb.SubscribeToX509SVIDsRequest(selectors=delegated.selectors(delegated.WORKLOAD)), end=True
                    )
                    await stream.recv_message()
                    seen += 1
                    await asyncio.to_thread(server.cli, "entry", "delete", "-entryID", entry_id)
                    while await stream.recv_message() is not None:
                        seen += 1
                    await stream.recv_trailing_metadata()  # raises the status the stream ended with
                    raise AssertionError("the stream ended without an error")
            except GRPCError as err:
                return seen, err
            finally:
                channel.close()

        seen, error = asyncio.run(follow())
        assert seen >= 1
        assert (error.status, error.message) == (Status.PERMISSION_DENIED, "no identity issued")
    finally:
        agent.stop()
        server.stop()


def _agent_conf(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "agent.conf"
    path.write_text(
        'agent {\n trust_domain = "example.org"\n server_address = "127.0.0.1"\n'
        f' trust_bundle_path = "{tmp_path / "b.pem"}"\n {extra}\n}}\n'
        'plugins {\n NodeAttestor "join_token" {\n plugin_data {}\n }\n'
        ' KeyManager "memory" {\n plugin_data {}\n }\n WorkloadAttestor "unix" {\n plugin_data {}\n }\n}\n'
    )
    return path


def test_authorized_delegates_needs_the_admin_socket(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="set admin_socket_path too"):
        load_agent_config(_agent_conf(tmp_path, f'authorized_delegates = ["{delegated.DELEGATE}"]'))


def test_a_malformed_authorized_delegate_is_refused_by_name(tmp_path: Path) -> None:
    extra = f'admin_socket_path = "{tmp_path / "admin.sock"}"\n authorized_delegates = ["spiffe://Example.org/x"]'
    with pytest.raises(ValueError, match=r'"spiffe://Example.org/x" is not a SPIFFE ID'):
        load_agent_config(_agent_conf(tmp_path, extra))


def test_an_authorized_delegate_of_another_trust_domain_is_refused(tmp_path: Path) -> None:
    extra = f'admin_socket_path = "{tmp_path / "admin.sock"}"\n authorized_delegates = ["spiffe://other.org/proxy"]'
    with pytest.raises(ValueError, match=r'is not a workload of trust domain "example\.org"'):
        load_agent_config(_agent_conf(tmp_path, extra))


def test_authorized_delegates_are_read(tmp_path: Path) -> None:
    extra = f'admin_socket_path = "{tmp_path / "admin.sock"}"\n authorized_delegates = ["{delegated.DELEGATE}"]'
    config = load_agent_config(_agent_conf(tmp_path, extra))
    assert [str(i) for i in config.agent.authorized_delegate_ids] == [delegated.DELEGATE]
