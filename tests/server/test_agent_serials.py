"""Which agent SVID a real server accepts, and what it tells the agent otherwise (reliability case 18)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from pyspire.agent.client import ServerClient, ServerUnavailable
from pyspire.crypto import LocalSigner, build_csr
from pyspire.proto.spire.api.types import types_pb2

from tests.plugin.test_x509pop import node_certificate
from tests.server.test_api_security import attest, roots
from tests.support.daemons import ServerDaemon, start_server
from tests.support.pki import make_ca
from tests.support.x509pop_nodes import PopNode, x509pop_server_plugin

REASONS = types_pb2.PermissionDeniedDetails.Reason
ROOT = make_ca(name="fleet root")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerDaemon]:
    directory: Path = tmp_path_factory.mktemp("server")
    (directory / "roots.pem").write_bytes(ROOT.certificate.public_bytes(serialization.Encoding.PEM))
    daemon = start_server(
        directory,
        extra="ratelimit {\n attestation = false\n }",
        plugins=x509pop_server_plugin(directory / "roots.pem"),
    )
    yield daemon
    daemon.stop()


def _reason(error: GRPCError) -> str:
    found = [d.reason for d in error.details or () if isinstance(d, types_pb2.PermissionDeniedDetails)]
    return REASONS.Name(found[0]) if found else "none"


async def _sync_refusal(client: ServerClient) -> str:
    """The reason the server refuses ``client``'s current SVID, or "accepted"."""
    try:
        await client.sync_entries({})
    except GRPCError as err:
        return _reason(err) if err.status is Status.PERMISSION_DENIED else f"{err.status.name}: {err.message}"
    return "accepted"


def test_a_renewed_serial_is_promoted_on_first_use_and_older_ones_are_not_active(server: ServerDaemon) -> None:
    async def run() -> list[tuple[str, str]]:
        client, first = await attest(server, server.join_token())
        keys = {"first": (first, client._key)}
        seen = []
        try:
            for name in ("second", "third"):
                key = ec.generate_private_key(ec.SECP256R1())
                renewed = await client.renew(build_csr(LocalSigner(key)))
                keys[name] = (list(renewed), key)
                previous = list(keys)[-2]
                # Not used yet: the SVID it replaces is still the agent's.
                client.set_identity(*keys[previous])
                seen.append((f"{previous} before {name} is used", await _sync_refusal(client)))
                client.set_identity(*keys[name])
                seen.append((f"{name} on first use", await _sync_refusal(client)))
            for name in ("first", "second"):
                client.set_identity(*keys[name])
                seen.append((f"{name} after third was used", await _sync_refusal(client)))
        finally:
            client.close()
        return seen

    assert asyncio.run(run()) == [
        ("first before second is used", "accepted"),
        ("second on first use", "accepted"),
        ("second before third is used", "accepted"),
        ("third on first use", "accepted"),
        ("first after third was used", "AGENT_NOT_ACTIVE"),  # the pre-previous SVID
        ("second after third was used", "AGENT_NOT_ACTIVE"),
    ]


def test_a_reattestable_node_is_told_to_attest_again_instead_of_renewing(server: ServerDaemon, tmp_path: Path) -> None:
    node = PopNode(tmp_path, node_certificate(ROOT, common_name="renewer"))

    async def run() -> GRPCError:
        client, _, _ = await node.attest(server.port, roots(server))
        try:
            await client.renew(build_csr(LocalSigner(ec.generate_private_key(ec.SECP256R1()))))
        except GRPCError as err:
            return err
        finally:
            client.close()
        raise AssertionError("RenewAgent succeeded for a re-attestable node")

    error = asyncio.run(run())
    assert error.status is Status.PERMISSION_DENIED
    assert _reason(error) == "AGENT_MUST_REATTEST"


def test_an_expired_agent_svid_is_refused(tmp_path: Path) -> None:
    """The TLS handshake verifies the client SVID against the bundle and the clock, as SPIRE's
    (go-spiffe's verification) does: an expired agent SVID reaches no RPC at all.

    The SVID lives 6 s: with 1 s, a loaded machine spent the whole of it attesting, and the sync
    that must be accepted while the SVID is valid already met an expired one. It is accepted
    1.5 s before NotAfter and refused 0.3 s after it (reliability case 25: expired exactly at
    NotAfter, with no leeway).
    """
    short = start_server(tmp_path / "server", extra='agent_ttl = "6s"')
    try:

        async def run() -> BaseException:
            client, chain = await attest(short, short.join_token())
            try:
                assert await _sync_refusal(client) == "accepted"
                not_after = chain[0].not_valid_after_utc.timestamp()
                # Still valid a moment before NotAfter (on a fresh connection: no session is resumed)...
                time.sleep(max(0.0, not_after - 1.5 - time.time()))
                client.close()  # the next call opens a new connection
                assert await _sync_refusal(client) == "accepted"
                # ...and refused as soon as NotAfter has passed, with no grace.
                time.sleep(max(0.0, not_after + 0.3 - time.time()))
                client.close()  # the next call opens a new connection
                try:
                    await client.sync_entries({})
                except (GRPCError, ServerUnavailable) as err:
                    # The refusal is the SVID's doing: a valid agent is served at the same moment.
                    control, _ = await attest(short, short.join_token())
                    try:
                        assert await _sync_refusal(control) == "accepted"
                    finally:
                        control.close()
                    return err
            finally:
                client.close()
            raise AssertionError("the expired SVID was accepted")

        error = asyncio.run(run())
    finally:
        short.stop()
    # Refused in the TLS handshake (TLS 1.3: the client sees the connection end, or the alert), or by the API.
    assert any(s in str(error).lower() for s in ("certificate", "connection lost")) or (
        isinstance(error, GRPCError) and _reason(error) == "AGENT_EXPIRED"
    )
